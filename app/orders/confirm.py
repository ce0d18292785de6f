"""When unsure, ask: one yes/no question about a message that looks like a request for content.

A message the rules read as a note that may be a request ("should we do a post about the
merger?") gets "Want me to turn this into a post?" with Yes / No quick replies
(`ASK_WHEN_UNSURE`, on by default). Until it is answered the message is undecided (classified,
with no kind); "yes" creates the order from it (with any field the answer adds), "no" files it as
a note, and so does silence once `CLARIFICATION_TIMEOUT` has passed. The question is a blocking
clarification: it is recorded in the outbox under `note:<id>:confirm`, so one message is never
asked about twice. It is never asked about our own messages, commands or answers (the classify
job handles those first), nor while another question of ours is waiting in the conversation.

The question in progress lives in `conversations.context_json`:

    {"confirmation": {"note_id": 31, "fields": {"platform": "LinkedIn"}, "subject": "the merger",
                      "language": "en", "asked_at": "<ISO time>", "question_outbox_id": 9}}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app import context
from app.chatwoot import client as chatwoot
from app.chatwoot import outbox
from app.chatwoot.payloads import Contact
from app.db import queries
from app.orders import clarify, i18n, rules
from app.orders.clarify import Effects, Turn

log = logging.getLogger(__name__)

_YES = frozenset(
    [
        "yes",
        "y",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "please",
        "pls",
        "sim",
        "s",
        "claro",
        "pode",
        "quero",
        "bora",
        "isso",
        "si",
        "dale",
        "vale",
        "venga",
        "hazlo",
        "porfa",
    ]
)
_YES_PHRASES = (
    "go ahead",
    "do it",
    "why not",
    "pode ser",
    "manda ver",
    "por favor",
    "of course",
    "com certeza",
)
_NO = frozenset(["no", "n", "nope", "nah", "nao", "nunca"])
_NO_PHRASES = (
    "not now",
    "no thanks",
    "just a note",
    "only a note",
    "agora nao",
    "so uma nota",
    "e so uma nota",
    "no gracias",
    "ahora no",
    "solo una nota",
    "es solo una nota",
)
_YES_EMOJI = frozenset(["👍", "👌", "✅", "🙌", "💯"])
_NO_EMOJI = frozenset(["👎", "❌", "🙅"])
MAX_ANSWER_WORDS = 12
"""A longer message is a message of its own, unless it replies to the question."""


def question_key(note_id: int) -> str:
    return f"note:{note_id}:confirm"


def question_body(language: str | None) -> dict[str, Any]:
    """The yes/no quick reply, with its text version for channels without buttons."""
    items = [
        {"title": i18n.CONFIRM_TITLES[value][i18n.language_or_default(language)], "value": value}
        for value in ("yes", "no")
    ]
    content = (
        i18n.t("confirm.question", language)
        + "\n\n"
        + "\n".join(f"{n}. {item['title']}" for n, item in enumerate(items, 1))
        + "\n\n"
        + i18n.t("confirm.footer", language)
    )
    return chatwoot.quick_reply_body(content, items)


def should_ask(turn: Turn, found: rules.Classification, can_reply: bool | None) -> bool:
    """Ask about this message: unsure, asking is on, and no other question of ours is waiting."""
    return bool(
        found.unsure
        and context.settings().ask_when_unsure
        and can_reply is not False
        and not turn.context.get("clarification")
        and not turn.context.get("confirmation")
    )


def ask(cur: Any, turn: Turn, found: rules.Classification) -> Effects:
    """Record the question and make it the confirmation in progress (inside the caller's transaction)."""
    outbox_id = outbox.record_in(
        cur,
        turn.account_id,
        turn.conversation_id,
        "question",
        question_key(turn.note_id),
        question_body(turn.language),
    )
    turn.context["confirmation"] = {
        "note_id": turn.note_id,
        "fields": dict(found.fields),
        "subject": found.subject,
        "language": turn.language,
        "asked_at": datetime.now(UTC).isoformat(),
        "question_outbox_id": outbox_id,
    }
    clarify.save_context(cur, turn)
    return Effects(outbox_ids=[outbox_id])


@dataclass(frozen=True)
class Reply:
    yes: bool


def as_reply(turn: Turn) -> Reply | None:
    """The message read as the answer to the pending question, or None when it is not one."""
    pending = turn.context.get("confirmation")
    if not pending or not turn.text:
        return None
    meant = _yes_or_no(turn.text)
    if meant is None:
        return None
    if len(turn.text.split()) > MAX_ANSWER_WORDS and not _replies_to_question(turn, pending):
        return None
    return Reply(meant)


def _yes_or_no(text: str) -> bool | None:
    stripped = text.strip()
    if stripped and all(c in _YES_EMOJI or c.isspace() or ord(c) in (0xFE0F, 0x200D) for c in stripped):
        return True
    if stripped and all(c in _NO_EMOJI or c.isspace() or ord(c) in (0xFE0F, 0x200D) for c in stripped):
        return False
    words = i18n.normalize(text).split()
    if not words:
        return None
    if words == ["1"]:
        return True
    if words == ["2"]:
        return False
    head = " ".join(words[:4])
    if any(head.startswith(p) for p in _NO_PHRASES) or words[0] in _NO:
        return False
    if any(head.startswith(p) for p in _YES_PHRASES) or words[0] in _YES:
        return True
    return None


def _replies_to_question(turn: Turn, pending: dict[str, Any]) -> bool:
    if turn.in_reply_to is None:
        return False
    ours = context.db().fetch_one(
        "outbox.find_by_message",
        {
            "account_id": turn.account_id,
            "conversation_id": turn.conversation_id,
            "message_id": str(turn.in_reply_to),
        },
    )
    return bool(ours and ours["dedupe_key"] == question_key(int(pending["note_id"])))


def apply_reply(cur: Any, turn: Turn, reply: Reply) -> Effects:
    """Yes: the order, from the message asked about; no: that message is a note."""
    pending = turn.context.pop("confirmation")
    note_id = int(pending["note_id"])
    effects = Effects()
    if reply.yes and _decide(cur, note_id, "order"):
        # What the answer adds ("yes, short and casual") completes what the message said.
        fields = {**pending.get("fields", {}), **rules.extract_fields(turn.text)}
        found = rules.Classification("order", fields, pending.get("subject"))
        asked = replace(turn, note_id=note_id, language=i18n.language_or_default(pending.get("language")))
        _, effects = clarify.create_order(cur, asked, found)
    elif not reply.yes:
        _decide(cur, note_id, "note")
    clarify.save_context(cur, turn)
    return effects


def _decide(cur: Any, note_id: int, kind: str) -> bool:
    cur.execute(queries["confirm.note_decide"], {"id": note_id, "kind": kind})
    return cur.fetchone() is not None


def expire_confirmations(now: datetime | None = None, limit: int = 200) -> int:
    """File as notes the messages whose question stayed unanswered for CLARIFICATION_TIMEOUT.

    Runs from the scheduler. Nothing is sent: silence is an answer.
    """
    current = now or datetime.now(UTC)
    cutoff = current - timedelta(seconds=context.settings().clarification_timeout)
    database = context.db()
    expired = 0
    for conv in database.fetch_all("confirm.confirmations_expired", {"cutoff": cutoff, "limit": limit}):
        account_id = int(conv["chatwoot_account_id"])
        conversation_id = int(conv["chatwoot_conversation_id"])
        key = clarify.conversation_key(account_id, conversation_id)
        try:
            with clarify.conversation_lock(key, wait_seconds=2.0), database.transaction() as cur:
                cur.execute(
                    queries["orders.conversation_get"],
                    {"account_id": account_id, "conversation_id": conversation_id},
                )
                row = cur.fetchone()
                ctx: dict[str, Any] = dict(row["context_json"] or {}) if row else {}
                pending = ctx.get("confirmation")
                if not pending or datetime.fromisoformat(pending["asked_at"]) >= cutoff:
                    continue
                ctx.pop("confirmation")
                expired += _decide(cur, int(pending["note_id"]), "note")
                turn = Turn(
                    note_id=int(pending["note_id"]),
                    account_id=account_id,
                    conversation_id=conversation_id,
                    contact=Contact(row.get("chatwoot_contact_id") if row else None),
                    user_id=row.get("user_id") if row else None,
                    text="",
                    in_reply_to=None,
                    language=i18n.language_or_default(pending.get("language")),
                    context=ctx,
                )
                clarify.save_context(cur, turn)
        except clarify.ConversationBusy:
            continue  # the next sweep takes it
    if expired:
        log.info("unanswered questions filed as notes", extra={"notes": expired})
    return expired
