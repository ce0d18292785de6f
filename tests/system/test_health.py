"""`/readyz` answers within 2 s with JSON naming what is down: PostgreSQL, Redis or GCS stopped,
PostgreSQL paused (accepting connections, never answering), and reports missing workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.faults import paused_postgres

pytestmark = [pytest.mark.faults]

LIMIT = 2.0
"""Seconds within which /readyz must answer (a probe's usual patience)."""


def _readyz(client: Any) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    print(f"/readyz answered {response.status_code} in {elapsed:.2f} s")
    assert response.is_json, response.get_data(as_text=True)[:200]
    return response.status_code, response.get_json(), elapsed


@pytest.fixture
def ready_client(client: Any, gcs: Any) -> Iterator[Any]:
    """A client whose /readyz is ready at first (every dependency up)."""
    status, body, _ = _readyz(client)
    assert status == 200, body
    yield client


def test_postgres_stopped(ready_client: Any, services: Any) -> None:
    services.stop_postgres()
    try:
        status, body, elapsed = _readyz(ready_client)
    finally:
        services.start_postgres()
    assert status == 503
    assert body["failing"] == ["postgres"]
    assert body["checks"] == {"postgres": "unavailable", "redis": "ok", "gcs": "ok"}
    assert elapsed < LIMIT


def test_postgres_paused(ready_client: Any, services: Any) -> None:
    """A server that accepts connections but never answers: the client gives up on its own."""
    with paused_postgres(services):
        status, body, elapsed = _readyz(ready_client)
        # Again, now that the connection was dropped: a new one cannot be opened either.
        status_again, body_again, elapsed_again = _readyz(ready_client)
    assert (status, status_again) == (503, 503)
    assert body["failing"] == body_again["failing"] == ["postgres"]
    assert elapsed < LIMIT and elapsed_again < LIMIT
    assert _readyz(ready_client)[0] == 200  # back at once when it resumes


def test_redis_stopped(ready_client: Any, services: Any) -> None:
    services.stop_redis()
    try:
        status, body, elapsed = _readyz(ready_client)
    finally:
        services.start_redis()
    assert status == 503
    assert body["failing"] == ["redis"]
    assert "workers" not in body
    assert elapsed < LIMIT


def test_gcs_stopped(ready_client: Any, services: Any) -> None:
    """The storage client's default retry (120 s) must not override the probe's timeout."""
    services.stop_gcs()
    try:
        status, body, elapsed = _readyz(ready_client)
    finally:
        services.start_gcs()
    assert status == 503
    assert body["failing"] == ["gcs"]
    assert elapsed < LIMIT


def test_every_dependency_down_at_once(ready_client: Any, services: Any) -> None:
    services.stop_gcs()
    services.stop_redis()
    try:
        with paused_postgres(services):
            status, body, elapsed = _readyz(ready_client)
    finally:
        services.start_redis()
        services.start_gcs()
    assert status == 503
    assert body["failing"] == ["postgres", "redis", "gcs"]
    assert elapsed < LIMIT


def test_missing_workers_are_reported_not_fatal(ready_client: Any) -> None:
    """No worker, no scheduler, no cron: still ready (a refused delivery is lost for good, a
    missing worker only delays it), with one warning line for each."""
    status, body, _ = _readyz(ready_client)
    assert status == 200
    assert body["status"] == "ready"
    workers = body["workers"]
    assert workers["workers"] == 0 and workers["scheduler"] is False and workers["cron"] is False
    warnings = " | ".join(workers["warnings"])
    assert "no worker is running" in warnings
    assert "cron process" in warnings
    assert "no RQ scheduler" in warnings
