"""The reconciler: stuck rows are enqueued again with backoff, and given up on after N attempts."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from typing import Any

import pytest
from rq import Queue
from rq.job import Job

from app.jobs import (
    ARCHIVE_MESSAGE,
    ARCHIVE_UPDATE,
    CLASSIFY_MESSAGE,
    SEND_OUTBOX,
    TRANSCRIBE_MESSAGE,
    enqueue,
    job_id,
)


def insert_note(db: Any, message_id: str = "m1", age: int = 600, **columns: Any) -> int:
    values = {
        "chatwoot_account_id": 1,
        "chatwoot_message_id": message_id,
        "chatwoot_conversation_id": 42,
        "message_type": "incoming",
        "content": "hello",
        "payload": json.dumps({"id": message_id}),
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"%({k})s" for k in values)
    with db.transaction() as cur:
        cur.execute(
            f"INSERT INTO meeting_notes ({names}, created_at, updated_at) "  # noqa: S608
            f"VALUES ({marks}, now() - make_interval(secs => %(age)s), now() - make_interval(secs => %(age)s)) "
            "RETURNING id",
            {**values, "age": age},
        )
        return int(cur.fetchone()["id"])


def note(db: Any, note_id: int) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM meeting_notes WHERE id = %s", (note_id,))
        return dict(cur.fetchone())


def set_columns(db: Any, table: str, row_id: int, **columns: Any) -> None:
    sets = ", ".join(f"{k} = %({k})s" for k in columns)
    with db.transaction() as cur:
        cur.execute(f"UPDATE {table} SET {sets} WHERE id = %(id)s", {**columns, "id": row_id})  # noqa: S608


def make_due(db: Any, table: str, row_id: int) -> None:
    with db.transaction() as cur:
        cur.execute(
            f"UPDATE {table} SET next_attempt_at = now() - interval '1 second' WHERE id = %s",  # noqa: S608
            (row_id,),
        )


def queued_ids(redis_conn: Any, queue: str) -> list[str]:
    return Queue(queue, connection=redis_conn).job_ids


def fail_job(redis_conn: Any, jid: str, message: str = "RuntimeError: GCS unavailable") -> None:
    """Turn a queued job into a failed one, as a worker does, with a traceback."""
    job = Job.fetch(jid, connection=redis_conn)
    Queue(job.origin, connection=redis_conn).remove(job)
    with redis_conn.pipeline() as pipe:
        job._exc_info = f"Traceback (most recent call last):\n  File x\n{message}\n"
        job.set_status("failed", pipeline=pipe)
        job.failed_job_registry.add(job, ttl=3600, exc_string=job._exc_info, pipeline=pipe)
        job.save(pipeline=pipe)
        pipe.execute()


@pytest.fixture
def sweep(db: Any, redis_conn: Any) -> Any:
    from app.reconcile import sweep as run

    return run


def test_stuck_received_row_is_enqueued_with_attempt_and_backoff(
    db: Any, redis_conn: Any, sweep: Any
) -> None:
    nid = insert_note(db)
    outcomes = sweep()
    assert [(o.stage, o.row_id, o.action, o.attempts) for o in outcomes] == [("archive", nid, "enqueued", 1)]
    assert queued_ids(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, nid)]
    row = note(db, nid)
    assert row["attempts"] == 1 and row["attempt_stage"] == "archive"
    assert row["next_attempt_at"] is not None and row["processing_status"] == "received"

    # Its job is queued: a second sweep leaves it alone, even once due.
    make_due(db, "meeting_notes", nid)
    assert [o.action for o in sweep()] == ["live"]
    assert note(db, nid)["attempts"] == 1
    assert queued_ids(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, nid)]


def test_recent_rows_and_rows_not_due_are_left_alone(db: Any, redis_conn: Any, sweep: Any) -> None:
    insert_note(db, "young", age=5)
    waiting = insert_note(db, "waiting")
    with db.transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET attempts = 2, attempt_stage = 'archive', "
            "next_attempt_at = now() + interval '1 hour' WHERE id = %s",
            (waiting,),
        )
    assert sweep() == []
    assert queued_ids(redis_conn, "archive") == []


def test_failed_job_is_replaced_and_its_error_kept(
    db: Any, redis_conn: Any, sweep: Any, settings: Any
) -> None:
    nid = insert_note(db)
    assert enqueue(ARCHIVE_MESSAGE, nid)
    jid = job_id(ARCHIVE_MESSAGE, nid)
    fail_job(redis_conn, jid, "ConnectionError: emulator at +5511987654321 refused")
    # A second enqueue with the same id would be refused while the failed job exists.
    assert not enqueue(ARCHIVE_MESSAGE, nid)

    [outcome] = sweep()
    assert outcome.action == "enqueued" and outcome.attempts == 1
    assert "ConnectionError" in outcome.detail and "+5511987654321" not in outcome.detail
    assert Job.fetch(jid, connection=redis_conn).get_status() == "queued"
    assert queued_ids(redis_conn, "archive") == [jid]


def test_after_max_attempts_the_row_goes_to_the_dead_letter(
    db: Any, redis_conn: Any, sweep: Any, use_settings: Any
) -> None:
    use_settings(reconcile_max_attempts=3, reconcile_backoff=10, reconcile_backoff_max=25)
    nid = insert_note(db)
    delays = []
    for attempt in range(1, 4):
        [outcome] = sweep()
        assert (outcome.action, outcome.attempts) == ("enqueued", attempt)
        with db.transaction() as cur:
            cur.execute(
                "SELECT extract(epoch FROM next_attempt_at - now())::int AS d FROM meeting_notes WHERE id = %s",
                (nid,),
            )
            delays.append(cur.fetchone()["d"])
        fail_job(redis_conn, job_id(ARCHIVE_MESSAGE, nid), "TimeoutError: upload took too long")
        make_due(db, "meeting_notes", nid)
    # Exponential, capped: 10, 20, 25 seconds.
    assert [round(d / 5) * 5 for d in delays] == [10, 20, 25]

    [outcome] = sweep()
    assert outcome.action == "gave_up"
    row = note(db, nid)
    assert row["processing_status"] == "error"
    assert row["error_details"] == "gave up after 3 attempts: TimeoutError: upload took too long"
    with db.transaction() as cur:
        cur.execute("SELECT stage, id, attempts FROM dead_letters")
        assert [dict(r) for r in cur.fetchall()] == [{"stage": "archive", "id": nid, "attempts": 3}]
    assert sweep() == []


def test_stages_follow_the_message_and_count_attempts_apart(db: Any, redis_conn: Any, sweep: Any) -> None:
    # Transcription waits for the archive; classification waits for the transcription.
    received = insert_note(db, "a", transcription_status="pending", classification_status="pending")
    voice = insert_note(
        db,
        "b",
        processing_status="stored",
        transcription_status="pending",
        classification_status="pending",
        attempts=4,
        attempt_stage="archive",
    )
    text = insert_note(db, "c", processing_status="stored", classification_status="pending")
    done = insert_note(db, "d", processing_status="stored", classification_status="done")
    outcomes = {(o.stage, o.row_id): o for o in sweep()}
    assert set(outcomes) == {("archive", received), ("transcription", voice), ("classification", text)}
    # The archive stage's 4 attempts do not count against the transcription.
    assert outcomes[("transcription", voice)].attempts == 1
    assert queued_ids(redis_conn, "transcribe") == [job_id(TRANSCRIBE_MESSAGE, voice)]
    assert queued_ids(redis_conn, "classify") == [job_id(CLASSIFY_MESSAGE, text)]
    assert ("classification", done) not in outcomes


def test_updates_wait_for_their_message(db: Any, redis_conn: Any, sweep: Any) -> None:
    stored = insert_note(db, "s", processing_status="stored")
    received = insert_note(db, "r")
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO message_updates (meeting_note_id, fingerprint, payload, created_at, updated_at) "
            "VALUES (%s, 'f1', '{}', now() - interval '1 hour', now() - interval '1 hour'), "
            "(%s, 'f2', '{}', now() - interval '1 hour', now() - interval '1 hour') RETURNING id",
            (stored, received),
        )
        ready, waiting = (r["id"] for r in cur.fetchall())
    outcomes = [(o.stage, o.row_id) for o in sweep()]
    assert ("update", ready) in outcomes and ("update", waiting) not in outcomes
    assert sorted(queued_ids(redis_conn, "archive")) == sorted(
        [job_id(ARCHIVE_UPDATE, ready), job_id(ARCHIVE_MESSAGE, received)]
    )


def insert_outbox(db: Any, key: str, status: str, age: int) -> int:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO outbox (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, body, status, "
            "created_at, updated_at) VALUES (%s, 1, 42, 'clarification', '{}', %s, "
            "now() - make_interval(secs => %s), now() - make_interval(secs => %s)) RETURNING id",
            (key, status, age, age),
        )
        return int(cur.fetchone()["id"])


def test_outbox_pending_and_long_sending_rows(db: Any, redis_conn: Any, sweep: Any, settings: Any) -> None:
    pending = insert_outbox(db, "k1", "pending", 600)
    sending_recent = insert_outbox(db, "k2", "sending", settings.reconcile_grace + 10)
    sending_old = insert_outbox(db, "k3", "sending", settings.reconcile_grace + settings.job_timeout + 10)
    insert_outbox(db, "k4", "sent", 6000)
    outcomes = {o.row_id: o for o in sweep()}
    assert set(outcomes) == {pending, sending_old}
    assert outcomes[sending_old].stage == "outbox_sending"
    assert sorted(queued_ids(redis_conn, "send")) == sorted(
        [job_id(SEND_OUTBOX, pending), job_id(SEND_OUTBOX, sending_old)]
    )
    with db.transaction() as cur:
        cur.execute("SELECT requeue_attempts, attempts FROM outbox WHERE id = %s", (pending,))
        assert dict(cur.fetchone()) == {"requeue_attempts": 1, "attempts": 0}
    assert sending_recent not in outcomes


def _started_job_of_dead_worker(redis_conn: Any, jid: str) -> None:
    """A job marked started by a worker process on this host that no longer exists (kill -9)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    redis_conn.hset(
        "rq:worker:dead-worker", mapping={"hostname": socket.gethostname(), "pid": proc.pid, "state": "busy"}
    )
    job = Job.fetch(jid, connection=redis_conn)
    Queue(job.origin, connection=redis_conn).remove(job)
    redis_conn.hset(job.key, mapping={"status": "started", "worker_name": "dead-worker"})


def test_job_of_a_dead_worker_is_replaced(db: Any, redis_conn: Any, sweep: Any) -> None:
    nid = insert_note(db)
    enqueue(ARCHIVE_MESSAGE, nid)
    jid = job_id(ARCHIVE_MESSAGE, nid)
    _started_job_of_dead_worker(redis_conn, jid)
    [outcome] = sweep()
    assert outcome.action == "enqueued" and outcome.detail == "worker died during the job"
    assert queued_ids(redis_conn, "archive") == [jid]


def test_job_of_a_live_worker_is_left_alone(db: Any, redis_conn: Any, sweep: Any) -> None:
    nid = insert_note(db)
    enqueue(ARCHIVE_MESSAGE, nid)
    jid = job_id(ARCHIVE_MESSAGE, nid)
    redis_conn.hset("rq:worker:alive", mapping={"hostname": socket.gethostname(), "pid": os.getpid()})
    job = Job.fetch(jid, connection=redis_conn)
    Queue(job.origin, connection=redis_conn).remove(job)
    redis_conn.hset(job.key, mapping={"status": "started", "worker_name": "alive"})
    assert [o.action for o in sweep()] == ["live"]


def test_queued_job_missing_from_its_queue_is_replaced(db: Any, redis_conn: Any, sweep: Any) -> None:
    nid = insert_note(db)
    enqueue(ARCHIVE_MESSAGE, nid)
    redis_conn.delete(Queue("archive", connection=redis_conn).key)
    [outcome] = sweep()
    assert outcome.action == "enqueued" and outcome.detail == "job lost from its queue"


def test_dry_run_changes_nothing(db: Any, redis_conn: Any, sweep: Any) -> None:
    nid = insert_note(db)
    assert [o.action for o in sweep(dry_run=True)] == ["would_enqueue"]
    assert note(db, nid)["attempts"] == 0
    assert queued_ids(redis_conn, "archive") == []


def test_reconcile_job_runs_once_at_a_time(db: Any, redis_conn: Any) -> None:
    from app.reconcile import LOCK_KEY, reconcile

    insert_note(db)
    redis_conn.set(LOCK_KEY, "other-run", ex=60)
    assert reconcile() == {"skipped": "another run is in progress"}
    assert queued_ids(redis_conn, "archive") == []
    redis_conn.delete(LOCK_KEY)
    summary = reconcile()
    assert summary["archive.enqueued"] == 1
    assert not redis_conn.exists(LOCK_KEY)


def test_a_lock_left_by_a_killed_run_is_taken_over(db: Any, redis_conn: Any) -> None:
    """A run killed with SIGKILL leaves its lock; the next run on this host takes it over at once."""
    import subprocess
    import sys

    from app.reconcile import LOCK_KEY, reconcile

    insert_note(db)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    redis_conn.set(LOCK_KEY, f"{socket.gethostname()}:{dead.pid}:abc", ex=120)
    assert reconcile()["archive.enqueued"] == 1
    assert not redis_conn.exists(LOCK_KEY)
    # A live holder is waited for.
    redis_conn.set(LOCK_KEY, f"{socket.gethostname()}:{os.getpid()}:abc", ex=120)
    assert reconcile() == {"skipped": "another run is in progress"}


def test_reconcile_without_redis_reports_and_keeps_rows(db: Any, redis_conn: Any, use_settings: Any) -> None:
    from app.reconcile import run_once

    nid = insert_note(db)
    use_settings(redis_url="redis://127.0.0.1:9/0")
    report = run_once()
    assert report.steps["sweep"] == "unavailable: QueueUnavailable"
    assert note(db, nid)["attempts"] == 0


def test_reconcile_as_a_real_job(db: Any, redis_conn: Any, run_jobs: Any) -> None:
    """The scheduled job runs on the maintenance queue of a real worker."""
    from app.reconcile import reconcile

    nid = insert_note(db)
    Queue("maintenance", connection=redis_conn).enqueue(reconcile, result_ttl=60)
    run_jobs(queues=("maintenance",))
    assert note(db, nid)["attempts"] == 1
    assert queued_ids(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, nid)]


# ---------------------------------------------------------------------------------------------
# the schedule: `python -m workers.cron`


def _maintenance_funcs(redis_conn: Any) -> list[str]:
    queue = Queue("maintenance", connection=redis_conn)
    return sorted(j.func_name for j in queue.jobs)


def test_one_cron_process_schedules_the_other_stands_by(db: Any, redis_conn: Any, settings: Any) -> None:
    from workers.cron import CronProcess

    first, second = CronProcess(redis_conn, settings), CronProcess(redis_conn, settings)
    for _ in range(3):
        first.tick()
        second.tick()
    assert first.leader.held and not second.leader.held
    # Each periodic job once, however many processes run.
    assert _maintenance_funcs(redis_conn) == [
        "workers.backfill.backfill",
        "workers.reconcile.reconcile",
        "workers.records.records",
    ]

    first.shutdown()
    second.tick()
    assert second.leader.held
    second.shutdown()
    assert not redis_conn.exists("meeting-notes:cron:leader")


def _env_for(services: Any, tmp_path: Any, **extra: str) -> dict[str, str]:
    from tests.helpers.common import base_environ

    return {**os.environ, **base_environ(services, tmp_path), "PYTHONUNBUFFERED": "1", **extra}


def test_cron_process_survives_a_redis_restart_and_stops_on_sigterm(
    services: Any, tmp_path: Any, db: Any
) -> None:
    """A private Redis, stopped and started again under a running `python -m workers.cron`."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    import devstack
    from redis import Redis
    from redis.exceptions import RedisError

    stack = devstack.Stack(tmp_path / "redis-state", fast=True)
    (tmp_path / "redis-state").mkdir()
    url = stack.start_redis()
    conn = Redis.from_url(url)
    env = _env_for(services, tmp_path, REDIS_URL=url, RECONCILE_INTERVAL="1", BACKFILL_INTERVAL="0")
    log_path = tmp_path / "cron.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cron"],
            cwd=devstack.ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def wait_reconcile_jobs(at_least: int) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(RedisError):
                    if Queue("maintenance", connection=conn).count >= at_least:
                        return
                time.sleep(0.2)
            raise AssertionError(log_path.read_text()[-3000:])

        wait_reconcile_jobs(2)
        assert conn.exists("meeting-notes:cron:leader")
        stack.stop_pidfile("redis")
        time.sleep(2)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        stack.start_redis()
        wait_reconcile_jobs(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not conn.exists("meeting-notes:cron:leader")
        assert "Traceback" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stack.stop_pidfile("redis")


def test_readyz_reports_the_cron_process(client: Any, redis_conn: Any, settings: Any) -> None:
    from workers.cron import CronProcess

    assert client.get("/readyz").get_json()["workers"]["cron"] is False
    cron = CronProcess(redis_conn, settings)
    cron.tick()
    try:
        assert client.get("/readyz").get_json()["workers"]["cron"] is True
    finally:
        cron.shutdown()


def test_reconcile_replays_the_spool_once_postgres_answers(
    db: Any, redis_conn: Any, use_settings: Any, settings: Any
) -> None:
    from app.ingest import spool
    from app.ingest.pipeline import prepare
    from app.reconcile import run_once
    from tests.helpers.common import load_fixture

    prepared = prepare(load_fixture("message_created__incoming_text"))
    spool.append(prepared)
    good_url = settings.database_url
    use_settings(database_url="postgresql://postgres@127.0.0.1:9/meeting_notes")
    down = run_once()
    assert down.steps["spool"] == "unavailable: DatabaseUnavailable"
    assert spool.status()["records"] == 1

    use_settings(database_url=good_url)
    report = run_once()
    assert report.steps["spool"] == "1 accepted, 0 duplicates, 0 rejected"
    assert report.steps["clarifications"] == "0 expired"
    assert spool.status()["records"] == 0
    with db.transaction() as cur:
        cur.execute("SELECT chatwoot_message_id FROM meeting_notes")
        assert [r["chatwoot_message_id"] for r in cur.fetchall()] == ["9876"]
    assert run_once().steps["spool"] == "empty"


def test_the_schedule_holds_each_periodic_job_at_its_interval(redis_conn: Any, settings: Any) -> None:
    from workers.cron import build_scheduler

    jobs = {j.name: j.interval for j in build_scheduler(redis_conn, settings).get_jobs()}
    assert jobs == {
        "reconcile": settings.reconcile_interval,
        "backfill": settings.backfill_interval,
        "records": settings.retention_interval,
    }
    without_backfill = build_scheduler(redis_conn, replace(settings, backfill_interval=0)).get_jobs()
    assert [j.name for j in without_backfill] == ["reconcile", "records"]
