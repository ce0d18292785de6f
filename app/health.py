"""`GET /healthz` (the process runs) and `GET /readyz` (its dependencies answer, within 2 s).

Readiness is about this web process: can it take a delivery now? PostgreSQL, Redis and GCS are
checked at once, each within READY_BUDGET, and the answer names what did not answer. Workers,
the RQ scheduler and the cron process are reported, with a warning line each when missing, but
do not make the process unready: a load balancer would then stop sending it deliveries, and
Chatwoot never sends one again. A missing worker delays work; a refused delivery loses it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from flask import Blueprint, jsonify
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Worker
from rq.scheduler import RQScheduler

from app import context
from app.chatwoot import reads
from app.jobs import ALL_QUEUES, CRON_LEADER_KEY

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

READY_BUDGET = 1.0
"""Seconds each dependency has to answer; they are asked at once, so /readyz answers within
about this long (well within a 2 s probe)."""


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


def check_postgres(seconds: float = READY_BUDGET) -> None:
    database = context.db()
    with database.budget(seconds):
        database.ping()


def check_redis(seconds: float = READY_BUDGET) -> None:
    _probe_redis(seconds).ping()


def check_gcs(seconds: float = READY_BUDGET) -> None:
    client = context.gcs()
    # One cheap authenticated call; an emulator or GCS that answers it can store objects. No
    # retry: the client's default one retries for 120 s, far past any probe's patience.
    next(iter(client.list_buckets(max_results=1, timeout=seconds, retry=None)), None)


_probes: dict[str, Any] = {}
"""Per process: the thread pool of the checks and a Redis client with short timeouts."""


def _per_process(key: str, build: Any) -> Any:
    key = f"{key}:{os.getpid()}"
    if key not in _probes:
        _probes[key] = build()
    return _probes[key]


def _pool() -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor = _per_process(
        "pool", lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
    )
    return pool


def _probe_redis(seconds: float) -> Redis:
    """A client of its own: the shared one waits 5 s per command and retries; a probe must not."""
    url = context.settings().redis_url
    client: Redis = _per_process(
        f"redis:{url}",
        lambda: Redis.from_url(
            url,
            socket_connect_timeout=seconds,
            socket_timeout=seconds,
            retry=Retry(NoBackoff(), 0),
        ),
    )
    return client


def worker_status(conn: Any = None) -> dict[str, Any]:
    """Live RQ workers by queue, whether an RQ scheduler and the cron process hold their locks,
    and a warning line for each that is missing."""
    conn = conn if conn is not None else context.redis()
    workers = Worker.all(connection=conn)
    by_queue = {q: sum(1 for w in workers if q in w.queue_names()) for q in ALL_QUEUES}
    unscheduled = [q for q in ALL_QUEUES if not conn.exists(RQScheduler.get_locking_key(q))]
    cron = bool(conn.exists(CRON_LEADER_KEY))  # `python -m workers.cron` holds it while alive
    warnings = []
    if not workers:
        warnings.append("no worker is running: messages are stored, but nothing is archived or answered")
    elif idle := [q for q, n in by_queue.items() if n == 0]:
        warnings.append(f"no worker serves the queue(s) {', '.join(idle)}")
    if not cron:
        warnings.append("the cron process (python -m workers.cron) is not running: no reconcile, no backfill")
    if unscheduled:
        warnings.append(f"no RQ scheduler holds the queue(s) {', '.join(unscheduled)}: retries wait")
    return {
        "workers": len(workers),
        "by_queue": by_queue,
        "scheduler": not unscheduled,
        "cron": cron,
        "warnings": warnings,
    }


def _redis_and_workers(seconds: float) -> dict[str, Any]:
    check_redis(seconds)
    try:
        return worker_status(_probe_redis(seconds))
    except Exception as exc:  # informational: Redis answered the ping
        log.warning("worker status unavailable", extra={"error_type": type(exc).__name__})
        return {"error": "unavailable"}


def chatwoot_details() -> dict[str, Any]:
    """What Chatwoot refuses us (informational): accounts whose read token may not list, so
    their backfill is off, and why."""

    try:
        refused = reads.refused_accounts()
    except Exception:
        return {}
    if not refused:
        return {}
    return {"backfill_off": {str(r["chatwoot_account_id"]): r["detail"] for r in refused}}


@bp.get("/readyz")
def readyz() -> Any:
    seconds = READY_BUDGET
    pool = _pool()
    futures: dict[str, Future[Any]] = {
        "redis": pool.submit(_redis_and_workers, seconds),
        "gcs": pool.submit(check_gcs, seconds),
    }
    results: dict[str, str] = {}
    try:
        check_postgres(seconds)  # in this thread: its connection is this worker's own
        results["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is logged, not returned
        _failed("postgres", exc)
        results["postgres"] = "unavailable"
    wait(futures.values(), timeout=seconds + 0.2)
    body: dict[str, Any] = {}
    for name, future in futures.items():
        if not future.done():
            _failed(name, TimeoutError(f"no answer within {seconds} s"))
            results[name] = "unavailable"
        elif (error := future.exception()) is not None:
            _failed(name, error)
            results[name] = "unavailable"
        else:
            results[name] = "ok"
            if name == "redis":
                body["workers"] = future.result()
    body["checks"] = {name: results[name] for name in ("postgres", "redis", "gcs")}
    failing = [name for name, state in body["checks"].items() if state != "ok"]
    if results["postgres"] == "ok":
        try:
            with context.db().budget(READY_BUDGET):
                details = chatwoot_details()
        except Exception:  # informational only: never makes the answer fail or wait
            details = {}
        if details:
            body["chatwoot"] = details
    if failing:
        body.update(status="unavailable", failing=failing)
        return jsonify(body), 503
    body["status"] = "ready"
    return jsonify(body)


def _failed(name: str, exc: BaseException) -> None:
    log.warning("readiness check failed", extra={"dependency": name, "error_type": type(exc).__name__})
