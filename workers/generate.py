"""RQ entry point: jobs queued under `workers.generate.<name>` run the orders stage"s code in `app/orders/jobs.py`."""

from app.orders.jobs import deliver_order, generate_order

__all__ = ["deliver_order", "generate_order"]
