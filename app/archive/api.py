"""The archive's part of the admin API: fetch again the attachments of a message.

`POST /admin/messages/<id>/attachments/retry` (body optional: `{"attachment_id": n}`) puts the
message's unavailable attachments back to pending and queues their fetch: 202 with their ids;
404 for an unknown message; 409 when none is unavailable. Same token and limits as the admin API.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from app import http_input
from app.admin.api import require_token
from app.archive import jobs
from app.db import DatabaseUnavailable
from app.errors import error_response

bp = Blueprint("admin_archive", __name__, url_prefix="/admin")
bp.before_request(require_token)
bp.before_request(http_input.check_request)

INT64_MAX = 2**63 - 1


class RetryBody(Schema):
    class Meta:
        unknown = RAISE

    attachment_id = fields.Integer(
        strict=True, allow_none=True, load_default=None, validate=validate.Range(0, INT64_MAX)
    )


@bp.post("/messages/<int:note_id>/attachments/retry")
def retry_attachments(note_id: int) -> Any:
    raw = http_input.parsed_json() if request.get_data() else {}
    if not isinstance(raw, dict):
        return error_response(400, "bad_request", "the body must be a JSON object (or empty)")
    try:
        body = RetryBody().load(raw)
    except ValidationError as exc:
        return error_response(422, "invalid", exc.messages)
    if note_id > INT64_MAX:
        return error_response(404, "not_found", f"no message {note_id}")
    try:
        ids = jobs.retry_attachments(note_id, body["attachment_id"])
    except LookupError:
        return error_response(404, "not_found", f"no message {note_id}")
    except DatabaseUnavailable:
        return error_response(503, "database_unavailable", "the database does not answer; try again")
    if not ids:
        return error_response(409, "nothing_to_retry", f"message {note_id} has no unavailable attachment")
    response = jsonify(note_id=note_id, attachments=ids, status="queued")
    response.status_code = 202
    return response
