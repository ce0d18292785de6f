"""The local stack as an operator uses it: up, ready, the signed curl example, down, data kept, reset."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import devstack  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(state: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/devstack.py", command, "--state", str(state)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    state = tmp_path / "state"
    drop = ("DATABASE_URL", "REDIS_URL", "STORAGE_EMULATOR_HOST", "CHATWOOT_WEBHOOK_SECRET", "SPOOL_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        WEB_PORT=str(_free_port()), WORKER_PROCESSES="1", WEB_CONCURRENCY="2", TRANSCRIPTION_PROVIDER="none"
    )
    yield state, env
    _run(state, "reset", env)
    shutil.rmtree(devstack.pg_data_root(state), ignore_errors=True)


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_up_ready_example_down_keeps_data_reset_deletes_it(stack_env: tuple[Path, dict[str, str]]) -> None:
    state, env = stack_env
    first = _run(state, "up", env)
    assert first.returncode == 0, first.stderr + first.stdout
    values = dict(re.findall(r"^export (\w+)='([^']*)'$", (state / "env").read_text(), re.M))
    assert {"DATABASE_URL", "REDIS_URL", "STORAGE_EMULATOR_HOST", "WEB_URL"} <= set(values)
    assert values["DATABASE_URL"].startswith("postgresql://")
    status, body = _get(values["WEB_URL"] + "/readyz")
    assert status == 200, body
    assert body["checks"] == {"postgres": "ok", "redis": "ok", "gcs": "ok"}

    # The printed example is a correctly signed request that the service accepts.
    example = first.stdout.split("a correctly signed test message:\n", 1)[1].split("\nlogs:", 1)[0]
    curl = subprocess.run(["bash", "-c", example], capture_output=True, text=True, timeout=30)
    assert json.loads(curl.stdout)["status"] in ("accepted", "duplicate"), curl.stdout + curl.stderr

    again = _run(state, "up", env)
    assert again.returncode == 1
    assert "already running" in again.stderr and "make down" in again.stderr

    conn = psycopg2.connect(values["DATABASE_URL"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM meeting_notes")
        rows_before = cur.fetchone()[0]
    conn.close()
    assert rows_before == 1

    assert _run(state, "down", env).returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(values["WEB_URL"] + "/healthz", timeout=2)

    second = _run(state, "up", env)
    assert second.returncode == 0, second.stderr
    conn = psycopg2.connect(values["DATABASE_URL"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM meeting_notes")
        assert cur.fetchone()[0] == rows_before
    conn.close()

    assert _run(state, "reset", env).returncode == 0
    assert not state.exists()
    assert not devstack.pg_data_root(state).exists()


def test_port_in_use_says_what_to_do(stack_env: tuple[Path, dict[str, str]]) -> None:
    state, env = stack_env
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["WEB_PORT"])))
        blocker.listen()
        result = _run(state, "up", env)
    assert result.returncode == 1
    assert f"port {env['WEB_PORT']} is in use" in result.stderr
    assert "WEB_PORT=" in result.stderr


def test_half_initialised_postgres_folder_is_started_over(tmp_path: Path) -> None:
    state = tmp_path / "half"
    data = devstack.pg_data_root(state) / "data"
    data.mkdir(parents=True)
    (data / "garbage").write_text("left by an interrupted initdb")
    try:
        url = devstack.Stack(state, fast=True).start_postgres()
        conn = psycopg2.connect(url)
        conn.close()
    finally:
        devstack.stop_services(state)
        shutil.rmtree(devstack.pg_data_root(state), ignore_errors=True)


def test_bad_configuration_stops_up_with_one_line(stack_env: tuple[Path, dict[str, str]]) -> None:
    state, env = stack_env
    env["GCS_BUCKET_PREFIX"] = "Not_Valid"
    result = _run(state, "up", env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: configuration error: GCS_BUCKET_PREFIX: 3-30 characters of lowercase letters, digits and "
        "single dashes, starting and ending with a letter or digit; got 'Not_Valid'"
    ]
