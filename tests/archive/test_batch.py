"""Archive jobs in batches: one RQ job archives the queued messages behind it, each on its own.

The worker is RQ's own (in this process); storage is the suite's emulator.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.worker import SimpleWorker

from app.jobs import ARCHIVE_MESSAGE, CLASSIFY_MESSAGE, TRANSCRIBE_MESSAGE, enqueue, job_id
from tests.helpers.archive import ingest, note, queued, run_archive, text_message, work_until

pytestmark = pytest.mark.usefixtures("archive_env")


@pytest.fixture
def signals() -> Iterator[None]:
    """RQ's worker installs its own SIGTERM/SIGINT handlers: put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def statuses(ids: list[int]) -> dict[int, str]:
    return {i: note(i)["processing_status"] for i in ids}


def job_status(redis_conn: Any, note_id: int) -> str | None:
    raw = redis_conn.hget(Job.key_for(job_id(ARCHIVE_MESSAGE, note_id)), "status")
    return raw.decode() if raw else None


@pytest.mark.parametrize("failing", [0, 3], ids=["the leading job's message", "a claimed message"])
def test_a_failing_upload_in_a_batch_leaves_the_others_stored_and_is_retried(
    failing: int, monkeypatch: pytest.MonkeyPatch, redis_conn: Any, run_jobs: Any
) -> None:
    from app.archive import storage

    ids = [ingest(text_message(7000 + i)) for i in range(6)]
    broken = f"whatsapp-messages/2026-11-20/{7000 + failing}.json"
    upload = storage._upload_media

    def flaky(bucket: str, name: str, data: bytes, content_type: str) -> None:
        if name == broken:
            raise gexc.ServiceUnavailable("storage unavailable for this object")
        upload(bucket, name, data, content_type)

    monkeypatch.setattr(storage, "_upload_media", flaky)
    runs = run_archive(run_jobs)
    assert runs == 1  # one RQ job archived all six
    bad = ids[failing]
    others = [i for i in ids if i != bad]
    assert set(statuses(others).values()) == {"stored"}
    assert {f"classify_{i}" for i in others} <= set(queued("classify"))
    row = note(bad)
    assert row["processing_status"] == "received"
    assert row["error_details"] == "retrying: GCS unavailable"
    # Retried as RQ retries a job: scheduled after the first interval, one retry used.
    jid = job_id(ARCHIVE_MESSAGE, bad)
    registry = ScheduledJobRegistry("archive", connection=redis_conn)
    assert registry.get_job_ids() == [jid]
    job = Job.fetch(jid, connection=redis_conn)
    assert job.get_status() == "scheduled" and job.retries_left == 4
    assert redis_conn.ttl(job.key) == -1  # kept until it runs
    # Finished jobs are gone (as with RESULT_TTL 0); nothing is left `started`.
    for i in others:
        assert not redis_conn.exists(Job.key_for(job_id(ARCHIVE_MESSAGE, i)))
    monkeypatch.setattr(storage, "_upload_media", upload)
    redis_conn.zadd(registry.key, {jid: 0})  # the retry is due now
    work_until(redis_conn, lambda: note(bad)["processing_status"] == "stored", timeout=60)
    assert note(bad)["error_details"] is None


def test_claimed_jobs_are_running_jobs_to_the_reconciler_and_a_dead_workers_are_enqueued_again(
    redis_conn: Any, run_jobs: Any
) -> None:
    from app.archive import batch
    from app.reconcile import STAGES, JobInspector, sweep

    ids = [ingest(text_message(7100 + i)) for i in range(4)]
    redis_conn.hset("rq:worker:alive", mapping={"hostname": socket.gethostname(), "pid": os.getpid()})
    alive = batch._claim(redis_conn, "alive", 2, 300)
    dead = batch._claim(redis_conn, "dead", 10, 300)
    assert [c.note_id for c in alive] == ids[:2] and [c.note_id for c in dead] == ids[2:]
    assert queued("archive") == []
    job = Job.fetch(job_id(ARCHIVE_MESSAGE, ids[0]), connection=redis_conn)
    assert job.get_status() == "started" and job.worker_name == "alive"
    assert 0 < redis_conn.ttl(job.key) <= 300  # a claim never outlives the job timeout by much
    inspector = JobInspector(redis_conn)
    assert [inspector.state(ARCHIVE_MESSAGE, i)[0] for i in ids] == ["live", "live", "stale", "stale"]
    [archive] = [s for s in STAGES if s.name == "archive"]
    outcomes = {o.row_id: o.action for o in sweep([archive], grace=0)}
    assert outcomes == {ids[0]: "live", ids[1]: "live", ids[2]: "enqueued", ids[3]: "enqueued"}
    run_archive(run_jobs)
    assert statuses(ids[2:]) == {ids[2]: "stored", ids[3]: "stored"}


def test_claims_given_back_go_to_the_head_of_the_queue_in_order(redis_conn: Any) -> None:
    from app.archive import batch

    ids = [ingest(text_message(7150 + i)) for i in range(3)]
    enqueue(CLASSIFY_MESSAGE, 1)
    claims = batch._claim(redis_conn, "w1", 2, 300)
    batch._give_back(redis_conn, "w1", [c.job_id for c in claims])
    assert queued("archive") == [job_id(ARCHIVE_MESSAGE, i) for i in ids]
    for i in ids:
        assert job_status(redis_conn, i) == "queued"
        assert redis_conn.ttl(Job.key_for(job_id(ARCHIVE_MESSAGE, i))) == -1
    # Another worker's claim is not given back by this one.
    claims = batch._claim(redis_conn, "w2", 1, 300)
    batch._give_back(redis_conn, "w1", [c.job_id for c in claims])
    assert job_status(redis_conn, ids[0]) == "started"


def test_a_warm_shutdown_finishes_what_it_holds_and_claims_nothing_more(
    redis_conn: Any, monkeypatch: pytest.MonkeyPatch, use_settings: Any, signals: None
) -> None:
    from app.archive import jobs

    use_settings(archive_concurrency=2)
    ids = [ingest(text_message(7200 + i)) for i in range(6)]
    archive_row = jobs.archive_row

    def asked_to_stop(row: dict[str, Any], attempt: Any, erased: Any) -> Any:
        if int(row["id"]) == ids[0]:
            os.kill(os.getpid(), signal.SIGTERM)  # as the worker pool or systemd would
        return archive_row(row, attempt, erased)

    monkeypatch.setattr(jobs, "archive_row", asked_to_stop)
    SimpleWorker([Queue("archive", connection=redis_conn)], connection=redis_conn).work(
        burst=True, logging_level="WARNING"
    )
    done = [i for i in ids if note(i)["processing_status"] == "stored"]
    waiting = [i for i in ids if i not in done]
    assert ids[0] in done and len(done) <= 2  # what it held: its own message, one more at most
    assert queued("archive") == [job_id(ARCHIVE_MESSAGE, i) for i in waiting]
    assert {job_status(redis_conn, i) for i in waiting} == {"queued"}
    monkeypatch.setattr(jobs, "archive_row", archive_row)
    work_until(redis_conn, lambda: set(statuses(ids).values()) == {"stored"}, timeout=60)


def test_a_job_that_times_out_gives_its_claims_back(
    redis_conn: Any, monkeypatch: pytest.MonkeyPatch, signals: None
) -> None:
    from rq.timeouts import JobTimeoutException

    from app.archive import batch, jobs

    ids = [ingest(text_message(7300 + i)) for i in range(4)]
    release = threading.Event()
    archive_row = jobs.archive_row

    def slow(row: dict[str, Any], attempt: Any, erased: Any) -> Any:
        if int(row["id"]) != ids[0]:
            release.wait(30)
        return archive_row(row, attempt, erased)

    def timed_out(self: Any, timeout: float) -> None:
        raise JobTimeoutException("Task exceeded maximum timeout value")

    monkeypatch.setattr(jobs, "archive_row", slow)
    monkeypatch.setattr(batch._Batch, "collect", timed_out)
    SimpleWorker([Queue("archive", connection=redis_conn)], connection=redis_conn).work(
        burst=True, max_jobs=1, logging_level="WARNING"
    )
    release.set()
    # The claimed messages are back in the queue, ready for another worker.
    assert queued("archive") == [job_id(ARCHIVE_MESSAGE, i) for i in ids[1:]]
    assert {job_status(redis_conn, i) for i in ids[1:]} == {"queued"}


def test_jobs_run_with_the_timeout_of_the_settings(use_settings: Any, redis_conn: Any) -> None:
    use_settings(job_timeout=77)
    for note_id in (1, 2):  # RQ's own enqueue, then the template the webhook uses
        enqueue(ARCHIVE_MESSAGE, note_id)
    enqueue(CLASSIFY_MESSAGE, 3)
    enqueue(TRANSCRIBE_MESSAGE, 4)
    timeouts = [
        Job.fetch(job_id(spec, i), connection=redis_conn).timeout
        for spec, i in (
            (ARCHIVE_MESSAGE, 1),
            (ARCHIVE_MESSAGE, 2),
            (CLASSIFY_MESSAGE, 3),
            (TRANSCRIBE_MESSAGE, 4),
        )
    ]
    assert timeouts == [77, 77, 77, 3600]  # a transcription keeps its own, longer limit


def test_a_batch_asks_once_which_owners_are_erased_and_writes_nothing_of_theirs(
    monkeypatch: pytest.MonkeyPatch, run_jobs: Any, use_settings: Any
) -> None:
    """The write fence of a batch is one query for all its messages' buckets: a message whose
    owner is an erased user (re-created by hand, without re-consent) is not written and its bucket
    is not created, while its neighbours are stored."""
    from app import context
    from app.archive import jobs, storage
    from app.users import erase, service
    from tests.helpers.admin import add_note

    use_settings(archive_concurrency=8)  # room for every message in the first claim
    service.create_user("nadia")
    erase.erase_user("nadia")
    service.create_user("nadia")  # by hand, without the user's re-consent
    erased_bucket = storage.bucket_name("nadia")
    ids = [ingest(text_message(7600 + i, contact_id=900 + i)) for i in range(5)]
    held = add_note(user_id="nadia", status="received", contact_id=555, phone=None)
    enqueue(ARCHIVE_MESSAGE, held)

    asked: list[set[str]] = []
    real = jobs.erased_owners

    def counted(rows: Any) -> set[str]:
        found = real(rows)
        asked.append(found)
        return found

    monkeypatch.setattr(jobs, "erased_owners", counted)
    assert run_archive(run_jobs) == 1
    assert set(statuses(ids).values()) == {"stored"}
    assert note(held)["processing_status"] == "received"
    assert context.gcs().lookup_bucket(erased_bucket) is None
    # One question per load of the batch (the leader's row, then the five claimed with it), never
    # one per message.
    assert len(asked) == 2
    assert any(erased_bucket in found for found in asked)
