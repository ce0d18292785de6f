"""Concurrent deliveries of one message: the database, not memory, makes them one row, one job."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rq import Queue

from app import context
from app.chatwoot import accounts
from app.jobs import ARCHIVE_MESSAGE, ARCHIVE_QUEUE, ARCHIVE_UPDATE, job_id
from tests.helpers.common import ROOT, base_environ, load_fixture, sign

URL = "/webhooks/chatwoot"
COPIES = 20


@pytest.fixture(autouse=True)
def _fresh_account_cache() -> None:
    accounts.forget_cached()


def count(db: Any, table: str) -> int:
    with db.transaction() as cur:
        cur.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608 (a fixed table name)
        return int(cur.fetchone()["n"])


def _post_together(app: Any, body: bytes, headers: dict[str, str]) -> tuple[list[Any], set[int]]:
    """POST the same delivery from COPIES threads at once, each with its own connection."""
    barrier = threading.Barrier(COPIES)
    backends: set[int] = set()
    lock = threading.Lock()

    def one(_: int) -> Any:
        client = app.test_client()
        database = context.db()
        with database.transaction() as cur:  # open this thread's own connection first
            cur.execute("SELECT pg_backend_pid() AS pid")
            pid = int(cur.fetchone()["pid"])
        with lock:
            backends.add(pid)
        barrier.wait(timeout=30)
        try:
            response = client.post(URL, data=body, headers=headers)
            return response.status_code, response.get_json()
        finally:
            database.close()

    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(one, range(COPIES)))
    return answers, backends


def test_twenty_concurrent_copies_make_one_row_and_one_job(app: Any, db: Any, redis_conn: Any) -> None:
    body = json.dumps(load_fixture("message_created__incoming_voice_note")).encode()
    answers, backends = _post_together(app, body, sign(body))

    assert len(backends) == COPIES, "each request must use its own database connection"
    assert all(status == 200 for status, _ in answers), answers
    statuses = sorted(answer["status"] for _, answer in answers)
    assert statuses == ["accepted"] + ["duplicate"] * (COPIES - 1)
    ids = {answer["id"] for _, answer in answers}
    assert len(ids) == 1
    assert count(db, "meeting_notes") == 1
    note_id = ids.pop()
    assert Queue(ARCHIVE_QUEUE, connection=redis_conn).job_ids == [job_id(ARCHIVE_MESSAGE, note_id)]


def test_twenty_concurrent_copies_of_an_edit_make_one_update(app: Any, db: Any, redis_conn: Any) -> None:
    created = load_fixture("message_created__incoming_text")
    first = json.dumps(created).encode()
    assert app.test_client().post(URL, data=first, headers=sign(first)).status_code == 200
    edit = dict(created, event="message_updated", content="Edited: onboarding in 4 days")
    body = json.dumps(edit).encode()

    answers, _ = _post_together(app, body, sign(body))

    updates = [a for _, a in answers if a.get("update_id")]
    assert len(updates) == 1
    assert sorted(a["status"] for _, a in answers).count("duplicate") == COPIES - 1
    assert count(db, "message_updates") == 1
    assert (
        job_id(ARCHIVE_UPDATE, updates[0]["update_id"]) in Queue(ARCHIVE_QUEUE, connection=redis_conn).job_ids
    )


def test_concurrent_update_and_create_of_a_new_message(app: Any, db: Any, redis_conn: Any) -> None:
    created = load_fixture("message_created__outgoing_bot_quick_reply")
    receipt = load_fixture("message_updated__outgoing_bot_delivered")
    bodies = [json.dumps(p).encode() for p in (created, receipt)] * (COPIES // 2)
    barrier = threading.Barrier(len(bodies))

    def one(body: bytes) -> int:
        client = app.test_client()
        barrier.wait(timeout=30)
        try:
            return int(client.post(URL, data=body, headers=sign(body)).status_code)
        finally:
            context.db().close()

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert set(pool.map(one, bodies)) == {200}
    assert count(db, "meeting_notes") == 1
    assert count(db, "message_updates") == 0
    assert len(Queue(ARCHIVE_QUEUE, connection=redis_conn).job_ids) == 1


# ----------------------------------------------------------------------------------------------
# the same against the real server: gunicorn, 4 sync worker processes


@pytest.fixture
def gunicorn_url(services: Any, tmp_path: Path, db: Any, redis_conn: Any) -> Iterator[str]:
    import devstack

    port = devstack.free_port()
    env = {**os.environ, **base_environ(services, tmp_path), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            devstack.gunicorn_command(port, 4),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        devstack.wait_for(lambda: devstack._http_ok(url + "/healthz"), "gunicorn", timeout=30, log=log)
        yield url
    finally:
        devstack.stop_pid(proc.pid, timeout=10)


def _http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_twenty_concurrent_copies_through_gunicorn(gunicorn_url: str, db: Any, redis_conn: Any) -> None:
    body = json.dumps(load_fixture("message_created__incoming_order")).encode()
    headers = sign(body)
    barrier = threading.Barrier(COPIES)

    def one(_: int) -> tuple[int, dict[str, Any]]:
        barrier.wait(timeout=30)
        return _http_post(gunicorn_url + URL, body, headers)

    started = time.monotonic()
    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(one, range(COPIES)))
    assert time.monotonic() - started < 30
    assert {status for status, _ in answers} == {200}
    assert sorted(a["status"] for _, a in answers) == ["accepted"] + ["duplicate"] * (COPIES - 1)
    assert count(db, "meeting_notes") == 1
    assert len(Queue(ARCHIVE_QUEUE, connection=redis_conn).job_ids) == 1
    # A bad delivery through the real server: a JSON error, nothing stored.
    status, answer = _http_post(gunicorn_url + URL, b"[1, 2]", sign(b"[1, 2]"))
    assert status == 400 and answer["error"] == "bad_request"
    assert count(db, "meeting_notes") == 1
