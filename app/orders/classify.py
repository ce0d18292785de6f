"""Classify incoming messages: a command, an answer to a pending question, an order, or a note.

Messages of one conversation are handled one at a time and in the order they were written
(a PostgreSQL advisory lock per conversation, then its pending messages by creation time), so a
quick answer never overtakes the order it answers. Notes are kept silently.

Our own messages come back too, and two of their versions matter here (app/chatwoot/payloads.py
`feedback`): the web widget's answer, which Chatwoot records on our question as
`content_attributes.submitted_values` (no incoming message is created), and the channel's
refusal, `content_attributes.external_error`. The first answers the pending question, once;
the second marks our outbox row failed and, for a question, holds its order for the contact.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from app import context
from app.chatwoot import account_ai, accounts, outbox, payloads
from app.chatwoot import client as chatwoot
from app.db import DatabaseUnavailable, queries
from app.metrics import ACCOUNT_PROVIDER_CALLS, JOBS, account_label
from app.orders import clarify as orders
from app.orders import commands, confirm, i18n, rules
from app.transcription import confidence
from app.users import contacts as users

log = logging.getLogger(__name__)

HOLD_SECONDS = 600
"""An earlier message still being archived or transcribed holds the later ones this long at most."""


class _AlreadyClassified(Exception):
    pass


def classify_message(note_id: int) -> str:
    """Classify this message and any earlier pending ones of its conversation; returns its kind."""
    database = context.db()
    note = database.fetch_one("orders.note_get", {"id": note_id})
    if note is None:
        return "missing"
    if note["classification_status"] != "pending":
        return str(note["message_kind"] or note["classification_status"])
    account_id = int(note["chatwoot_account_id"])
    conversation_id = note["chatwoot_conversation_id"]
    with orders.conversation_lock(orders.conversation_key(account_id, conversation_id, note_id)):
        if conversation_id is None:
            if _ready(note):
                _handle_safely(note_id)
        else:
            _drain(account_id, int(conversation_id))
    done = database.fetch_one("orders.note_get", {"id": note_id})
    return str((done or {}).get("message_kind") or (done or {}).get("classification_status") or "missing")


def _ready(note: dict[str, Any]) -> bool:
    """Archived, and transcribed when it is a voice note."""
    return bool(note["processing_status"] == "stored" and note["transcription_status"] != "pending")


def _drain(account_id: int, conversation_id: int) -> None:
    """Handle the conversation's pending messages in order, stopping at one not ready yet."""
    now = datetime.now(UTC)
    handled: set[int] = set()
    while True:
        rows = context.db().fetch_all(
            "orders.pending_in_conversation", {"account_id": account_id, "conversation_id": conversation_id}
        )
        progress = False
        for row in rows:
            if row["id"] in handled:
                continue
            if not _ready(row):
                if now - row["created_at"] < timedelta(seconds=HOLD_SECONDS):
                    return  # later messages wait for it
                continue  # stuck too long: do not hold the conversation back any more
            handled.add(int(row["id"]))
            _handle_safely(int(row["id"]))
            progress = True
        if not progress:
            return


def _handle_safely(note_id: int) -> None:
    try:
        kind = handle(note_id)
        JOBS.labels(job="classify_message", result="ok").inc()
        log.info("message classified", extra={"note_id": note_id, "kind": kind})
    except (DatabaseUnavailable, orders.ConversationBusy):
        JOBS.labels(job="classify_message", result="retry").inc()
        raise  # the message stays pending; a retry or the sweep takes it again
    except Exception as exc:
        JOBS.labels(job="classify_message", result="error").inc()
        log.error("classification failed", extra={"note_id": note_id, "error_type": type(exc).__name__})
        _give_up(note_id, f"classification failed: {type(exc).__name__}")


def _give_up(note_id: int, reason: str) -> None:
    """Mark the message failed; a request for content gets one short notice, a note nothing."""
    database = context.db()
    database.execute("orders.note_classification_failed", {"id": note_id, "reason": reason})
    note = database.fetch_one("orders.note_get", {"id": note_id})
    if not note or not _processable(note) or note["chatwoot_conversation_id"] is None:
        return
    text = _text(note)
    if text and commands.parse(text) is None and rules.looks_like_order(text):
        account_language = account_ai.for_account(int(note["chatwoot_account_id"])).reply_language
        language = i18n.language_or_default(i18n.detect_language(text) or account_language)
        outbox.record_and_enqueue(
            int(note["chatwoot_account_id"]),
            int(note["chatwoot_conversation_id"]),
            "order_failed",
            f"note:{note_id}:failed",
            chatwoot.text_body(i18n.t("request.failed", language)),
        )


def _message(note: dict[str, Any]) -> payloads.Message:
    payload = note.get("payload")
    return payloads.Message.of(payload if isinstance(payload, dict) else {})


def _processable(note: dict[str, Any]) -> bool:
    """Only a contact's own incoming, public message is processed: never ours coming back."""
    return _message(note).processable


def _text(note: dict[str, Any]) -> str:
    content = (note.get("content") or "").strip()
    transcript = (note.get("transcript") or "").strip()
    if content and transcript and transcript != content:
        return f"{content}\n{transcript}"
    return content or transcript


def build_turn(note: dict[str, Any], default_language: str | None = None) -> orders.Turn:
    """The message with its conversation (recorded or refreshed) and the language to answer in
    (the account's default when nothing tells the user's)."""
    database = context.db()
    message = _message(note)
    account_id = int(note["chatwoot_account_id"])
    conversation_id = int(note["chatwoot_conversation_id"])
    contact = payloads.Contact(
        note.get("chatwoot_contact_id"), note.get("contact_phone"), note.get("contact_identifier")
    )
    text = _text(note)
    user_id = note.get("user_id")
    if not user_id:
        linked = users.find_user(account_id, contact)
        user_id = linked[0] if linked else None
    detected = i18n.detect_language(text)
    conv = database.fetch_one(
        "orders.conversation_upsert",
        {
            "account_id": account_id,
            "conversation_id": conversation_id,
            "contact_id": contact.id,
            "user_id": user_id,
            "language": detected,
            "can_reply": message.can_reply,
            "source_type": note.get("source_type"),
            "message_at": note.get("message_created_at") or note.get("created_at"),
        },
    )
    assert conv is not None
    mapping = database.fetch_one("users.user_get", {"user_id": user_id}) if user_id else None
    language = i18n.language_or_default(
        (mapping or {}).get("language") or detected or conv.get("language") or default_language
    )
    return orders.Turn(
        note_id=int(note["id"]),
        account_id=account_id,
        conversation_id=conversation_id,
        contact=contact,
        user_id=user_id,
        text=text,
        in_reply_to=message.in_reply_to,
        language=language,
        context=dict(conv.get("context_json") or {}),
    )


def handle(note_id: int) -> str | None:
    """Classify one message and act on it; returns the kind stored."""
    database = context.db()
    note = database.fetch_one("orders.note_get", {"id": note_id})
    if note is None or note["classification_status"] != "pending":
        return None
    message = _message(note)
    if message.feedback and note["chatwoot_conversation_id"] is not None:
        # One of our messages that reached us first as its answered (or refused) version.
        handle_feedback(
            int(note["chatwoot_account_id"]), int(note["chatwoot_conversation_id"]), note["payload"]
        )
        database.fetch_one("orders.note_classified", {"id": note_id, "status": "done", "kind": None})
        return None
    if not _processable(note) or note["chatwoot_conversation_id"] is None:
        database.fetch_one("orders.note_classified", {"id": note_id, "status": "not_needed", "kind": None})
        return None
    ai = account_ai.for_account(int(note["chatwoot_account_id"]))  # the account's own AI, once
    turn = build_turn(note, ai.reply_language)
    # A question the contact never saw is not waiting for this message.
    orders.hold_if_undelivered(turn)
    command = commands.parse(turn.text)
    link = commands.redeem(turn, command.argument) if command and command.name == "link" else None
    answer = orders.as_answer(turn) if command is None and turn.text else None
    reply = confirm.as_reply(turn) if command is None and answer is None else None
    found = None
    if command is None and answer is None and reply is None:
        if turn.text and ai.classifier_model_on:
            ACCOUNT_PROVIDER_CALLS.labels(account_label(ai.account_id), "classification", "openai").inc()
        found = (
            rules.classify_text(turn.text, ai.classification) if turn.text else rules.Classification("note")
        )
        if found.kind == "order" and confidence.doubtful(note):
            # A transcript the speech model was unsure of never makes an order without asking.
            found = rules.Classification(
                "note", found.fields, found.subject, via=found.via, unsure=True, reason="doubtful transcript"
            )
    unsure = found is not None and confirm.should_ask(turn, found, _message(note).can_reply)
    if found is not None:
        # Which rule, or the learned reading and its probability, decided: never the words themselves.
        log.info(
            "message read",
            extra={
                "note_id": note_id,
                "read_as": found.kind,
                "via": found.via,
                "reason": found.reason,
                "ask": unsure,
            },
        )

    effects = orders.Effects()
    try:
        with database.transaction() as cur:
            if command is not None:
                kind = "command"
                effects = commands.execute(cur, turn, command, link)
            elif answer is not None:
                kind = "answer"
                effects = orders.apply_answer(cur, turn, answer)
            elif reply is not None:
                kind = "answer"
                effects = confirm.apply_reply(cur, turn, reply)
            elif unsure and found is not None:
                kind = None  # undecided until the user answers (or the question times out)
                effects = confirm.ask(cur, turn, found)
            elif found is not None and found.kind == "order":
                kind = "order"
                _, effects = orders.create_order(cur, turn, found)
            else:
                kind = "note"
            # The contact wrote: orders held because a question never reached them are resumed.
            effects.extend(orders.resume(cur, turn))
            cur.execute(queries["orders.note_classified"], {"id": note_id, "status": "done", "kind": kind})
            if cur.fetchone() is None:
                raise _AlreadyClassified
    except _AlreadyClassified:
        return None
    effects.run()
    return kind


# ------------------------------------------------------------------------------------------
# Versions of our own messages: the web widget's answer, the channel's refusal


def classify_update(update_id: int) -> str:
    """Hand an archived version of one of our messages (an answer or a refusal) to the order flow."""
    database = context.db()
    row = database.fetch_one("orders.update_get", {"id": update_id})
    if row is None:
        return "missing"
    if row["classification_status"] != "pending":
        return str(row["classification_status"])
    account_id = int(row["chatwoot_account_id"])
    conversation_id = row["chatwoot_conversation_id"]
    try:
        if conversation_id is not None:
            with orders.conversation_lock(orders.conversation_key(account_id, int(conversation_id))):
                outcome = handle_feedback(account_id, int(conversation_id), row["payload"])
        else:
            outcome = "no conversation"
    except (DatabaseUnavailable, orders.ConversationBusy):
        JOBS.labels(job="classify_update", result="retry").inc()
        raise
    database.fetch_one("orders.update_classified", {"id": update_id, "status": "done"})
    JOBS.labels(job="classify_update", result="ok").inc()
    log.info("update of our message handled", extra={"update_id": update_id, "outcome": outcome})
    return outcome


WINDOW_ERRORS = ("131047", "re-engagement")
"""How WhatsApp says a free-form message came after its 24-hour window (Meta's error 131047)."""


def handle_feedback(account_id: int, conversation_id: int, payload: dict[str, Any]) -> str:
    """Act on an answered or refused version of our own message; safe to repeat. Returns what
    was done: `answered`, `refused`, or why nothing was."""
    message = payloads.Message.of(payload)
    raw_attributes = payload.get("content_attributes")
    attributes: dict[str, Any] = raw_attributes if isinstance(raw_attributes, dict) else {}
    key = attributes.get(chatwoot.OUTBOX_KEY_ATTRIBUTE)
    row = outbox.get_by_key(str(key)) if isinstance(key, str) else None
    if (
        row is None
        or int(row["chatwoot_account_id"]) != account_id
        or int(row["chatwoot_conversation_id"]) != conversation_id
    ):
        return "not our outbox message"
    database = context.db()
    effects = orders.Effects()
    outcome = "nothing to do"
    with database.transaction() as cur:
        conv = orders._exec(
            cur, "orders.conversation_get", {"account_id": account_id, "conversation_id": conversation_id}
        )
        turn = _conversation_turn(conv, account_id, conversation_id) if conv else None
        if message.feedback == "refused":
            error = str(attributes.get("external_error") or "").strip()
            if outbox.mark_refused(cur, row, message.message_id, error):
                outcome = "refused"
                effects.outbox_ids.extend(_template_instead(cur, row, error))
            held = (
                orders.hold(cur, turn, row, f"refused by the channel: {error}")
                if turn is not None and row["kind"] == "question"
                else None
            )
            if held is not None:
                outcome = "refused; order held"
        elif message.feedback == "answer" and turn is not None and row["kind"] == "question":
            submitted = attributes.get("submitted_values")
            answered = orders.widget_answer(cur, turn, row, submitted if isinstance(submitted, list) else [])
            if answered is not None:
                effects = answered
                outcome = "answered"
            else:
                outcome = "not the pending question"
    effects.run()
    return outcome


def _conversation_turn(conv: dict[str, Any], account_id: int, conversation_id: int) -> orders.Turn:
    """The conversation as the order flow sees it, for a message that is not the contact's."""
    ctx: dict[str, Any] = dict(conv.get("context_json") or {})
    clarification = ctx.get("clarification") or {}
    return orders.Turn(
        note_id=0,
        account_id=account_id,
        conversation_id=conversation_id,
        contact=payloads.Contact(conv.get("chatwoot_contact_id")),
        user_id=conv.get("user_id"),
        text="",
        in_reply_to=None,
        language=i18n.language_or_default(clarification.get("language") or conv.get("language")),
        context=ctx,
    )


def _template_instead(cur: Any, row: dict[str, Any], error: str) -> list[int]:
    """A notice WhatsApp refused for coming after its 24-hour window goes again as the account's
    approved template, when the notice was recorded with template values and one is configured."""
    if row.get("template_values") is None or not any(m in error.lower() for m in WINDOW_ERRORS):
        return []
    template = accounts.resolve(int(row["chatwoot_account_id"])).ready_template
    if template is None:
        return []
    body = chatwoot.template_body(
        str(row["body"].get("content") or ""), template.params_for(row["template_values"])
    )
    return [
        outbox.record_in(
            cur,
            int(row["chatwoot_account_id"]),
            int(row["chatwoot_conversation_id"]),
            str(row["kind"]),
            f"{row['dedupe_key']}:template",
            body,
            order_id=row.get("order_id"),
        )
    ]
