"""Archive throughput (text messages/s with 1 and 2 worker processes) and webhook-to-`stored`
latency, on the local stack.

    .venv/bin/python bench/archive_bench.py [--messages 3000] [--latency-messages 300]
                                            [--rate 10] [--keep]
    make bench-archive

Starts its own PostgreSQL (synchronous commit on), Redis (append-only file) and GCS emulator
(fake-gcs-server, filesystem backend) in a temporary folder, as `make up` does, then:

1. throughput: N text messages (WhatsApp fixture, new ids, from 20 contacts: 10 mapped to users,
   10 on the account's fallback) are ingested with their archive jobs queued while no worker
   runs; then `python -m workers --queues archive --processes P` starts and drains the queue.
   Messages/s = messages / (last stored_at - first stored_at), so worker start-up is not counted.
   Run with P = 1 and P = 2. The buckets exist already (created by a warm-up): the steady state.
2. latency: gunicorn (2 sync workers) and `python -m workers` (2 processes, every general queue,
   with the scheduler) as deployed; signed webhooks of new text messages are posted at a fixed,
   low rate (idle system); latency = the row's stored_at - the moment the POST was sent.

Both phases run the real code paths (webhook, ingest, RQ SimpleWorker, GCS client over HTTP).
The load generator and the emulator share the machine's CPUs with the service: figures are a
floor for a real deployment, where GCS is remote (slower per call, but not using our CPU).
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import devstack  # noqa: E402
from webhook_bench import process_tree_cpu  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "chatwoot" / "message_created__incoming_text.json"
SECRET = "bench-archive-secret"

TARGET_MESSAGES_PER_S_2 = 100.0
"""Text messages archived per second with 2 worker processes."""
TARGET_P50_MS = 150.0
"""Milliseconds from webhook to `stored`, median, on an idle system."""
CONTACTS = 20
MAPPED = 10


def message(message_id: int, contact: int) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(FIXTURE.read_text())
    payload["id"] = message_id
    payload["content"] = f"bench note {message_id}: remember to call the supplier about the order"
    contact_id = 50_000 + contact
    for sender in (payload["sender"], payload["conversation"]["meta"]["sender"]):
        sender["id"] = contact_id
        sender["phone_number"] = f"+1415555{contact:04d}"
    payload["conversation"]["contact_inbox"]["contact_id"] = contact_id
    payload["conversation"]["id"] = 10_000 + contact
    return payload


class Stack:
    def __init__(self, keep: bool):
        self.keep = keep
        self.state = Path(tempfile.mkdtemp(prefix="archive-bench-"))
        self.env: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_services(self) -> None:
        services = devstack.start_services(self.state, fast=False, environ={})
        self.env = {
            **os.environ,
            **services,
            "APP_ENV": "development",
            "LOG_LEVEL": "INFO",
            "CHATWOOT_WEBHOOK_SECRET": SECRET,
            "CHATWOOT_BASE_URL": "https://chat.example.com",
            "CHATWOOT_ACCOUNT_ID": "1",
            "BUCKET_HASH_SECRET": "bench-bucket-hash-secret",
            # The emulator has no creation quota; the warm-up need not wait 2 s per bucket.
            "GCS_BUCKET_CREATE_RATE": "20 per 1 second",
            "SPOOL_DIR": str(self.state / "spool"),
            "TRANSCRIPTION_PROVIDER": "none",
            "PYTHONUNBUFFERED": "1",
            "NO_GCE_CHECK": "true",
        }
        from app.migrate import upgrade

        upgrade(self.env["DATABASE_URL"])
        from app import context
        from app.config import load_settings

        context.use_settings(load_settings(self.env))

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = self.state / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        devstack.stop_pid(proc.pid, timeout=15)
        if proc in self.procs:
            self.procs.remove(proc)

    def workers(self, processes: int, queues: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"workers-{processes}",
            [sys.executable, "-m", "workers", "--queues", queues, "--processes", str(processes)],
        )

    def web(self, port: int) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            "web",
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "wsgi:app",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--preload",
                "--no-control-socket",
            ],
        )
        devstack.wait_for(lambda: devstack._http_ok(f"http://127.0.0.1:{port}/healthz"), "gunicorn")
        return proc

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the workers, PostgreSQL, Redis and the GCS emulator."""
        roots = {"workers": [p.pid for p in self.procs]}
        pg = devstack.pg_data_root(self.state) / "data" / "postmaster.pid"
        if pg.exists():
            roots["postgres"] = [int(pg.read_text().splitlines()[0])]
        for name in ("redis", "gcs"):
            pid = devstack.read_pid(self.state / f"{name}.pid")
            if pid:
                roots[name] = [pid]
        return {name: process_tree_cpu(pids) for name, pids in roots.items()}

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        devstack.stop_services(self.state)
        if not self.keep:
            shutil.rmtree(devstack.pg_data_root(self.state), ignore_errors=True)
            shutil.rmtree(self.state, ignore_errors=True)


def scalar(sql: str, params: tuple[Any, ...] = ()) -> Any:
    from app import context

    with context.db().transaction() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return next(iter(row.values())) if row else None


def wait_stored(ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = scalar(
            "SELECT count(*) FROM meeting_notes WHERE id = ANY(%s) AND processing_status = 'stored'", (ids,)
        )
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            errors = scalar("SELECT count(*) FROM meeting_notes WHERE processing_status = 'error'")
            raise SystemExit(
                f"only {done} of {len(ids)} messages stored after {timeout:.0f} s ({errors} errors)"
            )
        time.sleep(0.2)


def warm_up(stack: Stack) -> None:
    """Map half the contacts to users and create every bucket (one message per contact)."""
    from app.ingest.pipeline import ingest
    from app.users import contacts as users

    for contact in range(MAPPED):
        users.link_contact(1, f"bench-user-{contact}", contact_id=50_000 + contact)
    ids = [ingest(message(900_000_000 + c, c)).note_id for c in range(CONTACTS)]
    proc = stack.workers(1, "archive")
    wait_stored([int(i) for i in ids if i], timeout=120)
    stack.stop(proc)
    settle()


def settle() -> None:
    """Drop the classification work the throughput runs queued (it is not what they measure), so
    that the latency run starts on an idle system."""
    from rq import Queue

    from app import context

    Queue("classify", connection=context.redis()).empty()
    with context.db().transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET classification_status = 'not_needed' WHERE classification_status = 'pending'"
        )


def throughput(stack: Stack, processes: int, count: int, first_id: int) -> tuple[float, dict[str, float]]:
    """(messages archived per second, CPU ms per message of the workers, PostgreSQL, Redis, GCS)."""
    from app.ingest.pipeline import ingest

    ids = [int(ingest(message(first_id + i, i % CONTACTS)).note_id or 0) for i in range(count)]
    proc = stack.workers(processes, "archive")
    before = stack.cpu()
    wait_stored(ids, timeout=max(120.0, count / 5))
    after = stack.cpu()
    cpu = {name: 1000 * (after[name] - before.get(name, 0.0)) / count for name in after}
    stack.stop(proc)
    settle()
    span = scalar(
        "SELECT extract(epoch FROM max(stored_at) - min(stored_at)) FROM meeting_notes WHERE id = ANY(%s)",
        (ids,),
    )
    return (count - 1) / float(span), cpu


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    conn.request(
        "POST",
        "/webhooks/chatwoot",
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": ts,
            "X-Chatwoot-Signature": f"sha256={digest}",
        },
    )
    response = conn.getresponse()
    answer = json.loads(response.read())
    if response.status != 200 or answer.get("status") != "accepted":
        raise SystemExit(f"webhook answered {response.status} {answer}")
    return int(answer["id"])


def latency(stack: Stack, count: int, rate: float, first_id: int) -> list[float]:
    port = devstack.free_port()
    web = stack.web(port)
    workers = stack.spawn("workers-general", [sys.executable, "-m", "workers", "--processes", "2"])
    time.sleep(3)  # workers registered and listening
    sent: dict[int, float] = {}
    try:
        # Warm every web and worker process.
        for i in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            post(conn, json.dumps(message(first_id - 100 + i, i % CONTACTS)).encode())
            conn.close()
        time.sleep(1)
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            body = json.dumps(message(first_id + i, i % CONTACTS)).encode()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.time()
            note_id = post(conn, body)
            conn.close()
            sent[note_id] = t0
        wait_stored(list(sent), timeout=60)
    finally:
        stack.stop(workers)
        stack.stop(web)
    from app import context

    with context.db().transaction() as cur:
        cur.execute(
            "SELECT id, extract(epoch FROM stored_at) AS stored FROM meeting_notes WHERE id = ANY(%s)",
            (list(sent),),
        )
        stored = {int(r["id"]): float(r["stored"]) for r in cur.fetchall()}
    return sorted((stored[i] - t0) * 1000 for i, t0 in sent.items())


def context_db() -> Any:
    from app import context

    return context.db()


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000, help="messages per throughput run")
    parser.add_argument("--latency-messages", type=int, default=300, help="webhooks in the latency run")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="webhooks/s in the latency run (idle system)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    parser.add_argument(
        "--without-triggers",
        action="store_true",
        help="diagnosis: disable the triggers on meeting_notes and message_attachments (monitoring roll-ups)",
    )
    args = parser.parse_args(argv)

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    stack = Stack(args.keep)
    try:
        stack.start_services()
        print(f"state in {stack.state}")
        if args.without_triggers:
            with context_db().transaction() as cur:
                cur.execute("ALTER TABLE meeting_notes DISABLE TRIGGER USER")
                cur.execute("ALTER TABLE message_attachments DISABLE TRIGGER USER")
        warm_up(stack)
        results = {p: throughput(stack, p, args.messages, 1_000_000 * p) for p in (1, 2)}
        lat = latency(stack, args.latency_messages, args.rate, 10_000_000)
    finally:
        stack.close()

    print()
    print("measure | value")
    print("--- | ---")
    for p, (r, cpu) in results.items():
        workers = f"{p} worker process{'es' if p > 1 else ''}"
        print(f"text messages archived/s, {workers} | {r:,.0f}")
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items())
        print(f"CPU ms per message, {workers} | {sum(cpu.values()):.1f} ({parts})")
    print(f"webhook to stored at {args.rate:g}/s, p50 | {pct(lat, 50):.0f} ms")
    print(f"webhook to stored at {args.rate:g}/s, p99 | {pct(lat, 99):.0f} ms")
    print()
    failures = []
    for label, ok in (
        (
            f"archived/s with 2 workers >= {TARGET_MESSAGES_PER_S_2:.0f}",
            results[2][0] >= TARGET_MESSAGES_PER_S_2,
        ),
        (f"webhook-to-stored p50 < {TARGET_P50_MS:.0f} ms", pct(lat, 50) < TARGET_P50_MS),
    ):
        print(f"{'ok  ' if ok else 'MISS'} {label}")
        if not ok:
            failures.append(label)
    return 1 if failures else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise SystemExit(main())
