"""JSON error bodies for every HTTP error: `{"error": code, "detail": ...}`, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.db import DatabaseUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: Any = None) -> Any:
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    return response


RETRY_AFTER = 5
"""Seconds a client is told to wait when PostgreSQL does not answer (down, restarting, hung)."""


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(exc: DatabaseUnavailable) -> Any:
        log.warning("database unavailable", extra={"error_type": type(exc).__name__})
        response = error_response(
            503, "database_unavailable", "PostgreSQL is not answering; try again shortly"
        )
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return error_response(500, "internal_error", "the request could not be handled")
