"""Full-text search of the archive: the words of a message and of a voice note's transcript.

PostgreSQL text search over `meeting_notes.search_vector`, which holds each archived message's
words as written (the `simple` configuration: any language, no stemming) and, when its user's
language is known, that language's stems too ("running" finds "run"). A search asks for the
words as written and, for a user whose language is known (or, across users, in English,
Portuguese and Spanish), their stems. Filters: user, Chatwoot account and contact, channel, and
the date range (when the service received the message). Newest first, with a short excerpt.

Only archived messages (`stored`) are found, and only while their rows exist: an erased user's
messages are deleted with their rows, and retention deletes old ones the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app import context
from app.db import plain, queries
from app.users.service import Invalid, NotFound

MAX_WORDS_LENGTH = 200
"""Characters a search may have."""
MAX_LIMIT = 50
PROBE = 2000
"""Matches the index is asked for first: fewer, and they are all sorted; that many, and the
messages are walked newest first instead (see app/queries/search.sql)."""
ALL_LANGUAGES = ("en", "pt", "es")
ADMIN_HEADLINE = (
    'MaxWords=20, MinWords=8, ShortWord=2, MaxFragments=2, FragmentDelimiter=" … ", StartSel=«, StopSel=»'
)
USER_HEADLINE = "MaxWords=12, MinWords=5, ShortWord=2, MaxFragments=1, StartSel=*, StopSel=*"
"""WhatsApp shows *words* in bold."""
CONFIGS = {"en": "english", "pt": "portuguese", "es": "spanish"}


class BadSearch(Invalid):
    """A search that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Query:
    words: str
    user_id: str | None = None
    account_id: int | None = None
    contact_id: int | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 20
    before: tuple[datetime, int] | None = None
    """Keyset paging: the (created_at, id) of the last result of the previous page."""
    own_only: bool = False
    """Only messages the contact wrote (not ours, not commands): a user's own search."""
    exclude_id: int | None = None
    """A message not to find (the user's /search itself)."""


def check_words(words: Any) -> str:
    """The words of a search, or BadSearch (empty, too long, nothing searchable)."""
    if not isinstance(words, str) or not words.strip():
        raise BadSearch("give the words to search for")
    cleaned = " ".join(words.split())
    if len(cleaned) > MAX_WORDS_LENGTH:
        raise BadSearch(f"a search is at most {MAX_WORDS_LENGTH} characters, got {len(cleaned)}")
    return cleaned


CURSOR = re.compile(r"([0-9T:.Z+\-]{10,40}),([0-9]{1,19})")
"""A page's `next` value: the (created_at, id) of its last result."""


def cursor(row: dict[str, Any]) -> str:
    """The `next` value of a page whose last result is `row` (the next page starts after it)."""
    moment = datetime.fromisoformat(row["created_at"]).astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z,{row['id']}"


def parse_cursor(value: str) -> tuple[datetime, int]:
    """`Query.before` from a page's `next` value, or BadSearch."""
    found = CURSOR.fullmatch(value)
    try:
        if found is None or int(found[2]) >= 2**63:
            raise ValueError(value)
        moment = datetime.fromisoformat(found[1])
    except ValueError:
        raise BadSearch("before: not the `next` value of a page") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC), int(found[2]))


def search(query: Query, *, headline: str = ADMIN_HEADLINE) -> list[dict[str, Any]]:
    """The messages matching `query`, newest first (at most `query.limit`)."""
    with context.db().transaction() as cur:
        return run(cur, query, headline=headline)


def run(cur: Any, query: Query, *, headline: str = ADMIN_HEADLINE) -> list[dict[str, Any]]:
    """`search` inside the caller's transaction (a user's command is answered in its own)."""
    words = check_words(query.words)
    if not 1 <= query.limit <= MAX_LIMIT:
        raise BadSearch(f"limit: 1 to {MAX_LIMIT}")
    if query.since and query.until and query.since >= query.until:
        raise BadSearch("the date range is empty: 'since' must come before 'until'")
    languages: tuple[str, ...] = ALL_LANGUAGES
    headline_config = "simple"
    if query.user_id is not None:
        user = _one(cur, "search.search_user_language", {"user_id": query.user_id})
        if user is None:
            raise NotFound(f"no user {query.user_id!r}")
        language = user["language"]
        languages = (language,) if language else ()
        headline_config = CONFIGS.get(language or "", "simple")
    parsed = _one(cur, "search.search_parsed", {"words": words, "languages": list(languages)})
    if not parsed or not parsed["query"]:
        raise BadSearch("nothing in these words can be searched (only punctuation or symbols)")
    # The index, never a scan of the whole table, finds the first matches (search.sql); the
    # setting goes back to what it was, as the caller's transaction may go on.
    cur.execute("SELECT current_setting('enable_seqscan') AS was, set_config('enable_seqscan', 'off', true)")
    previous = cur.fetchone()["was"]
    cur.execute(
        queries["search.search_messages"],
        {
            "words": words,
            "languages": list(languages),
            "headline_config": headline_config,
            "headline_options": headline,
            "user_id": query.user_id,
            "account_id": query.account_id,
            "contact_id": query.contact_id,
            "channel": query.channel,
            "since": query.since,
            "until": query.until,
            "own_only": query.own_only,
            "exclude_id": query.exclude_id,
            "before_at": query.before[0] if query.before else None,
            "before_id": query.before[1] if query.before else None,
            "limit": query.limit,
            "probe": PROBE,
        },
    )
    found = [plain(dict(r)) for r in cur.fetchall()]
    cur.execute("SELECT set_config('enable_seqscan', %s, true)", (previous,))
    return found


def _one(cur: Any, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cur.execute(queries[name], params)
    row = cur.fetchone()
    return dict(row) if row is not None else None


BACKFILL_RANGE = 5000
"""Ids of meeting_notes whose search vector one round fills."""


def backfill(rounds: int = 40) -> dict[str, Any]:
    """Fill the search vector of rows archived before search existed, BACKFILL_RANGE ids a round
    (the cron process's pass; a trigger keeps every row archived since up to date)."""
    db = context.db()
    filled = 0
    for _ in range(rounds):
        state = db.fetch_one("retention.search_backfill_state")
        if state is None or state["finished_at"] is not None:
            return {"filled": filled, "finished": True}
        to_id = int(state["after_id"]) + BACKFILL_RANGE
        with db.transaction() as cur:
            cur.execute(
                queries["retention.search_backfill_range"], {"after_id": state["after_id"], "to_id": to_id}
            )
            filled += cur.rowcount
            cur.execute(queries["retention.search_backfill_advance"], {"to_id": to_id})
    return {"filled": filled, "finished": False}
