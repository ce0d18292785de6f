"""Order jobs: draft a queued order (openai provider), deliver a ready one (notice + bucket copy)."""

from __future__ import annotations

import logging

from rq import get_current_job

from app import context
from app.archive import storage
from app.chatwoot import account_ai
from app.metrics import JOBS
from app.orders import generation

log = logging.getLogger(__name__)


class TryAgain(Exception):
    """A step failed in a way worth retrying; RQ runs the job again after a delay."""


def _retries_left() -> int:

    job = get_current_job()
    return int(job.retries_left or 0) if job is not None else 0


def generate_order(order_id: int) -> str:
    """queued -> generating -> ready (or failed, with one short notice, once retries are spent)."""
    database = context.db()
    order = database.fetch_one("orders.order_with_request", {"id": order_id})
    if order is None:
        return "missing"
    ai = account_ai.for_account(int(order["chatwoot_account_id"]))  # the account's own AI, once
    if ai.generation_provider != "openai" and order["status"] == "queued":
        return "external"  # the account's content comes from the main app now
    if order["status"] == "queued":
        moved = database.fetch_one(
            "orders.order_move", {"id": order_id, "to": "generating", "from": ["queued"], "reason": None}
        )
        if moved is None:
            return "skipped"
    elif order["status"] != "generating":
        return str(order["status"])

    try:
        storage.ensure_bucket(generation.bucket_for(order))
    except Exception as exc:
        return _retry_or_fail(order_id, f"the user's bucket could not be set up ({type(exc).__name__})")
    try:
        content = generation.draft(
            order, order.get("request_text"), generation.recent_notes(order), ai.generation
        )
    except generation.GenerationError as exc:
        return _retry_or_fail(order_id, str(exc))
    if generation.complete(order_id, content, None, "openai") is None:
        return "skipped"  # cancelled while drafting
    JOBS.labels(job="generate_order", result="ok").inc()
    try:
        generation.deliver(order_id)
    except Exception as exc:
        # The order is ready; keeping its copy is retried by its own job, unseen by the user.
        log.warning("draft copy postponed", extra={"order_id": order_id, "error_type": type(exc).__name__})
        generation.enqueue_delivery(order_id)
    return "ready"


def _retry_or_fail(order_id: int, reason: str) -> str:
    if _retries_left() > 0:
        JOBS.labels(job="generate_order", result="retry").inc()
        log.info("drafting postponed", extra={"order_id": order_id, "reason": reason})
        raise TryAgain(reason)
    JOBS.labels(job="generate_order", result="error").inc()
    generation.fail_order(order_id, reason)
    return "failed"


def deliver_order(order_id: int) -> str:
    """Ready notice (with opt-in) and the draft in the user's bucket; retried until it holds."""
    try:
        order = generation.deliver(order_id)
    except Exception as exc:
        if _retries_left() > 0:
            JOBS.labels(job="deliver_order", result="retry").inc()
            raise TryAgain(f"delivery postponed ({type(exc).__name__})") from None
        JOBS.labels(job="deliver_order", result="error").inc()
        log.error(
            "draft copy failed; the sweep retries",
            extra={"order_id": order_id, "error_type": type(exc).__name__},
        )
        return "error"
    JOBS.labels(job="deliver_order", result="ok").inc()
    return str(order["status"]) if order else "missing"
