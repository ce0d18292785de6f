"""Content orders: the clarification state machine that asks for what is missing, one quick-reply
question at a time, and the orders it creates.

The clarification in progress lives in `conversations.context_json`:

    {"clarification": {"order_id": 12, "field": "topic", "items": [{"title", "value"}...],
                       "fields": {"platform": "LinkedIn", "length": "Short", ...},
                       "attempt": 0, "asked_at": "<ISO time>", "language": "en",
                       "question_outbox_id": 7, "question_message_id": "9882"},
     "waiting_orders": [13],
     "on_hold": [{"order_id": 11, "outbox_id": 5}]}

`waiting_orders` are incomplete orders that arrived while another one was being clarified;
their questions come once the current one is settled. `on_hold` are orders whose question never
reached the contact (the channel refused it, or it could not be sent): they are
`waiting_for_contact`, nobody waits for an answer, and the contact's next message asks again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg2.extras import Json

from app import context
from app.chatwoot import client as chatwoot
from app.chatwoot import outbox
from app.chatwoot.payloads import Contact
from app.db import queries
from app.orders import generation, i18n
from app.orders.rules import CHOICES, Classification

log = logging.getLogger(__name__)

ASK_ORDER = ("platform", "topic", "length", "tone")
"""The order in which missing fields are asked."""

MAX_ATTEMPTS_PER_QUESTION = 2
"""A question whose answer matches no choice is asked once more, then the order is cancelled."""

OPEN_STATUSES = ("clarifying", "waiting_for_contact", "queued", "generating")

UNDELIVERED = frozenset({"failed", "not_sent", "no_template"})
"""Outbox statuses of a question the contact never saw."""
MAX_ASK_ROUNDS = 20
"""Times one question may be recorded again after it never reached the contact."""

LOCK_WAIT_SECONDS = 30.0
"""How long a job waits for another job to finish with the same conversation."""


# ------------------------------------------------------------------------------------------
# Questions and answers


def question_items(name: str, language: str | None) -> list[dict[str, str]]:
    return [{"title": i18n.choice_title(name, v, language), "value": v.lower()} for v in CHOICES[name]]


def question_body(name: str, language: str | None, again: bool = False) -> dict[str, Any]:
    """An input_select question with a numbered text version for channels without quick replies."""
    items = question_items(name, language)
    lines = [i18n.t("question.again", language)] if again else []
    lines.append(i18n.t(f"question.{name}", language))
    numbered = "\n".join(f"{n}. {item['title']}" for n, item in enumerate(items, 1))
    content = "\n".join(lines) + "\n\n" + numbered + "\n\n" + i18n.t("question.footer", language)
    return chatwoot.quick_reply_body(content, items)


def match_choice(name: str, items: list[dict[str, str]], text: str) -> str | None:
    """The choice a reply names: by number, title (in any language), value or canonical name."""
    answer = i18n.normalize(text)
    if not answer:
        return None
    number = re.fullmatch(r"(?:option\s+|opcao\s+|opcion\s+)?(\d{1,2})", answer)
    by_value = {v.lower(): v for v in CHOICES[name]}
    if number:
        index = int(number.group(1)) - 1
        if 0 <= index < len(items):
            return by_value.get(items[index]["value"])
        return None
    for canonical in CHOICES[name]:
        names = {i18n.normalize(canonical)} | {
            i18n.normalize(title) for title in i18n.CHOICE_TITLES[name][canonical].values()
        }
        names |= {i18n.normalize(i["title"]) for i in items if by_value.get(i["value"]) == canonical}
        if answer in names:
            return canonical
    return None


@dataclass
class Effects:
    """What to do once the transaction is committed: send messages, start drafting orders."""

    outbox_ids: list[int] = field(default_factory=list)
    queued_orders: list[int] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.outbox_ids.extend(other.outbox_ids)
        self.queued_orders.extend(other.queued_orders)

    def run(self) -> None:
        for outbox_id in self.outbox_ids:
            outbox.enqueue_send(outbox_id)
        if self.queued_orders:
            for order_id in self.queued_orders:
                generation.schedule(order_id)


@dataclass
class Turn:
    """One incoming message being handled, with what is known of its conversation."""

    note_id: int
    account_id: int
    conversation_id: int
    contact: Contact
    """Who wrote it (payloads.Message.contact, as kept on the row)."""
    user_id: str | None
    text: str
    in_reply_to: int | None
    language: str
    context: dict[str, Any]

    @property
    def contact_id(self) -> int | None:
        return self.contact.id

    @property
    def phone(self) -> str | None:
        return self.contact.phone


def _exec(cur: Any, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cur.execute(queries[name], params)
    if cur.description is None:
        return None
    row = cur.fetchone()
    return dict(row) if row is not None else None


def save_context(cur: Any, turn: Turn) -> None:
    _exec(
        cur,
        "orders.conversation_set_context",
        {
            "account_id": turn.account_id,
            "conversation_id": turn.conversation_id,
            "context": Json(turn.context),
        },
    )


def missing_fields(order: dict[str, Any]) -> list[str]:
    return [name for name in ASK_ORDER if not order.get(name)]


def _order_fields(order: dict[str, Any]) -> dict[str, str]:
    return {name: order[name] for name in CHOICES if order.get(name)}


def _ask(cur: Any, turn: Turn, order: dict[str, Any], name: str, attempt: int) -> int:
    """Record the question for `name` and make it the clarification in progress.

    A question recorded before that never reached the contact is recorded again under a new key.
    """
    language = order.get("language") or turn.language
    body = question_body(name, language, again=attempt > 0)
    base = f"order:{order['id']}:ask:{name}:{attempt}"
    key = base
    for round_ in range(1, MAX_ASK_ROUNDS + 1):
        outbox_id = outbox.record_in(
            cur, turn.account_id, turn.conversation_id, "question", key, body, order_id=int(order["id"])
        )
        recorded = _exec(cur, "outbox.message_get", {"id": outbox_id})
        if recorded is None or recorded["status"] not in UNDELIVERED:
            break
        key = f"{base}:again{round_}"
    turn.context["clarification"] = {
        "order_id": int(order["id"]),
        "field": name,
        "items": body["content_attributes"]["items"],
        "fields": _order_fields(order),
        "attempt": attempt,
        "asked_at": datetime.now(UTC).isoformat(),
        "language": language,
        "question_outbox_id": outbox_id,
        "question_message_id": None,
    }
    return outbox_id


def _queue(cur: Any, order_id: int) -> dict[str, Any] | None:
    return _exec(
        cur, "orders.order_move", {"id": order_id, "to": "queued", "from": ["clarifying"], "reason": None}
    )


def _start_next(cur: Any, turn: Turn, effects: Effects) -> None:
    """Ask the first question of the next waiting order, if any."""
    turn.context.pop("clarification", None)
    waiting: list[int] = list(turn.context.get("waiting_orders") or [])
    while waiting:
        order = _exec(cur, "orders.order_get", {"id": waiting.pop(0)})
        if order is None or order["status"] != "clarifying":
            continue
        missing = missing_fields(order)
        if not missing:
            if _queue(cur, int(order["id"])):
                effects.queued_orders.append(int(order["id"]))
            continue
        effects.outbox_ids.append(_ask(cur, turn, order, missing[0], 0))
        break
    if waiting:
        turn.context["waiting_orders"] = waiting
    else:
        turn.context.pop("waiting_orders", None)


def create_order(cur: Any, turn: Turn, found: Classification) -> tuple[dict[str, Any], Effects]:
    """Store the order the message asks for; ask its first missing field or queue it."""
    effects = Effects()
    fields = {name: found.fields.get(name) for name in CHOICES}
    complete = all(fields.values())
    order = _exec(
        cur,
        "orders.order_insert",
        {
            "account_id": turn.account_id,
            "conversation_id": turn.conversation_id,
            "contact_id": turn.contact_id,
            "user_id": turn.user_id,
            "note_id": turn.note_id,
            "status": "queued" if complete else "clarifying",
            "subject": found.subject,
            "language": turn.language,
            **fields,
        },
    )
    if order is None:  # this message's order exists already (a job run twice)
        existing = _exec(cur, "orders.order_by_note", {"note_id": turn.note_id})
        assert existing is not None
        return existing, effects
    if complete:
        effects.queued_orders.append(int(order["id"]))
        return order, effects
    if turn.context.get("clarification"):
        turn.context.setdefault("waiting_orders", []).append(int(order["id"]))
    else:
        effects.outbox_ids.append(_ask(cur, turn, order, missing_fields(order)[0], 0))
    save_context(cur, turn)
    return order, effects


@dataclass(frozen=True)
class Answer:
    choice: str | None
    """The canonical choice, or None for a reply to our question that matches none."""


def question_message_id(clarification: dict[str, Any]) -> str | None:
    """Chatwoot's id of the pending question (known once its send went through)."""
    if clarification.get("question_message_id"):
        return str(clarification["question_message_id"])
    row = (
        outbox.get(int(clarification["question_outbox_id"]))
        if clarification.get("question_outbox_id")
        else None
    )
    if row and row.get("chatwoot_message_id"):
        clarification["question_message_id"] = str(row["chatwoot_message_id"])
        return str(row["chatwoot_message_id"])
    return None


def _replies_to_our_question(turn: Turn, clarification: dict[str, Any]) -> bool:
    if turn.in_reply_to is None:
        return False
    if question_message_id(clarification) == str(turn.in_reply_to):
        return True
    earlier = context.db().fetch_one(
        "outbox.find_by_message",
        {
            "account_id": turn.account_id,
            "conversation_id": turn.conversation_id,
            "message_id": str(turn.in_reply_to),
        },
    )
    return bool(
        earlier and earlier["kind"] == "question" and earlier["order_id"] == clarification.get("order_id")
    )


def as_answer(turn: Turn) -> Answer | None:
    """The message read as an answer to the pending question, or None when it is not one."""
    clarification = turn.context.get("clarification")
    if not clarification:
        return None
    choice = match_choice(clarification["field"], clarification.get("items") or [], turn.text)
    if choice is not None:
        return Answer(choice)
    if _replies_to_our_question(turn, clarification):
        return Answer(None)
    return None


def apply_answer(cur: Any, turn: Turn, answer: Answer) -> Effects:
    """Record the answer and ask the next missing field; or ask again once; or cancel."""
    effects = Effects()
    clarification = turn.context["clarification"]
    order = _exec(cur, "orders.order_get", {"id": clarification["order_id"]})
    if order is None or order["status"] != "clarifying":
        _start_next(cur, turn, effects)
        save_context(cur, turn)
        return effects
    name = clarification["field"]
    if answer.choice is None:
        attempt = int(clarification.get("attempt", 0)) + 1
        if attempt < MAX_ATTEMPTS_PER_QUESTION:
            effects.outbox_ids.append(_ask(cur, turn, order, name, attempt))
        else:
            _exec(
                cur,
                "orders.order_move",
                {
                    "id": order["id"],
                    "to": "cancelled",
                    "from": ["clarifying"],
                    "reason": "answer not understood",
                },
            )
            language = order.get("language") or turn.language
            effects.outbox_ids.append(
                outbox.record_in(
                    cur,
                    turn.account_id,
                    turn.conversation_id,
                    "order_cancelled",
                    f"order:{order['id']}:cancelled",
                    chatwoot.text_body(i18n.t("order.cancelled_unclear", language, order_id=order["id"])),
                    order_id=int(order["id"]),
                )
            )
            _start_next(cur, turn, effects)
        save_context(cur, turn)
        return effects
    fields = {**{n: order.get(n) for n in CHOICES}, name: answer.choice}
    order = _exec(cur, "orders.order_set_fields", {"id": order["id"], **fields})
    assert order is not None
    missing = missing_fields(order)
    if missing:
        effects.outbox_ids.append(_ask(cur, turn, order, missing[0], 0))
    else:
        if _queue(cur, int(order["id"])):
            effects.queued_orders.append(int(order["id"]))
        _start_next(cur, turn, effects)
    save_context(cur, turn)
    return effects


def cancel_open_orders(cur: Any, turn: Turn, reason: str) -> list[int]:
    """Cancel the conversation's orders in progress (clarifying, queued, generating)."""
    cur.execute(
        queries["orders.orders_open_in_conversation"],
        {"account_id": turn.account_id, "conversation_id": turn.conversation_id},
    )
    open_orders = [dict(r) for r in cur.fetchall()]
    cancelled: list[int] = []
    for order in open_orders:
        if _exec(
            cur,
            "orders.order_move",
            {"id": order["id"], "to": "cancelled", "from": list(OPEN_STATUSES), "reason": reason},
        ):
            cancelled.append(int(order["id"]))
    turn.context.pop("clarification", None)
    turn.context.pop("waiting_orders", None)
    turn.context.pop("on_hold", None)
    save_context(cur, turn)
    return cancelled


# ------------------------------------------------------------------------------------------
# Questions that came back as updates of our own message: the web widget's answer, the
# channel's refusal; and questions that never reached the contact


def pending_question(turn: Turn, outbox_row: dict[str, Any]) -> dict[str, Any] | None:
    """The clarification in progress when `outbox_row` is its question, else None."""
    clarification = turn.context.get("clarification")
    if clarification and clarification.get("question_outbox_id") == outbox_row["id"]:
        return dict(clarification)
    return None


def widget_answer(cur: Any, turn: Turn, question: dict[str, Any], submitted: list[Any]) -> Effects | None:
    """The web widget's choice (`submitted_values` set on our question) as the answer to it,
    read as a typed answer would be (`as_answer`), by the item's value, else its title.

    None when the question is no longer the one waiting (already answered, by typing or a
    second delivery): an answer counts once.
    """
    if pending_question(turn, question) is None:
        return None
    answer = None
    for picked in submitted:
        for key in ("value", "title"):
            text = picked.get(key) if isinstance(picked, dict) else None
            if answer is None and isinstance(text, str):
                found = as_answer(replace(turn, text=text))
                answer = found if found is not None and found.choice is not None else None
    return apply_answer(cur, turn, answer or Answer(None))


def hold(cur: Any, turn: Turn, question: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """The pending question never reached the contact: its order waits for the contact's next
    message (`waiting_for_contact`, the reason kept), and nobody waits for an answer.

    Returns the order held, or None when `question` is not the pending question."""
    clarification = pending_question(turn, question)
    if clarification is None:
        return None
    order = _exec(
        cur,
        "orders.order_move",
        {
            "id": clarification["order_id"],
            "to": "waiting_for_contact",
            "from": ["clarifying"],
            "reason": f"question not delivered: {reason}"[:500],
        },
    )
    turn.context.pop("clarification", None)
    if order is not None:
        held = list(turn.context.get("on_hold") or [])
        held.append({"order_id": int(order["id"]), "outbox_id": int(question["id"])})
        turn.context["on_hold"] = held
        log.info(
            "order waits for the contact: question not delivered",
            extra={"order_id": order["id"], "outbox_id": question["id"]},
        )
    save_context(cur, turn)
    return order


def hold_if_undelivered(turn: Turn) -> dict[str, Any] | None:
    """Before reading a contact's message: when the pending question never reached the contact
    (the send ended failed, not_sent or no_template), hold its order; the message is then not an
    answer to it. Returns the order held."""
    clarification = turn.context.get("clarification")
    if not clarification or not clarification.get("question_outbox_id"):
        return None
    question = outbox.get(int(clarification["question_outbox_id"]))
    if question is None or question["status"] not in UNDELIVERED:
        return None
    with context.db().transaction() as cur:
        return hold(cur, turn, question, f"{question['status']}: {question.get('error_details') or ''}")


def resume(cur: Any, turn: Turn) -> Effects:
    """The contact wrote: orders held for them go back to clarifying and are asked again, first
    in line (after a question the message itself started)."""
    effects = Effects()
    held = turn.context.pop("on_hold", None)
    if not held:
        return effects
    resumed: list[int] = []
    for entry in held:
        order = _exec(
            cur,
            "orders.order_move",
            {"id": entry["order_id"], "to": "clarifying", "from": ["waiting_for_contact"], "reason": None},
        )
        if order is not None:
            resumed.append(int(order["id"]))
    waiting = [i for i in turn.context.get("waiting_orders") or [] if i not in resumed]
    turn.context["waiting_orders"] = resumed + waiting
    if not turn.context.get("clarification"):
        _start_next(cur, turn, effects)
    if not turn.context.get("waiting_orders"):
        turn.context.pop("waiting_orders", None)
    save_context(cur, turn)
    if resumed:
        log.info("held orders resumed", extra={"orders": resumed})
    return effects


# ------------------------------------------------------------------------------------------
# One conversation at a time


class ConversationBusy(Exception):
    """Another job is handling this conversation; this one runs again shortly."""


def conversation_key(account_id: int, conversation_id: int | None, note_id: int | None = None) -> str:
    if conversation_id is None:
        return f"classify:{account_id}:note:{note_id}"
    return f"classify:{account_id}:{conversation_id}"


@contextmanager
def conversation_lock(key: str, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """A PostgreSQL session advisory lock: one job at a time per conversation, in any process."""

    database = context.db()
    deadline = time.monotonic() + wait_seconds
    while True:
        row = database.fetch_one("orders.lock_conversation", {"key": key})
        if row and row["locked"]:
            break
        if time.monotonic() >= deadline:
            raise ConversationBusy(key)
        time.sleep(0.05)
    try:
        yield
    finally:
        try:
            database.fetch_one("orders.unlock_conversation", {"key": key})
        except Exception:  # a lost connection released the lock with it
            log.warning("conversation lock not released explicitly", extra={"lock": key})


# ------------------------------------------------------------------------------------------
# Timeouts


def expire_clarifications(now: datetime | None = None, limit: int = 200) -> int:
    """Cancel clarifications left unanswered for CLARIFICATION_TIMEOUT; returns how many.

    A question that never reached the contact is not timed out: its order is held for the
    contact's next message. Runs from the scheduler. Nothing is sent for an expired question (the user stopped
    answering, and WhatsApp's reply window has usually closed by then); a waiting order that is
    still recent gets its first question.
    """
    settings = context.settings()
    current = now or datetime.now(UTC)
    cutoff = current - timedelta(seconds=settings.clarification_timeout)
    database = context.db()
    expired = 0
    for conv in database.fetch_all("orders.clarifications_expired", {"cutoff": cutoff, "limit": limit}):
        account_id = int(conv["chatwoot_account_id"])
        conversation_id = int(conv["chatwoot_conversation_id"])
        try:
            with conversation_lock(conversation_key(account_id, conversation_id), wait_seconds=2.0):
                effects = Effects()
                with database.transaction() as cur:
                    row = _exec(
                        cur,
                        "orders.conversation_get",
                        {"account_id": account_id, "conversation_id": conversation_id},
                    )
                    if row is None:
                        continue
                    ctx: dict[str, Any] = dict(row["context_json"] or {})
                    clarification = ctx.get("clarification")
                    if not clarification or datetime.fromisoformat(clarification["asked_at"]) >= cutoff:
                        continue
                    turn = Turn(
                        note_id=0,
                        account_id=account_id,
                        conversation_id=conversation_id,
                        contact=Contact(row.get("chatwoot_contact_id")),
                        user_id=row.get("user_id"),
                        text="",
                        in_reply_to=None,
                        language=i18n.language_or_default(
                            clarification.get("language") or row.get("language")
                        ),
                        context=ctx,
                    )
                    question = (
                        _exec(cur, "outbox.message_get", {"id": clarification["question_outbox_id"]})
                        if clarification.get("question_outbox_id")
                        else None
                    )
                    if question is not None and question["status"] in UNDELIVERED:
                        # Never seen by the contact: not timed out, held for the contact.
                        hold(
                            cur,
                            turn,
                            question,
                            f"{question['status']}: {question.get('error_details') or ''}",
                        )
                        continue
                    if _exec(
                        cur,
                        "orders.order_move",
                        {
                            "id": clarification["order_id"],
                            "to": "cancelled",
                            "from": ["clarifying"],
                            "reason": "clarification timed out",
                        },
                    ):
                        expired += 1
                    # Waiting orders as old as the question expire with it.
                    still_waiting = []
                    for order_id in ctx.get("waiting_orders") or []:
                        order = _exec(cur, "orders.order_get", {"id": order_id})
                        if order and order["status"] == "clarifying" and order["created_at"] < cutoff:
                            _exec(
                                cur,
                                "orders.order_move",
                                {
                                    "id": order_id,
                                    "to": "cancelled",
                                    "from": ["clarifying"],
                                    "reason": "clarification timed out",
                                },
                            )
                            expired += 1
                        else:
                            still_waiting.append(order_id)
                    ctx["waiting_orders"] = still_waiting
                    _start_next(cur, turn, effects)
                    save_context(cur, turn)
                effects.run()
        except ConversationBusy:
            continue  # the next sweep takes it
    if expired:
        log.info("clarifications expired", extra={"orders": expired})
    return expired
