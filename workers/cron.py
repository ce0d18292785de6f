"""`python -m workers.cron`: enqueues the periodic jobs (reconcile, backfill, records) onto the
maintenance queue, where the general workers run them.

RQ's CronScheduler has no lock of its own: two of them would enqueue everything twice. So each
`workers.cron` process first takes a Redis lock (CRON_LEADER_KEY) and only its holder
schedules; a second process waits as a standby and takes over when the lock expires. The loop
survives Redis outages (it waits and takes the lock again) and stops on SIGTERM or SIGINT.
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

from app import context
from app.config import ConfigError, Settings
from app.jobs import CRON_LEADER_KEY, CRON_LEADER_TTL, MAINTENANCE_QUEUE

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


def build_scheduler(conn: Any, settings: Settings) -> Any:
    """A CronScheduler with the service's periodic jobs registered."""
    from rq.cron import CronScheduler

    from workers.reconcile import reconcile

    scheduler = CronScheduler(connection=conn, logging_level=settings.log_level)
    scheduler.register(
        reconcile,
        queue_name=MAINTENANCE_QUEUE,
        interval=settings.reconcile_interval,
        job_timeout=RECONCILE_TIMEOUT,
        result_ttl=HISTORY_TTL,
        failure_ttl=HISTORY_TTL * 24,
        ttl=max(settings.reconcile_interval * 2, 60),
        name="reconcile",
    )
    if settings.backfill_interval > 0:
        from workers.backfill import backfill

        scheduler.register(
            backfill,
            queue_name=MAINTENANCE_QUEUE,
            interval=settings.backfill_interval,
            job_timeout=BACKFILL_TIMEOUT,
            result_ttl=HISTORY_TTL,
            failure_ttl=HISTORY_TTL * 24,
            ttl=max(settings.backfill_interval, 60),
            name="backfill",
        )
    from workers.records import records

    scheduler.register(
        records,
        queue_name=MAINTENANCE_QUEUE,
        interval=settings.retention_interval,
        job_timeout=RECORDS_TIMEOUT,
        result_ttl=HISTORY_TTL,
        failure_ttl=HISTORY_TTL * 24,
        ttl=max(settings.retention_interval, 60),
        name="records",
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


class CronProcess:
    def __init__(self, conn: Any, settings: Settings):
        self.conn = conn
        self.settings = settings
        self.scheduler = build_scheduler(conn, settings)
        self.leader = Leader(conn)
        self.stopping = False
        self.registered = False

    def stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("cron stopping", extra={"signal": signum})
        self.stopping = True

    def tick(self) -> None:
        """One look: lead (or stand by), enqueue what is due, heartbeat."""
        if not self.leader.hold():
            return
        if not self.registered:
            self.scheduler.register_birth()
            self.registered = True
        if self.scheduler.enqueue_jobs():
            self.scheduler.save()
        self.scheduler.heartbeat()

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
    from app.logs import configure_logging, settings_secrets

    configure_logging(settings.log_level, settings_secrets(settings))
    CronProcess(context.redis(), settings).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
