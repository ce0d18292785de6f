"""Webhook throughput, latency and server CPU per delivery, against gunicorn on loopback.

    .venv/bin/python bench/webhook_bench.py [--workers 4] [--seconds 8] [--rate 200]
        [--rate-seconds 10] [--runs 3] [--clients 12] [--history 50000] [--generator auto|wrk|python] [--keep]
    make bench-webhook

Starts its own PostgreSQL (synchronous commit on, fsync on: as in production) and Redis
(append-only file, fsync every second) in a temporary folder, and gunicorn (sync workers,
--preload) on loopback with JSON logs at INFO, as deployed. The database first gets 50 000
messages of earlier days and a VACUUM ANALYZE, as a running installation has. Then, on that
one server:

1. `/healthz` (the trivial endpoint) and signed deliveries, each at full speed: requests/s;
2. the same at a fixed 200 requests/s (open loop): p50 / p99 latency;
   each phase three times, alternating, and the figures judged are the medians of the runs: on a
   shared host one stall in ten seconds moves a single run's p99 by tens of milliseconds, for
   /healthz as much as for deliveries, and CPU throughput varies by a quarter from second to second;
3. server CPU per request in each phase: the CPU time of gunicorn, PostgreSQL and Redis
   processes (from /proc) over the phase, divided by the requests answered; and the CPU time the
   hypervisor gave to other machines meanwhile (steal), which inflates every figure: a run with
   more than 5 % steal is shown but not judged when another run of that phase was clean. The CPU
   target is judged at full speed, where CPU is the bound; at 200/s each request costs more (idle
   workers wake for each connection), /healthz as much as deliveries.

Deliveries are the fixtures of tests/fixtures/chatwoot in a realistic mix (new messages of every
kind, delivery receipts of our own messages, typing and status events), each new message with an
id of its own, signed as Chatwoot signs them. Afterwards it checks that every new message has
one row and one archive job. Exit status 1 when a target is missed or a check fails.

The full-speed phases use wrk (`make bench-deps` installs it) with two threads and a new
connection per request, like Chatwoot's; without wrk, a Python load generator. The fixed-rate
phases use the Python sender (32 threads, request k sent at start + k/rate on a new connection,
timed from the connect to the last byte, and how late it was sent): wrk's own pacing
(`--rate-generator wrk`, a `delay()` per request) gave p99 of 30 to 50 ms here to everything,
`/healthz` and a bare WSGI "ok" app included, where this sender sees 2 ms for `/healthz`.
Either runs on the same machine, so its CPU competes with the server's.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection
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
HISTORY_ROWS = 50_000
"""Messages already in the database when the measurement starts."""
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
    steal: float = 0.0
    """CPU seconds the hypervisor gave to other machines during the phase (all CPUs)."""
    count_override: int | None = None
    """Requests answered, when the load generator reports totals rather than each latency (wrk)."""
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def count(self) -> int:
        return self.count_override if self.count_override is not None else len(self.latencies)

    def merge(self, other: dict[str, Any]) -> None:
        self.latencies += other["latencies"]
        self.statuses.update(other["statuses"])
        self.outcomes.update(other["outcomes"])
        self.late += other.get("late", [])

    def percentile(self, p: float) -> float:
        if p == 50 and self.p50_ms is not None:
            return self.p50_ms
        if p == 99 and self.p99_ms is not None:
            return self.p99_ms
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
    result.parts_cpu = {name: after[name] - before.get(name, 0.0) for name in after if name != STEAL}
    result.server_cpu = sum(result.parts_cpu.values())
    result.steal = after.get(STEAL, 0.0) - before.get(STEAL, 0.0)


STEAL = "steal"


def steal_seconds() -> float:
    """CPU seconds, all CPUs together, that the hypervisor has given to other machines so far
    (/proc/stat): on a shared host they inflate every CPU figure measured here."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / CLK_TCK if len(fields) > 8 else 0.0


WRK_SCRIPT = r"""
-- Replays pre-signed requests (a file of "<length>\n<raw request>" records), each thread its
-- own share, and counts the answers' outcomes.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local requests, index = {}, 0
local threads, count = {}, 0
local rate, start, scheduled = 0, nil, 0

function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  accepted, duplicate, ignored, other, wrapped = 0, 0, 0, 0, 0
  rate = tonumber(args[3] or "0")
  if args[1] == nil or args[1] == "-" then return end
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  local shares, pos, n = tonumber(args[2]), 1, 0
  while pos <= #data do
    local newline = string.find(data, "\n", pos, true)
    local length = tonumber(string.sub(data, pos, newline - 1))
    if n % shares == tid then
      table.insert(requests, string.sub(data, newline + 1, newline + length))
    end
    n = n + 1
    pos = newline + 1 + length
  end
end

function request()
  if #requests == 0 then return wrk.format() end
  index = index + 1
  if index > #requests then
    index, wrapped = 1, wrapped + 1
  end
  return requests[index]
end

-- At a fixed rate (args[3]: requests/s of this thread), request k is due at start + k / rate,
-- whatever happened to the others (open loop, while a connection is free).
function delay()
  if rate == 0 then return 0 end
  local now = now_ms()
  if start == nil then start = now end
  local due = start + scheduled * 1000 / rate
  scheduled = scheduled + 1
  return math.max(0, math.floor(due - now + 0.5))
end

function response(status, headers, body)
  local outcome = status == 200 and string.match(body, '"status":%s*"(%a+)"') or nil
  if outcome == "accepted" then accepted = accepted + 1
  elseif outcome == "duplicate" then duplicate = duplicate + 1
  elseif outcome == "ignored" then ignored = ignored + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local totals = {accepted = 0, duplicate = 0, ignored = 0, other = 0, wrapped = 0}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do totals[key] = totals[key] + thread:get(key) end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %.6f %d %d %d %d %d %d %.1f %.1f\n", summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, totals.accepted, totals.duplicate, totals.ignored,
    totals.other, totals.wrapped, latency:percentile(50), latency:percentile(99)))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_phase(
    port: int,
    kind: str,
    seconds: float,
    clients: int,
    *,
    first_id: int,
    cpu: Any,
    state: Path,
    rate: float | None = None,
) -> PhaseResult:
    """A phase driven by wrk (a C load generator, two threads), at full speed or, with `rate`, at
    a fixed rate: most of the machine's CPU is left to the server. Deliveries are built and
    signed beforehand, enough for the phase."""
    threads = 2
    script = state / "replay.lua"
    script.write_text(WRK_SCRIPT)
    requests_file = "-"
    if kind == "webhook":
        source = Deliveries(port, first_id, 11)
        path = state / "deliveries.bin"
        with open(path, "wb") as out:
            for _ in range(int((rate * 1.1 if rate else WRK_MAX_PER_S) * seconds) + 100):
                raw = source.next()[1]
                out.write(b"%d\n" % len(raw))
                out.write(raw)
        requests_file = str(path)
    args = ["--", requests_file, str(threads), f"{(rate or 0) / threads:g}"]
    target = f"http://127.0.0.1:{port}" + ("/" if kind == "webhook" else "/healthz")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "-H",
        "Connection: close",
        "-s",
        str(script),
    ]
    result = PhaseResult(f"{kind} at {rate:.0f}/s" if rate else f"{kind} full speed", seconds)
    before, client_before = cpu(), os.times()
    run = subprocess.run([*command, target, *args], capture_output=True, text=True, check=True)
    _cpu_delta(result, before, cpu())
    client_after = os.times()
    result.client_cpu = (client_after.children_user + client_after.children_system) - (
        client_before.children_user + client_before.children_system
    )
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    fields = line.split()[1:]
    total, duration = int(fields[0]), float(fields[1])
    errors, accepted, duplicate, ignored, other, wrapped = (int(x) for x in fields[2:8])
    result.seconds = duration
    result.count_override = total
    result.p50_ms, result.p99_ms = float(fields[8]) / 1000, float(fields[9]) / 1000
    if rate:
        result.name = f"{kind} at {rate:.0f}/s ({total / duration:.0f}/s sent)"
    if kind == "webhook":
        result.outcomes.update(accepted=accepted, duplicate=duplicate, ignored=ignored)
        result.statuses[200] = accepted + duplicate + ignored
        if other:
            result.statuses[0] = other
    else:
        result.statuses[200] = total - errors
    if errors:
        result.statuses[-1] = errors
    if wrapped:
        print(f"note: wrk sent some deliveries twice ({wrapped} wraps): raise WRK_MAX_PER_S")
    return result


FIXED_RATE_CONNECTIONS = 32
"""Connections wrk holds at the fixed rate: enough that a request never waits for a free one."""
WRK_MAX_PER_S = 1500
"""Deliveries built per second of a wrk phase: more than the server answers, so none is sent twice."""


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
    # Built and signed beforehand: during the phase a thread only sleeps, sends and reads, so the
    # sender's own Python work does not sit in the latencies it measures.
    raws = [health if kind == "healthz" else source.next()[1] for _ in range(total)]
    lock = threading.Lock()
    slots = list(range(total))
    start = time.perf_counter() + 0.2

    def loop(index: int) -> None:
        mine = slots[index::threads]
        lat: list[float] = []
        late: list[float] = []
        statuses: Counter[int] = Counter()
        outcomes: Counter[str] = Counter()
        for k in mine:
            raw = raws[k]
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
    # A thread whose answer has come waits at most this long for another to let go of the GIL.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(interval)
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


def process_tree_cpu(roots: list[int], skip: Collection[int] = ()) -> float:
    """CPU seconds used so far by the processes `roots` and all their descendants (but `skip`)."""
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
        if pid in seen or pid not in stats or pid in skip:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def start_gunicorn(
    tree: Path, env: dict[str, str], port: int, workers: int, log: Path, *, name: str = "gunicorn"
) -> subprocess.Popen[bytes]:
    """gunicorn serving `tree` as the benchmark measures it (sync workers, preloaded, a deep
    backlog), started in a session of its own; returned once /healthz answers."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            devstack.gunicorn_command(
                port, workers, "--worker-class", "sync", "--backlog", "2048", config=False
            ),
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    devstack.wait_for(lambda: devstack._http_ok(f"http://127.0.0.1:{port}/healthz"), name, log=log)
    return proc


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
            self.state,
            environ={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"},
            stack=devstack.Stack(self.state, stable_ports=False),
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
        self.proc = start_gunicorn(ROOT, self.env, self.port, self.workers, self.state / "gunicorn.log")

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
        parts = {name: process_tree_cpu([pid]) for name, pid in zip(names, roots, strict=True)}
        return {**parts, STEAL: steal_seconds()}

    def seed_history(self, rows: int) -> None:
        """Messages of earlier days, as a running installation has (archived, spread over 30
        days), then VACUUM ANALYZE, as autovacuum would have run: the planner plans the
        webhook's statement with statistics of a real table, not of an empty one."""
        import psycopg2

        payload = (FIXTURES / "message_created__incoming_text.json").read_text()
        conn = psycopg2.connect(self.env["DATABASE_URL"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO meeting_notes (
                    chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id,
                    chatwoot_inbox_id, chatwoot_contact_id, source_type, message_type, content_type,
                    content, sender_type, message_created_at, payload, content_fingerprint,
                    processing_status, stored_at, created_at, updated_at)
                SELECT 1, 'history-' || n, 1000 + mod(n, 5000), 1, 2000 + mod(n, 5000), 'whatsapp',
                    'incoming', 'text', 'an earlier message', 'contact', t, %(payload)s::jsonb,
                    md5(n::text), 'stored', t + interval '1 second', t, t + interval '1 second'
                FROM generate_series(1, %(rows)s) AS n,
                    LATERAL (SELECT now() - interval '30 days' * n / %(rows)s AS t) AS times
                """,
                {"payload": payload, "rows": rows},
            )
            cur.execute("VACUUM ANALYZE meeting_notes")
        conn.close()

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
    row["steal %"] = 100 * result.steal / (result.seconds * (os.cpu_count() or 1))
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
    parser.add_argument("--seconds", type=float, default=8, help="length of each full-speed phase")
    parser.add_argument("--rate", type=float, default=200, help="requests/s of the fixed-rate phases")
    parser.add_argument("--rate-seconds", type=float, default=10, help="length of each fixed-rate phase")
    parser.add_argument(
        "--rate-generator",
        choices=["python", "wrk"],
        default="python",
        help="load generator of the fixed-rate phases (default python: see the docstring)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="phases of each kind and speed, alternating; the figures judged are their medians (default 3)",
    )
    parser.add_argument("--clients", type=int, default=12, help="requests in flight at full speed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY_ROWS,
        help=f"messages of earlier days in the database before measuring (default {HISTORY_ROWS})",
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator of the full-speed phases: wrk when installed (auto), or the Python one",
    )
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
        use_wrk = args.generator == "wrk" or (args.generator == "auto" and have_wrk())
        print(
            "load generator: "
            + (
                "wrk"
                if use_wrk
                else "Python" + ("" if args.generator == "python" else " (wrk is not installed)")
            )
        )
        if args.history:
            server.seed_history(args.history)
        port, cpu = server.port, server.cpu_parts

        def at_full_speed(kind: str, first_id: int) -> PhaseResult:
            if use_wrk:
                return wrk_phase(
                    port, kind, args.seconds, args.clients, first_id=first_id, cpu=cpu, state=server.state
                )
            return full_speed(port, kind, args.seconds, args.clients, first_id=first_id, cpu=cpu)

        def at_fixed_rate(kind: str, first_id: int) -> PhaseResult:
            if use_wrk and args.rate_generator == "wrk":
                return wrk_phase(
                    port,
                    kind,
                    args.rate_seconds,
                    FIXED_RATE_CONNECTIONS,
                    first_id=first_id,
                    cpu=cpu,
                    state=server.state,
                    rate=args.rate,
                )
            return fixed_rate(port, kind, args.rate, args.rate_seconds, first_id=first_id, cpu=cpu)

        base = int(time.time()) * 1000
        # Warm up: every worker's connections, imports and caches.
        warm = Deliveries(port, base, 1)
        for _ in range(200):
            send(port, warm.next()[1])
            send(port, http_request(port, "/healthz"))
        for run in range(args.runs):
            results.append((at_full_speed("healthz", 0), False))
            results.append((at_full_speed("webhook", base + 10**9 + run * 10**8), True))
        for run in range(args.runs):
            results.append((at_fixed_rate("healthz", 0), False))
            results.append((at_fixed_rate("webhook", base + 9 * 10**8 + run * 10**7), True))
        notes, updates, jobs = server.counts()
        notes -= args.history
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
        "steal %",
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
    # wrk stops with requests in flight: the server stores them, wrk does not count their answers.
    in_flight = args.clients + FIXED_RATE_CONNECTIONS if use_wrk else 0
    if not accepted <= notes <= accepted + in_flight or jobs != notes:
        failures.append(f"expected {accepted} rows and as many jobs, found {notes} rows and {jobs} jobs")
    full = results[: 2 * args.runs]
    hook_full = next(r for r, d in full if d)
    hooks_full = _judged([r for r, d in full if d])
    at_rate = _judged([r for r, d in results[2 * args.runs :] if d])
    health_at_rate = _judged([r for r, d in results[2 * args.runs :] if not d])
    p99_rate = statistics.median(r.percentile(99) for r in at_rate)
    durable_full = statistics.median(describe(r, True)["durable/s"] for r in hooks_full)
    cpu_full = statistics.median(describe(r, True)["server CPU ms/req"] for r in hooks_full)
    print(
        f"full speed, median of {len(hooks_full)} runs: {durable_full:.0f} durable deliveries/s, "
        f"server CPU {cpu_full:.2f} ms per delivery; /healthz "
        f"{statistics.median(describe(r, False)['req/s'] for r, d in full if not d):.0f} req/s"
    )
    print(
        f"at {args.rate:.0f}/s, median of {len(at_rate)} runs: webhook p99 {p99_rate:.2f} ms, server CPU "
        f"{statistics.median(describe(r, True)['server CPU ms/req'] for r in at_rate):.2f} ms per delivery; "
        f"/healthz p99 {statistics.median(r.percentile(99) for r in health_at_rate):.2f} ms, "
        f"{statistics.median(describe(r, False)['server CPU ms/req'] for r in health_at_rate):.2f} ms CPU"
    )
    targets = [
        (f"p99 at {args.rate:.0f}/s <= {TARGET_P99_MS} ms (median of the runs)", p99_rate <= TARGET_P99_MS),
        (
            f"durable deliveries/s >= {TARGET_DURABLE_PER_S:.0f} (median)",
            durable_full >= TARGET_DURABLE_PER_S,
        ),
        (f"server CPU per delivery at full speed <= {TARGET_CPU_MS} ms (median)", cpu_full <= TARGET_CPU_MS),
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
    if max(describe(r, d)["steal %"] for r, d in results) > 5:
        print(
            "warning: the host gave more than 5% of this machine's CPU time to others (steal): figures are inflated"
        )
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


MAX_JUDGED_STEAL_PERCENT = 5.0
"""A phase during which the host took more of the machine's CPU time than this is shown but not
judged, as long as another run of the same phase was clean: steal inflates the guest's CPU
accounting and stalls requests, whatever the server does."""


def _judged(runs: list[PhaseResult]) -> list[PhaseResult]:
    clean = [r for r in runs if describe(r, False)["steal %"] <= MAX_JUDGED_STEAL_PERCENT]
    if clean and len(clean) < len(runs):
        print(
            f"not judged ({len(runs) - len(clean)} of {len(runs)} runs of '{runs[0].name}'): "
            f"the host took more than {MAX_JUDGED_STEAL_PERCENT:g}% of the CPU time meanwhile"
        )
    return clean or runs


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise SystemExit(main())
