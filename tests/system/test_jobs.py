"""app.jobs: a job enqueued from its template is the job RQ itself would have written."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry

from app import jobs

SQRT = jobs.JobSpec("test-jobs", "math.sqrt", "sqrt", retry_intervals=(5, 30))
PER_JOB = {"data", "description", "created_at", "enqueued_at"}


def test_a_template_job_is_the_job_rq_writes(redis_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs._registered_queues.discard((id(redis_conn), SQRT.queue))
    # The first enqueue on a connection goes through Queue.enqueue (it registers the queue);
    # later ones are written from the template.
    assert jobs.enqueue(SQRT, 16, connection=redis_conn)
    assert (id(redis_conn), SQRT.queue) in jobs._registered_queues

    def not_this_time(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Queue.enqueue called: the template was not used")

    with monkeypatch.context() as patched:
        patched.setattr(Queue, "enqueue", not_this_time)
        assert jobs.enqueue(SQRT, 25, connection=redis_conn)

    by_rq = redis_conn.hgetall("rq:job:sqrt_16")
    templated = redis_conn.hgetall("rq:job:sqrt_25")
    assert by_rq.keys() == templated.keys()
    differ = {key.decode() for key in by_rq if by_rq[key] != templated[key]}
    assert differ <= PER_JOB
    assert {"data", "description"} <= differ

    first, second = (Job.fetch(i, connection=redis_conn) for i in ("sqrt_16", "sqrt_25"))
    assert (second.func_name, second.args, second.kwargs) == ("math.sqrt", (25,), {})
    assert second.description == "math.sqrt(25)"
    for attr in ("origin", "retries_left", "retry_intervals", "timeout", "result_ttl", "failure_ttl"):
        assert getattr(second, attr) == getattr(first, attr), attr
    assert second.get_status() == first.get_status() == "queued"
    assert second.enqueued_at is not None and second.created_at is not None
    assert Queue(SQRT.queue, connection=redis_conn).job_ids == ["sqrt_16", "sqrt_25"]


def test_a_template_job_is_unique_and_runs(redis_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobs.enqueue(SQRT, 9, connection=redis_conn)
    monkeypatch.setattr(Queue, "enqueue", None)  # from here on, only the template
    assert jobs.enqueue(SQRT, 4, connection=redis_conn)
    assert not jobs.enqueue(SQRT, 4, connection=redis_conn)  # queued already: a no-op
    queue = Queue(SQRT.queue, connection=redis_conn)
    assert queue.job_ids == ["sqrt_9", "sqrt_4"]

    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    assert queue.count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    # Done, and kept for no time (RESULT_TTL 0): the same id can be queued again on purpose.
    assert not redis_conn.exists("rq:job:sqrt_4")
    assert jobs.enqueue(SQRT, 4, connection=redis_conn)


@pytest.mark.parametrize(
    "dotted",
    [
        "workers.archive.archive_message",
        "workers.archive.archive_update",
        "workers.transcribe.transcribe_message",
        "workers.classify.classify_message",
        "workers.send.send_outbox",
        "workers.generate.generate_order",
        "workers.generate.deliver_order",
        "workers.reconcile.reconcile",
        "workers.backfill.backfill",
        "app.links.rehome_job",
    ],
)
def test_jobs_queued_by_an_earlier_version_still_resolve(dotted: str) -> None:
    """A job queued before an upgrade names its function by this dotted path; RQ imports it."""
    from rq.utils import import_attribute

    assert callable(import_attribute(dotted))


def test_a_job_queued_under_its_old_name_runs(redis_conn: Any, db: Any, run_jobs: Any) -> None:
    from rq import Queue

    from tests.helpers.archive import ingest, text_message

    note_id = ingest(text_message(7301), enqueue=False)
    Queue("archive", connection=redis_conn).enqueue("workers.archive.archive_message", note_id)
    run_jobs(queues=("archive",))
    with db.transaction() as cur:
        cur.execute("SELECT processing_status FROM meeting_notes WHERE id = %s", (note_id,))
        assert cur.fetchone()["processing_status"] == "stored"
