"""The one outbox: every message to Chatwoot is recorded under a unique key, then sent by a job.

The key (for example `order:12:ready`) makes a second record of the same message a no-op, so a
job that runs twice, or two deliveries of one webhook, never produce two messages. The key also
travels in the message's `content_attributes`, which Chatwoot keeps: when a send's outcome is
unknown, the job finds the message in the conversation instead of sending it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from psycopg2.extras import Json
from rq import Retry

from app import context
from app.chatwoot import client as chatwoot
from app.db import queries
from app.jobs import SEND_OUTBOX, SEND_RETRY_INTERVALS, QueueUnavailable, enqueue
from app.metrics import NOTICES

log = logging.getLogger(__name__)

RETRY_INTERVALS: tuple[int, ...] = SEND_RETRY_INTERVALS
"""Seconds between send attempts after a 429, a connection failure or an unknown outcome."""

REPLY_WINDOW_SECONDS = 24 * 3600
"""WhatsApp accepts free-form messages only this long after the contact's last message."""

FINAL_STATUSES = frozenset({"sent", "failed", "not_sent", "no_template"})
"""`no_template`: only a WhatsApp template could have gone out (window closed), and none is set."""


def prepare(dedupe_key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as it will be posted: validated, with our key in `content_attributes`."""
    if not dedupe_key or len(dedupe_key) > 200:
        raise ValueError("dedupe_key: 1 to 200 characters")
    clean = chatwoot.validate_body(body)
    attributes = dict(clean.get("content_attributes") or {})
    attributes[chatwoot.OUTBOX_KEY_ATTRIBUTE] = dedupe_key
    clean["content_attributes"] = attributes
    return clean


def _params(  # noqa: PLR0917
    account_id: int,
    conversation_id: int,
    kind: str,
    dedupe_key: str,
    body: Mapping[str, Any],
    order_id: int | None,
    template_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "dedupe_key": dedupe_key,
        "account_id": int(account_id),
        "conversation_id": int(conversation_id),
        "kind": kind,
        "order_id": order_id,
        "body": Json(prepare(dedupe_key, body)),
        "template_values": Json(dict(template_values)) if template_values is not None else None,
    }


def record(  # noqa: PLR0917
    account_id: int,
    conversation_id: int,
    kind: str,
    dedupe_key: str,
    body: Mapping[str, Any],
    order_id: int | None = None,
    template_values: Mapping[str, Any] | None = None,
) -> int | None:
    """Record a message to send; None when a message with this key was already recorded.

    `template_values` (the values of app.chatwoot.templates.VALUES, and the user's `language`)
    let the send job turn the notice into the account's WhatsApp template when the 24-hour
    window is closed."""
    row = context.db().fetch_one(
        "outbox.message_insert",
        _params(account_id, conversation_id, kind, dedupe_key, body, order_id, template_values),
    )
    return int(row["id"]) if row else None


def record_in(  # noqa: PLR0917
    cur: Any,
    account_id: int,
    conversation_id: int,
    kind: str,
    dedupe_key: str,
    body: Mapping[str, Any],
    order_id: int | None = None,
) -> int:
    """Record inside the caller's transaction; returns the id for the key (new or earlier)."""
    cur.execute(
        queries["outbox.message_insert"],
        _params(account_id, conversation_id, kind, dedupe_key, body, order_id),
    )
    row = cur.fetchone()
    if row is None:
        cur.execute(queries["outbox.get_by_key"], {"dedupe_key": dedupe_key})
        row = cur.fetchone()
    return int(row["id"])


def record_and_enqueue(  # noqa: PLR0917
    account_id: int,
    conversation_id: int,
    kind: str,
    dedupe_key: str,
    body: Mapping[str, Any],
    order_id: int | None = None,
    template_values: Mapping[str, Any] | None = None,
) -> int:
    """Record, then enqueue its send job; returns the outbox id for the key.

    When the key was recorded before and its message is not sent yet (a crash between the
    two steps), the job is enqueued again; enqueueing is a no-op while the job is queued.
    """
    new_id = record(account_id, conversation_id, kind, dedupe_key, body, order_id, template_values)
    if new_id is not None:
        enqueue_send(new_id)
        return new_id
    row = context.db().fetch_one("outbox.get_by_key", {"dedupe_key": dedupe_key})
    assert row is not None
    if row["status"] not in FINAL_STATUSES:
        enqueue_send(int(row["id"]))
    return int(row["id"])


def retry_policy() -> Any:

    return Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS))


def enqueue_send(outbox_id: int) -> bool:
    """Enqueue the send job (with its retry policy); False when Redis is down (the row waits)."""

    try:
        return enqueue(SEND_OUTBOX, int(outbox_id), retry=retry_policy())
    except QueueUnavailable as exc:
        log.warning(
            "send job not enqueued; the row waits for the sweep",
            extra={"outbox_id": outbox_id, "error": str(exc)},
        )
        return False


def get(outbox_id: int) -> dict[str, Any] | None:
    return context.db().fetch_one("outbox.message_get", {"id": outbox_id})


def get_by_key(dedupe_key: str) -> dict[str, Any] | None:
    return context.db().fetch_one("outbox.get_by_key", {"dedupe_key": dedupe_key})


def use_template(row: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any] | None:
    """Record the template version of a notice as the body to send (recorded before it is sent);
    the row afterwards, or None when it is no longer waiting to be sent."""
    return context.db().fetch_one(
        "outbox.use_template", {"id": row["id"], "body": Json(prepare(str(row["dedupe_key"]), body))}
    )


def mark_refused(cur: Any, row: Mapping[str, Any], message_id: str | None, error: str) -> bool:
    """The channel refused a message Chatwoot had taken (WhatsApp's 131047, 131026...): `failed`
    with the channel's error, in the caller's transaction. False when already recorded."""
    cur.execute(
        queries["outbox.mark_refused"],
        {"id": row["id"], "message_id": message_id, "reason": f"refused by the channel: {error}"[:500]},
    )
    refused = cur.fetchone() is not None
    if refused:
        NOTICES.labels(kind=row["kind"], result="refused").inc()
        log.warning(
            "message refused by the channel",
            extra={"outbox_id": row["id"], "kind": row["kind"], "reason": error[:200]},
        )
    return refused
