"""Slow clients and the production reverse proxy (docs/nginx/meeting-notes.conf).

Eight clients send their headers, then one body byte every 2 s. Straight at gunicorn they hold
its sync workers and genuine deliveries wait past Chatwoot's 5 s (the figures are printed).
Behind Debian's nginx, run with the documented configuration, every genuine delivery is
answered at once. nginx is installed with apt when it is missing and the suite runs as root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import devstack
import pytest
import requests

from tests.helpers.archive import text_message
from tests.helpers.common import ROOT, WEBHOOK_SECRET, base_environ, sign
from tests.helpers.faults import Processes, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EXAMPLE = ROOT / "docs" / "nginx" / "meeting-notes.conf"
SLOW_CLIENTS = 8
GENUINE = 6
CHATWOOT_WAIT = 5.0
"""Seconds Chatwoot waits for an answer (it never sends a delivery again)."""
WEB_WORKERS = 4


def _nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("nginx is not installed (apt-get install nginx, as root, installs it)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "--no-upgrade", "nginx"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if not found:
        pytest.skip(f"nginx could not be installed: {result.stderr.strip()[-300:]}")
    return found


def site_config(upstream_port: int, listen_port: int) -> str:
    """The documented server block, made to listen on loopback without TLS at `listen_port`."""
    text = EXAMPLE.read_text()
    text = re.sub(r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream_port};", text)
    text = re.sub(r"^\s*listen [^\n]*\n", "", text, flags=re.MULTILINE)
    text = re.sub(r"^\s*ssl_[^\n]*\n", "", text, flags=re.MULTILINE)
    text = re.sub(
        r"^(\s*)server_name ",
        rf"\1listen 127.0.0.1:{listen_port};\n\1server_name ",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    assert f"server 127.0.0.1:{upstream_port};" in text and "ssl" not in text.split("server {", 1)[1]
    return text


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Any]:
    binary = _nginx_binary()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    os.chmod(tmp_path, 0o755)  # noqa: S103 (nginx's workers run as nobody when the suite runs as root)
    temp = prefix / "temp"
    temp.mkdir()
    os.chmod(temp, 0o777)  # noqa: S103 (they write request bodies there)

    class Nginx:
        port = devstack.free_port()
        proc: subprocess.Popen[bytes] | None = None

        def start(self, upstream_port: int) -> str:
            (prefix / "site.conf").write_text(site_config(upstream_port, self.port))
            (prefix / "nginx.conf").write_text(
                "worker_processes 1;\n"
                f"pid {prefix}/nginx.pid;\n"
                f"error_log {prefix}/error.log warn;\n"
                "events { worker_connections 512; }\n"
                "http {\n"
                "  access_log off;\n"
                + "".join(
                    f"  {kind}_temp_path {temp}/{kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                )
                + f"  include {prefix}/site.conf;\n"
                "}\n"
            )
            check = subprocess.run(
                [binary, "-t", "-q", "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                capture_output=True,
                text=True,
            )
            assert check.returncode == 0, check.stderr
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-e",
                    "stderr",
                    "-p",
                    str(prefix),
                    "-c",
                    str(prefix / "nginx.conf"),
                    "-g",
                    "daemon off;",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{self.port}"
            wait_until(lambda: requests.get(url + "/healthz", timeout=1).status_code == 200, 20)
            return url

    server = Nginx()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=10)


@dataclass
class SlowClients:
    """Clients that send a delivery's headers, then one body byte every `gap` seconds."""

    port: int
    count: int = SLOW_CLIENTS
    gap: float = 2.0
    sockets: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> SlowClients:
        head = (
            b"POST /webhooks/chatwoot HTTP/1.1\r\nHost: archive.example.com\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
        )
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(head)
            self.sockets.append(sock)
        threading.Thread(target=self._drip, daemon=True).start()
        return self

    def _drip(self) -> None:
        while not self.stop.wait(self.gap):
            for sock in self.sockets:
                with suppress(OSError):  # dropped by the server: that is its right
                    sock.sendall(b" ")

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for sock in self.sockets:
            sock.close()


def genuine_deliveries(url: str, first_id: int) -> list[float | None]:
    """Seconds each genuine delivery took to be accepted; None when it was not within 5 s."""
    took: list[float | None] = []
    for i in range(GENUINE):
        body = json.dumps(text_message(first_id + i)).encode()
        started = time.monotonic()
        try:
            response = requests.post(
                url + "/webhooks/chatwoot",
                data=body,
                headers=sign(body, WEBHOOK_SECRET),
                timeout=CHATWOOT_WAIT,
            )
            ok = response.status_code == 200 and response.json().get("status") == "accepted"
        except requests.RequestException:
            ok = False
        took.append(round(time.monotonic() - started, 2) if ok else None)
        time.sleep(0.5)
    return took


@pytest.fixture
def gunicorn(services: Any, tmp_path: Path, db: Any, redis_conn: Any) -> Iterator[Any]:
    """Starts gunicorn on the suite's servers: `gunicorn(*options)` gives its URL."""
    env = {**os.environ, **base_environ(services, tmp_path), "LOG_LEVEL": "WARNING", "NO_GCE_CHECK": "true"}
    started: list[Processes] = []

    def start(*options: str) -> str:
        procs = Processes(env, tmp_path / f"logs-{len(started)}")
        started.append(procs)
        port = devstack.free_port()
        procs.web(port, WEB_WORKERS, *options)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(url + "/healthz", timeout=1).status_code == 200, 30)
        return url

    try:
        yield start
    finally:
        for procs in started:
            procs.stop_all()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_slow_clients_do_not_starve_genuine_deliveries_behind_nginx(gunicorn: Any, nginx: Any) -> None:
    sync = gunicorn()
    with SlowClients(_port(sync)):
        time.sleep(1)
        direct = genuine_deliveries(sync, 7100)
    threaded = gunicorn("--worker-class", "gthread", "--threads", "8")
    with SlowClients(_port(threaded)):
        time.sleep(1)
        direct_threads = genuine_deliveries(threaded, 7200)
    proxied_url = nginx.start(_port(sync))
    with SlowClients(nginx.port):
        time.sleep(1)
        proxied = genuine_deliveries(proxied_url, 7300)
    print(
        f"\n{SLOW_CLIENTS} slow clients, {GENUINE} genuine deliveries (seconds; None: not answered within 5 s):"
        f"\n  straight at gunicorn, {WEB_WORKERS} sync workers: {direct}"
        f"\n  straight at gunicorn, {WEB_WORKERS} gthread workers x 8 threads: {direct_threads}"
        f"\n  behind nginx (docs/nginx/meeting-notes.conf), {WEB_WORKERS} sync workers: {proxied}"
    )
    assert None not in proxied


def test_nginx_refuses_oversized_bodies_with_json(gunicorn: Any, nginx: Any) -> None:
    url = nginx.start(_port(gunicorn()))
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as sock:
        sock.sendall(
            b"POST /webhooks/chatwoot HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40000000\r\nConnection: close\r\n\r\n{"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            answer += sock.recv(65536)  # nginx answers at once, then lingers for the unread body
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"application/json" in head
    assert json.loads(body)["error"] == "payload_too_large"
    # An ordinary delivery still goes through.
    assert genuine_deliveries(url, 7400)[:1] != [None]


def _length(answer: bytes) -> int:
    found = re.search(rb"(?im)^content-length:\s*(\d+)", answer.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else 1
