"""RQ entry point: jobs queued under `workers.classify.<name>` run the orders stage"s code in `app/orders/classify.py`."""

from app.orders.classify import classify_message

__all__ = ["classify_message"]
