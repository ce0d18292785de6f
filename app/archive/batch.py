"""Archive jobs in batches: a job of the archive queue takes the queued ones behind it along.

RQ's bookkeeping around one job costs about 25 Redis round trips (~6 ms of CPU), and a job that
waits on one upload at a time leaves its process idle for a whole storage round trip. So an
archive job run by a worker leads a batch:

- it claims up to ARCHIVE_CONCURRENCY queued `archive_<id>` jobs at the head of the queue in one
  Redis call, marking each `started` by its worker with RQ's own fields, so that RQ, the
  reconciler and `flask requeue` see them as jobs running on a live worker;
- it archives every claimed message in a pool of threads (each with its own GCS session and
  database connection), each message on its own: its own uploads, its own outcome. The pool is
  refilled from the queue as messages finish, for BATCH_SECONDS, then the worker goes back to
  RQ's loop (heartbeats, maintenance, the other queues);
- finished messages are settled together: one UPDATE for the rows stored, one Redis pipeline for
  their next steps and the deletion of their jobs (finished jobs are not kept, as RESULT_TTL 0
  has RQ do);
- a claimed message that failed is retried as RQ retries its job (the job's own Retry and
  intervals; the failed registry after the last); the leader's own message by RQ itself.

Guarantees: one message's failure or slowness never fails or delays another's; a warm shutdown
(SIGTERM) claims nothing more and finishes the messages in hand, each bounded by its own
deadlines; a cold shutdown, a job timeout or any error puts the claimed jobs not finished back
at the head of the queue; a worker killed outright leaves them `started` on a dead worker (they
also expire with the job timeout), which the reconciler recognises and enqueues again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from redis.exceptions import NoScriptError, RedisError
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.utils import now, utcformat

from app import context
from app.archive import jobs as stage
from app.archive import storage
from app.db import DatabaseError, queries
from app.jobs import (
    ARCHIVE_MESSAGE,
    ARCHIVE_QUEUE,
    ARCHIVE_UPDATE,
    FAILURE_TTL,
    JobSpec,
    QueueUnavailable,
    enqueue_many,
    forget_scripts,
    timeout_of,
)
from app.metrics import JOB_DURATION, JOB_RUNS, JOBS

log = logging.getLogger(__name__)

BATCH_SECONDS = 10.0
"""Seconds a leading job keeps claiming queued messages; then the worker returns to RQ's loop."""
POLL_SECONDS = 0.2
"""Longest wait for a message to finish before the queue is looked at again."""
SETTLE_SECONDS = 0.02
"""Longest a finished message waits for others to be settled with (one UPDATE, one pipeline)."""

_CLAIM = """
local queue, limit, worker, now, ttl, prefix = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local claimed, others, scanned = {}, {}, 0
while #claimed < 2 * limit and scanned < 4 * limit do
  local id = redis.call('LPOP', queue)
  if not id then break end
  scanned = scanned + 1
  if string.match(id, '^archive_%d+$') or string.match(id, '^archive_%d+_after%d+$') then
    local key = prefix .. id
    local fields = redis.call('HMGET', key, 'status', 'retries_left')
    if fields[1] == 'queued' then
      redis.call('HSET', key, 'status', 'started', 'worker_name', worker, 'started_at', now, 'last_heartbeat', now)
      redis.call('EXPIRE', key, ttl)
      table.insert(claimed, id)
      table.insert(claimed, fields[2] or '')
    elseif fields[1] then
      table.insert(others, id)
    end
  else
    table.insert(others, id)
  end
end
for i = #others, 1, -1 do redis.call('LPUSH', queue, others[i]) end
return claimed
"""
"""Take up to ARGV[1] archive jobs from the head of the queue: [id, retries_left, ...]. Other jobs
met on the way go back to the head in their order; ids whose job is gone are dropped, as RQ does."""

_GIVE_BACK = """
local queue, worker, prefix = KEYS[1], ARGV[1], ARGV[2]
for i = #ARGV, 3, -1 do
  local key = prefix .. ARGV[i]
  local fields = redis.call('HMGET', key, 'status', 'worker_name')
  if fields[1] == 'started' and fields[2] == worker then
    redis.call('HSET', key, 'status', 'queued')
    redis.call('PERSIST', key)
    redis.call('LPUSH', queue, ARGV[i])
  end
end
return 0
"""
"""Put claimed jobs of this worker back at the head of the queue, in their order."""


@dataclass(frozen=True)
class Claim:
    """A queued archive job taken by a batch."""

    job_id: str
    note_id: int
    attempt: stage.Attempt


# ------------------------------------------------------------------------------------------
# the pool of each process


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    key = (os.getpid(), size)
    with _pools_lock:
        found = _pools.get(key)
        if found is None:
            found = ThreadPoolExecutor(max_workers=size, thread_name_prefix="archive")
            _pools[key] = found
        return found


@contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """An event set when the worker is asked to stop (SIGTERM, SIGINT), RQ's own handler still run.

    RQ's first signal asks for a warm shutdown: the batch claims nothing more and finishes what it
    holds. RQ installs its cold-shutdown handler for the next signal, which raises in this thread.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        before = previous.get(signal.Signals(signum))
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig in signals:
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous[sig])


# ------------------------------------------------------------------------------------------
# leading a batch


class _Batch:
    """The messages one leading job has in hand, and what became of them."""

    def __init__(self, leader: Claim, size: int = 1):
        self.leader = leader
        self.size = size
        self.finished: list[tuple[Claim, stage.Archived]] = []
        self.first_finished = 0.0
        self.pending: dict[Future[stage.Archived], Claim] = {}
        self.in_hand: dict[int, Claim] = {}
        self.taken: list[Claim] = []
        self.settled: set[str] = set()
        self.own: stage.Archived | None = None

    def start(self, pool: ThreadPoolExecutor | None, claims: list[Claim]) -> None:
        """Load the claimed rows (one query) and hand each to the pool (None: archive them here);
        settle at once those with nothing to do."""
        if not claims:
            return
        fresh: list[Claim] = []
        nothing: list[tuple[Claim, stage.Archived]] = []
        for claim in claims:
            if claim.note_id in self.in_hand:
                # Two jobs of one message (a deferred one and a new one): the one in hand does it.
                nothing.append((claim, stage.Archived(claim.note_id, "duplicate")))
            else:
                self.in_hand[claim.note_id] = claim
                fresh.append(claim)
        erased: set[str] = set()
        try:
            rows = {int(r["id"]): r for r in _load([c.note_id for c in fresh])}
            erased = stage.erased_owners(rows.values())
        except DatabaseError as exc:
            rows = {}
            for claim in fresh:
                nothing.append((claim, stage.Archived(claim.note_id, "failed", error=exc)))
            fresh = []
        for claim in fresh:
            row = rows.get(claim.note_id)
            if row is None:
                nothing.append((claim, stage.Archived(claim.note_id, "gone")))
            elif pool is None:
                nothing.append((claim, stage.archive_row(row, claim.attempt, erased)))
            else:
                self.pending[pool.submit(stage.archive_row, row, claim.attempt, erased)] = claim
        self.settle(nothing)

    def collect(self, timeout: float) -> None:
        """Wait for messages to finish (at most `timeout`); settle the finished ones together once
        half the batch is done, nothing else is running, or the first has waited SETTLE_SECONDS."""
        if self.finished:
            timeout = min(timeout, max(0.0, self.first_finished + SETTLE_SECONDS - time.monotonic()))
        done, _ = wait(list(self.pending), timeout=timeout, return_when=FIRST_COMPLETED)
        if done and not self.finished:
            self.first_finished = time.monotonic()
        self.finished += [(self.pending.pop(f), f.result()) for f in done]
        if self.finished and (
            not self.pending
            or len(self.finished) * 2 >= self.size
            or time.monotonic() >= self.first_finished + SETTLE_SECONDS
        ):
            finished, self.finished = self.finished, []
            self.settle(finished)

    def settle(self, finished: list[tuple[Claim, stage.Archived]]) -> None:
        """Mark the stored rows (one statement), queue their next steps and delete their jobs (one
        pipeline), retry or fail the failed ones; the leader's own result is kept for its return."""
        if not finished:
            return
        for claim, _ in finished:
            if self.in_hand.get(claim.note_id) is claim:
                del self.in_hand[claim.note_id]
        stored = [r for _, r in finished if r.outcome == "stored"]
        marked: dict[int, dict[str, Any]] = {}
        if stored:
            try:
                marked = _mark_stored(stored)
            except DatabaseError as exc:
                for result in stored:
                    result.outcome, result.error = "failed", exc
        steps: list[tuple[JobSpec, int]] = []
        done: list[str] = []
        counts: dict[str, int] = {}
        for claim, result in finished:
            if result.outcome == "stored" and result.note_id not in marked:
                result.outcome = "already stored"  # another run got there first
                if result.path and _erased_meanwhile(result):
                    result.outcome = "gone"
            if result.outcome == "stored":
                row = marked[result.note_id]
                steps += stage.next_steps(
                    result.note_id, row["transcription_status"], row["classification_status"]
                )
                steps += [(ARCHIVE_UPDATE, int(u)) for u in row["waiting_updates"] or []]
            elif result.outcome == "already stored" and result.statuses:
                steps += stage.next_steps(result.note_id, *result.statuses)
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            if claim is self.leader:
                self.own = result
                if result.outcome == "failed":
                    stage.record_failure(result, result.permanent or claim.attempt.final)
                continue
            if result.outcome == "deferred":
                try:
                    stage._defer(ARCHIVE_MESSAGE, claim.note_id, result.error)  # type: ignore[arg-type]
                except Exception as exc:
                    result.outcome, result.error = "failed", exc
            if result.outcome == "failed":
                _fail_claimed(claim, result)
            else:
                done.append(claim.job_id)
        _finish_in_redis(steps, done)
        _count(finished, self.leader)
        self.settled.update(c.job_id for c, _ in finished)
        log.info(
            "messages archived", extra={"outcomes": counts, "note_ids": [r.note_id for _, r in finished][:50]}
        )

    def outcome(self) -> str:
        """What the leading job returns, or raises so that RQ retries it (its neighbours settled)."""
        result = self.own
        if result is None:
            return "gone"
        if result.outcome == "failed":
            assert result.error is not None
            if result.permanent:
                return f"error: {stage._reason(result.error)}"
            raise result.error
        if result.outcome == "deferred":
            return stage._defer(ARCHIVE_MESSAGE, self.leader.note_id, result.error)  # type: ignore[arg-type]
        return result.outcome


def lead(note_id: int, job: Any) -> str:
    """Run by the RQ job of `note_id`: archive it, and the queued messages claimed along with it."""
    settings = context.settings()
    conn = context.redis()
    context.gcs()  # made once by this thread, then shared by the pool's threads
    worker = str(job.worker_name or "")
    ttl = timeout_of(ARCHIVE_MESSAGE) + 60
    size = settings.archive_concurrency
    window_end = time.monotonic() + min(BATCH_SECONDS, timeout_of(ARCHIVE_MESSAGE) / 4)
    pool = _pool(size)
    batch = _Batch(Claim(str(job.id), note_id, stage.current_attempt()), size)
    try:
        with _stop_requests() as stop:
            batch.start(pool, [batch.leader])
            while True:
                room = size - len(batch.pending)
                # Claim by halves of the pool: fewer, larger claims and loads.
                if (
                    (room * 2 >= size or not batch.pending)
                    and worker
                    and not stop.is_set()
                    and time.monotonic() < window_end
                ):
                    claims = _claim(conn, worker, room, ttl)
                    batch.taken += claims
                    batch.start(pool, claims)
                if not batch.pending:
                    finished, batch.finished = batch.finished, []
                    batch.settle(finished)
                    break
                batch.collect(POLL_SECONDS)
    finally:
        left = [c.job_id for c in batch.taken if c.job_id not in batch.settled]
        if left:
            _give_back(conn, worker, left)
    return batch.outcome()


def run_alone(note_id: int) -> str:
    """Archive one message in this thread, outside RQ (a direct call): the same steps, no batch."""
    batch = _Batch(Claim("", note_id, stage.FIRST_TRY))
    batch.start(None, [batch.leader])
    return batch.outcome()


def _load(note_ids: list[int]) -> list[dict[str, Any]]:
    return context.db().run_prepared_all("archive.load_notes", {"ids": note_ids})


_scripts: dict[tuple[int, str], Any] = {}


def _script(conn: Any, text: str) -> Any:
    """A Lua script registered once per connection (redis-py loads it again if Redis forgot it)."""
    key = (id(conn), text)
    found = _scripts.get(key)
    if found is None:
        found = _scripts[key] = conn.register_script(text)
    return found


def _claim(conn: Any, worker: str, room: int, ttl: int) -> list[Claim]:
    """Claim up to `room` queued archive jobs for this worker (none when Redis does not answer)."""

    try:
        found = _script(conn, _CLAIM)(
            keys=[Queue(ARCHIVE_QUEUE, connection=conn).key],
            args=[room, worker, utcformat(now()), ttl, Job.redis_job_namespace_prefix],
        )
    except (RedisError, OSError):
        log.warning("archive jobs not claimed: Redis unavailable")
        return []
    claims = []
    for index in range(0, len(found), 2):
        job_id = found[index].decode()
        left = found[index + 1].decode()
        note_id = int(job_id.split("_")[1])
        claims.append(Claim(job_id, note_id, stage.Attempt.of(int(left) if left else None)))
    return claims


def _give_back(conn: Any, worker: str, job_ids: list[str]) -> None:

    try:
        _script(conn, _GIVE_BACK)(
            keys=[Queue(ARCHIVE_QUEUE, connection=conn).key],
            args=[worker, Job.redis_job_namespace_prefix, *job_ids],
        )
        log.info("claimed archive jobs given back to the queue", extra={"jobs": len(job_ids)})
    except (RedisError, OSError):
        # They expire with the job timeout; the reconciler enqueues their rows again.
        log.warning("claimed archive jobs not given back: Redis unavailable", extra={"jobs": len(job_ids)})


# ------------------------------------------------------------------------------------------
# settling finished messages


def _erased_meanwhile(result: stage.Archived) -> bool:
    """When the row went because its user was erased while this job wrote: take back what it
    wrote (the erasure may be over) and say so."""
    assert result.path is not None
    bucket, name = storage.parse_gs_uri(result.path)
    if storage.write_fence(result.note_id, bucket) != "message erased":
        return False
    storage.discard_message(bucket, name.removesuffix(".json"))
    return True


def _mark_stored(stored: list[stage.Archived]) -> dict[int, dict[str, Any]]:
    if len(stored) == 1:
        result = stored[0]
        row = context.db().run_prepared(
            "archive.mark_stored",
            {
                "note_id": result.note_id,
                "user_id": result.user_id,
                "path": result.path,
                "error_details": result.notes,
            },
        )
        return {result.note_id: row} if row else {}
    with context.db().transaction() as cur:
        cur.execute(
            queries["archive.mark_stored_many"],
            {
                "ids": [r.note_id for r in stored],
                "user_ids": [r.user_id for r in stored],
                "paths": [r.path for r in stored],
                "errors": [r.notes for r in stored],
            },
        )
        return {int(row["id"]): dict(row) for row in cur.fetchall()}


def _finish_in_redis(steps: list[tuple[JobSpec, int]], done: list[str]) -> None:
    """Queue the next steps and delete the finished claimed jobs, in one round trip."""
    if not steps and not done:
        return

    conn = context.redis()
    for attempt in (1, 2):
        try:
            with conn.pipeline(transaction=False) as pipe:
                enqueue_many(steps, conn, pipe)
                for job_id in done:
                    pipe.delete(Job.key_for(job_id))
                pipe.execute()
            return
        except NoScriptError:
            forget_scripts(conn)  # Redis restarted: load the script again, run it all again
            if attempt == 2:
                break
        except (RedisError, OSError, QueueUnavailable):
            break
    # The rows are stored: the reconciler queues what follows; the claimed jobs expire.
    log.warning("next steps not queued: Redis unavailable", extra={"messages": len(done)})


def _fail_claimed(claim: Claim, result: stage.Archived) -> None:
    """A claimed message failed: record it, then retry its job as RQ would, or fail it for good."""

    final = result.permanent or claim.attempt.final
    stage.record_failure(result, final)
    conn = context.redis()
    try:
        job = Job.fetch(claim.job_id, connection=conn)
        queue = Queue(ARCHIVE_QUEUE, connection=conn)
        with conn.pipeline() as pipe:
            if final or not job.retries_left:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                reason = f"{type(result.error).__name__}: {stage._reason(result.error or Exception())}"
                FailedJobRegistry(queue=queue).add(job, ttl=FAILURE_TTL, exc_string=reason, pipeline=pipe)
            else:
                job.retry(queue, pipe)
                pipe.persist(job.key)
            pipe.execute()
    except NoSuchJobError:
        pass
    except (RedisError, OSError):
        log.warning(
            "retry of a claimed archive job not recorded: Redis unavailable", extra={"note_id": claim.note_id}
        )


def _label(result: stage.Archived, claim: Claim) -> str:
    if result.outcome == "failed":
        return "error" if (result.permanent or claim.attempt.final) else "retry"
    return "retry" if result.outcome == "deferred" else "ok"


def _count(finished: list[tuple[Claim, stage.Archived]], leader: Claim) -> None:
    """Metrics of settled messages: JOBS for each (a deferral counts itself); RQ's run counts for
    the claimed ones (RQ counts its own job's run)."""
    jobs: dict[str, int] = {}
    runs: dict[str, int] = {}
    for claim, result in finished:
        label = _label(result, claim)
        if result.outcome != "deferred":
            jobs[label] = jobs.get(label, 0) + 1
        if claim is not leader:
            runs[label] = runs.get(label, 0) + 1
            _duration().observe(result.seconds)
    for label, n in jobs.items():
        JOBS.labels(job="archive_message", result=label).inc(n)
    for label, n in runs.items():
        JOB_RUNS.labels("archive_message", label).inc(n)


@lru_cache(maxsize=1)
def _duration() -> Any:
    return JOB_DURATION.labels("archive_message")


def archive_message(note_id: int) -> str:
    """Archive meeting_notes row `note_id` (and, in a worker, the queued messages it takes along)."""
    job = get_current_job()
    if job is not None:
        return lead(note_id, job)
    return run_alone(note_id)
