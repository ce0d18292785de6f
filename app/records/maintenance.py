"""The cron process's records pass (every RETENTION_INTERVAL): retention, the buckets' lifecycle
rules, expired exports, GCS holds still to set, the delivery audit trail's partitions and the
search vectors of old rows. Each step runs even when another fails; the run says what each did."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from app.ingest import audit
from app.records import exports, holds, retention, search

log = logging.getLogger(__name__)


def _retention() -> list[dict[str, Any]]:
    return [asdict(r) for r in retention.apply_all()]


STEPS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("audit_partitions", audit.maintain),
    ("holds", holds.sweep),
    ("retention", _retention),
    ("lifecycle", retention.sync_lifecycle),
    ("exports", exports.delete_expired),
    ("exports_queued", exports.requeue_unfinished),
    ("search_backfill", search.backfill),
)
"""Holds before retention: a hold placed since the last run is in GCS before anything is deleted."""


def run() -> dict[str, Any]:
    """Every step, each in its own try; the result of each (or its error)."""
    results: dict[str, Any] = {}
    failed = []
    for name, step in STEPS:
        try:
            results[name] = step()
        except Exception as exc:  # the other steps still run; the next run tries again
            failed.append(name)
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            log.error("records step failed", extra={"step": name, "error_type": type(exc).__name__})
    log.info(
        "records pass", extra={"failed": failed, **{k: v for k, v in results.items() if k != "retention"}}
    )
    if failed:
        raise RecordsStepFailed(", ".join(failed))
    return results


class RecordsStepFailed(Exception):
    """One or more steps of the pass failed (each is logged); the next run tries again."""
