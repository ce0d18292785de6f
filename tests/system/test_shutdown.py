"""Graceful shutdown: on SIGTERM, workers finish their current job and web finishes its requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import devstack
import pytest
from rq import Queue

from app.jobs import ARCHIVE_MESSAGE, job_id
from tests.helpers.common import base_environ, sign
from tests.helpers.faults import Processes
from tests.system.test_faults import ChatwootStub, gunicorn_cmd, message, wait_http

pytestmark = pytest.mark.slow


def _row(db: Any, note_id: int) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute("SELECT processing_status, gcs_storage_path FROM meeting_notes WHERE id = %s", (note_id,))
        return dict(cur.fetchone())


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("whole_group", [False, True], ids=["pool", "process-group"])
def test_sigterm_lets_the_worker_finish_its_job(  # noqa: PLR0917 (fixtures)
    services: Any, tmp_path: Path, db: Any, redis_conn: Any, gcs: Any, whole_group: bool
) -> None:
    """SIGTERM mid-job (to the pool, or to its whole process group as `make down` does): the
    running job completes and its row is stored; the next queued job stays queued for later."""
    from app.ingest.pipeline import ingest

    stub = ChatwootStub().start()
    slow = message(3, stub)  # a photo
    attachment_id = str(slow["attachments"][0]["id"])
    stub.slow[attachment_id] = 3.0
    slow.pop("_kind")
    waiting = message(4, stub)
    waiting.pop("_kind")
    env = {
        **os.environ,
        **base_environ(services, tmp_path),
        "CHATWOOT_BASE_URL": stub.url,
        "PYTHONUNBUFFERED": "1",
        "NO_GCE_CHECK": "true",
    }
    procs = Processes(env, tmp_path / "logs")
    try:
        first = ingest(slow)
        second = ingest(waiting)
        assert first.note_id and second.note_id
        pool = procs.start(
            "worker", [sys.executable, "-m", "workers", "--queues", "archive", "--processes", "1"]
        )
        # The job is running once the slow file has been asked for.
        _wait(
            lambda: any(path.startswith("/storage/") for _, path, _ in stub.requests_seen),
            30,
            "the archive job to start",
        )
        if whole_group:
            os.killpg(pool.pid, signal.SIGTERM)
        else:
            pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=30) == 0, procs.tail()
        row = _row(db, first.note_id)
        assert row["processing_status"] == "stored", procs.tail()
        assert row["gcs_storage_path"]
        # The other message was either taken along before the signal (an archive job archives
        # the queued ones behind it) and finished, or it waits with its job queued: never half-done.
        if _row(db, second.note_id)["processing_status"] != "stored":
            assert _row(db, second.note_id)["processing_status"] == "received"
            assert job_id(ARCHIVE_MESSAGE, second.note_id) in Queue("archive", connection=redis_conn).job_ids
            assert redis_conn.hget(f"rq:job:{job_id(ARCHIVE_MESSAGE, second.note_id)}", "status") == b"queued"
        assert "Traceback" not in (tmp_path / "logs" / "worker.log").read_text()
    finally:
        procs.stop_all()
        stub.stop()


def test_sigterm_lets_gunicorn_finish_a_request_in_flight(services: Any, tmp_path: Path, db: Any) -> None:
    """A delivery whose body is still arriving when gunicorn gets SIGTERM is answered and stored."""
    from tests.helpers.common import load_fixture

    port = devstack.free_port()
    env = {**os.environ, **base_environ(services, tmp_path), "PYTHONUNBUFFERED": "1", "NO_GCE_CHECK": "true"}
    procs = Processes(env, tmp_path / "logs")
    try:
        web = procs.start("web", gunicorn_cmd(port))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        payload = load_fixture("message_created__incoming_text")
        body = json.dumps(payload).encode()
        headers = sign(body)
        head = (
            f"POST /webhooks/chatwoot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(head + body[:100])
            time.sleep(0.5)
            web.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert web.poll() is None  # still finishing the request
            conn.sendall(body[100:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), answer[:500]
        assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["status"] == "accepted"
        assert web.wait(timeout=30) == 0
        with db.transaction() as cur:
            cur.execute("SELECT chatwoot_message_id FROM meeting_notes")
            assert [r["chatwoot_message_id"] for r in cur.fetchall()] == [str(payload["id"])]
    finally:
        procs.stop_all()
