"""User commands: /notify on|off, /status, /cancel, /search <words>, /help, and `LINK 123456`.

A command always gets an answer (an unknown one gets the help text); it is never kept as a note.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from app.chatwoot import client as chatwoot
from app.chatwoot import outbox
from app.db import queries
from app.orders import clarify as orders
from app.orders import i18n
from app.records import search
from app.users import contacts as users
from app.users.link_codes import redeem_link_code
from app.users.service import NotFound

log = logging.getLogger(__name__)

_LINK_RE = re.compile(r"^/?link\s*[:#]?\s*([0-9][0-9 \-]{0,14})$", re.IGNORECASE)
_ALIASES: dict[str, str] = {
    "notify": "notify",
    "notificar": "notify",
    "avisar": "notify",
    "status": "status",
    "estado": "status",
    "cancel": "cancel",
    "cancelar": "cancel",
    "help": "help",
    "ajuda": "help",
    "ayuda": "help",
    "start": "help",
    "link": "link",
    "search": "search",
    "buscar": "search",
    "pesquisar": "search",
    "procurar": "search",
}
_ON = {"on", "yes", "sim", "si", "ligar", "activar", "ativar"}
_OFF = {"off", "no", "nao", "desligar", "desactivar", "desativar"}
STATUS_NOTE_DAYS = 7
LINK_REPLIES = {
    "invalid_code": "link.failed",
    "expired": "link.failed",
    "used": "link.failed",
    "too_many_attempts": "link.too_many",
    "linked_to_another_user": "link.other_user",
    "no_contact": "link.unavailable",
    "unavailable": "link.unavailable",
}
"""The reply to a refused `LINK <code>`, by the reason app.links gives."""


@dataclass(frozen=True)
class Command:
    name: str
    """notify_on, notify_off, status, cancel, help, link or unknown."""
    argument: str | None = None


def parse(text: str | None) -> Command | None:
    """The command a message is, or None when it is not one."""
    stripped = (text or "").strip()
    if not stripped:
        return None
    link = _LINK_RE.match(stripped)
    if link:
        return Command("link", re.sub(r"\D", "", link.group(1)))
    if not stripped.startswith("/"):
        return None
    words = i18n.normalize(stripped[1:]).split()
    if not words:
        return Command("unknown")
    name = _ALIASES.get(words[0])
    argument = words[1] if len(words) > 1 else None
    if name == "notify":
        if argument in _ON:
            return Command("notify_on")
        if argument in _OFF:
            return Command("notify_off")
        return Command("unknown", argument)
    if name == "link":
        return Command("link", "".join(words[1:]) or None)
    if name == "search":
        # The words as written (accents and case kept): the search reads them itself.
        rest = stripped[1:].split(None, 1)
        return Command("search", rest[1] if len(rest) > 1 else None)
    if name is None:
        return Command("unknown", words[0])
    return Command(name)


@dataclass(frozen=True)
class LinkOutcome:
    ok: bool
    reason: str
    user_id: str | None = None


def redeem(turn: orders.Turn, code: str | None) -> LinkOutcome:
    """Redeem a link code (before the command's transaction: the admin module commits its own)."""
    if not code or not re.fullmatch(r"\d{6}", code):
        return LinkOutcome(False, "invalid_code")
    try:
        result = redeem_link_code(turn.account_id, turn.contact_id, turn.phone, code)
    except Exception as exc:
        log.error("link code redemption failed", extra={"error_type": type(exc).__name__})
        return LinkOutcome(False, "unavailable")
    return LinkOutcome(bool(result.ok), str(result.reason), result.user_id)


def _exec(cur: Any, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    return orders._exec(cur, name, params)


def linked_user(cur: Any, turn: orders.Turn) -> str | None:
    if turn.user_id:
        return turn.user_id
    if not turn.contact.known:
        return None
    row = _exec(cur, "users.find_link", users.lookup_params(turn.account_id, turn.contact))
    return str(row["user_id"]) if row else None


def execute(cur: Any, turn: orders.Turn, command: Command, link: LinkOutcome | None = None) -> orders.Effects:
    """Carry out the command inside the caller's transaction and record its reply."""
    effects = orders.Effects()
    lang = turn.language
    if command.name in ("notify_on", "notify_off"):
        on = command.name == "notify_on"
        user_id = linked_user(cur, turn)
        row = _exec(cur, "orders.user_set_notify", {"user_id": user_id, "on": on}) if user_id else None
        reply = i18n.t("notify.on" if on else "notify.off", lang) if row else i18n.t("notify.unlinked", lang)
    elif command.name == "status":
        reply = _status(cur, turn)
    elif command.name == "cancel":
        cancelled = orders.cancel_open_orders(cur, turn, "cancelled by the user")
        if cancelled:
            reply = "\n".join(i18n.t("cancel.done", lang, order_id=i) for i in cancelled)
        else:
            reply = i18n.t("cancel.nothing", lang)
    elif command.name == "search":
        reply = _search(cur, turn, command.argument)
    elif command.name == "link":
        outcome = link or LinkOutcome(False, "invalid_code")
        reply = i18n.t("link.ok" if outcome.ok else LINK_REPLIES.get(outcome.reason, "link.failed"), lang)
    else:
        reply = i18n.t("help", lang)
    effects.outbox_ids.append(
        outbox.record_in(
            cur,
            turn.account_id,
            turn.conversation_id,
            "command_reply",
            f"note:{turn.note_id}:reply",
            chatwoot.text_body(reply),
        )
    )
    return effects


def _status(cur: Any, turn: orders.Turn) -> str:
    lang = turn.language
    cur.execute(
        queries["orders.orders_open_in_conversation"],
        {"account_id": turn.account_id, "conversation_id": turn.conversation_id},
    )
    lines = []
    clarification = turn.context.get("clarification") or {}
    for order in (dict(r) for r in cur.fetchall()):
        state = i18n.t(f"status.{order['status']}", lang)
        lines.append(
            i18n.t(
                "status.order",
                lang,
                order_id=order["id"],
                what=i18n.what(order["platform"], lang),
                state=state,
            )
        )
        if order["id"] == clarification.get("order_id"):
            # Remind the user which question is waiting.
            lines.append(i18n.t(f"question.{clarification['field']}", lang))
    if not lines:
        lines.append(i18n.t("status.no_order", lang))
    count = _exec(
        cur,
        "orders.recent_note_count",
        {
            "user_id": linked_user(cur, turn),
            "account_id": turn.account_id,
            "contact_id": turn.contact_id,
            "days": STATUS_NOTE_DAYS,
        },
    )
    lines.append(i18n.t("status.notes", lang, count=int(count["notes"]) if count else 0))
    return "\n".join(lines)


SEARCH_RESULTS = 5
"""Matches a user's /search answers with, newest first."""
SEARCH_EXCERPT = 160
"""Characters of each match shown at most."""


def _search(cur: Any, turn: orders.Turn, words: str | None) -> str:
    """The user's five most recent notes with these words: only the user's own messages (never
    ours, never commands), only for a number linked to a user."""
    lang = turn.language
    user_id = linked_user(cur, turn)
    if not user_id:
        return i18n.t("search.unlinked", lang)
    query = search.Query(
        words or "", user_id=user_id, limit=SEARCH_RESULTS, own_only=True, exclude_id=turn.note_id
    )
    try:
        found = search.run(cur, query, headline=search.USER_HEADLINE)
    except search.BadSearch:
        if words and len(" ".join(words.split())) > search.MAX_WORDS_LENGTH:
            return i18n.t("search.too_long", lang, limit=search.MAX_WORDS_LENGTH)
        return i18n.t("search.usage", lang)
    except NotFound:
        return i18n.t("search.unlinked", lang)
    shown = " ".join((words or "").split())
    if not found:
        return i18n.t("search.none", lang, words=shown)
    lines = [i18n.t("search.found", lang, count=len(found), words=shown)]
    for row in found:
        excerpt = " ".join(str(row["excerpt"] or "").split())
        if len(excerpt) > SEARCH_EXCERPT:
            excerpt = excerpt[: SEARCH_EXCERPT - 1].rstrip() + "…"
        lines.append(i18n.t("search.line", lang, date=str(row["message_at"])[:10], excerpt=excerpt))
    return "\n".join(lines)
