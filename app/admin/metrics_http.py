"""`GET /metrics` in Prometheus's text format, and the timing of every HTTP request.

With PROMETHEUS_MULTIPROC_DIR set (the local stack sets it for web and workers alike), each
gunicorn and RQ worker process writes its samples to files there and a scrape adds them up, so
webhooks counted by the web processes and jobs counted by the workers appear together. The depth
of each RQ queue is read from Redis at scrape time. With METRICS_TOKEN set, a scrape must send
`Authorization: Bearer <METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from app import context
from app.errors import error_response
from app.jobs import ALL_QUEUES
from app.metrics import REQUEST_LATENCY, AccountsBounded

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

SELF_TIMED_BLUEPRINTS = frozenset({"webhooks"})
"""Blueprints that observe REQUEST_LATENCY and log each request themselves (the webhook)."""
PROBE_RULES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Polled every few seconds: logged at DEBUG when they answer well."""


class QueueDepthCollector(Collector):
    """Jobs waiting, scheduled and failed per RQ queue, read from Redis when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:

        depth = GaugeMetricFamily(
            "meeting_notes_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"]
        )
        scheduled = GaugeMetricFamily(
            "meeting_notes_queue_scheduled", "Jobs scheduled for later (retries) per queue.", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "meeting_notes_queue_failed", "Jobs in RQ's failed registry per queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("meeting_notes_redis_up", "1 when Redis answered the scrape, else 0.")
        try:
            conn = context.redis()
            for name in ALL_QUEUES:
                queue = Queue(name, connection=conn)
                depth.add_metric([name], queue.count)
                scheduled.add_metric([name], ScheduledJobRegistry(queue=queue).count)  # type: ignore[no-untyped-call]
                failed.add_metric([name], FailedJobRegistry(queue=queue).count)
        except Exception as exc:  # a scrape must still answer when Redis is down
            log.warning("queue depth unavailable", extra={"error_type": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (depth, scheduled, failed, up)


class _ProcessRegistry(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape() -> bytes:
    """Every metric of the service, in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    samples: Collector = (
        multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        if multiprocess_dir()
        else _ProcessRegistry()
    )
    # Per-account series: the busiest accounts by name, the rest as account="other".
    registry.register(AccountsBounded(samples, context.settings().metrics_top_accounts))
    registry.register(QueueDepthCollector())
    return generate_latest(registry)


@bp.get("/metrics")
def metrics() -> Any:
    expected = context.settings().metrics_token
    if expected:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            response = error_response(401, "unauthorized", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return Response(scrape(), mimetype=CONTENT_TYPE_LATEST.split(";")[0], content_type=CONTENT_TYPE_LATEST)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    """Times the request and logs it: the web server keeps no access log of its own."""
    started = g.pop("metrics_started", None)
    if started is None or request.blueprint in SELF_TIMED_BLUEPRINTS:
        return response
    elapsed = time.perf_counter() - started
    # The route's rule, not the path: one series per endpoint however many ids are requested.
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUEST_LATENCY.labels(rule).observe(elapsed)
    quiet = rule in PROBE_RULES and response.status_code < 400
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "request",
        # request.path has no query string: a ?token= never reaches the log.
        extra={
            "method": request.method,
            "path": request.path,
            "http_status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
