"""Prometheus metrics of the service (`/metrics`).

With PROMETHEUS_MULTIPROC_DIR set (the local stack sets it), every gunicorn and RQ worker process
writes its samples there and `/metrics` adds them up; without it, each process counts alone.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
