"""RQ entry points of the outbox (`app/chatwoot/send.py`).

Queued jobs and the cron schedule name these functions (`workers.send.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.chatwoot import send as stage


def send_outbox(outbox_id: int) -> str:
    """Send the message; returns the row's status afterwards."""
    return stage.send_outbox(outbox_id)
