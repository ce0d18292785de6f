"""What the admin page shows beyond the numbers: messages found by contact, user, text or
transcript (newest first, a page at a time), and a user's page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg2.errors

from app import context
from app.chatwoot.payloads import normalize_phone
from app.db import plain, queries
from app.users.service import get_user

MODES = {
    "contact": "contact (Chatwoot contact id or phone number)",
    "user": "user id",
    "text": "text of the message",
    "transcript": "transcript of a voice note",
}
"""What a search can look in, and how the form names it."""
PAGE_SIZE = 25
"""Messages per page of results."""
MAX_PAGE = 40
"""Pages beyond this are refused: narrow the search instead (each page skips the ones before)."""
SEARCH_TIMEOUT_MS = 3000
"""Milliseconds a search may take. Text found only in old messages, but in many of them, is the
slow case (neither the newest-first scan nor the trigram index finds a page of it quickly)."""
MIN_PATTERN = 3
"""Characters a text or transcript search needs (the trigram index needs three)."""
MAX_QUERY = 200
INT32_MAX = 2**31 - 1
RECENT = 20
"""Messages shown on a user's page."""

DEAD_LETTER_STAGE = (
    ("processing_status", "error", "archive"),
    ("transcription_status", "failed", "transcription"),
    ("classification_status", "failed", "classification"),
)
"""A message in one of these states is in the dead letter of that stage, and can be retried."""


class BadSearch(ValueError):
    """A search the page cannot run; the message says what to change."""


@dataclass
class Results:
    by: str
    q: str
    page: int
    looked_for: str
    """What was searched, in words ("contact id 287", "text containing 'invoice'")."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    has_next: bool = False
    timed_out: bool = False
    """The search took longer than SEARCH_TIMEOUT_MS and was stopped."""


def _pattern(q: str) -> str:
    """An ILIKE pattern matching `q` anywhere, with its own % and _ taken literally."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _statement(by: str, q: str) -> tuple[str, dict[str, Any], str]:
    """(query name, its parameters, what is looked for) of a search, or BadSearch."""
    if by not in MODES:
        raise BadSearch(f"search by one of: {', '.join(MODES)}")
    if not q:
        raise BadSearch("type what to look for")
    if len(q) > MAX_QUERY:
        raise BadSearch(f"at most {MAX_QUERY} characters")
    if by == "contact":
        if re.fullmatch(r"\d{1,10}", q) and 0 < int(q) <= INT32_MAX:
            return "admin.search_by_contact_id", {"contact_id": int(q)}, f"contact id {int(q)}"
        phone = normalize_phone(q, None)
        if not phone:
            raise BadSearch(
                "a contact is a Chatwoot contact id (digits) or a phone number with its country code, "
                "e.g. +5491155550123"
            )
        return "admin.search_by_phone", {"phone": phone}, f"phone {phone}"
    if by == "user":
        return "admin.search_by_user", {"user_id": q}, f"user {q}"
    if len(q) < MIN_PATTERN:
        raise BadSearch(f"type at least {MIN_PATTERN} characters")
    what = "text" if by == "text" else "transcript"
    return f"admin.search_by_{by}", {"pattern": _pattern(q)}, f"{what} containing {q!r}"


def search(by: str, q: str, page: int = 1, size: int = PAGE_SIZE) -> Results:
    """One page of the messages matching `q`, newest first."""
    q = q.strip()
    if not 1 <= page <= MAX_PAGE:
        raise BadSearch(f"pages go from 1 to {MAX_PAGE}; narrow the search to see older messages")
    name, params, looked_for = _statement(by, q)
    rows = _fetch(name, {**params, "limit": size + 1, "offset": (page - 1) * size})
    if rows is None:
        return Results(by, q, page, looked_for, timed_out=True)
    return Results(by, q, page, looked_for, [_row(r) for r in rows[:size]], len(rows) > size)


def _fetch(name: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of a search, or None when it ran past SEARCH_TIMEOUT_MS (the page says so; the
    connection and its session stay as they were)."""
    with context.db().transaction() as cur:
        cur.execute("SET LOCAL statement_timeout = %s", (SEARCH_TIMEOUT_MS,))
        cur.execute("SAVEPOINT search")
        try:
            cur.execute(queries[name], params)
            return [dict(r) for r in cur.fetchall()]
        except psycopg2.errors.QueryCanceled:
            cur.execute("ROLLBACK TO SAVEPOINT search")
            return None


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = plain(row)
    out["retry"] = [stage for column, value, stage in DEAD_LETTER_STAGE if row[column] == value]
    return out


def user_page(user_id: str) -> dict[str, Any]:
    """A user, its links and buckets, its messages by status, its orders and its latest messages.

    NotFound (app.users.service) when there is no such user.
    """
    user = get_user(user_id)
    db = context.db()
    params = {"user_id": user_id}
    return {
        "user": user,
        "counts": plain(db.fetch_one("admin.user_message_counts", params) or {}),
        "buckets": [plain(r) for r in db.fetch_all("admin.user_buckets", params)],
        "orders": [plain(r) for r in db.fetch_all("admin.user_orders_by_status", params)],
        "recent": search("user", user_id, 1, size=RECENT),
    }
