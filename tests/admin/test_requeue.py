"""`flask requeue`: stuck and failed work retried on demand, by stage, status and id."""

from __future__ import annotations

from typing import Any

from rq import Queue

from app.jobs import ARCHIVE_MESSAGE, CLASSIFY_MESSAGE, SEND_OUTBOX, enqueue, job_id
from tests.system.test_reconcile import fail_job, insert_note, insert_outbox, note


def queued(redis_conn: Any, name: str) -> list[str]:
    return Queue(name, connection=redis_conn).job_ids


def test_dry_run_prints_and_changes_nothing(runner: Any, db: Any, redis_conn: Any) -> None:
    nid = insert_note(db)
    result = runner.invoke(args=["requeue", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"archive {nid}: would be enqueued again" in result.output
    assert "dry run: 1 would enqueue" in result.output
    assert queued(redis_conn, "archive") == []
    assert note(db, nid)["attempts"] == 0


def test_stuck_work_is_enqueued_ignoring_the_backoff(runner: Any, db: Any, redis_conn: Any) -> None:
    nid = insert_note(db)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET attempts = 9, attempt_stage = 'archive', "
            "next_attempt_at = now() + interval '1 hour' WHERE id = %s",
            (nid,),
        )
    result = runner.invoke(args=["requeue"])
    assert result.exit_code == 0, result.output
    # Beyond the attempt limit and not due: an operator's retry still enqueues it.
    assert f"archive {nid}: enqueued again (attempt 10)" in result.output
    assert queued(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, nid)]

    again = runner.invoke(args=["requeue"])
    assert f"archive {nid}: left alone: its job is queued or running" in again.output


def test_by_id_takes_fresh_rows_and_only_those(runner: Any, db: Any, redis_conn: Any) -> None:
    fresh = insert_note(db, "fresh", age=1)
    other = insert_note(db, "other")
    result = runner.invoke(args=["requeue", "--id", str(fresh)])
    assert result.exit_code == 0, result.output
    assert f"archive {fresh}: enqueued again" in result.output
    assert str(other) not in result.output.replace(f"archive {fresh}", "")
    assert queued(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, fresh)]


def test_dead_letter_is_listed_and_revived(runner: Any, db: Any, redis_conn: Any) -> None:
    dead = insert_note(
        db, "dead", processing_status="error", attempts=6, error_details="gave up after 6 attempts: x"
    )
    failed_class = insert_note(
        db, "cls", processing_status="stored", classification_status="failed", error_details="bad"
    )
    gone = insert_outbox(db, "k1", "failed", 100)
    listed = runner.invoke(args=["requeue", "--list"])
    assert listed.exit_code == 0, listed.output
    assert f"archive {dead}: account 1, conversation 42, 6 attempts" in listed.output
    assert f"classification {failed_class}:" in listed.output
    assert f"outbox {gone}:" in listed.output
    assert "3 in the dead letter" in listed.output

    only_archive = runner.invoke(args=["requeue", "--status", "error", "--stage", "archive"])
    assert only_archive.exit_code == 0, only_archive.output
    assert f"archive {dead}: enqueued again (attempt 1)" in only_archive.output
    row = note(db, dead)
    assert row["processing_status"] == "received" and row["attempts"] == 1
    assert queued(redis_conn, "archive") == [job_id(ARCHIVE_MESSAGE, dead)]
    assert note(db, failed_class)["classification_status"] == "failed"

    rest = runner.invoke(args=["requeue", "--status", "error"])
    assert f"classification {failed_class}: enqueued again" in rest.output
    assert f"outbox {gone}: enqueued again" in rest.output
    assert queued(redis_conn, "classify") == [job_id(CLASSIFY_MESSAGE, failed_class)]
    assert queued(redis_conn, "send") == [job_id(SEND_OUTBOX, gone)]


def test_a_notice_that_left_is_never_revived(runner: Any, db: Any, redis_conn: Any) -> None:
    sent = insert_outbox(db, "k2", "failed", 100)
    with db.transaction() as cur:
        cur.execute("UPDATE outbox SET chatwoot_message_id = '77' WHERE id = %s", (sent,))
    result = runner.invoke(args=["requeue", "--status", "error", "--stage", "outbox"])
    assert result.exit_code == 0, result.output
    assert "nothing to requeue" in result.output
    assert queued(redis_conn, "send") == []


def test_failed_job_in_redis_is_replaced(runner: Any, db: Any, redis_conn: Any) -> None:
    nid = insert_note(db)
    enqueue(ARCHIVE_MESSAGE, nid)
    fail_job(redis_conn, job_id(ARCHIVE_MESSAGE, nid), "OSError: disk full")
    result = runner.invoke(args=["requeue", "--stage", "archive"])
    assert f"archive {nid}: enqueued again (attempt 1): OSError: disk full" in result.output


def test_redis_down_is_a_clear_error(runner: Any, db: Any, use_settings: Any) -> None:
    insert_note(db)
    use_settings(redis_url="redis://127.0.0.1:9/0")
    result = runner.invoke(args=["requeue"])
    assert result.exit_code == 1
    assert "Redis is unavailable" in result.output
    assert "Traceback" not in result.output


def test_bad_duration_is_refused(runner: Any, db: Any) -> None:
    result = runner.invoke(args=["requeue", "--since", "yesterday", "--status", "error"])
    assert result.exit_code == 2
    assert "expected a duration" in result.output
