"""`GET /healthz` (the process runs) and `GET /readyz` (its dependencies answer)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify

from app import context

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


def check_postgres() -> None:
    context.db().ping()


def check_redis() -> None:
    context.redis().ping()


def check_gcs() -> None:
    client = context.gcs()
    # One cheap authenticated call; an emulator or GCS that answers it can store objects.
    next(iter(client.list_buckets(max_results=1, timeout=3)), None)


def worker_status() -> dict[str, Any]:
    """Live RQ workers by queue and whether a scheduler holds its lock (informational)."""
    from rq import Worker
    from rq.scheduler import RQScheduler

    from app.jobs import ALL_QUEUES, CRON_LEADER_KEY

    conn = context.redis()
    workers = Worker.all(connection=conn)
    by_queue = {q: sum(1 for w in workers if q in w.queue_names()) for q in ALL_QUEUES}
    scheduler = any(conn.exists(RQScheduler.get_locking_key(q)) for q in ALL_QUEUES)
    cron = bool(conn.exists(CRON_LEADER_KEY))  # `python -m workers.cron` holds it while alive
    return {"workers": len(workers), "by_queue": by_queue, "scheduler": bool(scheduler), "cron": cron}


def chatwoot_details() -> dict[str, Any]:
    """What Chatwoot refuses us (informational): accounts whose read token may not list, so
    their backfill is off, and why."""
    from app.chatwoot import reads

    try:
        refused = reads.refused_accounts()
    except Exception:
        return {}
    if not refused:
        return {}
    return {"backfill_off": {str(r["chatwoot_account_id"]): r["detail"] for r in refused}}


@bp.get("/readyz")
def readyz() -> Any:
    checks = {"postgres": check_postgres, "redis": check_redis, "gcs": check_gcs}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is logged, not returned
            log.warning(
                "readiness check failed", extra={"dependency": name, "error_type": type(exc).__name__}
            )
            results[name] = "unavailable"
    body: dict[str, Any] = {"checks": results}
    if results["postgres"] == "ok":
        details = chatwoot_details()
        if details:
            body["chatwoot"] = details
    if results["redis"] == "ok":
        try:
            body["workers"] = worker_status()
        except Exception:
            body["workers"] = {"error": "unavailable"}
    failing = [name for name, state in results.items() if state != "ok"]
    if failing:
        body.update(status="unavailable", failing=failing)
        return jsonify(body), 503
    body["status"] = "ready"
    return jsonify(body)
