"""Test set-up: real PostgreSQL, Redis and GCS emulator of the suite's own, in a temporary folder.

Every test starts with empty tables, an empty Redis and no buckets. Only Chatwoot's and
OpenAI's HTTP APIs are mocked (with `responses` or a local HTTP stub).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import devstack  # noqa: E402

from tests.helpers.common import WEBHOOK_SECRET, base_environ, load_fixture, sign  # noqa: E402

pytest_plugins = (
    "tests.helpers.admin",
    "tests.helpers.archive",
    "tests.helpers.orders",
    "tests.helpers.transcription",
)
"""Fixtures of the helper modules, for every test folder."""


class Services:
    """The suite's own servers; tests that inject faults stop and start them through this."""

    def __init__(self, state: Path):
        self.state = state
        self.stack = devstack.Stack(state, fast=True)
        self.env: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        self.env = devstack.start_services(self.state, fast=True, environ={})
        return self.env

    def stop_postgres(self) -> None:
        self.stack.stop_postgres()

    def start_postgres(self) -> None:
        self.stack.start_postgres()

    def stop_redis(self) -> None:
        self.stack.stop_pidfile("redis")

    def start_redis(self) -> None:
        self.stack.start_redis()

    def stop_gcs(self) -> None:
        self.stack.stop_pidfile("gcs")

    def start_gcs(self) -> None:
        self.stack.start_gcs()

    def stop_all(self) -> None:
        devstack.stop_services(self.state)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    state = Path(tempfile.mkdtemp(prefix="meeting-notes-test-"))
    svc = Services(state)
    try:
        svc.start()
        from app.migrate import upgrade

        upgrade(svc.env["DATABASE_URL"])
        yield svc
    finally:
        svc.stop_all()
        shutil.rmtree(devstack.pg_data_root(state), ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def environ(services: Services, tmp_path: Path) -> dict[str, str]:
    """The environment the service would read; tests may change it before `settings` is built."""
    return base_environ(services, tmp_path)


@pytest.fixture
def settings(environ: dict[str, str]) -> Iterator[Any]:
    from app import context
    from app.chatwoot import accounts
    from app.config import load_settings

    built = load_settings(environ)
    context.use_settings(built)
    accounts.forget_cached()
    yield built
    context.use_settings(None)
    accounts.forget_cached()


@pytest.fixture
def use_settings(settings: Any) -> Callable[..., Any]:
    """Replace some settings for the rest of the test: `use_settings(transcript_private_note=True)`."""
    from app import context

    def apply(**changes: Any) -> Any:
        new = replace(context.settings(), **changes)
        context.use_settings(new)
        return new

    return apply


_TABLES: list[str] = []


@pytest.fixture
def db(services: Services, settings: Any) -> Iterator[Any]:
    """The service's database handle, on empty tables."""
    from app import context

    database = context.db()
    if not _TABLES:
        with database.transaction() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'"
            )
            _TABLES.extend(r["tablename"] for r in cur.fetchall())
    _forget_audit_rows()
    with database.transaction() as cur:
        cur.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
    yield database
    _forget_audit_rows()
    database.close()


def _forget_audit_rows() -> None:
    """The delivery audit's rows still buffered belong to the test that made them: never to the
    next test's tables, nor written after the session at exit."""
    from app.ingest import audit

    with audit._writer.flushing:
        audit._writer.rows.clear()


@pytest.fixture
def redis_conn(services: Services, settings: Any) -> Any:
    from app import context

    conn = context.redis()
    conn.flushdb()
    return conn


@pytest.fixture
def gcs(services: Services, settings: Any) -> Any:
    """A GCS client on the emulator, with no buckets."""
    from app import context

    client = context.gcs()
    for bucket in list(client.list_buckets()):
        for blob in list(client.list_blobs(bucket.name)):
            blob.delete()
        bucket.delete()
    return client


@pytest.fixture
def app(settings: Any, db: Any, redis_conn: Any) -> Any:
    from app import create_app

    flask_app = create_app(settings)
    flask_app.config.update(TESTING=True)
    return flask_app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def deliver(client: Any) -> Callable[..., Any]:
    """POST a payload (dict or fixture name) to the webhook, correctly signed."""

    def post(payload: dict[str, Any] | str, secret: str = WEBHOOK_SECRET, **kwargs: Any) -> Any:
        data = load_fixture(payload) if isinstance(payload, str) else payload
        body = json.dumps(data).encode()
        return client.post("/webhooks/chatwoot", data=body, headers=sign(body, secret), **kwargs)

    return post


@pytest.fixture
def run_jobs(settings: Any, redis_conn: Any) -> Callable[..., int]:
    """Run queued jobs in this process with a real RQ worker until the queues are empty."""
    from rq import Queue

    from app.jobs import ALL_QUEUES
    from workers.metered import MeteredWorker

    class _CountingWorker(MeteredWorker):  # type: ignore[misc]
        """RQ 3 keeps its job counts in Redis only; count here what this worker ran."""

        jobs_run = 0

        def increment_successful_job_count(self, pipeline: Any = None) -> None:
            super().increment_successful_job_count(pipeline)
            self.jobs_run += 1

        def increment_failed_job_count(self, pipeline: Any = None) -> None:
            super().increment_failed_job_count(pipeline)
            self.jobs_run += 1

    def run(queues: tuple[str, ...] = ALL_QUEUES, with_scheduler: bool = False, max_rounds: int = 20) -> int:
        done = 0
        for _ in range(max_rounds):
            qs = [Queue(q, connection=redis_conn) for q in queues]
            if not any(q.count for q in qs) and not with_scheduler:
                break
            worker = _CountingWorker(qs, connection=redis_conn)
            worked = worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
            done += worker.jobs_run
            if not worked:
                break
        return done

    return run


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep library clients from looking for cloud metadata servers."""
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.pop("OPENAI_API_KEY", None)
