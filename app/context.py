"""The process's shared resources: settings, database, Redis, queues and the GCS client.

Built on first use and once per process (gunicorn workers and RQ workers alike), so that
importing a module opens nothing and jobs need no Flask application.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from redis import Redis

from app.archive.gcs_client import make_client
from app.config import Settings, load_dotenv_file, load_settings
from app.db import Database

if TYPE_CHECKING:
    from google.cloud import storage

REDIS_TIMEOUT = 1.5
"""Seconds a Redis command (or connecting) may take: a hung Redis costs a webhook delivery this
long, within Chatwoot's 5 s (the row is written; the reconciler queues its job later). RQ's
workers raise it on their own connection for their blocking dequeue."""

_overrides: dict[str, object] = {}


def settings() -> Settings:
    cached = _overrides.get("settings")
    if isinstance(cached, Settings):
        return cached
    return _settings_from_env()


@lru_cache(maxsize=1)
def _settings_from_env() -> Settings:
    load_dotenv_file()
    return load_settings()


def use_settings(new: Settings | None) -> None:
    """Replace the settings (tests, the app factory); None goes back to the environment."""
    reset()
    if new is not None:
        _overrides["settings"] = new


_cache: dict[str, object] = {}
_generation = [0]
"""Bumped by reset(): a client built from settings that were replaced meanwhile (by a thread
that outlived its request, say) is used once but not kept."""


def _keep(key: str, value: object, generation: int) -> None:
    if generation == _generation[0]:
        _cache[key] = value


def _per_process(key: str) -> str:
    return f"{key}:{os.getpid()}"


def db() -> Database:
    key = _per_process("db")
    found = _cache.get(key)
    if not isinstance(found, Database):
        generation, current = _generation[0], settings()
        found = Database(current.database_url, statement_timeout=current.db_statement_timeout)
        _keep(key, found, generation)
    return found


def redis() -> Redis:
    key = _per_process("redis")
    found = _cache.get(key)
    if found is None:
        generation = _generation[0]
        found = Redis.from_url(
            settings().redis_url,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
            health_check_interval=30,
        )
        _keep(key, found, generation)
    return found  # type: ignore[return-value]


def gcs() -> storage.Client:
    key = _per_process("gcs")
    found = _cache.get(key)
    if found is None:
        generation = _generation[0]
        found = make_client(settings())
        _keep(key, found, generation)
    return found  # type: ignore[return-value]


def reset() -> None:
    """Forget settings and connections (closing the database connection of this process)."""
    for key, value in list(_cache.items()):
        if isinstance(value, Database) and key.endswith(f":{os.getpid()}"):
            value.close()
    _generation[0] += 1
    _cache.clear()
    _overrides.clear()
    _settings_from_env.cache_clear()
