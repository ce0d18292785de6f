"""gunicorn settings of the web app: `gunicorn wsgi:app --config gunicorn.conf.py` (the local stack
passes it). The bind address and the worker count are given on the command line (or
WEB_CONCURRENCY, which gunicorn reads itself).

Sync workers serve one request each, from its first header byte to its last body byte, so a
client that sends its body slowly holds a worker. In production, bind to loopback
(`--bind 127.0.0.1:8000`) behind a buffering reverse proxy, which hands gunicorn complete
requests only: docs/reverse-proxy.md and docs/nginx/meeting-notes.conf (tested by
tests/system/test_proxy.py; threads instead of sync workers only reduce the harm, see there)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess

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
timeout = 30
"""Seconds a worker may go without finishing a request before the master replaces it: a request
stuck on a slow client or a hung dependency costs a worker at most this long. (The webhook's
database work has its own, shorter limit, WEBHOOK_DB_TIMEOUT.)"""
forwarded_allow_ips = "127.0.0.1,::1"
"""A reverse proxy on this host may say the client used HTTPS (X-Forwarded-Proto)."""


def child_exit(server: Any, worker: Any) -> None:
    """A web worker exited: its live gauges stop counting in /metrics (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
