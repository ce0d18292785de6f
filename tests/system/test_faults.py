"""Fault injection: 1 000 messages through the real webhook while the service's parts fail.

A gunicorn on loopback, the real worker processes (`python -m workers`) and the cron process
(`python -m workers.cron`) run against the suite's PostgreSQL and Redis and a GCS emulator of
this test's own (its files kept on disk across a restart, as real GCS keeps them). Chatwoot is
a local HTTP stub that serves attachments and counts every message posted to it; as Chatwoot
does, it lets the agent bot's token (which sends) create messages but not list them, and the
user's token (which reads) do both.

Every tenth message belongs to account 7, which has a webhook secret of its own; among the
deliveries are forged ones for account 7, signed with the environment's secret.

While the messages are sent: a worker is killed with SIGKILL, Redis is stopped and started (it
comes back empty: every queued job is lost), the GCS emulator is stopped and started, and
PostgreSQL is stopped (the webhook spools) and started; while it is down, gunicorn replaces its
workers (SIGHUP), so that web processes that have never read the accounts' settings receive
deliveries. Afterwards every message is stored exactly once (rows, message JSON objects,
attachment files), no forged delivery is stored, and no notice was sent twice.

FAULT_TEST_MESSAGES sets the number of messages (default 1000).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import devstack
import pytest
import requests
from cryptography.fernet import Fernet

from app.chatwoot import accounts
from tests.helpers.common import (
    CHATWOOT_BOT_TOKEN,
    CHATWOOT_TOKEN,
    WEBHOOK_SECRET,
    base_environ,
    load_fixture,
    sign,
)
from tests.helpers.faults import Processes, children

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MESSAGES = int(os.environ.get("FAULT_TEST_MESSAGES", "1000"))
SEND_SECONDS = 24.0
"""The messages are spread over this long, so that every fault happens while they arrive."""
SETTLE_TIMEOUT = 180.0
"""Seconds allowed, after the last fault, for everything to be stored and sent."""
ACCOUNT = 1
OWN_ACCOUNT = 7
OWN_SECRET = "account-seven-fault-test-secret"
FORGED = 40
"""Deliveries for account 7 signed with the environment's secret: never to be stored."""
MESSAGE_JSON = re.compile(r"whatsapp-messages/(?:accounts/\d+/)?\d{4}-\d{2}-\d{2}/[^/]+\.json$")
"""A message's JSON object, for the default account or (under accounts/<id>/) another one."""
MESSAGE_FILE = re.compile(r"whatsapp-messages/(?:accounts/\d+/)?\d{4}-\d{2}-\d{2}/[^/]+/[^/]+$")
"""A file beside a message's JSON (an attachment here: no transcript or update in this test)."""
IMAGE_BYTES = b"\xff\xd8\xff\xe0" + b"fault-test-image" * 64


# ---------------------------------------------------------------------------------------------
# Chatwoot, as a local HTTP stub


@dataclass
class ChatwootStub:
    """Chatwoot's API and attachment URLs on loopback; counts what is posted to it.

    Tokens as `access_token_auth_helper.rb` treats them: `token` (a user's) may list and create,
    `bot_token` (an agent bot's) may create messages and gets 401 "Access to this endpoint is not
    authorized for bots" on list endpoints; any other token gets 401 "Invalid Access Token".
    """

    token: str = CHATWOOT_TOKEN
    bot_token: str = CHATWOOT_BOT_TOKEN
    posted: list[dict[str, Any]] = field(default_factory=list)
    requests_seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    """Attachment files by id."""
    redirects: dict[str, str] = field(default_factory=dict)
    """Extra redirects: path -> Location (hardening tests)."""
    slow: dict[str, float] = field(default_factory=dict)
    """Seconds an attachment file takes to start answering, by id (shutdown tests)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ChatwootStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {"Content-Type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _seen(self) -> None:
                with stub.lock:
                    stub.requests_seen.append((self.command, self.path, dict(self.headers)))

            def _refused(self, bots_may: bool) -> bool:
                """Answer 401 as Chatwoot does when the token may not use this endpoint."""
                token = self.headers.get("api_access_token")
                if token == stub.token or (token == stub.bot_token and bots_may):
                    return False
                if token == stub.bot_token:
                    self._answer(401, b'{"error":"Access to this endpoint is not authorized for bots"}')
                else:
                    self._answer(401, b'{"error":"Invalid Access Token"}')
                return True

            def do_GET(self) -> None:
                self._seen()
                path = self.path.split("?", 1)[0]
                if path in stub.redirects:
                    self._answer(302, headers={"Location": stub.redirects[path]})
                    return
                found = re.fullmatch(r"/rails/active_storage/blobs/redirect/(\w+)/[^/]+", path)
                if found:
                    self._answer(302, headers={"Location": f"/storage/{found.group(1)}"})
                    return
                found = re.fullmatch(r"/storage/(\w+)", path)
                if found and found.group(1) in stub.files:
                    time.sleep(stub.slow.get(found.group(1), 0.0))
                    self._answer(200, stub.files[found.group(1)], {"Content-Type": "image/jpeg"})
                    return
                if re.fullmatch(r"/api/v1/accounts/(\d+)/conversations", path):
                    if not self._refused(bots_may=False):
                        self._answer(200, b'{"data":{"meta":{},"payload":[]}}')
                    return
                found = re.fullmatch(r"/api/v1/accounts/(\d+)/conversations/(\d+)/messages", path)
                if found:
                    if self._refused(bots_may=False):
                        return
                    conversation = int(found.group(2))
                    with stub.lock:
                        mine = [m for m in stub.posted if m["conversation_id"] == conversation]
                    self._answer(200, json.dumps({"payload": mine[-20:]}).encode())
                    return
                self._answer(404, b'{"error":"not found"}')

            def do_POST(self) -> None:
                self._seen()
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path in stub.redirects:
                    self._answer(307, headers={"Location": stub.redirects[self.path]})
                    return
                found = re.fullmatch(r"/api/v1/accounts/(\d+)/conversations/(\d+)/messages", self.path)
                if not found:
                    self._answer(404, b'{"error":"not found"}')
                    return
                if self._refused(bots_may=True):
                    return
                with stub.lock:
                    message = {
                        "id": 900_000 + len(stub.posted),
                        "conversation_id": int(found.group(2)),
                        "content": body.get("content"),
                        "content_type": body.get("content_type", "text"),
                        "content_attributes": body.get("content_attributes") or {},
                        "message_type": 1,
                        "private": bool(body.get("private")),
                        "created_at": int(time.time()),
                    }
                    stub.posted.append(message)
                self._answer(200, json.dumps(message).encode())

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the fault test's kill -9) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# ---------------------------------------------------------------------------------------------
# processes


def gunicorn_cmd(port: int) -> list[str]:
    return [
        devstack.venv_bin("gunicorn"),
        "wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--no-control-socket",
        "--graceful-timeout",
        "20",
        "--timeout",
        "30",
    ]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


# ---------------------------------------------------------------------------------------------
# the messages


def message(i: int, stub: ChatwootStub) -> dict[str, Any]:
    """Message number i: mostly notes of 50 contacts, some orders, photos, agent replies, private notes."""
    base = load_fixture("message_created__incoming_text")
    payload = json.loads(json.dumps(base))
    conversation = 1000 + i % 50
    contact = 50_000 + i % 50
    kind = "note"
    if i % 25 == 7:
        kind, conversation, contact = "order", 5000 + i, 60_000 + i
    elif i % 20 == 3:
        kind = "photo"
    elif i % 33 == 5:
        kind = "outgoing"
    elif i % 50 == 11:
        kind = "private"
    payload["id"] = 7_000_000 + i
    payload["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    payload["content"] = f"note {i}: customers keep asking about onboarding."
    payload["conversation"]["id"] = conversation
    payload["conversation"]["meta"]["sender"]["id"] = contact
    payload["conversation"]["meta"]["sender"]["phone_number"] = f"+5491155{contact:06d}"[:14]
    payload["conversation"]["contact_inbox"]["contact_id"] = contact
    payload["sender"]["id"] = contact
    payload["sender"]["phone_number"] = payload["conversation"]["meta"]["sender"]["phone_number"]
    payload.pop("attachments", None)
    if kind == "order":
        payload["content"] = (
            f"Can you write a post about our onboarding results ({i})? Keep it short and professional."
        )
    elif kind == "photo":
        attachment_id = str(8_000_000 + i)
        stub.files[attachment_id] = IMAGE_BYTES + attachment_id.encode()
        payload["content"] = f"photo {i} of the whiteboard"
        payload["attachments"] = [
            {
                "id": int(attachment_id),
                "message_id": payload["id"],
                "file_type": "image",
                "account_id": ACCOUNT,
                "extension": None,
                "data_url": f"{stub.url}/rails/active_storage/blobs/redirect/{attachment_id}/photo.jpg",
                "thumb_url": "",
                "file_size": len(stub.files[attachment_id]),
            }
        ]
    elif kind in ("outgoing", "private"):
        payload["message_type"] = "outgoing"
        payload["sender"] = {"id": 7, "name": "Lucía", "type": "user"}
        payload["private"] = kind == "private"
        payload["content"] = f"{kind} {i} from an agent"
    payload["_kind"] = kind
    payload["_secret"] = WEBHOOK_SECRET
    if i % 10 == 9:
        payload["account"] = {"id": OWN_ACCOUNT, "name": "Own secret"}
        payload["_secret"] = OWN_SECRET
        if kind == "photo":
            payload["attachments"][0]["account_id"] = OWN_ACCOUNT
    return payload


def forged(j: int) -> dict[str, Any]:
    """A message claiming account 7, signed with the environment's secret, not account 7's."""
    payload = json.loads(json.dumps(load_fixture("message_created__incoming_text")))
    payload["id"] = 9_000_000 + j
    payload["account"] = {"id": OWN_ACCOUNT, "name": "Own secret"}
    payload["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    payload["_kind"] = "forged"
    payload["_secret"] = WEBHOOK_SECRET
    return payload


@dataclass
class Sent:
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    deliveries: int = 0


def send_all(url: str, payloads: list[dict[str, Any]], seconds: float) -> Sent:
    """POST every payload (and every 20th one a second time, as Chatwoot sometimes does),
    spread evenly over `seconds`, from 6 threads."""
    sent = Sent()
    lock = threading.Lock()
    local = threading.local()
    start = time.monotonic()
    schedule = []
    for index, payload in enumerate(payloads):
        schedule.append((index, payload))
        if index % 20 == 0:
            schedule.append((index, payload))
    interval = seconds / len(schedule)

    def post(slot: int, payload: dict[str, Any]) -> None:
        delay = start + slot * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        body = json.dumps({k: v for k, v in payload.items() if not k.startswith("_")}).encode()
        try:
            response = session.post(url, data=body, headers=sign(body, payload["_secret"]), timeout=15)
            answer = response.json()
            outcome = f"{response.status_code} {answer.get('status') or answer.get('error')}"
            if answer.get("spooled"):
                outcome += " (spooled)"
        except (requests.RequestException, ValueError) as exc:
            outcome = f"failed {type(exc).__name__}"
        if payload["_kind"] == "forged":
            # Refused, or (PostgreSQL down, a process that never read the accounts) spooled
            # to be verified at replay.
            outcome = "forged: " + outcome
            expected = outcome.endswith("401 unauthorized") or outcome.endswith("(spooled)")
        else:
            expected = outcome.startswith("200")
        with lock:
            sent.deliveries += 1
            sent.statuses[outcome] += 1
            if not expected:
                sent.failures.append(f"{payload['id']}: {outcome}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        for slot, (_, payload) in enumerate(schedule):
            pool.submit(post, slot, payload)
    return sent


# ---------------------------------------------------------------------------------------------
# the test


@pytest.fixture
def private_gcs(tmp_path: Path) -> Iterator[devstack.Stack]:
    """A GCS emulator keeping its files on disk, so that a restart loses nothing (like GCS)."""
    state = tmp_path / "gcs-state"
    state.mkdir()
    stack = devstack.Stack(state, fast=False, stable_ports=False)
    stack.start_gcs()
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        yield stack
    finally:
        stack.stop_pidfile("gcs")
        if saved is not None:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


def _gcs_url(stack: devstack.Stack) -> str:
    return f"http://127.0.0.1:{stack.ports()['gcs']}"


def _db_counts(dsn: str) -> dict[str, Any]:
    import psycopg2
    import psycopg2.extras

    with (
        psycopg2.connect(dsn, connect_timeout=3) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute(
            """
            SELECT
              (SELECT count(*) FROM meeting_notes) AS rows,
              (SELECT count(*) FROM meeting_notes WHERE processing_status = 'stored') AS stored,
              (SELECT count(*) FROM meeting_notes WHERE processing_status = 'error') AS errors,
              (SELECT count(*) FROM meeting_notes WHERE classification_status = 'pending') AS unclassified,
              (SELECT count(*) FROM message_updates) AS updates,
              (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')) AS unsent,
              (SELECT count(*) FROM outbox) AS notices,
              (SELECT count(*) FROM meeting_notes WHERE attempts > 0) AS requeued
            """
        )
        row = cur.fetchone()
    conn.close()
    return dict(row)


def _spooled(spool_dir: Path) -> int:
    if not spool_dir.is_dir():
        return 0
    return sum(
        1
        for p in spool_dir.iterdir()
        if p.name.endswith((".jsonl", ".replaying")) and p.name != "rejected.jsonl"
    )


def test_nothing_lost_nothing_twice_under_faults(  # noqa: PLR0917 (fixtures)
    services: Any, tmp_path: Path, db: Any, redis_conn: Any, private_gcs: devstack.Stack, use_settings: Any
) -> None:
    stub = ChatwootStub().start()
    port = devstack.free_port()
    spool_dir = tmp_path / "spool"
    env = {
        **os.environ,
        **base_environ(services, tmp_path),
        "STORAGE_EMULATOR_HOST": _gcs_url(private_gcs),
        "CHATWOOT_BASE_URL": stub.url,
        # As recommended: the agent bot's token sends, a user's token reads.
        "CHATWOOT_API_ACCESS_TOKEN": stub.bot_token,
        "CHATWOOT_USER_ACCESS_TOKEN": stub.token,
        "SPOOL_DIR": str(spool_dir),
        "LOG_LEVEL": "WARNING",
        "WORKER_PROCESSES": "3",
        "JOB_TIMEOUT": "60",
        "RECONCILE_INTERVAL": "2",
        "RECONCILE_GRACE": "5",
        "RECONCILE_BACKOFF": "1",
        "RECONCILE_BACKOFF_MAX": "5",
        "RECONCILE_MAX_ATTEMPTS": "1000",
        "BACKFILL_INTERVAL": "0",
        "ATTACHMENT_RETRY_SECONDS": "10",
        "GCS_BUCKET_CREATE_RATE": "10 per second",
        "PYTHONUNBUFFERED": "1",
        "NO_GCE_CHECK": "true",
    }
    key = Fernet.generate_key().decode()
    env["SECRETS_ENCRYPTION_KEY"] = key
    use_settings(secrets_encryption_key=key)
    accounts.upsert(OWN_ACCOUNT, webhook_secret=OWN_SECRET)
    procs = Processes(env, tmp_path / "logs")
    payloads = [message(i, stub) for i in range(MESSAGES)]
    forgeries = [forged(j) for j in range(FORGED)]
    mixed = list(payloads)
    for j, fake in enumerate(forgeries):
        mixed.insert((j + 1) * len(payloads) // (FORGED + 1) + j, fake)
    faults: list[str] = []
    try:
        procs.start("web", gunicorn_cmd(port))
        workers = procs.start("worker", [sys.executable, "-m", "workers"])
        procs.start("cron", [sys.executable, "-m", "workers.cron"])
        wait_http(f"http://127.0.0.1:{port}/healthz")

        sender: dict[str, Sent] = {}
        thread = threading.Thread(
            target=lambda: sender.setdefault(
                "result", send_all(f"http://127.0.0.1:{port}/webhooks/chatwoot", mixed, SEND_SECONDS)
            )
        )
        started = time.monotonic()
        thread.start()

        def at(second: float) -> None:
            time.sleep(max(0.0, started + second - time.monotonic()))

        at(3)
        busy = children(workers.pid)
        assert busy, procs.tail()
        os.kill(busy[0], signal.SIGKILL)
        faults.append("kill -9 of a worker process")
        at(6)
        services.stop_redis()
        faults.append("Redis stopped (restarted empty)")
        at(9)
        services.start_redis()
        at(11)
        private_gcs.stop_pidfile("gcs")
        faults.append("GCS emulator stopped")
        at(14)
        private_gcs.start_gcs()
        at(16)
        services.stop_postgres()
        faults.append("PostgreSQL stopped")
        at(17)
        web = procs.procs["web"]
        os.kill(web.pid, signal.SIGHUP)
        faults.append("gunicorn's workers replaced while PostgreSQL is down")
        at(21)
        services.start_postgres()
        at(22)
        busy = children(workers.pid)
        if busy:
            os.kill(busy[-1], signal.SIGKILL)
            faults.append("kill -9 of a worker process")
        thread.join()
        sent = sender["result"]

        deadline = time.monotonic() + SETTLE_TIMEOUT
        counts: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                counts = _db_counts(services.env["DATABASE_URL"])
            except Exception as exc:  # PostgreSQL still starting
                counts = {"error": type(exc).__name__}
            if (
                counts.get("stored") == MESSAGES
                and counts.get("unclassified") == 0
                and counts.get("unsent") == 0
                and _spooled(spool_dir) == 0
            ):
                break
            time.sleep(1)
        settle = time.monotonic() - started

        # --- what is there -----------------------------------------------------------------
        import psycopg2

        with psycopg2.connect(services.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT chatwoot_message_id, count(*) OVER (PARTITION BY chatwoot_message_id), "
                "processing_status, gcs_storage_path FROM meeting_notes WHERE chatwoot_account_id IN (%s, %s)",
                (ACCOUNT, OWN_ACCOUNT),
            )
            rows = cur.fetchall()
            cur.execute("SELECT dedupe_key, status FROM outbox")
            outbox_rows = cur.fetchall()
            cur.execute("SELECT object_name, status FROM message_attachments")
            attachment_rows = cur.fetchall()
        conn.close()

        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ["STORAGE_EMULATOR_HOST"] = _gcs_url(private_gcs)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        objects = [
            (bucket.name, blob.name)
            for bucket in client.list_buckets()
            for blob in client.list_blobs(bucket.name, prefix="whatsapp-messages/")
        ]
        json_objects = Counter(
            name.rsplit("/", 1)[1].removesuffix(".json") for _, name in objects if MESSAGE_JSON.match(name)
        )
        file_objects = [name for _, name in objects if MESSAGE_FILE.match(name)]

        expected_ids = {str(p["id"]) for p in payloads}
        stored_ids = {r[0] for r in rows}
        forged_accepted = sorted(stored_ids & {str(p["id"]) for p in forgeries})
        rows = [r for r in rows if r[0] in expected_ids]
        lost = sorted(expected_ids - stored_ids)
        duplicated_rows = sorted({r[0] for r in rows if r[1] > 1})
        missing_objects = sorted(i for i in expected_ids if json_objects[i] == 0)
        duplicated_objects = sorted(i for i, n in json_objects.items() if n > 1)
        photos = [p for p in payloads if p["_kind"] == "photo"]
        orders = [p for p in payloads if p["_kind"] == "order"]
        posted_keys = Counter(
            m["content_attributes"].get("outbox_key") for m in stub.posted if m["content_attributes"]
        )
        duplicated_notices = sorted(k for k, n in posted_keys.items() if n > 1)
        token_leaks = [
            (method, path)
            for method, path, headers in stub.requests_seen
            if not path.startswith("/api/") and "api_access_token" in {h.lower() for h in headers}
        ]

        figures = {
            "sent": MESSAGES,
            "deliveries": sent.deliveries,
            "faults": len(faults),
            "lost": len(lost) + len(missing_objects),
            "duplicated": len(duplicated_rows) + len(duplicated_objects) + len(duplicated_notices),
            "forged": FORGED,
            "forged accepted": len(forged_accepted),
            "notices": len(stub.posted),
            "requeued by the reconciler": counts.get("requeued"),
            "seconds until all settled": round(settle, 1),
        }
        print("\nfault injection: " + ", ".join(faults))
        print("answers: " + ", ".join(f"{k} x{n}" for k, n in sorted(sent.statuses.items())))
        print("figures: " + json.dumps(figures))

        context_info = f"{counts}\n{sent.statuses}\n{sent.failures[:10]}\n{procs.tail()}"
        assert sent.failures == [], context_info
        assert lost == [], f"lost rows: {lost[:20]}\n{context_info}"
        assert duplicated_rows == []
        assert forged_accepted == [], forged_accepted
        assert all(r[2] == "stored" for r in rows), context_info
        assert missing_objects == [], (
            f"messages without their JSON object: {missing_objects[:20]}\n{context_info}"
        )
        assert duplicated_objects == []
        assert set(json_objects) == expected_ids
        # Each photo's file once, each recorded as stored.
        assert len(file_objects) == len(photos)
        assert sorted(s for _, s in attachment_rows) == ["stored"] * len(photos)
        assert counts["updates"] == 0
        # Every notice recorded once, sent once; one question per order.
        assert duplicated_notices == [], duplicated_notices
        assert len(stub.posted) == len(outbox_rows) == len(posted_keys)
        assert sorted(s for _, s in outbox_rows) == ["sent"] * len(outbox_rows)
        assert len(outbox_rows) >= len(orders)
        assert token_leaks == []
        # The processes' logs: no stack traces, no secrets, no phone numbers.
        logs = "\n".join(path.read_text(errors="replace") for path in procs.logs.glob("*.log"))
        assert "Traceback" not in logs, procs.tail()
        phones = {p["sender"].get("phone_number") for p in payloads if p["sender"].get("phone_number")}
        for secret in (
            CHATWOOT_TOKEN,
            CHATWOOT_BOT_TOKEN,
            WEBHOOK_SECRET,
            *phones,
            *(x.lstrip("+") for x in phones),
        ):
            assert secret not in logs
    finally:
        procs.stop_all()
        stub.stop()
        services.start_redis()
        services.start_postgres()
