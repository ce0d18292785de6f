"""The delivery audit trail: one row per webhook delivery in `webhook_deliveries`.

Each row says when a delivery arrived, its X-Chatwoot-Delivery id, the account and message it
named, how its signature fared, what we answered (HTTP status, outcome, the row it became), how
long that took, and the body's SHA-256 and size. Never the body, never a secret.

The webhook adds no database round trip for it: `record()` appends the row to this process's
buffer (a few microseconds), and a thread of the process writes the buffer in a few multi-row INSERTs about
every FLUSH_SECONDS. The cost of that choice: rows still in the buffer when a web process is
killed (SIGKILL, a crash of the machine) are lost, at most about FLUSH_SECONDS of deliveries; a
process that exits normally writes them first. While PostgreSQL is down the rows wait (up to
MAX_PENDING per process, then the oldest are dropped and counted).

Rows live in daily partitions (UTC), created ahead and dropped after AUDIT_RETENTION_DAYS by the
cron process (`maintain()`); `flask deliveries show` reads them.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg2.errors
import psycopg2.extras

from app import context
from app.db import DatabaseUnavailable, plain, queries

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
"""Seconds between two writes of the buffer."""
FLUSH_ROWS = 500
"""Rows that make the writer write before FLUSH_SECONDS is up."""
MAX_PENDING = 20_000
"""Rows a process keeps while PostgreSQL cannot take them (about 6 MB); beyond, the oldest go."""
PARTITION_DAYS_AHEAD = 7
"""Daily partitions the cron process keeps ready after today."""
MAX_REASON = 200

_PAGE_ROWS = 1000
"""Rows a statement carries. (COPY is not available: the pool's wait callback, which keeps
every statement within its time budget, rules out psycopg2's copy functions.)"""


class Trace:
    """What the webhook learns of a delivery's body while it reads it: size and SHA-256."""

    __slots__ = ("_digest", "complete", "size")

    def __init__(self) -> None:
        self._digest: Any = None
        self.size: int | None = None
        self.complete = False

    def update(self, chunk: bytes) -> None:
        if self._digest is None:
            self._digest = hashlib.sha256()
            self.size = 0
        self._digest.update(chunk)
        self.size = (self.size or 0) + len(chunk)

    def done(self) -> None:
        """The whole body was read (a body cut short, too large or too slow, has no hash)."""
        if self._digest is None:
            self.update(b"")
        self.complete = True

    @property
    def sha256(self) -> str | None:
        return self._digest.hexdigest() if self.complete and self._digest is not None else None


def signature_outcome(status: int, fields: Mapping[str, Any]) -> str:
    """How the delivery's credentials fared, from the webhook's answer and its log fields."""
    method = fields.get("auth")
    if status == 401:
        return {"signature": "invalid", "url_token": "url_token_invalid"}.get(str(method), "missing")
    return {
        "signature": "valid",
        "url_token": "url_token",
        "unsigned": "unsigned",
        "deferred": "deferred",
    }.get(str(method), "not_checked")


def record(  # noqa: PLR0917 (one delivery's parts)
    trace: Trace,
    request_id: str,
    delivery_id: str,
    status: int,
    outcome: str,
    elapsed: float,
    body: Mapping[str, Any],
    fields: Mapping[str, Any],
) -> None:
    """Keep one delivery's row for the writer; never raises (the delivery is answered already)."""
    try:
        reason = body.get("reason") if status < 400 else body.get("error")
        message_id = fields.get("message_id")
        account_id = fields.get("account_id")
        _writer.add(
            (  # the columns of deliveries_insert (app/queries/deliveries.sql), in order
                datetime.fromtimestamp(time.time() - elapsed, UTC).isoformat(),
                request_id,
                delivery_id or None,
                account_id if type(account_id) is int and 0 < account_id < 2**31 else None,
                str(message_id)[:200] if message_id is not None else None,
                str(fields["event"])[:100] if fields.get("event") else None,
                fields.get("note_id"),
                fields.get("update_id"),
                signature_outcome(status, fields),
                status,
                outcome,
                str(reason)[:MAX_REASON] if reason else None,
                round(elapsed * 1000, 3),
                trace.sha256,
                trace.size,
            )
        )
    except Exception as exc:  # the audit must never break a delivery
        log.error("delivery audit: row not kept", extra={"error_type": type(exc).__name__})


class _Writer:
    """This process's buffer of rows and the thread that writes it."""

    def __init__(self) -> None:
        self.rows: deque[tuple[Any, ...]] = deque()
        self.pid = 0
        self.wake = threading.Event()
        self.flushing = threading.Lock()
        self.dropped = 0
        self.failing = False

    def add(self, row: tuple[Any, ...]) -> None:
        if self.pid != os.getpid():
            self._start()
        self.rows.append(row)
        pending = len(self.rows)
        if pending >= FLUSH_ROWS:
            self.wake.set()
        if pending > MAX_PENDING:
            self.rows.popleft()
            self.dropped += 1

    def _start(self) -> None:
        """First row of this process (a forked web worker inherits no rows and no thread)."""
        self.rows = deque()
        self.wake = threading.Event()
        self.flushing = threading.Lock()
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="delivery-audit", daemon=True).start()
        atexit.register(self.flush)

    def _run(self) -> None:
        pid = self.pid
        while self.pid == pid:
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep the thread alive; the rows wait for the next round
                log.error("delivery audit: write failed", extra={"error_type": type(exc).__name__})

    def flush(self) -> int:
        """Write what is buffered; the number of rows written."""
        written = 0
        with self.flushing:
            while self.rows:
                batch = [self.rows.popleft() for _ in range(min(len(self.rows), 5000))]
                try:
                    _write(batch)
                except (DatabaseUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError):
                    self.rows.extendleft(reversed(batch))
                    if not self.failing:
                        log.warning("delivery audit: PostgreSQL unavailable; rows wait in memory")
                    self.failing = True
                    break
                self.failing = False
                written += len(batch)
            if self.dropped:
                log.error(
                    "delivery audit: rows dropped (PostgreSQL unavailable too long)",
                    extra={"rows": self.dropped},
                )
                self.dropped = 0
        return written


_writer = _Writer()


def flush() -> int:
    """Write this process's buffered rows now (tests, shutdown)."""
    return _writer.flush()


def pending() -> int:
    return len(_writer.rows)


def _write(rows: list[tuple[Any, ...]]) -> None:
    db = context.db()
    try:
        _insert(db, rows)
    except psycopg2.errors.CheckViolation:
        # No partition for a row's day (the cron process has not run for a week): make them.
        days = sorted({r[0][:10] for r in rows})
        with db.transaction() as cur:
            first = datetime.fromisoformat(days[0]).date()
            span = (datetime.fromisoformat(days[-1]).date() - first).days + 1
            cur.execute("SELECT webhook_deliveries_ensure(%s, %s)", (first, span))
        _insert(db, rows)


def _insert(db: Any, rows: list[tuple[Any, ...]]) -> None:
    # PostgreSQL text cannot hold NUL, which a body may put in a message id.
    clean = [tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row) for row in rows]
    with db.transaction() as cur:
        psycopg2.extras.execute_values(
            cur, queries["deliveries.deliveries_insert"], clean, page_size=_PAGE_ROWS
        )


# ------------------------------------------------------------------------------------------
# the cron process's part, and what admins read


def maintain() -> dict[str, Any]:
    """Partitions for the next days, and none older than AUDIT_RETENTION_DAYS."""
    db = context.db()
    keep = context.settings().audit_retention_days
    created = db.fetch_one("retention.audit_partitions_ensure", {"days": PARTITION_DAYS_AHEAD + 2})
    dropped = [r["dropped"] for r in db.fetch_all("retention.audit_partitions_drop", {"keep_days": keep})]
    if dropped:
        log.info("delivery audit partitions dropped", extra={"partitions": dropped, "keep_days": keep})
    return {"created": int(created["created"]) if created else 0, "dropped": dropped}


def find(
    *,
    message_id: str | None = None,
    delivery_id: str | None = None,
    account_id: int | None = None,
    since_days: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries of a message (by Chatwoot message id) or a delivery id, newest last."""
    if not message_id and not delivery_id:
        raise ValueError("give a message id or a delivery id")
    rows = context.db().fetch_all(
        "deliveries.deliveries_find",
        {
            "message_id": message_id,
            "delivery_id": delivery_id,
            "account_id": account_id,
            "since_days": since_days,
            "limit": limit,
        },
    )
    return [plain(r) for r in rows]


def message_rows(message_id: str, account_id: int | None = None) -> list[dict[str, Any]]:
    """What the archive holds of a Chatwoot message: its row(s) and its updates."""
    return [
        plain(r)
        for r in context.db().fetch_all(
            "deliveries.deliveries_message_rows", {"message_id": message_id, "account_id": account_id}
        )
    ]
