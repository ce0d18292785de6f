"""The RQ worker of the service: a non-forking SimpleWorker that counts every job run once.

Each run ends in exactly one of RQ's handlers (success, failure, or a returned Retry), so
counting there gives `meeting_notes_job_runs_total{job, result}` and the run's duration for
every job, including ones that crash before they could count themselves.

It also recovers within a minute from what RQ repairs only at its 10-minute maintenance: its
registration lost with Redis's data (it would work on, invisible to `/readyz` and to the
reconciler), and a scheduler process that died or was orphaned.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing import get_context
from typing import Any

from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.scheduler import run as run_scheduler
from rq.worker import SimpleWorker
from rq.worker_pool import WorkerPool, run_worker
from rq.worker_registration import register

from app.metrics import JOB_DURATION, JOB_RUNS


def job_label(job: Any) -> str:
    """`archive_message` for `workers.archive.archive_message`."""
    name = getattr(job, "func_name", None) or "unknown"
    return str(name).rsplit(".", 1)[-1]


WORKER_TTL = 30
"""Seconds between two heartbeats of an idle worker, less 15 (RQ's dequeue wait is the TTL
less 15 s); RQ's default is 420, too slow for the checks below."""
CHECK_INTERVAL = 15.0
"""Seconds between two looks at the worker's registration and its scheduler process."""


class QuietScheduler(RQScheduler):
    """RQ's scheduler process, ending with one log line (RQ's own) rather than a traceback on
    stderr when Redis goes away (its worker starts another within CHECK_INTERVAL), and stopping,
    its locks released, when its worker is gone (killed with SIGKILL)."""

    _parent_pid = 0

    def enqueue_scheduled_jobs(self) -> None:
        if self._parent_pid and os.getppid() != self._parent_pid:
            self.log.warning("scheduler: its worker is gone; stopping")
            self.request_stop()  # type: ignore[no-untyped-call]  # work() stops, releasing the locks, at its next turn
            return
        super().enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    def start(self) -> Any:
        self._parent_pid = os.getpid()
        self._status = self.Status.STARTED
        self._connection = None  # a Redis connection must not cross the fork
        process: Any = get_context("fork").Process(target=_run_scheduler, args=(self,), name="Scheduler")
        process.start()
        self._process = process
        return process


def _run_scheduler(scheduler: RQScheduler) -> None:
    run: Any = run_scheduler
    try:
        run(scheduler)  # logs the error itself
    except Exception:
        raise SystemExit(1) from None


def _run_worker(*args: Any, **kwargs: Any) -> None:
    run: Any = run_worker
    try:
        run(*args, **kwargs)
    except Exception as exc:
        logging.getLogger("workers").error(
            "worker process stopped; the pool starts another", extra={"error_type": type(exc).__name__}
        )
        raise SystemExit(1) from None


class QuietWorkerPool(WorkerPool):
    """RQ's worker pool, whose worker processes end with one log line rather than a traceback on
    stderr when they die (Redis gone while they register); the pool starts new ones."""

    def get_worker_process(
        self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO"
    ) -> Any:
        return get_context("fork").Process(
            target=_run_worker,
            args=(name, self._queue_names, self._connection_class, self._pool_class, self._pool_kwargs),
            kwargs={
                "_sleep": _sleep,
                "burst": burst,
                "logging_level": logging_level,
                "worker_class": self.worker_class,
                "job_class": self.job_class,
                "queue_class": self.queue_class,
                "serializer": self.serializer,
                "exception_handlers": self.exception_handlers,
            },
            name=f"Worker {name} (WorkerPool {self.name})",
        )


class MeteredWorker(SimpleWorker):
    """SimpleWorker that records JOB_RUNS and JOB_DURATION for each run."""

    _run_started: float | None = None
    _next_check = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + CHECK_INTERVAL
            self._check_registration()
            self._check_scheduler()
        super().heartbeat(timeout, pipeline)

    def _check_registration(self) -> None:
        """Register again when Redis lost the registration (restarted without its data)."""
        if self.connection.sismember(self.redis_workers_keys, self.key):
            return
        logging.getLogger("workers").warning("worker registration lost (Redis restarted?); registering again")
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def _check_scheduler(self) -> None:
        """Start a scheduler when this worker's has stopped and a queue's lock is free."""
        scheduler: Any = self.scheduler
        if scheduler is None or (scheduler._process is not None and scheduler._process.is_alive()):
            return
        if scheduler._process is not None:
            scheduler._process.join(0)  # reap it
        scheduler.acquire_locks(auto_start=True)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own, with QuietScheduler."""
        scheduler: Any = QuietScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler = scheduler
        scheduler.acquire_locks()
        if scheduler.acquired_locks:
            if burst:
                try:
                    scheduler.register_birth()
                    scheduler.enqueue_scheduled_jobs()
                finally:
                    scheduler.release_locks()
                    scheduler.register_death()
            else:
                scheduler.start()

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
