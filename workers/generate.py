"""RQ entry points of orders (`app/orders/jobs.py`).

Queued jobs and the cron schedule name these functions (`workers.generate.<function>`): keep
them, so that jobs queued by an earlier version still run after an upgrade.
"""

from __future__ import annotations

from app.orders import jobs as stage


def generate_order(order_id: int) -> str:
    """queued -> generating -> ready (or failed, with one short notice, once retries are spent)."""
    return stage.generate_order(order_id)


def deliver_order(order_id: int) -> str:
    """Ready notice (with opt-in) and the draft in the user's bucket; retried until it holds."""
    return stage.deliver_order(order_id)
