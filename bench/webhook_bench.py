"""Webhook throughput, latency and server CPU per delivery, against gunicorn on loopback.

    .venv/bin/python bench/webhook_bench.py [--workers 4] [--seconds 10] [--rate 200]
                                            [--rate-seconds 20] [--clients 12] [--keep]
    make bench-webhook

Starts its own PostgreSQL (synchronous commit on, fsync on: as in production) and Redis
(append-only file, fsync every second) in a temporary folder, and gunicorn (sync workers,
--preload) on loopback with JSON logs at INFO, as deployed. Then, on that one server:

1. `/healthz` (the trivial endpoint) and signed deliveries, each at full speed: requests/s;
2. the same at a fixed 200 requests/s (open loop): p50 / p99 latency;
3. server CPU per request in each phase: the CPU time of gunicorn, PostgreSQL and Redis
   processes (from /proc) over the phase, divided by the requests answered.

Deliveries are the fixtures of tests/fixtures/chatwoot in a realistic mix (new messages of every
kind, delivery receipts of our own messages, typing and status events), each new message with an
id of its own, signed as Chatwoot signs them. Afterwards it checks that every new message has
one row and one archive job. Exit status 1 when a target is missed or a check fails.

The load generator runs on the same machine (Python, processes x threads, one connection per
request like Chatwoot's), so its CPU competes with the server's: the figures are a floor.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import devstack  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "chatwoot"
SECRET = "bench-webhook-secret"
PATH = "/webhooks/chatwoot"

TARGET_P99_MS = 10.0
"""Milliseconds: p99 latency of deliveries at the fixed rate."""
TARGET_DURABLE_PER_S = 600.0
"""Deliveries made durable (answered after their commit) per second at full speed."""
TARGET_CPU_MS = 2.5
"""Milliseconds of server CPU (web + PostgreSQL + Redis) per delivery."""
IDLE_CALIBRATION_US = 45.0
"""Microseconds of CPU of the calibration (see calibration_us) on an idle machine of this kind."""

# A day of a WhatsApp business inbox, roughly: what contacts send, what agents and the bot
# answer, the delivery/read receipts of our own messages, typing and status events.
MIX: dict[str, int] = {
    "message_created__incoming_text": 25,
    "message_created__incoming_voice_note": 10,
    "message_created__incoming_image_with_caption": 5,
    "message_created__incoming_order": 3,
    "message_created__incoming_quick_reply_answer": 4,
    "message_created__outgoing_agent": 12,
    "message_created__outgoing_bot_quick_reply": 8,
    "message_created__private_note": 2,
    "message_updated__outgoing_bot_delivered": 20,
    "conversation_typing_on": 8,
    "conversation_status_changed": 3,
}
RECEIPT = "message_updated__outgoing_bot_delivered"
RECEIPT_OF = "message_created__outgoing_bot_quick_reply"


# ----------------------------------------------------------------------------------------------
# requests


class Deliveries:
    """Signed webhook requests: each new message gets an id of its own; receipts refer to the
    last bot message this generator sent, as Chatwoot's would."""

    def __init__(self, port: int, first_id: int, seed: int):
        self.port = port
        self.first_id = first_id
        self.next_id = first_id
        self.random = random.Random(seed)
        self.names = list(MIX)
        self.weights = [MIX[n] for n in self.names]
        self.templates: dict[str, tuple[bytes, bytes] | bytes] = {}
        self.last_bot_id: int | None = None
        for name in self.names:
            data = json.loads((FIXTURES / f"{name}.json").read_text())
            if str(data.get("event", "")).startswith("message_"):
                data["id"] = "@@ID@@"
                text = json.dumps(data, ensure_ascii=False).encode()
                before, after = text.split(b'"@@ID@@"')
                self.templates[name] = (before, after)
            else:
                self.templates[name] = json.dumps(data, ensure_ascii=False).encode()

    def next(self) -> tuple[str, bytes]:
        name = self.random.choices(self.names, self.weights)[0]
        template = self.templates[name]
        if isinstance(template, bytes):
            body = template
        else:
            if name == RECEIPT and self.last_bot_id is None:
                name = RECEIPT_OF
                template = self.templates[name]
                assert not isinstance(template, bytes)
            if name == RECEIPT:
                message_id = self.last_bot_id
            else:
                message_id = self.next_id
                self.next_id += 1
                if name == RECEIPT_OF:
                    self.last_bot_id = message_id
            body = template[0] + str(message_id).encode() + template[1]
        return name, http_request(self.port, PATH, body, signed=True)


def http_request(port: int, path: str, body: bytes | None = None, signed: bool = False) -> bytes:
    lines = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        if signed:
            ts = str(int(time.time()))
            digest = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            delivery = hashlib.md5(body + ts.encode()).hexdigest()  # noqa: S324 (an id, not security)
            lines += [
                f"X-Chatwoot-Timestamp: {ts}",
                f"X-Chatwoot-Signature: sha256={digest}",
                f"X-Chatwoot-Delivery: {delivery}",
            ]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode() + (body or b"")


def send(port: int, raw: bytes) -> tuple[int, str, float]:
    """(HTTP status, the answer's `status` or `error`, seconds) of one request on a new connection."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    elapsed = time.perf_counter() - started
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    outcome = ""
    if body.startswith(b"{"):
        answer = json.loads(body)
        outcome = str(answer.get("status") or answer.get("error") or "")
    return status, outcome, elapsed


# ----------------------------------------------------------------------------------------------
# load: full speed (closed loop) and fixed rate (open loop)


@dataclass
class PhaseResult:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    parts_cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    def merge(self, other: dict[str, Any]) -> None:
        self.latencies += other["latencies"]
        self.statuses.update(other["statuses"])
        self.outcomes.update(other["outcomes"])
        self.late += other.get("late", [])

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def _closed_loop_worker(args: tuple[int, str, int, float, int, int]) -> dict[str, Any]:
    port, kind, threads, deadline, first_id, seed = args
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def loop(index: int) -> None:
        source = Deliveries(port, first_id + index * 1_000_000, seed * 100 + index)
        health = http_request(port, "/healthz")
        local_lat: list[float] = []
        local_status: Counter[int] = Counter()
        local_out: Counter[str] = Counter()
        while time.time() < deadline:
            raw = health if kind == "healthz" else source.next()[1]
            status, outcome, elapsed = send(port, raw)
            local_lat.append(elapsed)
            local_status[status] += 1
            local_out[outcome] += 1
        with lock:
            latencies.extend(local_lat)
            statuses.update(local_status)
            outcomes.update(local_out)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"latencies": latencies, "statuses": statuses, "outcomes": outcomes}


def _cpu_delta(result: PhaseResult, before: dict[str, float], after: dict[str, float]) -> None:
    result.parts_cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    result.server_cpu = sum(result.parts_cpu.values())


def full_speed(port: int, kind: str, seconds: float, clients: int, *, first_id: int, cpu: Any) -> PhaseResult:
    processes = 2
    threads = max(1, clients // processes)
    result = PhaseResult(f"{kind} full speed", seconds)
    before, client_before = cpu(), os.times()
    deadline = time.time() + seconds
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(
            _closed_loop_worker,
            [(port, kind, threads, deadline, first_id + p * 100_000_000, p + 1) for p in range(processes)],
        )
    _cpu_delta(result, before, cpu())
    client_after = os.times()
    result.client_cpu = (client_after.children_user + client_after.children_system) - (
        client_before.children_user + client_before.children_system
    )
    for part in parts:
        result.merge(part)
    return result


def fixed_rate(port: int, kind: str, rate: float, seconds: float, *, first_id: int, cpu: Any) -> PhaseResult:
    """Open loop: request k is sent at start + k / rate, whatever happened to the others."""
    total = int(rate * seconds)
    threads = 32
    result = PhaseResult(f"{kind} at {rate:.0f}/s", seconds)
    source = Deliveries(port, first_id, 7)
    health = http_request(port, "/healthz")
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    slots = list(range(total))

    def loop(index: int) -> None:
        mine = slots[index::threads]
        lat: list[float] = []
        late: list[float] = []
        statuses: Counter[int] = Counter()
        outcomes: Counter[str] = Counter()
        for k in mine:
            with lock:  # built and signed just before it is due, off the clock
                raw = health if kind == "healthz" else source.next()[1]
            due = start + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            late.append(max(0.0, time.perf_counter() - due))
            status, outcome, elapsed = send(port, raw)
            lat.append(elapsed)
            statuses[status] += 1
            outcomes[outcome] += 1
        with lock:
            result.merge({"latencies": lat, "statuses": statuses, "outcomes": outcomes, "late": late})

    before = cpu()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    _cpu_delta(result, before, cpu())
    return result


# ----------------------------------------------------------------------------------------------
# the server and its CPU time


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds including waited-for children) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ppid, ticks / CLK_TCK


def process_tree_cpu(roots: list[int]) -> float:
    """CPU seconds used so far by the processes `roots` and all their descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _proc_stat(int(entry))
            if found:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


class Server:
    def __init__(self, workers: int, keep: bool):
        self.keep = keep
        self.workers = workers
        self.state = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.port = 0

    def start(self) -> None:
        # No GCS in the request path: an address that is never called keeps the emulator off.
        services = devstack.start_services(
            self.state, fast=False, environ={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
        )
        metrics_dir = self.state / "prometheus"
        metrics_dir.mkdir()
        self.env = {
            **os.environ,
            **services,
            "APP_ENV": "development",
            "LOG_LEVEL": "INFO",
            "CHATWOOT_WEBHOOK_SECRET": SECRET,
            "CHATWOOT_ACCOUNT_ID": "1",
            "SPOOL_DIR": str(self.state / "spool"),
            "TRANSCRIPTION_PROVIDER": "none",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONUNBUFFERED": "1",
        }
        from app.migrate import upgrade

        upgrade(self.env["DATABASE_URL"])
        self.port = devstack.free_port()
        log = self.state / "gunicorn.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"),
                    "wsgi:app",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--worker-class",
                    "sync",
                    "--preload",
                    "--no-control-socket",
                    "--backlog",
                    "2048",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        devstack.wait_for(
            lambda: devstack._http_ok(f"http://127.0.0.1:{self.port}/healthz"), "gunicorn", log=log
        )

    def pids(self) -> list[int]:
        roots = [self.proc.pid] if self.proc else []
        pg = devstack.pg_data_root(self.state) / "data" / "postmaster.pid"
        if pg.exists():
            roots.append(int(pg.read_text().splitlines()[0]))
        redis_pid = devstack.read_pid(self.state / "redis.pid")
        if redis_pid:
            roots.append(redis_pid)
        return roots

    def cpu_parts(self) -> dict[str, float]:
        """CPU seconds so far of the web server, PostgreSQL and Redis, each."""
        roots = self.pids()
        names = ["web", "postgres", "redis"][: len(roots)]
        return {name: process_tree_cpu([pid]) for name, pid in zip(names, roots, strict=True)}

    def stop(self) -> None:
        if self.proc:
            devstack.stop_pid(self.proc.pid, timeout=10)
        devstack.stop_services(self.state)
        if not self.keep:
            shutil.rmtree(devstack.pg_data_root(self.state), ignore_errors=True)
            shutil.rmtree(self.state, ignore_errors=True)

    def counts(self) -> tuple[int, int, int]:
        """(meeting_notes rows, message_updates rows, archive jobs queued)."""
        import psycopg2
        import redis

        with psycopg2.connect(self.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM meeting_notes), (SELECT count(*) FROM message_updates)")
            notes, updates = cur.fetchone()
        conn.close()
        jobs = redis.Redis.from_url(self.env["REDIS_URL"]).llen("rq:queue:archive")
        return int(notes), int(updates), int(jobs)


# ----------------------------------------------------------------------------------------------
# report


def describe(result: PhaseResult, deliveries: bool) -> dict[str, Any]:
    durable = result.outcomes["accepted"] + result.outcomes["duplicate"]
    row: dict[str, Any] = {
        "phase": result.name,
        "requests": result.count,
        "req/s": result.count / result.seconds,
        "p50 ms": result.percentile(50),
        "p99 ms": result.percentile(99),
        "server CPU ms/req": 1000 * result.server_cpu / max(1, result.count),
        "web/pg/redis ms": " / ".join(
            f"{1000 * v / max(1, result.count):.2f}" for v in result.parts_cpu.values()
        ),
    }
    if deliveries:
        row["durable/s"] = durable / result.seconds
        row["new rows/s"] = result.outcomes["accepted"] / result.seconds
        row["server CPU ms/durable"] = 1000 * result.server_cpu / max(1, durable)
    if result.late:
        row["sent late p99 ms"] = sorted(result.late)[int(0.99 * (len(result.late) - 1))] * 1000
    return row


def wait_idle(limit: float) -> None:
    """On a shared machine other work inflates every figure: wait for a quiet minute."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= 0.7 and time.monotonic() < deadline:
        time.sleep(5)


def calibration_us() -> float:
    """Microseconds of CPU json.loads takes on a 4 KB Chatwoot payload, best of 5: when other
    work shares the machine it rises, and every CPU figure here with it."""
    body = (FIXTURES / "message_created__incoming_voice_note.json").read_bytes()
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(2000):
            json.loads(body)
        best = min(best, (time.process_time() - started) / 2000 * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each full-speed phase")
    parser.add_argument("--rate", type=float, default=200, help="requests/s of the fixed-rate phases")
    parser.add_argument("--rate-seconds", type=float, default=15, help="length of each fixed-rate phase")
    parser.add_argument("--clients", type=int, default=12, help="requests in flight at full speed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for an idle machine (1-minute load average below 0.7)",
    )
    args = parser.parse_args(argv)
    if args.wait_idle > 0:
        wait_idle(args.wait_idle)

    load = os.getloadavg()
    before = calibration_us()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"calibration {before:.1f} us (json.loads of 4 KB; about {IDLE_CALIBRATION_US:.0f} us when idle)"
    )
    server = Server(args.workers, args.keep)
    results: list[tuple[PhaseResult, bool]] = []
    try:
        server.start()
        print(f"gunicorn: {args.workers} sync workers on 127.0.0.1:{server.port}; state in {server.state}")
        port, cpu = server.port, server.cpu_parts
        base = int(time.time()) * 1000
        # Warm up: every worker's connections, imports and caches.
        warm = Deliveries(port, base, 1)
        for _ in range(200):
            send(port, warm.next()[1])
            send(port, http_request(port, "/healthz"))
        results.append((full_speed(port, "healthz", args.seconds, args.clients, first_id=0, cpu=cpu), False))
        results.append(
            (full_speed(port, "webhook", args.seconds, args.clients, first_id=base + 10**9, cpu=cpu), True)
        )
        results.append(
            (fixed_rate(port, "healthz", args.rate, args.rate_seconds, first_id=0, cpu=cpu), False)
        )
        results.append(
            (
                fixed_rate(port, "webhook", args.rate, args.rate_seconds, first_id=base + 9 * 10**8, cpu=cpu),
                True,
            )
        )
        notes, updates, jobs = server.counts()
    finally:
        server.stop()

    rows = [describe(r, d) for r, d in results]
    columns = [
        "phase",
        "requests",
        "req/s",
        "durable/s",
        "new rows/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/req",
        "server CPU ms/durable",
        "web/pg/redis ms",
        "sent late p99 ms",
    ]
    print()
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join(_fmt(row.get(c)) for c in columns))
    print()

    failures: list[str] = []
    # Every new message of the warm-up was accepted too (each has an id of its own).
    accepted = sum(r.outcomes["accepted"] for r, d in results if d) + (warm.next_id - warm.first_id)
    bad = {s: n for r, _ in results for s, n in r.statuses.items() if s != 200}
    if bad:
        failures.append(f"non-200 answers: {bad}")
    mix = Counter()
    for r, d in results:
        if d:
            mix.update(r.outcomes)
    print(f"delivery outcomes: {dict(mix)}")
    print(f"stored: {notes} messages, {updates} updates, {jobs} archive jobs queued")
    if notes != accepted or jobs != notes:
        failures.append(f"expected {accepted} rows and as many jobs, found {notes} rows and {jobs} jobs")
    hook_full, hook_rate = results[1][0], results[3][0]
    durable_full = describe(hook_full, True)["durable/s"]
    cpu_rate = describe(hook_rate, True)["server CPU ms/req"]
    cpu_full = describe(hook_full, True)["server CPU ms/req"]
    targets = [
        (f"p99 at {args.rate:.0f}/s <= {TARGET_P99_MS} ms", hook_rate.percentile(99) <= TARGET_P99_MS),
        (f"durable deliveries/s >= {TARGET_DURABLE_PER_S:.0f}", durable_full >= TARGET_DURABLE_PER_S),
        (f"server CPU per delivery <= {TARGET_CPU_MS} ms", max(cpu_rate, cpu_full) <= TARGET_CPU_MS),
    ]
    for label, ok in targets:
        print(f"{'ok  ' if ok else 'MISS'} {label}")
        if not ok:
            failures.append(label)
    print(
        f"load generator CPU: {1000 * hook_full.client_cpu / max(1, hook_full.count):.2f} ms per delivery "
        "(same machine, not counted above)"
    )
    load = os.getloadavg()
    after = calibration_us()
    print(f"after: load average {load[0]:.2f}, calibration {after:.1f} us")
    if max(before, after) > 1.5 * IDLE_CALIBRATION_US:
        print("warning: the machine was busy (calibration well above idle): every figure is inflated")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise SystemExit(main())
