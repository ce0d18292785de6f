"""PostgreSQL access: one connection per process, named queries, driver errors as our own."""

from __future__ import annotations

import math
import os
import re
import select
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

QUERIES_DIR = Path(__file__).parent / "queries"
_NAME_RE = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)

Params = Mapping[str, Any] | Sequence[Any] | None


class DatabaseError(Exception):
    """Base of the database errors the service handles."""


class DatabaseUnavailable(DatabaseError):
    """PostgreSQL cannot be reached (down, restarting, connection lost)."""


class StatementTimeout(DatabaseUnavailable):
    """A statement ran past its timeout (the budget's, or the statement timeout of the process)."""


class UniqueViolation(DatabaseError):
    """A unique constraint refused the row."""


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, str]:
    """Every `-- name: x` statement of every `<module>.sql`, keyed `module.x`."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        parts = _NAME_RE.split(text)
        # parts: [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            key = f"{path.stem}.{name}"
            if key in queries:
                raise ValueError(f"query {key} defined twice")
            queries[key] = body.strip().rstrip(";")
    return queries


queries: dict[str, str] = load_queries()

_prepared_on: set[tuple[int, int, str, str]] = set()
"""(connection object id, backend pid, module, statement) where a statement is prepared."""

DEFAULT_STATEMENT_TIMEOUT = 30.0
"""Seconds a statement may run (PostgreSQL's statement_timeout), unless a budget says less."""
SILENCE_MARGIN = 5.0
"""Seconds past the statement timeout that the client waits for a server that does not answer
at all (paused, or its host stalled) before it closes the connection."""


class _Local(threading.local):
    total: float | None = None
    """The whole of the current budget, in seconds (see `budget`)."""
    left: float | None = None
    """Seconds of it that the database calls have not spent yet."""
    deadline: float | None = None
    """While a call runs: time.monotonic() by which it must have ended."""


_local = _Local()


class DeadlineExceeded(psycopg2.OperationalError):  # type: ignore[misc]
    """The server did not answer within the time allowed (raised by the wait callback; psycopg2
    then closes the connection)."""


class _Connection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A connection that knows how long to wait for its server and its session's timeout."""

    silence_limit: float | None = None
    """Seconds the client waits for any answer to one request."""
    statement_timeout_ms: int = 0
    """The session's statement_timeout, as last set."""


_POLL_OK = psycopg2.extensions.POLL_OK
_EVENTS = {psycopg2.extensions.POLL_READ: select.POLLIN, psycopg2.extensions.POLL_WRITE: select.POLLOUT}


def _wait(conn: psycopg2.extensions.connection, timeout: float | None = None) -> None:
    """psycopg2's wait callback: wait for the socket as libpq asks, never past the budget's
    deadline nor, on our connections, past their silence limit.

    With a wait callback installed psycopg2 drives every connection without blocking, so a server
    that accepts connections but never answers (paused, or a stalled host, where its own
    statement_timeout cannot fire) costs a bounded wait instead of a hung request.
    """
    try:
        state = conn.poll()
    except KeyboardInterrupt:
        conn.cancel()  # what psycopg2.extras.wait_select does: end the query, keep the session
        state = -1
    if state == _POLL_OK:
        return
    ends = _local.deadline
    limit = getattr(conn, "silence_limit", None)
    if limit is not None:
        silence_ends = time.monotonic() + limit
        ends = silence_ends if ends is None else min(ends, silence_ends)
    poller = select.poll()
    fd = conn.fileno()
    while True:
        if state != -1:
            events = _EVENTS.get(state)
            if events is None:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            poller.register(fd, events)  # again: changes the events waited for
            if ends is None:
                poller.poll()
            else:
                remaining = ends - time.monotonic()
                if (remaining <= 0 or not poller.poll(max(1, int(remaining * 1000)))) and (
                    time.monotonic() >= ends
                ):
                    raise DeadlineExceeded("PostgreSQL did not answer in time")
        try:
            state = conn.poll()
        except KeyboardInterrupt:
            conn.cancel()
            state = -1
        if state == _POLL_OK:
            return


psycopg2.extensions.set_wait_callback(_wait)


class budget:
    """The database calls inside (connecting included) may spend `seconds` between them; past it
    they raise DatabaseUnavailable (a call that runs out is given up at once). Time spent outside
    the calls (reading a request's body, say) does not count. Nested budgets keep the smaller
    allowance. (A class rather than a generator: the webhook enters one per delivery.)"""

    __slots__ = ("saved", "seconds", "started_with")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.saved: tuple[float | None, float | None] = (None, None)
        self.started_with = 0.0

    def __enter__(self) -> None:
        self.saved = (_local.total, _local.left)
        total, left = self.saved
        _local.total = self.seconds if total is None else min(total, self.seconds)
        _local.left = self.seconds if left is None else min(left, self.seconds)
        self.started_with = _local.left

    def __exit__(self, *exc: object) -> None:
        spent = self.started_with - (_local.left or 0.0)
        total, left = self.saved
        _local.total = total
        _local.left = None if left is None else left - spent


class _Spending:
    """One database call under the current budget: it must end by the budget's remainder, and
    what it took is deducted."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started: float | None = None

    def __enter__(self) -> None:
        if _local.left is None or _local.deadline is not None:
            return  # no budget, or inside a call already (connecting within a transaction)
        if _local.left <= 0:
            raise DatabaseUnavailable("the time allowed for the database has passed")
        self.started = time.monotonic()
        _local.deadline = self.started + _local.left

    def __exit__(self, *exc: object) -> None:
        if self.started is not None:
            _local.left = (_local.left or 0.0) - (time.monotonic() - self.started)
            _local.deadline = None


class Database:
    """A lazily opened connection, reopened after a fork or a lost connection.

    Sync gunicorn workers and non-forking RQ workers handle one thing at a time, so one
    connection per process (and per thread, for the few threaded callers) is all they need.
    A connection the server has closed meanwhile (a restart) is noticed before it is used, and
    replaced, so the first call after a restart succeeds.
    """

    def __init__(
        self,
        url: str,
        connect_timeout: int = 3,
        application_name: str = "meeting-notes",
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    ):
        self.url = url
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self.statement_timeout = statement_timeout
        self._local = threading.local()

    def budget(self, seconds: float) -> budget:
        """See the module's `budget`: calls inside share `seconds`."""
        return budget(seconds)

    def _connection(self) -> _Connection:
        """This thread's connection, opened (or replaced, when the server has closed it) on demand."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is not None and (conn.closed or pid != os.getpid() or _closed_by_server(conn)):
            if pid == os.getpid():
                self._discard(conn)
            conn = None
        if conn is None:
            # Connecting is bounded by the wait callback too (libpq's connect_timeout is not used
            # when a callback drives the connection).
            saved = _local.deadline
            connect_by = time.monotonic() + self.connect_timeout
            _local.deadline = connect_by if saved is None else min(saved, connect_by)
            try:
                conn = psycopg2.connect(
                    self.url,
                    connection_factory=_Connection,
                    application_name=self.application_name,
                    keepalives=1,
                    keepalives_idle=30,
                    options=f"-c statement_timeout={_ms(self.statement_timeout)}",
                )
            except psycopg2.OperationalError as exc:
                raise DatabaseUnavailable(_short(exc)) from None
            finally:
                _local.deadline = saved
            conn.silence_limit = self.statement_timeout + SILENCE_MARGIN
            conn.statement_timeout_ms = _ms(self.statement_timeout)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _session(self) -> _Connection:
        """The connection, its statement_timeout switched to the current budget's (or back)."""
        conn = self._connection()
        total = _local.total
        wanted = _ms(self.statement_timeout if total is None else min(self.statement_timeout, total))
        if conn.statement_timeout_ms != wanted and conn.status == psycopg2.extensions.STATUS_READY:
            self._set_statement_timeout(conn, wanted)
        return conn

    def _set_statement_timeout(self, conn: _Connection, ms: int) -> None:
        """Switch the session's statement_timeout (a budget's calls run under the budget's)."""
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (ms,))
            conn.autocommit = False
        except psycopg2.Error as exc:
            self._discard(conn)
            raise DatabaseUnavailable(_short(exc)) from None
        conn.statement_timeout_ms = ms

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor inside one transaction: commit on success, roll back on error."""
        with _Spending():
            conn = self._session()
            try:
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
                conn.commit()
            except psycopg2.errors.UniqueViolation as exc:
                self._rollback(conn)
                raise UniqueViolation(_short(exc)) from None
            except psycopg2.errors.QueryCanceled as exc:
                self._rollback(conn)
                raise StatementTimeout(_short(exc)) from None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self._discard(conn)
                raise DatabaseUnavailable(_short(exc)) from None
            except BaseException:
                self._rollback(conn)
                raise

    def _rollback(self, conn: psycopg2.extensions.connection) -> None:
        try:
            if not conn.closed:
                conn.rollback()
        except psycopg2.Error:
            self._discard(conn)

    def _discard(self, conn: psycopg2.extensions.connection) -> None:
        with suppress(psycopg2.Error):
            conn.close()
        self._local.conn = None

    def fetch_one(self, name: str, params: Params = None) -> dict[str, Any] | None:
        with self.transaction() as cur:
            cur.execute(queries[name], params)
            row = cur.fetchone()
            return dict(row) if row is not None else None

    def fetch_all(self, name: str, params: Params = None) -> list[dict[str, Any]]:
        with self.transaction() as cur:
            cur.execute(queries[name], params)
            return [dict(r) for r in cur.fetchall()]

    def execute(self, name: str, params: Params = None) -> int:
        """Run a statement; return the number of rows it touched."""
        with self.transaction() as cur:
            cur.execute(queries[name], params)
            return int(cur.rowcount)

    def run_prepared(self, name: str, params: Params = None) -> dict[str, Any] | None:
        """The first row of `run_prepared_all`, or None."""
        rows = self.run_prepared_all(name, params)
        return rows[0] if rows else None

    def run_prepared_all(self, name: str, params: Params = None) -> list[dict[str, Any]]:
        """Run the named query `module.execute_x` as its own transaction (autocommit): one round
        trip instead of three (BEGIN, statement, COMMIT), and no planning. On a connection that
        has not seen it, `module.prepare_x` is sent first, in the same round trip."""
        module, _, base = name.partition(".")
        try:
            return self._execute_prepared(module, base, params, prepare=None)
        except psycopg2.errors.InvalidSqlStatementName:
            # The server forgot it (a pooler, DISCARD ALL): prepare it again.
            return self._execute_prepared(module, base, params, prepare=True)
        except psycopg2.errors.DuplicatePreparedStatement:
            # Prepared by an earlier attempt whose EXECUTE failed.
            return self._execute_prepared(module, base, params, prepare=False)

    def _execute_prepared(
        self, module: str, base: str, params: Params, *, prepare: bool | None
    ) -> list[dict[str, Any]]:
        with _Spending():
            return self._run_prepared_statement(module, base, params, prepare=prepare)

    def _run_prepared_statement(
        self, module: str, base: str, params: Params, *, prepare: bool | None
    ) -> list[dict[str, Any]]:
        # In autocommit there is no transaction to roll back: the errors of transaction() are
        # translated here without its context manager and dictionary cursor (the webhook's
        # statement runs on every delivery).
        conn = self._session()
        key = (id(conn), conn.get_backend_pid(), module, base)
        if prepare is None:
            prepare = key not in _prepared_on
        sql = queries[f"{module}.execute_{base}"]
        if prepare:
            sql = queries[f"{module}.prepare_{base}"] + ";\n" + sql
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                found = cur.fetchall()
                names = [column.name for column in cur.description or ()]
        except psycopg2.errors.UniqueViolation as exc:
            raise UniqueViolation(_short(exc)) from None
        except psycopg2.errors.QueryCanceled as exc:
            raise StatementTimeout(_short(exc)) from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._discard(conn)
            raise DatabaseUnavailable(_short(exc)) from None
        finally:
            if not conn.closed:
                with suppress(psycopg2.Error):
                    conn.autocommit = False
        _prepared_on.add(key)
        return [dict(zip(names, row, strict=True)) for row in found]

    def ping(self) -> None:
        with self.transaction() as cur:
            cur.execute("SELECT 1")


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _closed_by_server(conn: psycopg2.extensions.connection) -> bool:
    """True when the server has most likely ended an idle connection (a restart, an
    administrator's pg_terminate_backend): its socket is readable while no query is in flight.
    The server then sends its goodbye and closes; psycopg2 would only notice on the next query.
    (An idle session gets nothing else unsolicited here: the service uses no LISTEN.) Costs one
    poll() system call, no round trip."""
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (psycopg2.Error, OSError, ValueError):
        return True


def _short(exc: BaseException) -> str:
    """The first line of a driver error, without connection strings or parameters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"postgres(?:ql)?://\S+", "postgresql://***", text)[:300]


def plain(value: Any) -> Any:
    """A database value as JSON can carry it."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
