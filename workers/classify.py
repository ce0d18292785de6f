"""RQ entry points of classification (`app/orders/classify.py`).

Queued jobs and the cron schedule name these functions (`workers.classify.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.orders import classify as stage


def classify_message(note_id: int) -> str:
    """Classify this message and any earlier pending ones of its conversation; returns its kind."""
    return stage.classify_message(note_id)


def classify_update(update_id: int) -> str:
    """Hand a version of our own message with an answer or a refusal to the order flow."""
    return stage.classify_update(update_id)
