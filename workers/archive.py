"""RQ entry points of the archive stage (`app/archive/batch.py`, `app/archive/jobs.py`).

Queued jobs and the cron schedule name these functions (`workers.archive.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.archive import batch
from app.archive import jobs as stage


def archive_message(note_id: int) -> str:
    """Archive meeting_notes row `note_id`; return what happened."""
    return batch.archive_message(note_id)


def archive_update(update_id: int) -> str:
    """Archive message_updates row `update_id` beside its message; return what happened."""
    return stage.archive_update(update_id)


def archive_attachments(note_id: int) -> str:
    """Fetch again the attachments of a stored message that an admin asked to retry."""
    return stage.archive_attachments(note_id)
