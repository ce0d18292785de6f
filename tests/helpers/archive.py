"""Helpers shared by the archive, storage, users and media tests (this module holds no tests).

Messages enter through `app.ingest.ingest` (the path the webhook uses); the GCS emulator is the
suite's own, and Chatwoot's attachment URLs are mocked with `responses`.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import devstack  # scripts/, on the path from tests/conftest.py
import pytest
import responses

from app.ingest.pipeline import ingest as ingest_payload
from tests.helpers.common import load_fixture

STORAGE_HOST = "https://storage.example-cdn.com"
PUBLIC_ADDRESS = "93.184.216.34"
"""What the test resolver answers for public test hosts (example.com's documented address)."""


def ingest(payload: dict[str, Any], enqueue: bool = True) -> int:
    """Store a Chatwoot payload as the webhook would (app.ingest); return the meeting_notes id."""
    result = ingest_payload(copy.deepcopy(payload), enqueue_jobs=enqueue)
    assert result.note_id is not None, result
    return int(result.note_id)


def text_message(
    message_id: int,
    *,
    contact_id: int = 287,
    account_id: int = 1,
    content: str = "a note",
    created_at: str = "2026-11-20T14:21:40.117Z",
    phone: str | None = "+5491155550123",
    identifier: str | None = None,
) -> dict[str, Any]:
    """An incoming WhatsApp text message from a contact, in Chatwoot's shape."""
    payload = load_fixture("message_created__incoming_text")
    payload["id"] = message_id
    payload["content"] = content
    payload["created_at"] = created_at
    payload["account"] = {"id": account_id, "name": "Test"}
    for sender in (payload["sender"], payload["conversation"]["meta"]["sender"]):
        sender["id"] = contact_id
        sender["phone_number"] = phone
        sender["identifier"] = identifier
    payload["conversation"]["contact_inbox"]["contact_id"] = contact_id
    payload["conversation"]["messages"] = []
    return payload


def voice_note(message_id: int = 9877, attachment_id: int = 5521, contact_id: int = 287) -> dict[str, Any]:
    payload = load_fixture("message_created__incoming_voice_note")
    payload["id"] = message_id
    payload["conversation"]["messages"] = []
    payload["sender"]["id"] = contact_id
    payload["conversation"]["meta"]["sender"]["id"] = contact_id
    attachment = payload["attachments"][0]
    attachment["id"] = attachment_id
    attachment["message_id"] = message_id
    attachment["data_url"] = data_url(attachment_id, "audioclip.ogg")
    return payload


def data_url(attachment_id: int, filename: str) -> str:
    return f"https://chat.example.com/rails/active_storage/blobs/redirect/eyJ{attachment_id}--x/{filename}"


def storage_url(attachment_id: int, filename: str) -> str:
    return f"{STORAGE_HOST}/media/{attachment_id}/{filename}?X-Amz-Signature=abc"


def mock_attachment(
    rsps: responses.RequestsMock,
    attachment_id: int,
    filename: str,
    body: bytes,
    content_type: str,
    *,
    not_found_first: int = 0,
) -> None:
    """Chatwoot's data_url: 404 `not_found_first` times, then 302 to the storage host, which serves `body`."""
    url = data_url(attachment_id, filename)
    for _ in range(not_found_first):
        rsps.add(responses.GET, url, status=404)
    rsps.add(responses.GET, url, status=302, headers={"Location": storage_url(attachment_id, filename)})
    rsps.add(
        responses.GET,
        storage_url(attachment_id, filename),
        body=body,
        status=200,
        content_type=content_type,
    )


@pytest.fixture
def public_resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host names of the tests resolve through this table (requests is mocked, DNS is not used)."""
    from app.archive import media

    table: dict[str, list[str]] = {"storage.example-cdn.com": [PUBLIC_ADDRESS]}

    def resolve(host: str) -> list[str]:
        if host in table:
            return table[host]
        return media.system_resolve(host)

    monkeypatch.setattr(media, "resolve", resolve)
    return table


@pytest.fixture
def http(settings: Any) -> Iterator[responses.RequestsMock]:
    """Mocked Chatwoot HTTP; the GCS emulator passes through."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(settings.storage_emulator_host)
        yield rsps


@pytest.fixture
def archive_env(db: Any, redis_conn: Any, gcs: Any, settings: Any) -> Any:
    """Empty tables, Redis and emulator, and fast retries of GCS calls."""
    from app.archive import storage
    from app.chatwoot import accounts

    accounts.forget_cached()  # account settings are cached per process for 30 s
    previous = storage.CALL_RETRY_SECONDS
    storage.CALL_RETRY_SECONDS = 1.0
    yield settings
    storage.CALL_RETRY_SECONDS = previous
    accounts.forget_cached()


def note(note_id: int) -> dict[str, Any]:
    from app import context

    with context.db().transaction() as cur:
        cur.execute("SELECT * FROM meeting_notes WHERE id = %s", (note_id,))
        row = cur.fetchone()
    assert row is not None
    return dict(row)


def attachments(note_id: int) -> list[dict[str, Any]]:
    from app import context

    with context.db().transaction() as cur:
        cur.execute(
            "SELECT * FROM message_attachments WHERE meeting_note_id = %s ORDER BY chatwoot_attachment_id",
            (note_id,),
        )
        return [dict(r) for r in cur.fetchall()]


def objects(bucket: str, prefix: str = "") -> dict[str, Any]:
    """name -> blob of every object in a bucket of the emulator."""
    from app import context

    client = context.gcs()
    return {b.name: b for b in client.list_blobs(bucket, prefix=prefix or None)}


def read_json(bucket: str, name: str) -> Any:
    from app import context

    return json.loads(context.gcs().bucket(bucket).blob(name).download_as_bytes())


def queued(queue: str) -> list[str]:
    """Job ids waiting in an RQ queue."""
    from rq import Queue

    from app import context

    return list(Queue(queue, connection=context.redis()).job_ids)


def run_archive(run_jobs: Callable[..., int]) -> int:
    """Run the archive queue only (the next steps' jobs stay queued for the assertions)."""
    return run_jobs(queues=("archive",))


def work_until(
    redis_conn: Any, done: Callable[[], bool], timeout: float = 120.0, queues: tuple[str, ...] = ("archive",)
) -> None:
    """Run burst workers with their scheduler until `done()` (deferred and retried jobs included)."""
    from rq import Queue
    from rq.worker import SimpleWorker

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "work did not finish in time"
        worker = SimpleWorker([Queue(q, connection=redis_conn) for q in queues], connection=redis_conn)
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
        time.sleep(0.1)


@contextmanager
def metadata_emulator() -> Iterator[str]:
    """A gcp-storage-emulator of the caller's own, in memory; its URL. Unlike fake-gcs-server (the
    suite's emulator) it keeps a bucket's lifecycle rules, access settings and labels, so they
    can be read back."""
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--in-memory", "--quiet"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b?project=local-project", timeout=1):
                return True
        except OSError:
            return False

    try:
        devstack.wait_for(answers, "gcp-storage-emulator", timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
