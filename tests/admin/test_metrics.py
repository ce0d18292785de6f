"""`/metrics`: every family after real traffic, one process or many (gunicorn + workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.admin import AUTH, ROOT, Server, unreachable

pytestmark = pytest.mark.usefixtures("admin_env")

FAMILIES = (
    "meeting_notes_webhooks",
    "meeting_notes_http_request_duration_seconds",
    "meeting_notes_jobs",
    "meeting_notes_job_runs",
    "meeting_notes_job_duration_seconds",
    "meeting_notes_queue_depth",
    "meeting_notes_transcription_audio_seconds",
    "meeting_notes_transcription_provider_seconds",
    "meeting_notes_notices",
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text) if f.samples}


@pytest.fixture
def whisper(db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Any]:
    from tests.helpers.transcription import harness, require_audio_tools

    require_audio_tools()
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.openai()
        yield ready


def test_every_family_after_real_traffic(
    client: Any, deliver: Any, run_jobs: Any, chatwoot_api: Any, whisper: Any
) -> None:
    from datetime import UTC, datetime

    from app.jobs import TRANSCRIBE_MESSAGE, enqueue
    from tests.helpers.archive import text_message

    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    before = samples(client.get("/metrics").get_data(as_text=True))
    # A webhook, jobs (archive, classify, the reply's send), a voice note transcribed, admin calls.
    assert deliver(text_message(8101, content="/help", created_at=now)).status_code == 200
    assert deliver({"event": "conversation_typing_on"}).get_json()["status"] == "ignored"
    run_jobs()
    enqueue(TRANSCRIBE_MESSAGE, whisper.note().id)
    run_jobs(queues=("transcribe",))
    assert client.get("/admin/users", headers=AUTH).status_code == 200
    assert client.get("/admin/users").status_code == 401
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    after = samples(text)

    assert set(FAMILIES) <= families(text)
    grew = {
        "accepted webhook": ("meeting_notes_webhooks_total", {"outcome": "accepted"}),
        "ignored webhook": ("meeting_notes_webhooks_total", {"outcome": "ignored"}),
        "webhook latency": ("meeting_notes_http_request_duration_seconds_count", {"endpoint": "webhook"}),
        "admin latency": ("meeting_notes_http_request_duration_seconds_count", {"endpoint": "/admin/users"}),
        "archive run": ("meeting_notes_job_runs_total", {"job": "archive_message", "result": "ok"}),
        "classify run": ("meeting_notes_job_runs_total", {"job": "classify_message", "result": "ok"}),
        "send run": ("meeting_notes_job_runs_total", {"job": "send_outbox", "result": "ok"}),
        "transcribe run": ("meeting_notes_job_runs_total", {"job": "transcribe_message", "result": "ok"}),
        "job duration": ("meeting_notes_job_duration_seconds_count", {"job": "archive_message"}),
        "audio seconds": ("meeting_notes_transcription_audio_seconds_total", {"provider": "openai"}),
        "provider time": ("meeting_notes_transcription_provider_seconds_count", {"provider": "openai"}),
    }
    for what, (name, labels) in grew.items():
        assert value(after, name, **labels) > value(before, name, **labels), what
    assert value(after, "meeting_notes_notices_total", kind="command_reply", result="sent") > value(
        before, "meeting_notes_notices_total", kind="command_reply", result="sent"
    )
    assert chatwoot_api.posted, "the reply went to Chatwoot"
    assert value(after, "meeting_notes_redis_up") == 1
    depths = {dict(k[1])["queue"]: v for k, v in after.items() if k[0] == "meeting_notes_queue_depth"}
    assert set(depths) >= {"archive", "classify", "send", "transcribe", "maintenance"}


def test_queue_depth_is_read_from_redis_when_scraped(client: Any) -> None:
    from app.jobs import ARCHIVE_MESSAGE, enqueue

    for note_id in (1, 2, 3):
        enqueue(ARCHIVE_MESSAGE, note_id)
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert value(found, "meeting_notes_queue_depth", queue="archive") == 3
    assert value(found, "meeting_notes_queue_depth", queue="send") == 0


def test_metrics_answer_with_redis_down(client: Any, use_settings: Any) -> None:
    with unreachable(use_settings, redis_url="redis://127.0.0.1:{port}/0"):
        response = client.get("/metrics")
    assert response.status_code == 200
    assert value(samples(response.get_data(as_text=True)), "meeting_notes_redis_up") == 0


def test_metrics_token(settings: Any, db: Any, redis_conn: Any) -> None:
    from dataclasses import replace

    from app import create_app

    client = create_app(replace(settings, metrics_token="scrape-secret-123")).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
    assert response.status_code == 200 and b"meeting_notes_queue_depth" in response.data


def test_job_results_ok_retry_and_error(redis_conn: Any) -> None:
    from rq import Queue, Retry

    from app.metrics import JOB_RUNS
    from workers.metered import MeteredWorker

    def runs(result: str) -> float:
        return JOB_RUNS.labels("failing_job", result)._value.get()  # type: ignore[attr-defined,no-any-return]

    before = {r: runs(r) for r in ("ok", "retry", "error")}
    queue = Queue("maintenance", connection=redis_conn)
    queue.enqueue("test_metrics_jobs.failing_job", retry=Retry(max=1), job_id="fails_twice")
    MeteredWorker([queue], connection=redis_conn).work(burst=True, logging_level="WARNING")
    assert runs("retry") == before["retry"] + 1
    assert runs("error") == before["error"] + 1
    assert runs("ok") == before["ok"]


def test_many_processes_add_up(environ: dict[str, str], tmp_path: Path, db: Any, redis_conn: Any) -> None:
    """gunicorn with two workers and a worker process write to PROMETHEUS_MULTIPROC_DIR; /metrics sums."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    extra = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    # A job run by another process (as `python -m workers` would) counts in the same files.
    code = (
        "from rq import Queue\n"
        "from app import context\n"
        "from workers.metered import MeteredWorker\n"
        "q = Queue('maintenance', connection=context.redis())\n"
        "q.enqueue('app.links.rehome_job', 1, 'nobody', job_id='metrics_probe')\n"
        "MeteredWorker([q], connection=context.redis()).work(burst=True, logging_level='WARNING')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **environ, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with Server(environ, workers=2, extra=extra) as server:
        requests = 12
        for _ in range(requests):
            urllib.request.urlopen(server.url + "/healthz", timeout=5).close()
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    found = samples(text)
    assert value(found, "meeting_notes_http_request_duration_seconds_count", endpoint="/healthz") >= requests
    assert value(found, "meeting_notes_job_runs_total", job="rehome_job", result="ok") == 1
    pids = {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}
    # The job's process and the web worker(s) that answered wrote files of their own (which of the two
    # sync workers takes each request is the kernel's choice, so one may have answered them all).
    assert len(pids) >= 2


@pytest.fixture(autouse=True)
def _jobs_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job module the worker can import by name, for the failing-job test."""
    (tmp_path / "test_metrics_jobs.py").write_text("def failing_job():\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
