"""RQ entry points of moves of archives between buckets (`app/users/rehome.py`).

Queued jobs and the cron schedule name these functions (`workers.rehome.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.users import rehome as stage


def rehome_request(request_id: int) -> dict[str, int]:
    """Job: carry out one move request (safe to run twice)."""
    return stage.rehome_request(request_id)
