"""Backfill from Chatwoot: messages of recently active conversations that never reached us.

Chatwoot sends each webhook once and never again, so a delivery lost on the way (network, a
restart of Chatwoot's sidekiq, our web down for longer than the spool covers) is lost for
good unless we ask. Every BACKFILL_INTERVAL this lists the recent messages of the
conversations active within BACKFILL_WINDOW — those with recent rows here, and those Chatwoot's
conversation list shows as recently active — and ingests each message we do not have through
`app.ingest.ingest`, the webhook's own deduplicated path.

Nothing of an erased user comes back this way: a conversation whose contact has an erasure
tombstone is not even listed, and `ingest` refuses any message of such a contact (counted as
`erased`).

Chatwoot's message list is not the webhook format: `message_type` is an integer (0 incoming,
1 outgoing, 2 activity, 3 template), `created_at` is unix seconds, and the conversation is
only an id. `to_webhook()` converts a listed message into the webhook's shape, taking the
channel, inbox and contact from what we already know of the conversation.

Listing needs a Chatwoot user's token: Chatwoot refuses an agent bot's token on list endpoints.
Reads use the account's read token (app/chatwoot/accounts.py); when Chatwoot refuses it as a
bot's, the backfill is off for that account, said once (app/chatwoot/reads.py), until the token
changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from app import context
from app.chatwoot import client as chatwoot
from app.chatwoot import reads
from app.chatwoot.payloads import Contact
from app.chatwoot.schemas import InvalidPayload
from app.config import ConfigError, _duration
from app.ingest.pipeline import ingest
from app.users import tombstones

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

LISTED_MESSAGE_TYPES = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
"""Chatwoot's message_type enum as its message list sends it."""
PAGE_SIZE = 20
"""Messages per page of Chatwoot's message list (fixed by Chatwoot)."""
MAX_MESSAGE_PAGES = 10
"""Pages read per conversation and run: at most 200 messages."""
MAX_CONVERSATION_PAGES = 5
"""Pages of Chatwoot's conversation list read per account and run (25 conversations each)."""
MAX_CONVERSATIONS = 1000
"""Conversations looked at per run, the most recently active first."""


@dataclass
class Conversation:
    """A conversation to look at, with what the message list does not say about it."""

    account_id: int
    conversation_id: int
    channel: str | None = None
    """Chatwoot's channel name, such as `Channel::Whatsapp`."""
    inbox_id: int | None = None
    contact: dict[str, Any] | None = None
    """The conversation's contact (`conversation.meta.sender` of a webhook)."""


@dataclass
class BackfillResult:
    accounts: int = 0
    conversations: int = 0
    listed: int = 0
    missing: int = 0
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    erased: int = 0
    """Messages refused because their contact's user was erased."""
    erased_conversations: int = 0
    """Conversations not listed because their contact's user was erased."""
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    not_configured: list[int] = field(default_factory=list)
    """Accounts skipped: no Chatwoot base URL or API token for them."""
    reads_off: dict[int, str] = field(default_factory=dict)
    """Accounts skipped: Chatwoot refuses their read token on list endpoints (a bot's), and why."""
    note_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("note_ids")
        out["errors"] = self.errors[:20]
        return out


# ---------------------------------------------------------------------------------------------
# the listed format -> the webhook format


def channel_name(source_type: str | None) -> str | None:
    """`web_widget` -> `Channel::WebWidget`: the webhook's name of a stored source_type."""
    if not source_type:
        return None
    return "Channel::" + "".join(part.capitalize() for part in source_type.split("_"))


def _iso(value: Any) -> str | None:
    """Chatwoot's unix seconds as the webhook's ISO 8601 (UTC, milliseconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value if isinstance(value, str) else None
    moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_webhook(message: dict[str, Any], conversation: Conversation) -> dict[str, Any]:
    """A message of Chatwoot's list as the `message_created` webhook would have carried it."""
    kind = message.get("message_type")
    if isinstance(kind, int) and not isinstance(kind, bool):
        kind = LISTED_MESSAGE_TYPES.get(kind, str(kind))
    inbox_id = message.get("inbox_id") or conversation.inbox_id
    conv: dict[str, Any] = {"id": conversation.conversation_id}
    if conversation.channel:
        conv["channel"] = conversation.channel
    if inbox_id:
        conv["inbox_id"] = inbox_id
    if conversation.contact:
        conv["meta"] = {"sender": conversation.contact}
    payload: dict[str, Any] = {
        "event": "message_created",
        "id": message.get("id"),
        "content": message.get("content"),
        "content_type": message.get("content_type") or "text",
        "content_attributes": message.get("content_attributes") or {},
        "message_type": kind,
        "private": bool(message.get("private")),
        "source_id": message.get("source_id"),
        "created_at": _iso(message.get("created_at")),
        "sender": message.get("sender"),
        "conversation": conv,
        "account": {"id": conversation.account_id},
        "additional_attributes": message.get("additional_attributes") or {},
    }
    if inbox_id:
        payload["inbox"] = {"id": inbox_id}
    if message.get("attachments"):
        payload["attachments"] = message["attachments"]
    return payload


# ---------------------------------------------------------------------------------------------
# what to look at


def _created(message: dict[str, Any]) -> datetime | None:
    value = message.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def list_recent_messages(client: Any, conversation_id: int, since: datetime) -> list[dict[str, Any]]:
    """The conversation's messages created since `since`, oldest first (a page of 20 at a time)."""
    found: dict[Any, dict[str, Any]] = {}
    before: int | None = None
    for _ in range(MAX_MESSAGE_PAGES):
        page = client.list_messages(conversation_id, before=before)
        if not page:
            break
        for message in page:
            created = _created(message)
            if message.get("id") is not None and (created is None or created >= since):
                found[message["id"]] = message
        ids = [m["id"] for m in page if isinstance(m.get("id"), int)]
        oldest = min((c for c in map(_created, page) if c is not None), default=None)
        if len(page) < PAGE_SIZE or not ids or (oldest is not None and oldest < since):
            break
        before = min(ids)
    return sorted(found.values(), key=lambda m: (m.get("created_at") or 0, str(m.get("id"))))


def conversations_from_api(client: Any, since: datetime) -> list[Conversation]:
    """Conversations of the account that Chatwoot shows as active since `since` (any status)."""
    out: list[Conversation] = []
    for page in range(1, MAX_CONVERSATION_PAGES + 1):
        items = client.list_conversations(page)
        if not items:
            break
        older = 0
        for item in items:
            if not isinstance(item.get("id"), int):
                continue
            active = item.get("last_activity_at") or item.get("timestamp")
            if isinstance(active, int | float) and datetime.fromtimestamp(active, tz=UTC) < since:
                older += 1
                continue
            raw_meta = item.get("meta")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            out.append(
                Conversation(
                    account_id=int(client.account_id),
                    conversation_id=int(item["id"]),
                    channel=meta.get("channel") if isinstance(meta.get("channel"), str) else None,
                    inbox_id=item.get("inbox_id") if isinstance(item.get("inbox_id"), int) else None,
                    contact=meta.get("sender") if isinstance(meta.get("sender"), dict) else None,
                )
            )
        if older == len(items):
            break
    return out


def known_conversations(window: int) -> list[Conversation]:
    """Conversations with a message stored here within the window, most recent first."""
    rows = context.db().fetch_all(
        "backfill.recent_conversations", {"window": window, "limit": MAX_CONVERSATIONS}
    )
    out = []
    for r in rows:
        contact = r["contact"] if isinstance(r.get("contact"), dict) else None
        if contact is None and r.get("contact_id"):
            contact = {"id": r["contact_id"], "type": "contact"}
        out.append(
            Conversation(
                account_id=int(r["account_id"]),
                conversation_id=int(r["conversation_id"]),
                channel=channel_name(r.get("source_type")),
                inbox_id=r.get("inbox_id"),
                contact=contact,
            )
        )
    return out


def _accounts(window: int) -> list[int]:
    ids = {int(r["account_id"]) for r in context.db().fetch_all("backfill.accounts", {"window": window})}
    default = context.settings().chatwoot_account_id
    if default:
        ids.add(default)
    return sorted(ids)


# ---------------------------------------------------------------------------------------------
# the run


def backfill(
    window: int | None = None,
    *,
    account_ids: list[int] | None = None,
    conversation_ids: list[int] | None = None,
    use_conversation_list: bool = True,
    dry_run: bool = False,
) -> BackfillResult:
    """List recent messages of recently active conversations and ingest those we never received.

    `window` defaults to BACKFILL_WINDOW. Raises app.db.DatabaseUnavailable when PostgreSQL is
    down; Chatwoot errors are counted per conversation and the run goes on.
    """

    seconds = window if window is not None else context.settings().backfill_window
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    result = BackfillResult()
    known: dict[tuple[int, int], Conversation] = {
        (c.account_id, c.conversation_id): c for c in known_conversations(seconds)
    }
    accounts = account_ids or _accounts(seconds)
    for account_id in accounts:
        try:
            client = chatwoot.client_for(account_id)
        except chatwoot.NotConfigured:
            result.not_configured.append(account_id)
            continue
        refused = reads.refusal(account_id, client.reads_with)
        if refused is not None:
            result.reads_off[account_id] = refused
            continue
        result.accounts += 1
        targets = {k: c for k, c in known.items() if k[0] == account_id}
        read = False
        if use_conversation_list and not conversation_ids:
            try:
                listed_conversations = conversations_from_api(client, since)
                read = True
                for c in listed_conversations:
                    known_one = targets.get((account_id, c.conversation_id))
                    if known_one is None:
                        targets[(account_id, c.conversation_id)] = c
                    else:  # what we stored wins; the list fills gaps
                        known_one.channel = known_one.channel or c.channel
                        known_one.inbox_id = known_one.inbox_id or c.inbox_id
                        known_one.contact = known_one.contact or c.contact
            except chatwoot.BotTokenRefused as exc:
                _reads_refused(client, exc, result)
                continue
            except chatwoot.ChatwootError as exc:
                result.errors.append(f"account {account_id}: conversation list: {exc.reason}")
        if conversation_ids:
            targets = {
                (account_id, cid): targets.get((account_id, cid)) or Conversation(account_id, cid)
                for cid in conversation_ids
            }
        erased = tombstones.erased_contact_keys(account_id)
        for conversation in list(targets.values())[:MAX_CONVERSATIONS]:
            if _erased(conversation, erased):
                result.erased_conversations += 1
                continue
            try:
                _backfill_conversation(client, conversation, since, result, dry_run, erased=erased)
                read = True
            except chatwoot.BotTokenRefused as exc:
                _reads_refused(client, exc, result)
                break
            except chatwoot.Unauthorized as exc:
                result.errors.append(f"account {account_id}: {exc.reason}")
                break
            except chatwoot.ChatwootError as exc:
                result.errors.append(
                    f"account {account_id} conversation {conversation.conversation_id}: {exc.reason}"
                )
        if read:
            reads.record(account_id, client.reads_with, client.read_token_source, True)
    level = logging.WARNING if result.errors else logging.INFO
    log.log(level, "backfill done", extra={"backfill": result.as_dict(), "dry_run": dry_run})
    return result


def _reads_refused(client: Any, exc: Exception, result: BackfillResult) -> None:
    """Chatwoot refused the account's read token as a bot's: the backfill is off for it."""

    reads.record(client.account_id, client.reads_with, client.read_token_source, False, str(exc))
    result.reads_off[int(client.account_id)] = (
        reads.refusal(client.account_id, client.reads_with) or "reads refused"
    )


def _erased(conversation: Conversation, erased: set[str]) -> bool:
    """Whether the conversation's contact has an erasure tombstone."""
    if not erased or not conversation.contact:
        return False
    return not erased.isdisjoint(tombstones.contact_keys(Contact.from_mapping(conversation.contact)))


def _backfill_conversation(
    client: Any,
    conversation: Conversation,
    since: datetime,
    result: BackfillResult,
    dry_run: bool,
    *,
    erased: set[str] | None = None,
) -> None:

    result.conversations += 1
    messages = list_recent_messages(client, conversation.conversation_id, since)
    result.listed += len(messages)
    if not messages:
        return
    if conversation.contact is None:
        # Known by id only: its contact is the sender of its incoming messages, and an agent's
        # reply belongs to that contact too (as in a webhook's conversation.meta.sender).
        conversation.contact = next(
            (
                m["sender"]
                for m in messages
                if m.get("message_type") == 0
                and isinstance(m.get("sender"), dict)
                and m["sender"].get("type", "contact") == "contact"
            ),
            None,
        )
        if _erased(conversation, erased or set()):
            result.erased_conversations += 1
            return
    ids = [str(m["id"]) for m in messages]
    have = {
        r["message_id"]
        for r in context.db().fetch_all(
            "backfill.known_messages", {"account_id": conversation.account_id, "message_ids": ids}
        )
    }
    for message in messages:
        if str(message["id"]) in have:
            continue
        if message.get("message_type") == 2:  # activity: never sent by webhooks, never archived
            result.ignored += 1
            continue
        result.missing += 1
        if dry_run:
            continue
        try:
            outcome = ingest(to_webhook(message, conversation))
        except InvalidPayload as exc:
            result.rejected += 1
            result.errors.append(
                f"account {conversation.account_id} message {message['id']}: invalid ({', '.join(sorted(exc.errors))})"
            )
            continue
        if outcome.status == "accepted":
            result.accepted += 1
            if outcome.note_id is not None:
                result.note_ids.append(outcome.note_id)
            log.info(
                "missed message ingested from Chatwoot",
                extra={
                    "account_id": conversation.account_id,
                    "conversation_id": conversation.conversation_id,
                    "message_id": str(message["id"]),
                    "note_id": outcome.note_id,
                },
            )
        elif outcome.status == "duplicate":
            result.duplicates += 1
        elif outcome.reason == tombstones.ERASED_REASON:
            result.erased += 1
        else:
            result.ignored += 1


@click.command("backfill")
@click.option("--window", default=None, help="How far back (e.g. 6h, 2d; default BACKFILL_WINDOW).")
@click.option("--account", "accounts", multiple=True, type=click.IntRange(min=1), help="Only this account.")
@click.option(
    "--conversation",
    "conversations",
    multiple=True,
    type=click.IntRange(min=1),
    help="Only this conversation.",
)
@click.option("--dry-run", is_flag=True, help="Count the missing messages; ingest nothing.")
def backfill_command(
    *, window: str | None, accounts: tuple[int, ...], conversations: tuple[int, ...], dry_run: bool
) -> None:
    """Ingest messages of recent Chatwoot conversations that never arrived by webhook."""

    seconds = None
    if window:
        try:
            seconds = _duration("--window", window)
        except ConfigError as exc:
            raise click.BadParameter(str(exc).removeprefix("--window: ")) from None
    if conversations and len(accounts) != 1:
        raise click.UsageError("--conversation needs exactly one --account")
    result = backfill(
        seconds,
        account_ids=list(accounts) or None,
        conversation_ids=list(conversations) or None,
        dry_run=dry_run,
    )
    click.echo(json.dumps(result.as_dict(), indent=2))


def register(app: Flask) -> None:
    """`flask backfill`: the same run on demand (after an outage, with a longer window)."""
    app.cli.add_command(backfill_command)
