"""The reconciler: work that stopped half-way is enqueued again, and given up on after N attempts.

Work stops when an enqueue is lost (Redis was down), when Redis restarts without its data, or
when a worker dies mid-job. Every row keeps its state in PostgreSQL, so a periodic sweep finds
rows that have stayed in a waiting state longer than a grace period and whose job is no longer
alive in RQ, and enqueues them again with exponential backoff. After RECONCILE_MAX_ATTEMPTS
they go to the dead letter (`error` / `failed` with error_details; the `dead_letters` view).
`flask requeue` runs the same sweep on demand and revives the dead letter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import LockError, RedisError, WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.worker import Worker

from app import context
from app.config import Settings
from app.db import DatabaseUnavailable
from app.ingest import spool
from app.jobs import (
    ALL_QUEUES,
    ARCHIVE_MESSAGE,
    ARCHIVE_UPDATE,
    CLASSIFY_MESSAGE,
    CLASSIFY_UPDATE,
    REHOME,
    SEND_OUTBOX,
    TRANSCRIBE_MESSAGE,
    JobSpec,
    QueueUnavailable,
    enqueue,
    job_id,
)
from app.logs import redact, settings_secrets
from app.metrics import JOBS
from app.orders import clarify, confirm

log = logging.getLogger(__name__)

LOCK_KEY = "meeting-notes:reconcile:lock"
"""Redis lock held by the one reconcile run in progress (runs never overlap)."""
LOCK_TIMEOUT = 120
"""Seconds the lock lasts without renewal; a run renews it as it goes (see RunLock)."""
BATCH = 500
"""Rows looked at per stage and run; the rest wait for the next run."""
LIVE_STATUSES = frozenset({"queued", "started", "scheduled", "deferred", "created", "rate_limited"})
"""RQ job states in which the job will still run."""
QUEUE_SCAN_LIMIT = 20_000
"""A queue longer than this is not listed to confirm that a 'queued' job is really in it."""
SCHEDULED_GRACE = 60
"""Seconds a scheduled job (a retry, a delayed run) may stay past its time before it counts as
stuck: RQ's scheduler moves due jobs every second or two when one runs."""


@dataclass(frozen=True)
class Stage:
    """One kind of waiting work: which rows, which job, and how the dead letter looks."""

    name: str
    spec: JobSpec
    query: str
    """Prefix of the `reconcile.<query>_stuck/_attempt/_give_up` statements."""
    statuses: tuple[str, ...] = ()
    """Outbox statuses this stage covers."""
    extra_grace: bool = False
    """Wait JOB_TIMEOUT longer (the work may have left: a send in progress)."""

    def params(self, settings: Settings) -> dict[str, Any]:
        grace = settings.reconcile_grace + (settings.job_timeout if self.extra_grace else 0)
        out: dict[str, Any] = {"grace": grace}
        if self.statuses:
            out["statuses"] = list(self.statuses)
        return out


STAGES: tuple[Stage, ...] = (
    Stage("archive", ARCHIVE_MESSAGE, "archive"),
    Stage("update", ARCHIVE_UPDATE, "update"),
    Stage("transcription", TRANSCRIBE_MESSAGE, "transcription"),
    Stage("classification", CLASSIFY_MESSAGE, "classification"),
    Stage("update_classification", CLASSIFY_UPDATE, "update_classification"),
    Stage("outbox", SEND_OUTBOX, "outbox", statuses=("pending",)),
    Stage("outbox_sending", SEND_OUTBOX, "outbox", statuses=("sending",), extra_grace=True),
    Stage("rehome", REHOME, "rehome"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass
class Outcome:
    """What the sweep did with one row: enqueued, gave_up, live (its job still runs) or planned."""

    stage: str
    row_id: int
    action: str
    attempts: int
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    steps: dict[str, str] = field(default_factory=dict)
    """Other duties of the run (spool replay, clarification expiry) and how they went."""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            key = f"{o.stage}.{o.action}"
            out[key] = out.get(key, 0) + 1
        return out


def backoff_seconds(attempt: int, settings: Settings) -> int:
    """Delay before the attempt after `attempt` (1-based): base, 2x base, 4x base... capped."""
    return int(min(settings.reconcile_backoff * 2 ** max(attempt - 1, 0), settings.reconcile_backoff_max))


# ---------------------------------------------------------------------------------------------
# RQ: is the job of a row still alive?


def _worker_alive(conn: Any, worker_name: str) -> bool:
    """False when the worker is gone: its key expired, or it ran on this host and its pid is dead."""
    raw = conn.hmget(Worker.redis_worker_namespace_prefix + worker_name, "hostname", "pid")
    hostname, pid = (v.decode() if isinstance(v, bytes) else v for v in raw)
    if not hostname and not pid:
        return False
    if hostname == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
    return True


class JobInspector:
    """Reads the RQ state of jobs by id, and removes the ones that will never run again."""

    def __init__(self, conn: Any):
        self.conn = conn
        self._queued: dict[str, set[str] | None] = {}

    def _in_queue(self, queue_name: str, jid: str) -> bool:
        if queue_name not in self._queued:
            queue = Queue(queue_name, connection=self.conn)
            if self.conn.llen(queue.key) > QUEUE_SCAN_LIMIT:
                self._queued[queue_name] = None
            else:
                ids = self.conn.lrange(queue.key, 0, -1)
                ids += self.conn.lrange(queue.intermediate_queue.key, 0, -1)
                self._queued[queue_name] = {i.decode() for i in ids}
        found = self._queued[queue_name]
        return True if found is None else jid in found

    def state(self, spec: JobSpec, row_id: int) -> tuple[str, str]:
        """(live | stale | absent, last error of a failed job)."""
        jid = job_id(spec, row_id)
        status, worker_name, exc_info = self.conn.hmget(Job.key_for(jid), "status", "worker_name", "exc_info")
        if status is None:
            # No job, or a leftover hash (a heartbeat written after the job's deletion).
            return ("stale" if self.conn.exists(Job.key_for(jid)) else "absent"), ""
        status = status.decode()
        if status == "queued" and not self._in_queue(spec.queue, jid):
            return "stale", "job lost from its queue"
        if status == "started" and worker_name and not _worker_alive(self.conn, worker_name.decode()):
            return "stale", "worker died during the job"
        if status == "scheduled" and self._overdue(spec.queue, jid):
            return "stale", "scheduled run overdue (no RQ scheduler moved it)"
        if status in LIVE_STATUSES:
            return "live", ""
        return "stale", _last_error(exc_info)

    def _overdue(self, queue_name: str, jid: str) -> bool:
        """True when the job is not in its queue's scheduled registry, or is due since more than
        SCHEDULED_GRACE seconds (no scheduler is moving that queue's jobs)."""
        registry = ScheduledJobRegistry(queue_name, connection=self.conn)  # type: ignore[no-untyped-call]
        due = self.conn.zscore(registry.key, jid)
        return due is None or float(due) < time.time() - SCHEDULED_GRACE

    def remove(self, spec: JobSpec, row_id: int) -> None:
        """Delete a job that will never run again, so that its id is free for a new enqueue."""
        jid = job_id(spec, row_id)
        try:
            Job.fetch(jid, connection=self.conn).delete()
        except NoSuchJobError:
            pass
        except Exception:  # a job hash that cannot be read (partial, other serializer): drop it
            self.conn.delete(Job.key_for(jid))


def _last_error(exc_info: bytes | None) -> str:
    """The last line of a failed job's traceback ("Type: message"), short and redacted."""
    if not exc_info:
        return ""
    try:
        text = zlib.decompress(exc_info).decode("utf-8", "replace")
    except zlib.error:
        text = exc_info.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return _clean(lines[-1] if lines else "")


def _clean(text: str) -> str:
    return redact(text, settings_secrets(context.settings()))[:300]


def clean_abandoned(conn: Any, queues: Iterable[str] = ALL_QUEUES) -> None:
    """Let RQ move jobs whose worker stopped sending heartbeats to the failed registry now,
    instead of at the next worker maintenance (every 10 minutes)."""
    for name in queues:
        StartedJobRegistry(name, connection=conn).cleanup()


# ---------------------------------------------------------------------------------------------
# one run at a time


class RunLock:
    """A Redis lock naming its holder (`host:pid:random`), renewed as the run goes on.

    A run killed with SIGKILL cannot release it: another run takes it over at once when the
    holder was a process of this host that no longer exists, else when it expires.
    """

    def __init__(self, conn: Any, key: str, timeout: int):
        self.conn = conn
        self.key = key
        self.timeout = timeout
        self.lock = conn.lock(key, timeout=timeout, blocking=False, thread_local=False)

    def acquire(self) -> bool:
        token = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        if self.lock.acquire(token=token):
            return True
        if self._holder_is_dead():
            log.warning("lock of a run that died taken over", extra={"lock": self.key})
            return bool(self.lock.acquire(token=token))
        return False

    def _holder_is_dead(self) -> bool:
        """True (and the lock deleted) when its holder was a process of this host that is gone."""
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                raw = pipe.get(self.key)
                holder = raw.decode() if isinstance(raw, bytes) else str(raw or "")
                host, _, rest = holder.partition(":")
                pid = rest.partition(":")[0]
                if host != socket.gethostname() or not pid.isdigit() or _pid_alive(int(pid)):
                    return False
                pipe.multi()
                pipe.delete(self.key)
                pipe.execute()
                return True
            except WatchError:
                return False

    def renew(self) -> None:
        """Push the expiry back; a lock lost meanwhile (Redis restarted) is simply not renewed."""
        with contextlib.suppress(LockError, RedisError, OSError):
            self.lock.reacquire()

    def release(self) -> None:
        try:
            self.lock.release()
        except Exception:  # expired or Redis restarted: nothing to release
            log.debug("lock already gone", extra={"lock": self.key})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_held: list[RunLock] = []
"""The lock of the reconcile run in progress in this process, renewed as it goes."""


def _renew_lock() -> None:
    for lock in _held:
        lock.renew()


# ---------------------------------------------------------------------------------------------
# the sweep


def sweep(
    stages: Sequence[Stage] = STAGES,
    *,
    ids: Sequence[int] | None = None,
    due_only: bool = True,
    grace: int | None = None,
    dry_run: bool = False,
    give_up: bool = True,
    limit: int = BATCH,
) -> list[Outcome]:
    """Enqueue again the stuck rows of each stage; give up on those tried too often.

    `due_only=False` ignores the backoff and `give_up=False` the attempt limit (an operator's
    retry); `grace` overrides the grace period (0: any row in a waiting state); `dry_run` only
    reports what would be done.
    Raises QueueUnavailable when Redis is down (nothing is counted then).
    """
    settings = context.settings()
    conn = context.redis()
    inspector = JobInspector(conn)
    outcomes: list[Outcome] = []
    for stage in stages:
        params = {
            **stage.params(settings),
            "due": due_only,
            "ids": list(ids) if ids else None,
            "limit": limit,
        }
        if grace is not None:
            params["grace"] = grace
        _renew_lock()
        for index, row in enumerate(context.db().fetch_all(f"reconcile.{stage.query}_stuck", params)):
            if index % 100 == 99:
                _renew_lock()
            outcome = _reconcile_row(
                stage=stage,
                row=row,
                settings=settings,
                inspector=inspector,
                dry_run=dry_run,
                give_up=give_up,
            )
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _reconcile_row(
    *,
    stage: Stage,
    row: dict[str, Any],
    settings: Settings,
    inspector: JobInspector,
    dry_run: bool,
    give_up: bool,
) -> Outcome | None:
    row_id, attempts = int(row["id"]), int(row["attempts"])
    try:
        liveness, last_error = inspector.state(stage.spec, row_id)
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(type(exc).__name__) from None
    if liveness == "live":
        return Outcome(stage.name, row_id, "live", attempts)
    extra = {"stage": stage.name, "row_id": row_id, "attempts": attempts}
    if give_up and attempts >= settings.reconcile_max_attempts:
        reason = last_error or (row.get("error_details") or "") or "no progress"
        detail = _clean(f"gave up after {attempts} attempts: {reason}")
        if dry_run:
            return Outcome(stage.name, row_id, "would_give_up", attempts, detail)
        changed = context.db().execute(
            f"reconcile.{stage.query}_give_up", {**stage.params(settings), "id": row_id, "error": detail}
        )
        if not changed:
            return None
        JOBS.labels(job=f"reconcile_{stage.name}", result="error").inc()
        log.warning("work given up (dead letter)", extra={**extra, "error": detail})
        return Outcome(stage.name, row_id, "gave_up", attempts, detail)
    if dry_run:
        return Outcome(stage.name, row_id, "would_enqueue", attempts, last_error)
    try:
        inspector.remove(stage.spec, row_id)
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(type(exc).__name__) from None
    if not enqueue(stage.spec, row_id):
        return Outcome(stage.name, row_id, "live", attempts)
    delay = backoff_seconds(attempts + 1, settings)
    row_after = context.db().fetch_one(
        f"reconcile.{stage.query}_attempt", {**stage.params(settings), "id": row_id, "delay": delay}
    )
    if row_after is None:
        # Done between the look and the enqueue: the job will find nothing to do.
        return None
    JOBS.labels(job=f"reconcile_{stage.name}", result="retry").inc()
    log.info(
        "stuck work enqueued again", extra={**extra, "attempts": row_after["attempts"], "error": last_error}
    )
    return Outcome(stage.name, row_id, "enqueued", int(row_after["attempts"]), last_error)


# ---------------------------------------------------------------------------------------------
# the scheduled job


def reconcile() -> dict[str, Any]:
    """The job run every RECONCILE_INTERVAL: spool replay, clarification expiry, the sweep."""
    lock = RunLock(context.redis(), LOCK_KEY, LOCK_TIMEOUT)
    if not lock.acquire():
        log.info("reconcile skipped: another run is in progress")
        return {"skipped": "another run is in progress"}
    started = time.monotonic()
    _held.append(lock)
    try:
        report = run_once()
    finally:
        _held.remove(lock)
        lock.release()
    summary: dict[str, Any] = {**report.steps, **report.counts()}
    summary["seconds"] = round(time.monotonic() - started, 3)
    log.info("reconcile done", extra={"summary": summary})
    return summary


def run_once() -> Report:
    """One pass of every duty; a duty that fails is reported and the others still run."""
    report = Report()
    for name, duty in _duties():
        _renew_lock()
        try:
            report.steps[name] = duty()
        except (DatabaseUnavailable, QueueUnavailable, RedisError, OSError) as exc:
            report.steps[name] = f"unavailable: {type(exc).__name__}"
            log.warning("reconcile step failed", extra={"step": name, "error_type": type(exc).__name__})
        except Exception as exc:  # one duty's bug must not stop the sweep that follows
            report.steps[name] = f"failed: {type(exc).__name__}"
            log.error("reconcile step failed", extra={"step": name, "error_type": type(exc).__name__})
    try:
        report.outcomes = sweep()
    except (DatabaseUnavailable, QueueUnavailable) as exc:
        report.steps["sweep"] = f"unavailable: {type(exc).__name__}"
        log.warning("reconcile sweep failed", extra={"error_type": type(exc).__name__})
    return report


def _duties() -> list[tuple[str, Any]]:
    return [
        ("spool", replay_spool),
        ("clarifications", expire_clarifications),
        ("confirmations", expire_confirmations),
        ("abandoned_jobs", abandoned_jobs),
    ]


def replay_spool() -> str:
    """Deliveries spooled while PostgreSQL was down, written now that it answers.

    The spool is a folder on the web host (SPOOL_DIR): a worker that shares it replays it.
    """
    if not spool.pending_files():
        return "empty"
    context.db().ping()  # DatabaseUnavailable: still down, the spool waits for the next run
    result = spool.replay()
    if result.error:
        return f"partial: {result.accepted} accepted, {result.remaining_files} file(s) left"
    return f"{result.accepted} accepted, {result.duplicates} duplicates, {result.rejected} rejected"


def expire_clarifications() -> str:
    """Orders whose question stayed unanswered for CLARIFICATION_TIMEOUT are cancelled."""
    return f"{clarify.expire_clarifications()} expired"


def expire_confirmations() -> str:
    """Messages whose yes/no question stayed unanswered for CLARIFICATION_TIMEOUT are notes."""
    return f"{confirm.expire_confirmations()} filed as notes"


def abandoned_jobs() -> str:
    clean_abandoned(context.redis())
    return "ok"
