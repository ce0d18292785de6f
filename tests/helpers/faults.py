"""Faults the system tests inject into the suite's own servers: a paused PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import devstack


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def postgres_pids(services: Any) -> list[int]:
    """The suite's PostgreSQL: its postmaster first, then every backend and helper process."""
    pid_file = devstack.pg_data_root(services.state) / "data" / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    return [postmaster, *_children(postmaster)]


@contextmanager
def paused_postgres(services: Any, at_most: float = 30.0) -> Iterator[None]:
    """PostgreSQL frozen with SIGSTOP: the kernel still accepts connections and queries, nothing
    answers them (a stalled host, a server stuck on its disk). Resumed afterwards, whatever
    happens, and after `at_most` seconds in any case (code that waits forever then fails its
    test instead of hanging the suite)."""
    pids = postgres_pids(services)
    stopped: list[int] = []
    lock = threading.Lock()

    def resume() -> None:
        with lock:
            for pid in reversed(stopped):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            stopped.clear()

    watchdog = threading.Timer(at_most, resume)
    watchdog.daemon = True
    try:
        with lock:
            for pid in pids:  # the postmaster first: it forks no new backend meanwhile
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        watchdog.start()
        yield
    finally:
        watchdog.cancel()
        resume()
