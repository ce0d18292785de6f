"""PostgreSQL access: one connection per process, named queries, driver errors as our own."""

from __future__ import annotations

import os
import re
import threading
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


class Database:
    """A lazily opened connection, reopened after a fork or a lost connection.

    Sync gunicorn workers and non-forking RQ workers handle one thing at a time, so one
    connection per process (and per thread, for the few threaded callers) is all they need.
    """

    def __init__(self, url: str, connect_timeout: int = 3, application_name: str = "meeting-notes"):
        self.url = url
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._local = threading.local()

    def _connection(self) -> psycopg2.extensions.connection:
        conn = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is not None and (conn.closed or pid != os.getpid()):
            conn = None
        if conn is None:
            try:
                conn = psycopg2.connect(
                    self.url,
                    connect_timeout=self.connect_timeout,
                    application_name=self.application_name,
                    keepalives=1,
                    keepalives_idle=30,
                )
            except psycopg2.OperationalError as exc:
                raise DatabaseUnavailable(_short(exc)) from None
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor inside one transaction: commit on success, roll back on error."""
        conn = self._connection()
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
            conn.commit()
        except psycopg2.errors.UniqueViolation as exc:
            self._rollback(conn)
            raise UniqueViolation(_short(exc)) from None
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
    ) -> dict[str, Any] | None:
        # In autocommit there is no transaction to roll back: the errors of transaction() are
        # translated here without its context manager and dictionary cursor (the webhook's
        # statement runs on every delivery).
        conn = self._connection()
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
                found = cur.fetchone()
                names = [column.name for column in cur.description or ()]
        except psycopg2.errors.UniqueViolation as exc:
            raise UniqueViolation(_short(exc)) from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._discard(conn)
            raise DatabaseUnavailable(_short(exc)) from None
        finally:
            if not conn.closed:
                with suppress(psycopg2.Error):
                    conn.autocommit = False
        _prepared_on.add(key)
        return dict(zip(names, found, strict=True)) if found else None

    def ping(self) -> None:
        with self.transaction() as cur:
            cur.execute("SELECT 1")


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
