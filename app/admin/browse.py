"""What the admin page shows beyond the numbers: messages found by the words of their text or
transcript (the records full-text search, app/records/search.py), by contact or by user (newest
first, a page at a time), and a user's page with its exports and legal holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

import psycopg2.errors

from app import context
from app.chatwoot.payloads import normalize_phone
from app.db import plain, queries
from app.records import exports, holds
from app.records import search as records
from app.records.search import BadSearch
from app.users.service import NotFound, get_user

WORDS = "words"
MODES = {
    WORDS: "words in the text or transcript",
    "contact": "contact (Chatwoot contact id or phone number)",
    "user": "user id",
}
"""What a search can look in, and how the form names it."""
PAGE_SIZE = 25
"""Messages per page of results."""
MAX_PAGE = 40
"""Pages of a contact's or a user's messages beyond this are refused: narrow the search instead
(each page skips the ones before; a word search pages by its `before` cursor instead)."""
SEARCH_TIMEOUT_MS = 3000
"""Milliseconds a search may take (the page says so when one is stopped)."""
MAX_QUERY = records.MAX_WORDS_LENGTH
INT32_MAX = 2**31 - 1
RECENT = 20
"""Messages shown on a user's page."""
EXPORTS_SHOWN = 20
"""A user's newest exports shown on its page."""
CHANNEL = re.compile(r"[a-z_]{1,40}")

DEAD_LETTER_STAGE = (
    ("processing_status", "error", "archive"),
    ("transcription_status", "failed", "transcription"),
    ("classification_status", "failed", "classification"),
)
"""A message in one of these states is in the dead letter of that stage, and can be retried."""

T = TypeVar("T")


@dataclass(frozen=True)
class Filters:
    """What narrows a word search, as the form gives it ('' when not given)."""

    user: str = ""
    contact: str = ""
    channel: str = ""
    since: str = ""
    """A day, YYYY-MM-DD: messages received on it or after."""
    until: str = ""
    """A day, YYYY-MM-DD: messages received on it or before."""

    def given(self) -> dict[str, str]:
        """The filters given, by name (for the links to the next page)."""
        return {k: v for k, v in vars(self).items() if v}


FILTERS = tuple(f.name for f in fields(Filters))
"""The form's fields that narrow a word search."""


@dataclass
class Results:
    by: str
    q: str
    page: int
    looked_for: str
    """What was searched, in words ("contact id 287", "the words 'invoice march'")."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    has_next: bool = False
    timed_out: bool = False
    """The search took longer than SEARCH_TIMEOUT_MS and was stopped."""
    before: str | None = None
    """A word search: the cursor this page started after (None: the newest)."""
    next: str | None = None
    """A word search: the cursor of the next page, when there is one."""


BROWSE_FILTERS: dict[str, Any] = {"contact_id": None, "phone": None, "user_id": None}
"""The filters of `admin.browse_messages`, none given."""


def _statement(by: str, q: str) -> tuple[dict[str, Any], str]:
    """(the one of `admin.browse_messages`' filters given, what is looked for) of a contact's or a
    user's messages."""
    if by == "contact":
        if re.fullmatch(r"\d{1,10}", q) and 0 < int(q) <= INT32_MAX:
            return {"contact_id": int(q)}, f"contact id {int(q)}"
        phone = normalize_phone(q, None)
        if not phone:
            raise BadSearch(
                "a contact is a Chatwoot contact id (digits) or a phone number with its country code, "
                "e.g. +5491155550123"
            )
        return {"phone": phone}, f"phone {phone}"
    return {"user_id": q}, f"user {q}"


def search(
    by: str,
    q: str,
    page: int = 1,
    size: int = PAGE_SIZE,
    *,
    filters: Filters | None = None,
    before: str | None = None,
) -> Results:
    """One page of the messages matching `q`, newest first; BadSearch says what to change."""
    if by not in MODES:
        raise BadSearch(f"search by one of: {', '.join(MODES)}")
    if by == WORDS:
        return _words(q, filters or Filters(), before, size)
    q = q.strip()
    if not q:
        raise BadSearch("type what to look for")
    if len(q) > MAX_QUERY:
        raise BadSearch(f"at most {MAX_QUERY} characters, got {len(q)}")
    if not 1 <= page <= MAX_PAGE:
        raise BadSearch(f"pages go from 1 to {MAX_PAGE}; narrow the search to see older messages")
    given, looked_for = _statement(by, q)
    params = {**BROWSE_FILTERS, **given, "limit": size + 1, "offset": (page - 1) * size}

    def fetch(cur: Any) -> list[dict[str, Any]]:
        cur.execute(queries["admin.browse_messages"], params)
        return [dict(r) for r in cur.fetchall()]

    rows = _within_timeout(fetch)
    if rows is None:
        return Results(by, q, page, looked_for, timed_out=True)
    return Results(by, q, page, looked_for, [_row(r) for r in rows[:size]], len(rows) > size)


def _words(q: str, filters: Filters, before: str | None, size: int) -> Results:
    """A page of the records full-text search, one more row asked for to know if a next exists."""
    q = records.check_words(q)
    query = records.Query(
        q,
        user_id=filters.user or None,
        contact_id=_contact_filter(filters.contact),
        channel=_channel_filter(filters.channel),
        since=_day(filters.since, "from"),
        until=_day(filters.until, "to", after=True),
        limit=size + 1,
        before=records.parse_cursor(before) if before else None,
    )
    looked_for = f"the words {q!r}"
    try:
        rows = _within_timeout(lambda cur: records.run(cur, query))
    except NotFound as exc:
        raise BadSearch(str(exc)) from None
    if rows is None:
        return Results(WORDS, q, 1, looked_for, timed_out=True, before=before)
    shown = rows[:size]
    after = records.cursor(shown[-1]) if len(rows) > size else None
    return Results(WORDS, q, 1, looked_for, shown, after is not None, before=before, next=after)


def _contact_filter(value: str) -> int | None:
    if not value:
        return None
    if re.fullmatch(r"\d{1,10}", value) and 0 < int(value) <= INT32_MAX:
        return int(value)
    raise BadSearch("the contact filter is a Chatwoot contact id (digits)")


def _channel_filter(value: str) -> str | None:
    if not value:
        return None
    if CHANNEL.fullmatch(value):
        return value
    raise BadSearch("the channel is a word of lower-case letters, e.g. whatsapp")


def _day(value: str, name: str, *, after: bool = False) -> datetime | None:
    """The start (UTC) of a YYYY-MM-DD day, or of the day after it (`after`: an inclusive end)."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadSearch(f"'{name}' is a day, YYYY-MM-DD") from None
    return datetime.combine(day + timedelta(days=1 if after else 0), time(), UTC)


def _within_timeout(work: Callable[[Any], T]) -> T | None:
    """What `work` returns, run in a transaction limited to SEARCH_TIMEOUT_MS, or None when it ran
    past that (the page says so; the connection and its session stay as they were)."""
    with context.db().transaction() as cur:
        cur.execute("SET LOCAL statement_timeout = %s", (SEARCH_TIMEOUT_MS,))
        cur.execute("SAVEPOINT search")
        try:
            return work(cur)
        except psycopg2.errors.QueryCanceled:
            cur.execute("ROLLBACK TO SAVEPOINT search")
            return None


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = plain(row)
    out["retry"] = [stage for column, value, stage in DEAD_LETTER_STAGE if row[column] == value]
    return out


def user_page(user_id: str) -> dict[str, Any]:
    """A user, its links and buckets, its messages by status, its orders, its latest messages, its
    exports and its legal holds.

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
        "exports": exports.of_user(user_id, limit=EXPORTS_SHOWN),
        "holds": holds.of_user(user_id),
    }
