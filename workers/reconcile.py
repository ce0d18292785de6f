"""RQ entry point: jobs queued under `workers.reconcile.<name>` run the reconcile stage"s code in `app/reconcile.py`."""

from app.reconcile import reconcile

__all__ = ["reconcile"]
