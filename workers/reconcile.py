"""RQ entry points of the reconciler (`app/reconcile.py`).

Queued jobs and the cron schedule name these functions (`workers.reconcile.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from typing import Any

from app import reconcile as stage


def reconcile() -> dict[str, Any]:
    """The job run every RECONCILE_INTERVAL: spool replay, clarification expiry, the sweep."""
    return stage.reconcile()
