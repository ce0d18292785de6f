"""Faults the system tests inject into the suite's own servers (a paused PostgreSQL), and the
service's own processes run against them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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
def paused(pids: list[int], at_most: float = 30.0) -> Iterator[None]:
    """Processes frozen with SIGSTOP (the kernel still accepts their connections and queries,
    nothing answers them), resumed afterwards, and after `at_most` seconds in any case (code that
    waits forever then fails its test instead of hanging the suite)."""
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
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        watchdog.start()
        yield
    finally:
        watchdog.cancel()
        resume()


def paused_redis(services: Any, at_most: float = 30.0) -> Any:
    """The suite's Redis frozen with SIGSTOP (see `paused`)."""
    return paused([int((services.state / "redis.pid").read_text())], at_most)


def paused_postgres(services: Any, at_most: float = 30.0) -> Any:
    """The suite's PostgreSQL frozen with SIGSTOP, the postmaster first (it forks no new backend
    meanwhile): a stalled host, a server stuck on its disk (see `paused`)."""
    return paused(postgres_pids(services), at_most)


class Processes:
    """The service's own processes (gunicorn, workers, cron) on the suite's servers, each with
    its log file; stopped (their whole process group) at the end."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=devstack.ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def web(self, port: int, workers: int = 2, *options: str) -> subprocess.Popen[bytes]:
        return self.start(
            "web",
            devstack.gunicorn_command(port, workers, *options),
        )

    def workers(self, processes: int = 2) -> subprocess.Popen[bytes]:
        return self.start("worker", [sys.executable, "-m", "workers", "--processes", str(processes)])

    def cron(self) -> subprocess.Popen[bytes]:
        return self.start("cron", [sys.executable, "-m", "workers.cron"])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                devstack.stop_pid(proc.pid, timeout=20)

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`."""
    return _children(pid)


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.2) -> float:
    """Seconds until `check()` is true; AssertionError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with suppress(Exception):  # a server still starting
            if check():
                return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not true within {timeout} s")
