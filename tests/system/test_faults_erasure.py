"""Fault injection: a user is erased while that user's messages keep arriving.

The real gunicorn, worker processes and cron process of test_faults.py, with Chatwoot as its
local stub. One contact, linked to a user, writes 20 messages a second (notes, photos whose
download takes a while, agents' replies); other contacts write as much. Half-way, an admin
erases the user through the admin API, once; the contact goes on writing. Afterwards the
Chatwoot backfill runs for the contact's conversation, whose messages Chatwoot still lists.

Figures: `resurrected` counts the rows, objects and buckets of the erased user that exist
afterwards (0), `lost` the other contacts' messages not archived (0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import devstack
import psycopg2
import psycopg2.extras
import pytest
import requests

from tests.helpers.admin import AUTH
from tests.helpers.common import WEBHOOK_SECRET, base_environ, sign
from tests.helpers.faults import Processes
from tests.system.test_faults import (  # noqa: F401 (private_gcs is a fixture)
    MESSAGE_JSON,
    ChatwootStub,
    Sent,
    _gcs_url,
    _spooled,
    gunicorn_cmd,
    message,
    private_gcs,
    wait_http,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEND_SECONDS = 12.0
ERASE_AT = 5.0
"""Seconds after the first message when the user is erased."""
PER_SECOND = 20
"""Messages a second of the erased user's contact (and as many of the others)."""
SETTLE_TIMEOUT = 120.0
ERASED_USER, KEPT_USER = "erased-user", "kept-user"
ERASED_CONTACT, KEPT_CONTACT = 70_001, 70_002
ERASED_PHONE, KEPT_PHONE = "+5491155070001", "+5491155070002"
ERASED_CONVERSATION, KEPT_CONVERSATION = 4242, 4343
FLASK = (sys.executable, "-m", "flask", "--app", "wsgi")


def _as_contact(payload: dict[str, Any], contact: int, phone: str, conversation: int) -> dict[str, Any]:
    payload["conversation"]["id"] = conversation
    payload["conversation"]["meta"]["sender"].update(id=contact, phone_number=phone)
    payload["conversation"]["contact_inbox"]["contact_id"] = contact
    if payload["message_type"] == "incoming":
        payload["sender"].update(id=contact, phone_number=phone)
    return payload


def _in_account_1(payload: dict[str, Any]) -> dict[str, Any]:
    """Every message of this test is the default account's, signed with the environment's secret."""
    payload["account"] = {"id": 1, "name": "Test"}
    for attachment in payload.get("attachments") or []:
        attachment["account_id"] = 1
    return {k: v for k, v in payload.items() if not k.startswith("_") or k == "_kind"}


def _send(url: str, payloads: list[dict[str, Any]], seconds: float) -> Sent:
    """POST every payload (every 20th twice, as Chatwoot sometimes does), spread evenly over
    `seconds`, from 6 threads; every answer but a 200 is a failure."""
    sent = Sent()
    lock = threading.Lock()
    local = threading.local()
    schedule = [p for i, p in enumerate(payloads) for _ in range(2 if i % 20 == 0 else 1)]
    interval = seconds / len(schedule)
    start = time.monotonic()

    def post(slot: int, payload: dict[str, Any]) -> None:
        time.sleep(max(0.0, start + slot * interval - time.monotonic()))
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps({k: v for k, v in payload.items() if not k.startswith("_")}).encode()
        try:
            response = session.post(url, data=body, headers=sign(body, WEBHOOK_SECRET), timeout=15)
            answer = response.json()
            outcome = f"{response.status_code} {answer.get('status') or answer.get('error')}"
        except (requests.RequestException, ValueError) as exc:
            outcome = f"failed {type(exc).__name__}"
        with lock:
            sent.deliveries += 1
            sent.statuses[outcome] += 1
            if not outcome.startswith("200"):
                sent.failures.append(f"{payload['id']}: {outcome}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        for slot, payload in enumerate(schedule):
            pool.submit(post, slot, payload)
    return sent


def _payloads(stub: ChatwootStub) -> tuple[list[dict[str, Any]], set[str]]:
    """Interleaved: the erased user's contact, and the others (the kept user's among them)."""
    count = int(SEND_SECONDS * PER_SECOND)
    out: list[dict[str, Any]] = []
    erased_ids: set[str] = set()
    for i in range(count):
        mine = message(i, stub)
        if mine["_kind"] == "order":  # orders of their own contacts; the erased contact writes notes
            mine = message(i + 1, stub)
        mine["id"] = 8_000_000 + i
        _as_contact(mine, ERASED_CONTACT, ERASED_PHONE, ERASED_CONVERSATION)
        for attachment in mine.get("attachments") or []:
            attachment["message_id"] = mine["id"]
            stub.slow[str(attachment["id"])] = 1.5  # archive jobs still at work when the erasure runs
        erased_ids.add(str(mine["id"]))
        other = message(10_000 + i, stub)
        if i % 4 == 0:
            _as_contact(other, KEPT_CONTACT, KEPT_PHONE, KEPT_CONVERSATION)
        out += [_in_account_1(mine), _in_account_1(other)]
    return out, erased_ids


def _listed(payload: dict[str, Any]) -> dict[str, Any]:
    """A message as Chatwoot's message list shows it (for the backfill)."""
    return {
        "id": payload["id"],
        "conversation_id": ERASED_CONVERSATION,
        "inbox_id": 4,
        "content": payload["content"],
        "content_type": "text",
        "content_attributes": {},
        "message_type": 0 if payload["message_type"] == "incoming" else 1,
        "private": False,
        "created_at": int(time.time()) - 30,
        "sender": payload["sender"]
        | {"type": "contact" if payload["message_type"] == "incoming" else "user"},
    }


def _message_id(name: str) -> str | None:
    """The message id in an object name (`whatsapp-messages/<day>/<id>.json`, `.../<id>/...`)."""
    parts = name.split("/")
    return parts[2].removesuffix(".json") if len(parts) > 2 else None


def _query(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with (
        psycopg2.connect(dsn, connect_timeout=3) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute(sql, params)
        rows = [dict(r) for r in cur.fetchall()]
    conn.close()
    return rows


def test_an_erased_user_stays_erased_while_writing(
    services: Any,
    tmp_path: Path,
    db: Any,
    redis_conn: Any,
    private_gcs: devstack.Stack,  # noqa: F811 (the fixture imported above)
) -> None:
    stub = ChatwootStub().start()
    port = devstack.free_port()
    base = f"http://127.0.0.1:{port}"
    spool_dir = tmp_path / "spool"
    dsn = services.env["DATABASE_URL"]
    env = {
        **os.environ,
        **base_environ(services, tmp_path),
        "STORAGE_EMULATOR_HOST": _gcs_url(private_gcs),
        "CHATWOOT_BASE_URL": stub.url,
        "SPOOL_DIR": str(spool_dir),
        "LOG_LEVEL": "WARNING",
        "WORKER_PROCESSES": "2",
        "JOB_TIMEOUT": "60",
        "RECONCILE_INTERVAL": "2",
        "RECONCILE_GRACE": "5",
        "RECONCILE_BACKOFF": "1",
        "RECONCILE_BACKOFF_MAX": "5",
        "BACKFILL_INTERVAL": "0",
        "ATTACHMENT_RETRY_SECONDS": "10",
        "GCS_BUCKET_CREATE_RATE": "10 per second",
        "PYTHONUNBUFFERED": "1",
        "NO_GCE_CHECK": "true",
    }
    procs = Processes(env, tmp_path / "logs")
    payloads, erased_ids = _payloads(stub)
    others = {str(p["id"]) for p in payloads} - erased_ids
    try:
        procs.start("web", gunicorn_cmd(port))
        procs.start("worker", [sys.executable, "-m", "workers"])
        procs.start("cron", [sys.executable, "-m", "workers.cron"])
        wait_http(f"{base}/healthz")
        admin = requests.Session()
        admin.headers.update(AUTH)
        buckets = {}
        for user, contact, phone in (
            (ERASED_USER, ERASED_CONTACT, ERASED_PHONE),
            (KEPT_USER, KEPT_CONTACT, KEPT_PHONE),
        ):
            created = admin.post(f"{base}/admin/users", json={"user_id": user}, timeout=10)
            assert created.status_code == 201, created.text
            buckets[user] = created.json()["bucket_name"]
            linked = admin.post(
                f"{base}/admin/users/{user}/links", json={"contact_id": contact, "phone": phone}, timeout=10
            )
            assert linked.status_code == 201, linked.text

        sender: dict[str, Sent] = {}
        thread = threading.Thread(
            target=lambda: sender.setdefault(
                "result", _send(f"{base}/webhooks/chatwoot", payloads, SEND_SECONDS)
            )
        )
        started = time.monotonic()
        thread.start()
        time.sleep(max(0.0, started + ERASE_AT - time.monotonic()))
        before = _query(
            dsn, "SELECT count(*) AS n FROM meeting_notes WHERE chatwoot_contact_id = %s", (ERASED_CONTACT,)
        )
        erase_started = time.monotonic()
        erased = admin.delete(f"{base}/admin/users/{ERASED_USER}", timeout=120)
        erase_seconds = time.monotonic() - erase_started
        thread.join()
        sent = sender["result"]
        assert erased.status_code == 200, f"{erased.status_code} {erased.text}\n{procs.tail()}"
        report = erased.json()

        # Chatwoot still lists the erased contact's messages: the backfill must not bring them back.
        stub.posted += [_listed(p) for p in payloads if str(p["id"]) in erased_ids]
        backfill = subprocess.run(
            [
                *FLASK,
                "backfill",
                "--account",
                "1",
                "--conversation",
                str(ERASED_CONVERSATION),
                "--window",
                "1h",
            ],
            cwd=devstack.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert backfill.returncode == 0, backfill.stderr[-2000:]
        backfilled = json.loads(backfill.stdout[backfill.stdout.index("{") :])

        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            waiting = _query(
                dsn,
                "SELECT count(*) FILTER (WHERE processing_status = 'stored') AS stored, "
                "count(*) FILTER (WHERE processing_status = 'received') AS received FROM meeting_notes",
            )[0]
            if waiting["stored"] >= len(others) and waiting["received"] == 0 and _spooled(spool_dir) == 0:
                break
            time.sleep(1)
        time.sleep(3)  # jobs that were still running finish (or take back what they wrote)

        # --- what is left of the erased user ------------------------------------------------
        rows = _query(
            dsn,
            "SELECT chatwoot_message_id FROM meeting_notes WHERE chatwoot_contact_id = %s OR user_id = %s "
            "OR contact_phone = %s OR chatwoot_message_id = ANY(%s)",
            (ERASED_CONTACT, ERASED_USER, ERASED_PHONE, sorted(erased_ids)),
        )
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ["STORAGE_EMULATOR_HOST"] = _gcs_url(private_gcs)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        all_buckets = {b.name for b in client.list_buckets()}
        objects = [(b, blob.name) for b in sorted(all_buckets) for blob in client.list_blobs(b)]
        theirs = [(b, n) for b, n in objects if b == buckets[ERASED_USER] or _message_id(n) in erased_ids]
        stored_ids = {
            r["chatwoot_message_id"]
            for r in _query(
                dsn, "SELECT chatwoot_message_id FROM meeting_notes WHERE processing_status = 'stored'"
            )
        }
        json_ids = {_message_id(n) for _, n in objects if MESSAGE_JSON.match(n)}
        lost = sorted(others - (stored_ids & json_ids))
        resurrected = len(rows) + len(theirs) + int(buckets[ERASED_USER] in all_buckets)
        tombstoned = [s for s in sent.statuses if s.startswith("200 ignored")]
        figures = {
            "messages": len(payloads),
            "of the erased user": len(erased_ids),
            "rows before the erasure": before[0]["n"],
            "erase status": erased.status_code,
            "erase seconds": round(erase_seconds, 2),
            "bucket rounds": report["bucket_rounds"],
            "objects deleted": report["bucket_objects_deleted"],
            "deliveries ignored after the erasure": sum(sent.statuses[s] for s in tombstoned),
            "backfill accepted": backfilled["accepted"],
            "backfill erased conversations": backfilled["erased_conversations"],
            "resurrected": resurrected,
            "lost": len(lost),
        }
        print(
            "\nerasure under load: answers "
            + ", ".join(f"{k} x{n}" for k, n in sorted(sent.statuses.items()))
        )
        print("figures: " + json.dumps(figures))

        context_info = f"{report}\n{sent.failures[:10]}\n{procs.tail()}"
        assert sent.failures == [], context_info
        assert rows == [], f"rows of the erased user: {rows[:10]}\n{context_info}"
        assert theirs == [], f"objects of the erased user: {theirs[:10]}\n{context_info}"
        assert buckets[ERASED_USER] not in all_buckets, context_info
        assert resurrected == 0
        assert backfilled["accepted"] == 0 and backfilled["erased_conversations"] == 1, backfilled
        assert lost == [], f"lost: {lost[:20]}\n{context_info}"
        assert buckets[KEPT_USER] in all_buckets
        logs = "\n".join(path.read_text(errors="replace") for path in procs.logs.glob("*.log"))
        assert "Traceback" not in logs, procs.tail()
        assert ERASED_PHONE not in logs and ERASED_PHONE.lstrip("+") not in logs
    finally:
        procs.stop_all()
        stub.stop()
