"""`python -m workers.cron`: enqueues the periodic jobs (reconcile, backfill, records) onto the
maintenance queue, where the general workers run them.

RQ's CronScheduler has no lock of its own: two of them would enqueue everything twice. So each
`workers.cron` process first takes a Redis lock (CRON_LEADER_KEY) and only its holder
schedules; a second process waits as a standby and takes over when the lock expires. The loop
survives Redis outages (it waits and takes the lock again) and stops on SIGTERM or SIGINT.

The leader also watches, every few seconds, what would otherwise wait for a periodic run:
- RQ's scheduler (which moves retries and delayed jobs onto their queues) normally runs beside
  a worker, which looks for a lost one only every 10 minutes. The leader takes each queue's
  scheduler lock that nobody holds and does that work itself, so a lost scheduler (its worker
  killed, Redis restarted empty) is replaced within seconds.
- Spooled deliveries: once PostgreSQL answers again, a reconcile run is queued at once instead
  of at the next RECONCILE_INTERVAL.
- Workers: a queue with jobs waiting and no worker serving it is logged (once a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

from redis.exceptions import LockError, RedisError
from rq import Queue, Worker
from rq.cron import CronScheduler
from rq.exceptions import DuplicateJobError
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock, release_lock

from app import context, logs
from app.config import ConfigError, Settings
from app.db import DatabaseUnavailable
from app.ingest import spool
from app.jobs import ALL_QUEUES, CRON_LEADER_KEY, CRON_LEADER_TTL, MAINTENANCE_QUEUE
from workers.backfill import backfill
from workers.reconcile import reconcile
from workers.records import records

log = logging.getLogger("workers.cron")

TICK = 2.0
"""Seconds between two looks at the schedule (and renewals of the leader lock)."""
RECONCILE_TIMEOUT = 540
"""Seconds a reconcile run may take (under the reconcile lock's 600)."""
BACKFILL_TIMEOUT = 900
"""Seconds a backfill run may take."""
RECORDS_TIMEOUT = 3000
"""Seconds a records pass (retention, exports, audit partitions) may take; a pass cut short is
finished by the next."""
HISTORY_TTL = 3600
"""Seconds the result of a periodic run is kept for inspection."""
SCHEDULER_LOCK_TTL = 15
"""Seconds an RQ scheduler lock taken by the cron leader lasts without renewal (renewed every
tick); RQ's own schedulers use 61."""
SPOOL_CHECK = 5.0
"""Seconds between two looks at the spool (and, when it holds deliveries, at PostgreSQL)."""
WORKER_CHECK = 60.0
"""Seconds between two warnings about a queue that has jobs and no worker."""
REPLAY_JOB_ID = "reconcile-spool"
"""Id of the reconcile run queued when spooled deliveries can be written (one at a time)."""


def build_scheduler(conn: Any, settings: Settings) -> Any:
    """A CronScheduler with the service's periodic jobs registered."""
    scheduler = CronScheduler(connection=conn, logging_level=settings.log_level)
    periodic = [
        # (job, interval, timeout, how long a run may wait in the queue before it is dropped)
        (reconcile, settings.reconcile_interval, RECONCILE_TIMEOUT, settings.reconcile_interval * 2),
        (backfill, settings.backfill_interval, BACKFILL_TIMEOUT, settings.backfill_interval),
        (records, settings.retention_interval, RECORDS_TIMEOUT, settings.retention_interval),
    ]
    for job, interval, timeout, wait in periodic:
        if interval <= 0:  # BACKFILL_INTERVAL=0 turns the backfill off
            continue
        scheduler.register(
            job,
            queue_name=MAINTENANCE_QUEUE,
            interval=interval,
            job_timeout=timeout,
            result_ttl=HISTORY_TTL,
            failure_ttl=HISTORY_TTL * 24,
            ttl=max(wait, 60),
            name=job.__name__,
        )
    return scheduler


class Leader:
    """The leader lock: taken, renewed on every tick, taken again after Redis lost it."""

    def __init__(self, conn: Any):
        self.lock = conn.lock(CRON_LEADER_KEY, timeout=CRON_LEADER_TTL, blocking=False, thread_local=False)
        self.held = False

    def hold(self) -> bool:
        """True while this process leads; renews the lock, or tries to take it."""
        if self.held:
            try:
                self.lock.reacquire()
                return True
            except LockError:
                self.held = False
                log.warning("cron leader lock lost; trying to take it again")
        self.held = bool(self.lock.acquire(blocking=False))
        if self.held:
            log.info("cron leader: scheduling the periodic jobs")
        return self.held

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(LockError, RedisError):
                self.lock.release()
            self.held = False


class SchedulerStandIn(RQScheduler):
    """RQ's scheduler run inside the cron leader's loop, for the queues whose scheduler lock
    nobody holds: due scheduled jobs (retries, delayed jobs) are moved onto their queues."""

    def __init__(self, conn: Any, settings: Settings):
        super().__init__(ALL_QUEUES, connection=conn, interval=TICK, logging_level=settings.log_level)

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        """RQ's, with a lock that outlives this process by SCHEDULER_LOCK_TTL at most."""
        owned = set()
        for name in sorted(self._queue_names):
            outcome = acquire_or_refresh_lock(
                self.connection, self.get_locking_key(name), self.name, SCHEDULER_LOCK_TTL
            )
            if outcome in ("acquired", "refreshed"):
                owned.add(name)
                if outcome == "acquired":
                    log.warning(
                        "no RQ scheduler held the queue; the cron leader schedules it", extra={"queue": name}
                    )
        self._scheduled_job_registries = []
        self._acquired_locks = owned
        return owned

    def tick(self) -> None:
        if self.acquire_locks():
            self.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    def release_locks(self) -> None:
        for name in self._acquired_locks:
            with contextlib.suppress(RedisError, OSError):
                release_lock(self.connection, self.get_locking_key(name), self.name)
        self._acquired_locks = set()


class Watch:
    """The leader's looks at the spool and at the workers, each at its own pace."""

    def __init__(self, conn: Any, settings: Settings):
        self.conn = conn
        self.settings = settings
        self.next_spool = 0.0
        self.next_workers = time.monotonic() + WORKER_CHECK

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_spool:
            self.next_spool = now + SPOOL_CHECK
            self.spool()
        if now >= self.next_workers:
            self.next_workers = now + WORKER_CHECK
            self.workers()

    def spool(self) -> None:
        """Queue a reconcile run as soon as spooled deliveries can be written."""
        if not spool.pending_files():
            return
        database = context.db()
        try:
            with database.budget(2.0):
                database.ping()
        except DatabaseUnavailable:
            return  # still down: looked at again in SPOOL_CHECK seconds
        try:
            Queue(MAINTENANCE_QUEUE, connection=self.conn).enqueue(
                reconcile,
                job_id=REPLAY_JOB_ID,
                unique=True,
                at_front=True,
                job_timeout=RECONCILE_TIMEOUT,
                result_ttl=0,
                failure_ttl=HISTORY_TTL,
            )
        except DuplicateJobError:
            return  # queued or running already
        log.info("spooled deliveries: PostgreSQL answers, reconcile queued now")

    def workers(self) -> None:
        """Log each queue that has jobs waiting and no live worker."""
        serving = {q for w in Worker.all(connection=self.conn) for q in w.queue_names()}
        for name in ALL_QUEUES:
            if name in serving:
                continue
            waiting = Queue(name, connection=self.conn).count
            if waiting:
                log.error("no worker serves the queue; its jobs wait", extra={"queue": name, "jobs": waiting})


class CronProcess:
    def __init__(self, conn: Any, settings: Settings):
        self.conn = conn
        self.settings = settings
        self.scheduler = build_scheduler(conn, settings)
        self.leader = Leader(conn)
        self.rq_scheduler = SchedulerStandIn(conn, settings)
        self.watch = Watch(conn, settings)
        self.stopping = False
        self.registered = False

    def stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("cron stopping", extra={"signal": signum})
        self.stopping = True

    def tick(self) -> None:
        """One look: lead (or stand by), enqueue what is due, heartbeat, watch."""
        if not self.leader.hold():
            self.rq_scheduler.release_locks()
            return
        if not self.registered:
            self.scheduler.register_birth()
            self.registered = True
        if self.scheduler.enqueue_jobs():
            self.scheduler.save()
        self.scheduler.heartbeat()
        self.rq_scheduler.tick()
        self.watch.tick()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        jobs = [j.name for j in self.scheduler.get_jobs()]
        log.info("cron starting", extra={"jobs": jobs, "scheduler": self.scheduler.name})
        wait = TICK
        while not self.stopping:
            try:
                self.tick()
                wait = TICK
            except (RedisError, OSError) as exc:
                # Redis is down or restarting: nothing is lost (the reconciler works from the
                # database); take the lock again once it answers.
                log.warning("cron: Redis unavailable", extra={"error_type": type(exc).__name__})
                self.leader.held = False
                self.registered = False
                wait = min(wait * 2, 15.0)
            self._sleep(wait)
        self.shutdown()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))

    def shutdown(self) -> None:
        try:
            if self.registered:
                self.scheduler.register_death()
        except (RedisError, OSError):
            pass
        self.rq_scheduler.release_locks()
        self.leader.release()
        log.info("cron stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.cron", description=__doc__)
    parser.parse_args(argv)
    try:
        settings = context.settings()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    logs.configure_logging(settings.log_level, logs.settings_secrets(settings))
    CronProcess(context.redis(), settings).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
