"""Prometheus metrics of the service (`/metrics`).

With PROMETHEUS_MULTIPROC_DIR set (the local stack sets it), every gunicorn and RQ worker process
writes its samples there and `/metrics` adds them up; without it, each process counts alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

WEBHOOKS = Counter(
    "meeting_notes_webhooks_total",
    "Webhook deliveries by outcome.",
    ["outcome"],
)
"""outcome: accepted, duplicate, update, ignored, erased (from a contact whose user was erased),
spooled, unauthorized, bad_request, too_large, unsupported_media_type, invalid, unavailable."""

REQUEST_LATENCY = Histogram(
    "meeting_notes_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

JOBS = Counter(
    "meeting_notes_jobs_total",
    "Job outcomes as each job sees them, by job function and result (ok, retry, error): a job that"
    " records a final failure on its row and returns counts as error here, as ok in job_runs.",
    ["job", "result"],
)

TRANSCRIPTION_AUDIO_SECONDS = Counter(
    "meeting_notes_transcription_audio_seconds_total",
    "Seconds of audio transcribed, by provider.",
    ["provider"],
)

TRANSCRIPTION_PROVIDER_SECONDS = Histogram(
    "meeting_notes_transcription_provider_seconds",
    "Time the transcription provider took per voice note.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

ACCOUNT_AUDIO_SECONDS = Counter(
    "meeting_notes_account_audio_seconds_total",
    "Seconds of audio transcribed, by Chatwoot account and provider (the busiest accounts by"
    " name, the rest as account=other).",
    ["account", "provider"],
)

ACCOUNT_PROVIDER_CALLS = Counter(
    "meeting_notes_account_provider_calls_total",
    "Calls to AI providers, by Chatwoot account, purpose (transcription, classification,"
    " generation) and provider (the busiest accounts by name, the rest as account=other).",
    ["account", "purpose", "provider"],
)

NOTICES = Counter(
    "meeting_notes_notices_total",
    "Messages sent to users through Chatwoot, by kind and result (sent, failed, not_sent).",
    ["kind", "result"],
)

JOB_RUNS = Counter(
    "meeting_notes_job_runs_total",
    "Every job run, counted by the worker: by job function and result (ok, retry, error).",
    ["job", "result"],
)

JOB_DURATION = Histogram(
    "meeting_notes_job_duration_seconds",
    "Time one job run took, by job function.",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SECURITY_ALERTS = Counter(
    "meeting_notes_security_alerts_total",
    "Signs of guessing that are alerted on instead of blocking the owners: wrong link codes "
    "across one account, failed admin sign-ins from one address.",
    ["kind"],
)
LINK_CODE_ALERTS = SECURITY_ALERTS.labels("link_codes")
ADMIN_SIGN_IN_ALERTS = SECURITY_ALERTS.labels("admin_sign_in")


# ---------------------------------------------------------------------------------------------
# per-account series, bounded when scraped

ACCOUNT_FAMILIES = frozenset({"meeting_notes_account_audio_seconds", "meeting_notes_account_provider_calls"})
"""Families labelled by account: each process counts every account it serves; a scrape keeps the
busiest by name and adds up the rest as `other` (AccountsBounded)."""
OTHER = "other"


def account_label(account_id: Any) -> str:
    return str(int(account_id)) if account_id is not None else OTHER


class AccountsBounded(Collector):
    """Another collector's metrics, with at most `top` account labels per per-account family.

    An account's rank is its total in that family since the processes started (the sum over
    every other label), so a busy account keeps its own series; when a newcomer overtakes one,
    `other` loses what the newcomer brings with it (Prometheus reads that as a counter reset)."""

    def __init__(self, inner: Collector, top: int):
        self.inner = inner
        self.top = max(1, top)

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            yield bounded(family, self.top) if family.name in ACCOUNT_FAMILIES else family


def bounded(family: Metric, top: int) -> Metric:
    totals: dict[str, float] = {}
    for sample in family.samples:
        if sample.name.endswith("_total"):
            account = sample.labels.get("account", OTHER)
            totals[account] = totals.get(account, 0.0) + sample.value
    ranked = sorted((a for a in totals if a != OTHER), key=lambda a: (-totals[a], a))
    kept = set(ranked[:top])
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in family.samples:
        account = sample.labels.get("account", OTHER)
        if account not in kept:
            if not sample.name.endswith("_total"):
                continue  # `_created` of an account folded into `other`: no single time
            account = OTHER
        labels = tuple(sorted({**sample.labels, "account": account}.items()))
        merged[(sample.name, labels)] = merged.get((sample.name, labels), 0.0) + sample.value
    out = Metric(family.name, family.documentation, family.type, family.unit)
    for (name, labels), value in sorted(merged.items()):
        out.add_sample(name, dict(labels), value)
    return out
