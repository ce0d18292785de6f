"""gunicorn settings of the web app: `gunicorn wsgi:app --config gunicorn.conf.py` (the local stack
passes it). The bind address, worker count and timeouts are given on the command line."""

from __future__ import annotations

import os
from typing import Any

preload_app = True
"""Load the app once in the master: a bad setting stops the start with one line."""
accesslog = None
"""No access log: the app logs each request as one JSON line (method, path without its query
string, status, milliseconds; the webhook's line adds its outcome), so a webhook URL token
(?token=) never reaches a log line and each delivery costs one line, not two."""
_SHM = "/dev/shm"  # noqa: S108 (gunicorn makes its file there with mkstemp and unlinks it at once)
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
"""Each worker touches a file there after every request (its heartbeat): in memory, not on disk."""
graceful_timeout = 20
"""Seconds a worker has to finish the request in flight after SIGTERM."""


def child_exit(server: Any, worker: Any) -> None:
    """A web worker exited: its live gauges stop counting in /metrics (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
