"""The RQ worker of the service: a non-forking SimpleWorker that counts every job run once.

Each run ends in exactly one of RQ's handlers (success, failure, or a returned Retry), so
counting there gives `meeting_notes_job_runs_total{job, result}` and the run's duration for
every job, including ones that crash before they could count themselves.
"""

from __future__ import annotations

import time
from typing import Any

from rq.worker import SimpleWorker

from app.metrics import JOB_DURATION, JOB_RUNS


def job_label(job: Any) -> str:
    """`archive_message` for `workers.archive.archive_message`."""
    name = getattr(job, "func_name", None) or "unknown"
    return str(name).rsplit(".", 1)[-1]


class MeteredWorker(SimpleWorker):
    """SimpleWorker that records JOB_RUNS and JOB_DURATION for each run."""

    _run_started: float | None = None

    def execute_job(self, job: Any, queue: Any) -> Any:
        self._run_started = time.perf_counter()
        try:
            return super().execute_job(job, queue)
        finally:
            self._run_started = None

    def _record(self, job: Any, result: str) -> None:
        label = job_label(job)
        JOB_RUNS.labels(label, result).inc()
        if self._run_started is not None:
            JOB_DURATION.labels(label).observe(time.perf_counter() - self._run_started)

    def handle_job_success(self, job: Any, queue: Any, started_job_registry: Any, execution: Any) -> Any:
        outcome = super().handle_job_success(job, queue, started_job_registry, execution)
        self._record(job, "ok")
        return outcome

    def handle_job_failure(
        self,
        job: Any,
        queue: Any,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> Any:
        # Decide before RQ does: afterwards the job's retry count has moved on.
        will_retry = bool(job.should_retry) and getattr(self, "_stopped_job_id", None) != job.id
        outcome = super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )
        self._record(job, "retry" if will_retry else "error")
        return outcome

    def handle_job_retry(
        self, job: Any, queue: Any, retry: Any, started_job_registry: Any, execution: Any
    ) -> Any:
        exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)
        outcome = super().handle_job_retry(job, queue, retry, started_job_registry, execution)
        self._record(job, "error" if exhausted else "retry")
        return outcome
