"""RQ entry points of the records stage (`app/records/`): exports, legal holds, and the cron
process's records pass (retention, expired exports, audit partitions).

Queued jobs and the cron schedule name these functions (`workers.records.<function>`): keep them.
"""

from __future__ import annotations

from typing import Any

from app.records import exports, holds, maintenance


def export_archive(export_id: int) -> dict[str, Any]:
    """Build one export's zip (app.records.exports.build); a finished export is left alone."""
    built = exports.build(export_id)
    return {"export_id": export_id, "status": built.status, "size_bytes": built.size_bytes}


def apply_hold(hold_id: int) -> dict[str, Any]:
    """Make GCS match the legal holds of the hold's user."""
    result = holds.apply_for_hold(hold_id)
    return {"hold_id": hold_id, "state": result.state if result else "gone"}


def records() -> dict[str, Any]:
    """The job run every RETENTION_INTERVAL."""
    return maintenance.run()
