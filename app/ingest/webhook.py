"""`POST /webhooks/chatwoot`: authenticate, parse, record durably, enqueue, answer.

A fixed pipeline, each step with its own answer (design.md's HTTP contract):
415 not JSON content -> 413 too large -> 401 not from our Chatwoot (the signature is checked as
the body streams in, before anything is parsed) -> 400 not a JSON object -> 422 schema errors
-> 200 ignored (not a message, another inbox) -> one INSERT and the archive job -> 200 accepted /
duplicate. PostgreSQL down: the delivery is spooled (200), verified first when the account's
settings are known to this process, else kept with its headers and verified at replay; 503
only when the spool cannot be written either. Nothing slow happens here: no GCS, Chatwoot or
OpenAI call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Any

from flask import Blueprint, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response

from app import context, metrics
from app.chatwoot import accounts, payloads, schemas, signatures
from app.chatwoot.accounts import Registry
from app.config import Settings
from app.db import DatabaseUnavailable
from app.ingest import audit, spool
from app.ingest import pipeline as ingest

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

PATH = "/webhooks/chatwoot"
READ_CHUNK = 64 * 1024
"""Bytes read from the request stream at a time."""
IN_MEMORY_BYTES = 1024 * 1024
"""A body is kept in memory up to this size while it streams in, then in a temporary file: a
delivery that fails authentication never costs more memory than this."""
MAX_DELIVERY_ID_LENGTH = 128
HELP = {
    "signature": signatures.SIGNING_HELP,
    "content_type": "see docs/ingestion.md, 'The pipeline'",
    "size": "see docs/ingestion.md, 'The pipeline' (MAX_WEBHOOK_BYTES)",
}
_ACCOUNT_IN_PREFIX = re.compile(rb'"account"\s*:\s*\{[^{}]{0,400}?"id"\s*:\s*([0-9]{1,10})\b')
"""Chatwoot's message payloads name their account first (`Message#webhook_data`)."""


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


def _error(status: int, outcome: str, code: str, detail: Any, help: str = "", **log_fields: Any) -> _Answer:
    if help and isinstance(detail, str):
        detail = f"{detail} ({help})"
    return _Answer(status, {"error": code, "detail": detail}, outcome, log_fields)


def _unauthorized(reason: str, **log_fields: Any) -> _Answer:
    return _error(401, "unauthorized", "unauthorized", reason, HELP["signature"], **log_fields)


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
    trace = audit.Trace()
    try:
        # Chatwoot waits 5 s and never retries: a database that is slow or hung gets a bounded
        # share of that (timeouts raise DatabaseUnavailable, and the delivery is spooled).
        with context.db().budget(context.settings().webhook_db_timeout):
            answer = _handle(request, request_id, delivery_id, trace)
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
    audit.record(
        trace, request_id, delivery_id, answer.status, answer.outcome, elapsed, answer.body, answer.log
    )
    return response


@cache
def _outcomes(outcome: str) -> Any:
    """The counter of one outcome (labels() takes a lock and a lookup on every call)."""
    return metrics.WEBHOOKS.labels(outcome)


@cache
def _latency() -> Any:
    return metrics.REQUEST_LATENCY.labels("webhook")


@dataclass
class _Credentials:
    """What the request presents to prove it comes from our Chatwoot."""

    signature: str
    timestamp: str
    url_token: str | None

    @property
    def signed(self) -> bool:
        return bool(self.signature or self.timestamp)


def _handle(request: WerkzeugRequest, request_id: str, delivery_id: str, trace: audit.Trace) -> _Answer:
    settings = context.settings()
    if request.mimetype != "application/json":
        return _error(
            415,
            "unsupported_media_type",
            "unsupported_media_type",
            "Content-Type must be application/json",
            HELP["content_type"],
        )
    limit = settings.max_webhook_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        return _too_large(limit)
    creds = _Credentials(
        signature=request.headers.get(signatures.SIGNATURE_HEADER, ""),
        timestamp=request.headers.get(signatures.TIMESTAMP_HEADER, ""),
        url_token=request.args.get("token"),
    )

    # Refusals that need no body.
    refused = _refuse_early(creds, settings)
    if refused is not None:
        return refused
    try:
        registry: Registry | None = accounts.registry()
    except DatabaseUnavailable:
        registry = None  # this process has never read the accounts: verified at replay
    if (
        not creds.signed
        and creds.url_token is not None
        and registry is not None
        and not registry.url_token_known(creds.url_token)
    ):
        return _unauthorized("wrong URL token", auth="url_token")

    try:
        read = _read_body(request, limit, creds, registry, settings.webhook_body_timeout, trace=trace)
    except _BodyTooLarge:
        return _too_large(limit)
    except ClientDisconnected:
        return _error(400, "bad_request", "bad_request", "the body ended before its Content-Length")
    except _BodyTimeout:
        return _error(
            408,
            "timeout",
            "request_timeout",
            f"the body did not arrive within {settings.webhook_body_timeout} s",
        )
    if read.failed:
        return _unauthorized("signature does not match", auth="signature")
    body = read.body

    payload = _parse(body)
    if payload is _NOT_JSON:
        return _error(400, "bad_request", "bad_request", "the body is not valid JSON")
    if not isinstance(payload, dict):
        return _error(400, "bad_request", "bad_request", "the body must be a JSON object")
    claimed = payloads.account_id(payload)

    if registry is None:
        return _unverified(payload, body, creds, claimed, request_id, delivery_id, settings)
    auth = _authenticate(
        read=read, payload=payload, claimed=claimed, creds=creds, registry=registry, settings=settings
    )
    if not auth.ok:
        return _unauthorized(auth.reason, auth=auth.method, account_id=claimed)
    return _accept(payload, body, registry, auth.method, claimed, request_id, delivery_id)


def _too_large(limit: int) -> _Answer:
    return _error(
        413, "too_large", "payload_too_large", f"the body is larger than {limit} bytes", HELP["size"]
    )


def _refuse_early(creds: _Credentials, settings: Settings) -> _Answer | None:
    if creds.signed:
        if not creds.signature:
            return _unauthorized(f"missing {signatures.SIGNATURE_HEADER}", auth="signature")
        if not creds.timestamp:
            return _unauthorized(f"missing {signatures.TIMESTAMP_HEADER}", auth="signature")
        problem = signatures.timestamp_problem(creds.timestamp, settings.webhook_timestamp_tolerance)
        if problem:
            return _unauthorized(problem, auth="signature")
        return None
    if creds.url_token is None and not settings.allow_unsigned_webhooks:
        missing = f"missing {signatures.SIGNATURE_HEADER} and {signatures.TIMESTAMP_HEADER}"
        if not (settings.chatwoot_webhook_secret or settings.webhook_url_token):
            return _unauthorized(f"{missing}: no webhook secret or URL token is configured here", auth="none")
        return _unauthorized(
            f"{missing}: each delivery must be signed with the account's webhook secret (or, for "
            "Chatwoot older than 4.12, the webhook URL must carry ?token=)",
            auth="none",
        )
    return None


# ---------------------------------------------------------------------------------------------
# the body: read with a deadline, verified as it streams in


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


@dataclass
class _Read:
    body: bytes
    """Empty when a signature was checked and failed (the body is dropped unparsed)."""
    verified: bool
    """True when the body was verified as it streamed in (the accounts' settings are known and
    hold secrets for it); False when that is left to `_authenticate` or to the replay."""
    sniffed: int | None
    """The account id read from the body's first bytes (its secrets were the candidates)."""
    owners: list[Any] = field(default_factory=list)
    """Owners of the secrets that matched (account ids, or accounts.ENV)."""
    failed: bool = False


def _read_body(
    request: WerkzeugRequest,
    limit: int,
    creds: _Credentials,
    registry: Registry | None,
    timeout: float,
    *,
    trace: audit.Trace,
) -> _Read:
    """The body (at most `limit` bytes), read within `timeout` seconds. A signed body is fed to
    the HMACs of its candidate secrets as it arrives, and held in a temporary file beyond
    IN_MEMORY_BYTES: one that fails verification is dropped without being parsed."""
    stream = request.stream
    with _deadline(timeout):
        first = stream.read(min(READ_CHUNK, limit + 1))
        verifier: signatures.StreamVerifier | None = None
        sniffed: int | None = None
        if creds.signed and registry is not None:
            found = _ACCOUNT_IN_PREFIX.search(first)
            sniffed = int(found.group(1)) if found else None
            verifier = signatures.StreamVerifier(registry.candidates(sniffed), creds.timestamp) or None
        with _Buffer() as buffer:
            size = 0
            chunk = first
            while chunk:
                size += len(chunk)
                if size > limit:
                    raise _BodyTooLarge
                if verifier is not None:
                    verifier.update(chunk)
                trace.update(chunk)
                buffer.write(chunk)
                chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
            trace.done()
            if verifier is None:
                return _Read(buffer.value(), False, sniffed)
            owners = verifier.matched(creds.signature)
            if not owners and sniffed is not None and size <= IN_MEMORY_BYTES and registry is not None:
                # The first account object was not the body's own: try every secret held.
                retry = signatures.StreamVerifier(registry.candidates(None), creds.timestamp)
                retry.update(buffer.value())
                owners = retry.matched(creds.signature)
                sniffed = None
            if not owners:
                return _Read(b"", True, sniffed, failed=True)
            return _Read(buffer.value(), True, sniffed, owners)


class _Buffer:
    """Bytes in memory up to IN_MEMORY_BYTES, then in a temporary file."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None

    def __enter__(self) -> _Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, chunk: bytes) -> None:
        if self._file is None and self._size + len(chunk) > IN_MEMORY_BYTES:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
            for kept in self._chunks:
                self._file.write(kept)
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)
        self._size += len(chunk)

    def value(self) -> bytes:
        if self._file is None:
            return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._file.seek(0)
        return self._file.read()


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _BodyTimeout when the block runs longer than `seconds` (a client that sends its
    body a byte at a time holds a worker no longer). Sync workers serve requests in the main
    thread, where a timer signal can interrupt a blocking read; elsewhere there is no deadline."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise _BodyTimeout

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# authentication


def _authenticate(
    *,
    read: _Read,
    payload: dict[str, Any],
    claimed: int | None,
    creds: _Credentials,
    registry: Registry,
    settings: Settings,
) -> signatures.AuthResult:
    """Whether the delivery's credentials belong to the account its body names (or, for an event
    naming no account, to any account we hold settings for)."""
    if creds.signed:
        owners = read.owners
        if not read.verified or (read.sniffed is not None and read.sniffed != claimed):
            verifier = signatures.StreamVerifier(registry.candidates(claimed), creds.timestamp)
            if verifier:
                verifier.update(read.body)
                owners = verifier.matched(creds.signature)
            elif settings.allow_unsigned_webhooks:
                return signatures.AuthResult(True, "unsigned")
            else:
                return signatures.AuthResult(
                    False, "signature", "no webhook secret is configured for this account"
                )
        if registry.signed_by(claimed, owners):
            return signatures.AuthResult(True, "signature")
        return signatures.AuthResult(False, "signature", "signature does not match")
    if creds.url_token is not None:
        if registry.url_token_ok(claimed, creds.url_token):
            return signatures.AuthResult(True, "url_token")
        return signatures.AuthResult(False, "url_token", "wrong URL token")
    if settings.allow_unsigned_webhooks:
        return signatures.AuthResult(True, "unsigned")
    return signatures.AuthResult(False, "none", "no webhook secret or URL token is configured")


# ---------------------------------------------------------------------------------------------
# parsing, recording


def _accept(  # noqa: PLR0917 (one delivery's parts)
    payload: dict[str, Any],
    body: bytes,
    registry: Registry,
    method: str,
    claimed: int | None,
    request_id: str,
    delivery_id: str,
) -> _Answer:
    context_fields: dict[str, Any] = {"auth": method, "event": str(payload.get("event"))[:100]}
    try:
        schemas.load(payload, raw=body)
    except schemas.InvalidPayload as exc:
        return _error(
            422, "invalid", "invalid_payload", exc.errors, fields=sorted(exc.errors)[:20], **context_fields
        )
    # Chatwoot's integer id is logged as a number: an id of eight digits or more is no phone
    # number for the log's redaction to mask. A hand-made string id is redacted like any text.
    raw_id = payload.get("id")
    logged_id = raw_id if type(raw_id) is int else payloads.message_id(payload)
    context_fields.update(account_id=claimed, message_id=logged_id)

    account = registry.config(claimed) if claimed is not None else None
    prepared = ingest.prepare(payload, account=account, validated=True, raw=body)
    if isinstance(prepared, ingest.IngestResult):
        return _Answer(200, {"status": "ignored", "reason": prepared.reason}, "ignored", context_fields)

    try:
        result = ingest.record(prepared)
    except DatabaseUnavailable:
        return _spool(prepared, request_id, delivery_id, context_fields)
    if result.status == "ignored":  # a contact whose user was erased: stored nowhere
        return _Answer(200, {"status": "ignored", "reason": result.reason}, "erased", context_fields)
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
        return _spool_unavailable(exc, log_fields)
    return _Answer(200, {"status": "accepted", "id": None, "spooled": True}, "spooled", log_fields)


def _spool_unavailable(exc: Exception, log_fields: dict[str, Any]) -> _Answer:
    return _error(
        503,
        "unavailable",
        "unavailable",
        "the message could not be stored; PostgreSQL and the local spool are unavailable",
        spool_error=str(exc),
        **log_fields,
    )


def _unverified(  # noqa: PLR0917 (one delivery's parts)
    payload: dict[str, Any],
    body: bytes,
    creds: _Credentials,
    claimed: int | None,
    request_id: str,
    delivery_id: str,
    settings: Settings,
) -> _Answer:
    """PostgreSQL is down and this process has never read the accounts' settings: the delivery
    cannot be verified now. It is spooled as received, with its credentials, and verified
    against its own account's secrets when replayed (dropped and counted if it fails); never
    accepted with another account's secret, never answered 503 while the spool works."""
    log_fields: dict[str, Any] = {"auth": "deferred", "account_id": claimed}
    try:
        schemas.load(payload, raw=body)
    except schemas.InvalidPayload as exc:
        return _error(
            422, "invalid", "invalid_payload", exc.errors, fields=sorted(exc.errors)[:20], **log_fields
        )
    if payload.get("event") not in payloads.MESSAGE_EVENTS:
        return _Answer(200, {"status": "ignored", "reason": "not a message"}, "ignored", log_fields)
    try:
        spool.append_unverified(
            body,
            signature=creds.signature,
            timestamp=creds.timestamp,
            url_token=creds.url_token,
            unsigned_allowed=settings.allow_unsigned_webhooks,
            request_id=request_id,
            delivery_id=delivery_id,
        )
    except spool.SpoolUnavailable as exc:
        return _spool_unavailable(exc, log_fields)
    return _Answer(200, {"status": "accepted", "id": None, "spooled": True}, "spooled", log_fields)


def _parse(body: bytes) -> Any:
    try:
        return payloads.parse_body(body)
    except ValueError:
        return _NOT_JSON
