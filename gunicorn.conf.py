"""gunicorn settings of the web app: `gunicorn wsgi:app --config gunicorn.conf.py` (the local stack
passes it). The bind address, worker count and timeouts are given on the command line."""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    """A web worker exited: its live gauges stop counting in /metrics (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
