"""RQ entry points of the Chatwoot backfill (`app/ingest/backfill_job.py`).

Queued jobs and the cron schedule name these functions (`workers.backfill.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from typing import Any

from app.ingest import backfill_job as stage


def backfill() -> dict[str, Any]:
    """One run over BACKFILL_WINDOW; skipped when another run is in progress or nothing is configured."""
    return stage.backfill()
