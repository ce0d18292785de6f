"""RQ entry points of transcription (`app/transcription/jobs.py`).

Queued jobs and the cron schedule name these functions (`workers.transcribe.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.transcription import jobs as stage


def transcribe_message(note_id: int) -> str:
    """Transcribe note `note_id`; return what happened (for RQ's result and the logs)."""
    return stage.transcribe_message(note_id)
