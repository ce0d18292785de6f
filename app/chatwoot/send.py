"""Send one outbox message to Chatwoot, once.

Before a request that may already have reached Chatwoot is repeated (a timeout, a 5xx, a worker
that died mid-request), we look for ours: first among the messages Chatwoot's webhooks brought
back (each of ours carries its outbox key), then in the conversation's recent messages listed
with the read token. A read Chatwoot refuses (an agent bot's token may not list) never fails the
message: the echo is waited for a while, then the message is sent again.

Outside WhatsApp's 24-hour window a notice recorded with template values goes out as the
account's approved WhatsApp template; with none configured it is recorded `no_template`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import get_current_job

from app import context
from app.chatwoot import accounts, outbox, reads
from app.chatwoot import client as chatwoot
from app.metrics import JOBS, NOTICES

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(seconds=5)
"""Allowance between our clock and Chatwoot's when matching a message by its creation time."""
ECHO_WAIT = timedelta(seconds=60)
"""How long after an attempt of unknown outcome its webhook echo is waited for, when Chatwoot
refuses to list the conversation; then it is taken as never created and sent again."""
NO_TEMPLATE = (
    "no WhatsApp template is configured for this notice (WHATSAPP_READY_TEMPLATE_NAME, or "
    "`flask accounts set <account> --ready-template`)"
)


class SendLater(Exception):
    """The message could not be sent now; RQ runs the job again after a delay."""


def send_outbox(outbox_id: int) -> str:
    """Send the message; returns the row's status afterwards."""
    row = outbox.get(outbox_id)
    if row is None:
        log.warning("outbox row not found", extra={"outbox_id": outbox_id})
        return "missing"
    if row["status"] in outbox.FINAL_STATUSES:
        return str(row["status"])
    body: dict[str, Any] = dict(row["body"])
    account_id = int(row["chatwoot_account_id"])
    conversation_id = int(row["chatwoot_conversation_id"])

    try:
        client = chatwoot.client_for(account_id)
    except chatwoot.NotConfigured as exc:
        return _final(row, "not_sent", exc.reason)

    if row["status"] == "sending":
        # An earlier attempt may have reached Chatwoot: look before sending again.
        found, wait = _earlier_attempt(client, row)
        if found is not None:
            log.info("earlier attempt found", extra={"outbox_id": outbox_id})
            return _sent(row, found)
        if wait and (wait.transient or _retries_left() > 0):
            return _later(row, wait.reason, unknown=True)
        if wait:
            # Chatwoot will not list the conversation and no echo came: a refused read never
            # fails the message, so it is sent again.
            log.info("no echo of an earlier attempt; sending again", extra={"outbox_id": outbox_id})

    if not body.get("private") and "template_params" not in body:
        closed = _reply_window_closed(account_id, conversation_id)
        if closed and row.get("template_values") is None:
            return _final(row, "not_sent", closed)
        if closed:
            template = accounts.resolve(account_id).ready_template
            if template is None:
                return _final(row, "no_template", f"{closed}; {NO_TEMPLATE}")
            body = chatwoot.template_body(body["content"], template.params_for(row["template_values"]))
            updated = outbox.use_template(row, body)
            if updated is None:
                return "skipped"
            body = dict(updated["body"])
            log.info(
                "notice sent as a WhatsApp template",
                extra={"outbox_id": outbox_id, "template": template.name},
            )

    # An earlier attempt not found in the conversation still counts as unknown until one succeeds.
    earlier_unknown = row["status"] == "sending"
    claimed = context.db().fetch_one("outbox.message_claim", {"id": outbox_id})
    if claimed is None:
        return "skipped"
    try:
        message = client.create_message(conversation_id, body)
    except (chatwoot.RateLimited, chatwoot.Unavailable) as exc:
        return _later(row, exc.reason, unknown=earlier_unknown)
    except chatwoot.OutcomeUnknown as exc:
        return _later(row, f"outcome unknown: {exc.reason}", unknown=True)
    except (chatwoot.Unauthorized, chatwoot.NotFound, chatwoot.BadRequest) as exc:
        return _final(row, "failed", exc.reason)
    except chatwoot.InvalidMessage as exc:
        return _final(row, "failed", f"invalid message: {exc}")
    return _sent(row, message)


@dataclass(frozen=True)
class Wait:
    """Whether an earlier attempt got through cannot be told yet."""

    reason: str
    transient: bool
    """True: Chatwoot could not be asked (retry, then give up); False: it refuses to be asked
    (wait for the echo of our message, then send again)."""


def _earlier_attempt(
    client: chatwoot.Client, row: dict[str, Any]
) -> tuple[dict[str, Any] | None, Wait | None]:
    """(our message, None) if an earlier attempt created it; (None, None) when it did not (send
    again); (None, Wait) while that cannot be told yet."""
    since = (row["first_attempt_at"] or row["created_at"]) - CLOCK_SKEW
    echo = context.db().fetch_one(
        "chatwoot.outbox_echo",
        {
            "account_id": int(row["chatwoot_account_id"]),
            "conversation_id": int(row["chatwoot_conversation_id"]),
            "since": since,
            "key": row["dedupe_key"],
        },
    )
    if echo is not None:
        return {"id": echo["chatwoot_message_id"]}, None
    refused = reads.refusal(client.account_id, client.reads_with)
    if refused is None:
        try:
            return _find_ours(client, row), None
        except chatwoot.BotTokenRefused as exc:
            reads.record(client.account_id, client.reads_with, client.read_token_source, False, exc.reason)
            refused = exc.reason
        except (chatwoot.Unauthorized, chatwoot.NotFound, chatwoot.BadRequest) as exc:
            refused = exc.reason
        except chatwoot.ChatwootError as exc:
            return None, Wait(f"checking for an earlier attempt: {exc.reason}", transient=True)
    # Chatwoot will not list the conversation: the echo of our message is the only sign.
    last = row["last_attempt_at"] or row["first_attempt_at"] or row["created_at"]
    if datetime.now(UTC) - last >= ECHO_WAIT:
        log.info(
            "no echo of an earlier attempt; sending again",
            extra={"outbox_id": row["id"], "read_refused": refused},
        )
        return None, None
    return None, Wait(
        f"waiting for the echo of an earlier attempt (listing refused: {refused})", transient=False
    )


def _reply_window_closed(account_id: int, conversation_id: int) -> str | None:
    """Why a free-form message cannot be delivered now, or None."""
    conv = context.db().fetch_one(
        "outbox.conversation_window", {"account_id": account_id, "conversation_id": conversation_id}
    )
    if conv is None:
        return None
    if conv["can_reply"] is False:
        return "conversation.can_reply is false (WhatsApp 24-hour window closed)"
    last = conv["last_incoming_at"]
    window = timedelta(seconds=outbox.REPLY_WINDOW_SECONDS)
    if conv["source_type"] == "whatsapp" and last is not None and datetime.now(UTC) - last > window:
        return "WhatsApp 24-hour window closed (no message from the contact since then)"
    return None


def _find_ours(client: chatwoot.Client, row: dict[str, Any]) -> dict[str, Any] | None:
    """Our message among the conversation's recent ones: by our key, else by content and time."""
    key = row["dedupe_key"]
    body = row["body"]
    since = row["first_attempt_at"]
    for message in client.list_messages(int(row["chatwoot_conversation_id"])):
        attributes = message.get("content_attributes") or {}
        marker = attributes.get(chatwoot.OUTBOX_KEY_ATTRIBUTE) if isinstance(attributes, dict) else None
        if marker == key:
            return message
        if marker is not None:
            continue
        if message.get("message_type") not in (1, "outgoing") or message.get("content") != body.get(
            "content"
        ):
            continue
        created = _timestamp(message.get("created_at"))
        if since is not None and created is not None and created >= since - CLOCK_SKEW:
            return message
    return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _sent(row: dict[str, Any], message: dict[str, Any]) -> str:
    updated = context.db().fetch_one(
        "outbox.mark_sent", {"id": row["id"], "message_id": str(message.get("id"))}
    )
    if updated is not None:
        NOTICES.labels(kind=row["kind"], result="sent").inc()
        JOBS.labels(job="send_outbox", result="ok").inc()
    return "sent"


def _final(row: dict[str, Any], status: str, reason: str) -> str:
    updated = context.db().fetch_one(
        "outbox.mark_final", {"id": row["id"], "status": status, "reason": reason}
    )
    if updated is not None:
        NOTICES.labels(kind=row["kind"], result=status).inc()
        JOBS.labels(job="send_outbox", result="ok" if status == "not_sent" else "error").inc()
        log.warning(
            "message not sent",
            extra={"outbox_id": row["id"], "kind": row["kind"], "status": status, "reason": reason},
        )
    return status


def _retries_left() -> int:

    job = get_current_job()
    return int(job.retries_left or 0) if job is not None else 0


def _later(row: dict[str, Any], reason: str, unknown: bool) -> str:
    """Retry after a delay while the job has retries left; else give up with the reason."""
    context.db().execute(
        "outbox.mark_unknown" if unknown else "outbox.mark_pending", {"id": row["id"], "reason": reason}
    )
    if _retries_left() > 0:
        JOBS.labels(job="send_outbox", result="retry").inc()
        log.info("send postponed", extra={"outbox_id": row["id"], "reason": reason})
        raise SendLater(reason)
    attempts = (outbox.get(int(row["id"])) or row)["attempts"]
    return _final(row, "failed", f"gave up after {attempts} attempt(s): {reason}")
