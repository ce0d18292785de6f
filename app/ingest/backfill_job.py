"""The scheduled backfill job: ingest Chatwoot messages that never arrived by webhook."""

from __future__ import annotations

import logging
from typing import Any

from app import context
from app.ingest.backfill import backfill as run
from app.reconcile import RunLock

log = logging.getLogger(__name__)

LOCK_KEY = "meeting-notes:backfill:lock"
"""Redis lock held by the one backfill run in progress."""
LOCK_TIMEOUT = 1800
"""Seconds after which the lock of a run killed on another host expires (on this host, a run
that died is noticed at once)."""


def backfill() -> dict[str, Any]:
    """One run over BACKFILL_WINDOW; skipped when another run is in progress or nothing is configured."""

    settings = context.settings()
    if settings.backfill_interval <= 0:
        return {"skipped": "BACKFILL_INTERVAL is 0"}

    lock = RunLock(context.redis(), LOCK_KEY, LOCK_TIMEOUT)
    if not lock.acquire():
        log.info("backfill skipped: another run is in progress")
        return {"skipped": "another run is in progress"}
    try:
        return run().as_dict()
    finally:
        lock.release()
