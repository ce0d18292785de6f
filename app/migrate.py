"""Apply the numbered SQL files in `migrations/`, once each, safely from several processes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg2
from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any constant works; it only has to be the same for every process of this service.
_ADVISORY_LOCK_KEY = 0x6D6E6F746573  # "mnotes"
LOCK_POLL_SECONDS = 0.2
"""How often a process waiting for another's migrations asks for the lock again."""

log = logging.getLogger(__name__)


def _yoyo_url(database_url: str) -> str:
    """yoyo's psycopg2 backend is registered as `postgresql`; accept `postgres://` too."""
    scheme, _, rest = database_url.partition("://")
    return f"postgresql://{rest}" if scheme == "postgres" else database_url


def pending(database_url: str) -> list[str]:
    """The ids of migrations not yet applied."""

    backend = get_backend(_yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


def upgrade(database_url: str) -> list[str]:
    """Apply what is pending; return the ids applied (empty when up to date).

    yoyo records each migration in its own table and keeps a lock row; a PostgreSQL advisory
    lock held around the whole run also covers yoyo's first-time creation of those tables,
    so two processes starting at once apply each migration exactly once.
    """

    guard = psycopg2.connect(database_url, connect_timeout=5)
    guard.autocommit = True
    try:
        with guard.cursor() as cur:
            # Asked again and again rather than waited for inside one statement: a waiting
            # statement holds a snapshot, and a migration that builds an index CONCURRENTLY
            # waits for every older snapshot to end (the two processes would wait for each other).
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
                row = cur.fetchone()
                if row and row[0]:
                    break
                time.sleep(LOCK_POLL_SECONDS)
        backend = get_backend(_yoyo_url(database_url))
        try:
            migrations = read_migrations(str(MIGRATIONS_DIR))
            with backend.lock():
                todo = backend.to_apply(migrations)
                ids = [m.id for m in todo]
                if ids:
                    backend.apply_migrations(todo)
                    log.info("migrations applied", extra={"migrations": ids})
                return ids
        finally:
            backend.connection.close()
    finally:
        guard.close()
