"""`POST /webhooks/chatwoot`: verify, parse, record durably, enqueue, answer.

A fixed pipeline, each step with its own answer (design.md's HTTP contract):
415 not JSON content -> 413 too large -> 401 not from our Chatwoot -> 400 not a JSON object
-> 422 schema errors -> 200 ignored (not a message, another inbox) -> one INSERT and the
archive job -> 200 accepted / duplicate. PostgreSQL down: the delivery is spooled (200);
503 only when the spool cannot be written either. Nothing slow happens here: no GCS,
Chatwoot or OpenAI call.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Blueprint, request
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response

from app import context, metrics
from app.chatwoot import accounts, payloads, schemas, signatures
from app.chatwoot.accounts import AccountConfig
from app.config import Settings
from app.db import DatabaseUnavailable
from app.ingest import pipeline as ingest
from app.ingest import spool

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

PATH = "/webhooks/chatwoot"
READ_CHUNK = 64 * 1024
"""Bytes read from the request stream at a time."""
MAX_DELIVERY_ID_LENGTH = 128


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    outcome: str
    """The metrics label (see app.metrics.WEBHOOKS)."""
    log: dict[str, Any] = field(default_factory=dict)


class _NotJson:
    """The body did not parse as JSON."""


_NOT_JSON = _NotJson()


def _error(status: int, outcome: str, code: str, detail: Any, **log_fields: Any) -> _Answer:
    return _Answer(status, {"error": code, "detail": detail}, outcome, log_fields)


@bp.post(PATH)
def chatwoot_webhook() -> Response:
    """The route as Flask sees it; deliveries normally arrive through WebhookRoute, ahead of it."""
    return handle(request)


class WebhookRoute:
    """WSGI middleware: `POST /webhooks/chatwoot` goes straight to `handle()`, every other
    request to Flask. A delivery needs nothing of Flask's request machinery (sessions, URL
    matching, the app-wide hooks): skipping it saves about a tenth of the server's CPU per
    delivery. Other methods on the same path still reach Flask (405, OPTIONS)."""

    def __init__(self, flask_wsgi: Any):
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") == PATH:
            # No body size limit on the request object: handle() enforces the webhook's own.
            return handle(WerkzeugRequest(environ))(environ, start_response)
        return self.flask_wsgi(environ, start_response)


def handle(request: WerkzeugRequest) -> Response:
    started = time.perf_counter()
    request_id = secrets.token_hex(16)
    delivery_id = request.headers.get(signatures.DELIVERY_HEADER, "")[:MAX_DELIVERY_ID_LENGTH]
    try:
        # Chatwoot waits 5 s and never retries: a database that is slow or hung gets a bounded
        # share of that (timeouts raise DatabaseUnavailable, and the delivery is spooled).
        with context.db().budget(context.settings().webhook_db_timeout):
            answer = _handle(request, request_id, delivery_id)
    except Exception as exc:  # the sender gets a JSON 500, the log the error type (no traceback)
        answer = _error(
            500, "error", "internal_error", "the delivery could not be handled", error_type=type(exc).__name__
        )
    response = Response(
        json.dumps(answer.body, separators=(",", ":")),
        status=answer.status,
        mimetype="application/json",
        headers={"X-Request-Id": request_id},
    )
    elapsed = time.perf_counter() - started
    _outcomes(answer.outcome).inc()
    _latency().observe(elapsed)
    level = (
        logging.INFO if answer.status < 400 else logging.ERROR if answer.status >= 500 else logging.WARNING
    )
    if answer.outcome == "spooled":
        level = logging.WARNING
    log.log(
        level,
        "webhook",
        extra={
            "path": PATH,
            "request_id": request_id,
            "delivery_id": delivery_id,
            "outcome": answer.outcome,
            "http_status": answer.status,
            "duration_ms": round(elapsed * 1000, 2),
            **answer.log,
        },
    )
    return response


@cache
def _outcomes(outcome: str) -> Any:
    """The counter of one outcome (labels() takes a lock and a lookup on every call)."""
    return metrics.WEBHOOKS.labels(outcome)


@cache
def _latency() -> Any:
    return metrics.REQUEST_LATENCY.labels("webhook")


def _handle(request: WerkzeugRequest, request_id: str, delivery_id: str) -> _Answer:
    settings = context.settings()
    if request.mimetype != "application/json":
        return _error(
            415, "unsupported_media_type", "unsupported_media_type", "Content-Type must be application/json"
        )
    limit = settings.max_webhook_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        return _error(413, "too_large", "payload_too_large", f"the body is larger than {limit} bytes")
    body = _read_body(request, limit)
    if body is None:
        return _error(413, "too_large", "payload_too_large", f"the body is larger than {limit} bytes")

    payload = _parse(body)
    # Only the account id is read before verification: it chooses which secret to check with.
    claimed = payloads.account_id(payload) if isinstance(payload, dict) else None
    account, trusted = _account_for(claimed, settings)
    auth = signatures.authenticate(
        body,
        signature=request.headers.get(signatures.SIGNATURE_HEADER, ""),
        timestamp=request.headers.get(signatures.TIMESTAMP_HEADER, ""),
        url_token=request.args.get("token"),
        secrets=account.webhook_secrets,
        expected_url_token=settings.webhook_url_token,
        tolerance=settings.webhook_timestamp_tolerance,
        allow_unsigned=settings.allow_unsigned_webhooks,
    )
    if not auth.ok:
        if not trusted:
            return _error(
                503,
                "unavailable",
                "unavailable",
                "the account's settings cannot be read right now",
                reason=auth.reason,
                account_id=claimed,
            )
        return _error(401, "unauthorized", "unauthorized", auth.reason, auth=auth.method, account_id=claimed)
    if trusted and account.account_id:
        _last_known[account.account_id] = account  # only accounts that really deliver are kept

    if payload is _NOT_JSON:
        return _error(400, "bad_request", "bad_request", "the body is not valid JSON", auth=auth.method)
    if not isinstance(payload, dict):
        return _error(400, "bad_request", "bad_request", "the body must be a JSON object", auth=auth.method)
    context_fields: dict[str, Any] = {"auth": auth.method, "event": str(payload.get("event"))[:100]}
    try:
        schemas.load(payload)
    except schemas.InvalidPayload as exc:
        return _error(
            422, "invalid", "invalid_payload", exc.errors, fields=sorted(exc.errors), **context_fields
        )
    # Chatwoot's integer id is logged as a number: an id of eight digits or more is no phone
    # number for the log's redaction to mask. A hand-made string id is redacted like any text.
    raw_id = payload.get("id")
    logged_id = raw_id if type(raw_id) is int else payloads.message_id(payload)
    context_fields.update(account_id=claimed, message_id=logged_id)

    try:
        prepared = ingest.prepare(
            payload, account=account if claimed == account.account_id else None, validated=True, raw=body
        )
    except RecursionError:
        return _error(400, "bad_request", "bad_request", "the body is nested too deeply", **context_fields)
    if isinstance(prepared, ingest.IngestResult):
        return _Answer(200, {"status": "ignored", "reason": prepared.reason}, "ignored", context_fields)

    try:
        result = ingest.record(prepared)
    except DatabaseUnavailable:
        return _spool(prepared, request_id, delivery_id, context_fields)
    context_fields["note_id"] = result.note_id
    if result.status == "duplicate":
        return _Answer(200, {"status": "duplicate", "id": result.note_id}, "duplicate", context_fields)
    out: dict[str, Any] = {"status": "accepted", "id": result.note_id}
    if result.update_id is not None:
        out["update_id"] = result.update_id
    context_fields.update(update_id=result.update_id, enqueued=result.enqueued)
    return _Answer(200, out, "update" if result.update_id else "accepted", context_fields)


def _spool(
    prepared: ingest.Prepared, request_id: str, delivery_id: str, log_fields: dict[str, Any]
) -> _Answer:
    try:
        spool.append(prepared, request_id=request_id, delivery_id=delivery_id)
    except spool.SpoolUnavailable as exc:
        return _error(
            503,
            "unavailable",
            "unavailable",
            "the message could not be stored; PostgreSQL and the local spool are unavailable",
            spool_error=str(exc),
            **log_fields,
        )
    return _Answer(200, {"status": "accepted", "id": None, "spooled": True}, "spooled", log_fields)


def _read_body(request: WerkzeugRequest, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (reads at most `limit` + 1 bytes)."""
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number too large for a float")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
"""Built once: json.loads with hooks builds a decoder for every call."""


def _parse(body: bytes) -> Any:
    try:
        # What json.loads does with bytes: detect UTF-8/16/32 (with or without a BOM), decode.
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):
        return _NOT_JSON


_last_known: dict[int, AccountConfig] = {}
"""The settings of each account that delivered successfully, as last read: used while
PostgreSQL is down."""


def _account_for(account_id: int | None, settings: Settings) -> tuple[AccountConfig, bool]:
    """The settings of the account a delivery claims (else the default account's), and whether
    they could be read (False: PostgreSQL is down and this process has never seen the account)."""
    lookup = account_id if account_id is not None else settings.chatwoot_account_id
    if lookup is None:
        return accounts.env_config(0, settings), True
    try:
        return accounts.resolve(lookup), True
    except DatabaseUnavailable:
        known = _last_known.get(lookup)
        return (known, True) if known else (accounts.env_config(lookup, settings), False)
