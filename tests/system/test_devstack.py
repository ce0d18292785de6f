"""The local stack as an operator uses it: up, ready, the signed curl example, the admin page,
`source .dev/env`, status, down (data kept), reset; `dev` in the foreground seen by status, up and
down; a failed start that leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
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
    drop = (
        "DATABASE_URL",
        "REDIS_URL",
        "STORAGE_EMULATOR_HOST",
        "CHATWOOT_WEBHOOK_SECRET",
        "SPOOL_DIR",
        "ADMIN_API_TOKEN",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        WEB_PORT=str(_free_port()), WORKER_PROCESSES="1", WEB_CONCURRENCY="2", TRANSCRIPTION_PROVIDER="none"
    )
    yield state, env
    _run(state, "reset", env)


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


STACK_PROCESSES = ("web", "worker", "transcriber", "cron", "redis", "gcs")


def _pids(state: Path) -> dict[str, int]:
    """The processes of the stack, from its pid files."""
    found = {}
    for name in (*STACK_PROCESSES, "dev"):
        path = state / f"{name}.pid"
        if path.exists():
            found[name] = int(path.read_text().split()[0])
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (those started with a session of their own too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _gone(pids: list[int], timeout: float = 30) -> list[int]:
    """The pids still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _postgres_running(state: Path) -> bool:
    return (devstack.pg_data_root(state) / "data" / "postmaster.pid").exists()


def _sign_in(web_url: str, token: str) -> tuple[str, str]:
    """Sign in to the admin page as a browser does; (the page reached, its HTML)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(web_url + "/admin/login", timeout=10) as response:
        form = response.read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, form
    body = urllib.parse.urlencode({"csrf_token": csrf.group(1), "token": token}).encode()
    with opener.open(web_url + "/admin/login", data=body, timeout=10) as response:
        return urllib.parse.urlparse(response.geturl()).path, response.read().decode()


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

    # The admin page: the stack made a token, and says where the page is and how to sign in.
    token_file = state / "admin_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32 and values["ADMIN_API_TOKEN"] == token
    assert f"admin page: {values['WEB_URL']}/admin/" in first.stdout
    assert str(token_file) in first.stdout and token not in first.stdout
    page, html = _sign_in(values["WEB_URL"], token)
    assert page == "/admin/" and 'id="today-received"' in html

    # `source .dev/env` is enough for the flask commands: .venv/bin comes first on PATH.
    shell = subprocess.run(
        ["bash", "-c", f"source {state / 'env'} && command -v flask && flask users list"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": env.get("HOME", "/tmp"), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[0] == str(Path(sys.prefix) / "bin" / "flask")

    status = _run(state, "status", env).stdout
    pids = _pids(state)
    for name in STACK_PROCESSES:
        assert re.search(rf"^{name}\s+running \(pid {pids[name]}\)", status, re.M), status
    assert re.search(r"^postgres\s+running", status, re.M), status

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
    assert _gone(list(pids.values()), timeout=5) == []
    assert not _postgres_running(state)
    status = _run(state, "status", env).stdout
    assert all(re.search(rf"^{name}\s+stopped", status, re.M) for name in (*STACK_PROCESSES, "postgres"))

    second = _run(state, "up", env)
    assert second.returncode == 0, second.stderr
    assert (state / "admin_token").read_text().strip() == token  # the same token across restarts
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


def test_a_new_state_folder_at_an_old_path_starts_on_an_empty_database(tmp_path: Path) -> None:
    """A checkout deleted (its .dev with it) and cloned again at the same path: the PostgreSQL
    data its predecessor left in the temp folder is not picked up."""
    state = tmp_path / "again"
    first = devstack.pg_data_root(state)
    assert devstack.pg_data_root(state) == first  # one location for the life of the folder
    try:
        url = devstack.Stack(state, fast=True).start_postgres()
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE left_behind (x int)")
        conn.close()
        devstack.stop_services(state)
        shutil.rmtree(state)  # the checkout goes; the data folder in the temp folder stays
        second = devstack.pg_data_root(state)
        assert second != first
        url = devstack.Stack(state, fast=True).start_postgres()
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('left_behind') IS NULL")
            assert cur.fetchone()[0]
        conn.close()
    finally:
        devstack.stop_services(state)
        for root in {first, devstack.pg_data_root(state)}:
            shutil.rmtree(root, ignore_errors=True)


def test_bad_configuration_stops_up_with_one_line_and_nothing_left_running(
    stack_env: tuple[Path, dict[str, str]],
) -> None:
    state, env = stack_env
    env["GCS_BUCKET_PREFIX"] = "Not_Valid"
    result = _run(state, "up", env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: configuration error: GCS_BUCKET_PREFIX: 3-30 characters of lowercase letters, digits and "
        "single dashes, starting and ending with a letter or digit; got 'Not_Valid'"
    ]
    # What the failed start had started (PostgreSQL, Redis, the GCS emulator) is stopped again.
    ports = json.loads((state / "ports.json").read_text())
    assert {"postgres", "redis", "gcs"} <= set(ports)
    assert [name for name, port in ports.items() if _answers(port)] == []
    assert not _postgres_running(state)
    assert [name for name, pid in _pids(state).items() if _alive(pid)] == []


def test_dev_is_seen_by_status_up_and_down(stack_env: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """`dev` runs in the foreground, but status, a second start and down all see its processes."""
    state, env = stack_env
    out = tmp_path / "dev.out"
    with open(out, "wb") as sink:
        dev = subprocess.Popen(
            [sys.executable, "scripts/devstack.py", "dev", "--state", str(state)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "press Ctrl-C" not in out.read_text() and time.monotonic() < deadline:
            assert dev.poll() is None, out.read_text()
            time.sleep(0.2)
        assert "press Ctrl-C" in out.read_text(), out.read_text()
        children = _children(dev.pid)
        assert len(children) >= 4  # web, worker, transcriber, cron (and Redis, the emulator)

        status = _run(state, "status", env).stdout
        assert re.search(r"^web\s+running \(pid \d+\)", status, re.M), status
        assert f"pid {dev.pid}" in status

        again = _run(state, "up", env)
        assert again.returncode == 1
        assert "already running" in again.stderr and "make down" in again.stderr
        assert "another program" not in again.stderr

        down = _run(state, "down", env)
        assert down.returncode == 0, down.stderr
        assert dev.wait(timeout=60) == 0
        assert _gone(children, timeout=10) == []
        assert not _answers(int(env["WEB_PORT"]))
        assert not _postgres_running(state)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, 15)
            dev.wait(timeout=60)
