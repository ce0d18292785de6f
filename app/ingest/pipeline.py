"""The one deduplicated way a Chatwoot message enters the archive.

The webhook, the spool replay and the Chatwoot backfill all call `ingest(payload)`: validate,
filter, strip secrets, then one `INSERT ... ON CONFLICT DO NOTHING` (one round trip) and the
archive job. The same statement refuses a message from a contact whose user was erased
(app/users/tombstones.py): `ignored`, reason `contact erased`. A message seen twice gives one row and one job; a `message_updated` adds a row to
`message_updates` only when it changes what we keep; an update that arrives before its create
creates the message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from app import context, jobs
from app.chatwoot import accounts, payloads, schemas
from app.chatwoot.accounts import AccountConfig
from app.db import DatabaseUnavailable
from app.users import tombstones

log = logging.getLogger(__name__)

IGNORED_EVENTS = frozenset(
    {
        "conversation_created",
        "conversation_updated",
        "conversation_status_changed",
        "conversation_typing_on",
        "conversation_typing_off",
        "contact_created",
        "contact_updated",
        "webwidget_triggered",
        "inbox_created",
        "inbox_updated",
    }
)
"""Chatwoot events that carry no message: answered 200 "ignored", by design."""

LARGE_PAYLOAD_BYTES = 256 * 1024
"""A payload larger than this is stored without Chatwoot's copy of the message in
`conversation.messages` (the archived JSON keeps it: see `Prepared.archive_json`)."""

RECORD_ATTEMPTS = 2
"""Statements at most per message: a second one only when a concurrent request committed the
same message while the first ran (see ingest.sql)."""


@dataclass(frozen=True)
class IngestResult:
    status: str
    """`accepted` (a new message, or a new version of one), `duplicate` or `ignored`."""
    note_id: int | None = None
    update_id: int | None = None
    """The message_updates row, when this delivery was a new version of a stored message."""
    created: bool = False
    """True when the meeting_notes row is new."""
    reason: str = ""
    """Why it was ignored."""
    enqueued: bool | None = None
    """Whether the archive job was queued; None when there was nothing to queue."""
    account_id: int | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A validated message, ready to be written (or spooled)."""

    source: dict[str, Any]
    """The payload as validated (it may still hold conversation.contact_inbox.pubsub_token)."""
    database_json: str
    """The JSON text PostgreSQL receives: without secrets, or, with `strip_token`, the text as
    received, from which the statement drops conversation.contact_inbox.pubsub_token."""
    strip_token: bool
    fields: payloads.Message
    event: str
    archive_json: str | None = None
    """The payload as received, secrets removed, when `database_json` left out the copy of the
    message in `conversation.messages` (large deliveries); the archive job writes this one."""

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The payload with secrets removed."""
        clean: dict[str, Any] = (
            payloads.strip_secrets(self.source) if self.strip_token else json.loads(self.database_json)
        )
        return clean

    @cached_property
    def payload_json(self) -> str:
        """The payload with secrets removed, as JSON text (what the spool keeps)."""
        if self.archive_json is not None:
            return self.archive_json
        if not self.strip_token:
            return self.database_json
        return json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"))


def prepare(
    payload: dict[str, Any],
    *,
    account: AccountConfig | None = None,
    validated: bool = False,
    raw: bytes | None = None,
) -> Prepared | IngestResult:
    """Validate and filter a payload; an IngestResult when there is nothing to store.

    Raises schemas.InvalidPayload naming each bad field. `account` saves a lookup when the
    caller has it; `validated` skips the schema when the caller has just applied it; `raw`,
    the JSON text the payload was parsed from, is stored as it is when it holds no secret but
    the pubsub token (PostgreSQL drops that), which saves a second serialisation.
    """
    if not validated:
        schemas.load(payload)
    event = payload["event"]
    if event not in payloads.MESSAGE_EVENTS:
        known = event in IGNORED_EVENTS
        return IngestResult("ignored", reason=f"{event} is not archived" if known else "unknown event")
    kind = payloads.message_type(payload)
    if kind not in payloads.ARCHIVED_MESSAGE_TYPES:
        return IngestResult("ignored", reason=f"{kind} messages are not archived")
    account_id = payloads.account_id(payload)
    assert account_id is not None  # the schema requires it
    if account is None:
        account = accounts.resolve(account_id)
    inbox = payloads.inbox_id(payload)
    if account.inbox_ids and inbox not in account.inbox_ids:
        return IngestResult(
            "ignored",
            reason="inbox not archived",
            account_id=account_id,
            message_id=payloads.message_id(payload),
        )
    text = _utf8(raw) if raw is not None and len(raw) <= LARGE_PAYLOAD_BYTES else None
    token_only = payloads.pubsub_token_only(raw, payload) if raw is not None and text is not None else None
    if text is not None and token_only is not None:
        # Nothing but (perhaps) the token to remove: fields read from the payload as parsed.
        return Prepared(
            source=payload,
            database_json=text,
            strip_token=token_only,
            fields=_message(payload),
            event=event,
        )
    clean = payloads.strip_secrets(payload)
    full = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
    conversation = clean.get("conversation")
    if len(full) > LARGE_PAYLOAD_BYTES and isinstance(conversation, dict) and "messages" in conversation:
        trimmed = {**clean, "conversation": {k: v for k, v in conversation.items() if k != "messages"}}
        return Prepared(
            source=trimmed,
            database_json=json.dumps(trimmed, ensure_ascii=False, separators=(",", ":")),
            strip_token=False,
            fields=_message(clean),
            event=event,
            archive_json=full,
        )
    return Prepared(source=clean, database_json=full, strip_token=False, fields=_message(clean), event=event)


def _utf8(raw: bytes) -> str | None:
    """The body as text when it is strict UTF-8 (it is then stored as received)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _message(payload: dict[str, Any]) -> payloads.Message:
    """The Message view of a validated payload (the schema requires account.id and id)."""
    message = payloads.Message.of(payload)
    if message.account_id is None or message.message_id is None:
        raise ValueError("a message payload needs account.id and id")
    return message


def record(prepared: Prepared, *, enqueue_jobs: bool = True) -> IngestResult:
    """Write a prepared message (deduplicated) and queue its archive job.

    Raises app.db.DatabaseUnavailable when PostgreSQL is down (the caller spools it).
    A Redis outage is not an error: the row is durable and the reconciler queues it later.
    """
    f = prepared.fields
    params = {
        "payload": prepared.database_json,
        "strip_token": prepared.strip_token,
        "account_id": f.account_id,
        "message_id": f.message_id,
        "conversation_id": f.conversation_id,
        "inbox_id": f.inbox_id,
        "contact_id": f.contact.id,
        "contact_phone": f.contact.phone,
        "contact_identifier": f.contact.identifier,
        "source_type": f.source_type,
        "message_type": f.message_type,
        "content_type": f.content_type,
        "content": f.content,
        "is_private": f.is_private,
        "sender_type": f.sender_type,
        "message_created_at": f.message_created_at,
        "fingerprint": f.content_fingerprint,
        "transcription_status": f.transcription_status,
        "classification_status": f.classification_status,
        "archive_payload": prepared.archive_json,
        "erased_keys": tombstones.contact_keys(f.contact),
    }
    row: dict[str, Any] = {}
    for _ in range(RECORD_ATTEMPTS):
        try:
            row = _run_record(params)
        except DatabaseUnavailable:
            # A connection dropped by a PostgreSQL restart fails once; a new one may work. When
            # PostgreSQL is down, connecting is refused at once and the caller spools.
            row = _run_record(params)
        if row.get("note_id") or row.get("existing_id") or row.get("erased"):
            break
    else:
        raise RuntimeError("message neither inserted nor found")
    if row.get("erased"):
        # The contact's user was erased and has not consented again: nothing is stored.
        return IngestResult(
            "ignored", reason=tombstones.ERASED_REASON, account_id=f.account_id, message_id=f.message_id
        )
    if row.get("note_id"):
        note_id = int(row["note_id"])
        enqueued = _enqueue(jobs.ARCHIVE_MESSAGE, note_id) if enqueue_jobs else None
        return IngestResult(
            "accepted",
            note_id=note_id,
            created=True,
            enqueued=enqueued,
            account_id=f.account_id,
            message_id=f.message_id,
        )
    note_id = int(row["existing_id"])
    if row.get("update_id"):
        update_id = int(row["update_id"])
        enqueued = _enqueue(jobs.ARCHIVE_UPDATE, update_id) if enqueue_jobs else None
        return IngestResult(
            "accepted",
            note_id=note_id,
            update_id=update_id,
            enqueued=enqueued,
            account_id=f.account_id,
            message_id=f.message_id,
        )
    return IngestResult("duplicate", note_id=note_id, account_id=f.account_id, message_id=f.message_id)


def ingest(payload: dict[str, Any], *, enqueue_jobs: bool = True) -> IngestResult:
    """Validate, filter and store one Chatwoot payload as it arrives on the webhook.

    Raises schemas.InvalidPayload for a payload that does not match the schema, and
    app.db.DatabaseUnavailable when PostgreSQL is down.
    """
    prepared = prepare(payload)
    if isinstance(prepared, IngestResult):
        return prepared
    return record(prepared, enqueue_jobs=enqueue_jobs)


def _run_record(params: dict[str, Any]) -> dict[str, Any]:
    """The ingest statement, prepared once per connection, in one round trip."""
    return context.db().run_prepared("ingest.record", params) or {}


def _enqueue(spec: jobs.JobSpec, row_id: int) -> bool:
    try:
        jobs.enqueue(spec, row_id)
    except jobs.QueueUnavailable as exc:
        log.warning(
            "job not queued: Redis unavailable; the reconciler queues it later",
            extra={"job": spec.id_prefix, "row_id": row_id, "error_type": str(exc)},
        )
        return False
    return True
