"""The delivery audit trail: one row per webhook delivery, written off the request path, in daily
partitions the cron pass keeps; `flask deliveries show` answers "did Chatwoot send message X,
when, and what did we answer?"."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import context
from app.db import DatabaseUnavailable
from app.ingest import audit
from tests.helpers.common import WEBHOOK_SECRET, load_fixture, sign

pytestmark = pytest.mark.usefixtures("records_env")


def _rows() -> list[dict[str, Any]]:
    with context.db().transaction() as cur:
        cur.execute("SELECT * FROM webhook_deliveries ORDER BY received_at, request_id")
        return [dict(r) for r in cur.fetchall()]


def _post(
    client: Any, payload: dict[str, Any], secret: str = WEBHOOK_SECRET, **headers: str
) -> tuple[Any, bytes]:
    body = json.dumps(payload).encode()
    sent = {**sign(body, secret), **headers}
    return client.post("/webhooks/chatwoot", data=body, headers=sent), body


def test_each_delivery_is_one_row_with_what_we_answered_and_never_the_body(client: Any) -> None:
    payload = load_fixture("message_created__incoming_text")
    answer, body = _post(client, payload, **{"X-Chatwoot-Delivery": "dlv-1"})
    assert answer.status_code == 200
    again, _ = _post(client, payload, **{"X-Chatwoot-Delivery": "dlv-2"})
    assert again.get_json()["status"] == "duplicate"
    forged, forged_body = _post(client, {**payload, "content": "forged"}, secret="not-the-secret")
    assert forged.status_code == 401
    typing_event, _ = _post(client, {"event": "conversation_typing_on", "account": {"id": 1}})
    assert typing_event.get_json()["status"] == "ignored"
    not_json = client.post("/webhooks/chatwoot", data=b"x", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415
    audit.flush()
    rows = _rows()
    assert [(r["outcome"], r["http_status"], r["signature"]) for r in rows] == [
        ("accepted", 200, "valid"),
        ("duplicate", 200, "valid"),
        ("unauthorized", 401, "invalid"),
        ("ignored", 200, "valid"),
        ("unsupported_media_type", 415, "not_checked"),
    ]
    first = rows[0]
    assert first["delivery_id"] == "dlv-1" and rows[1]["delivery_id"] == "dlv-2"
    assert first["chatwoot_account_id"] == payload["account"]["id"]
    assert first["chatwoot_message_id"] == str(payload["id"])
    assert first["event"] == "message_created"
    assert first["note_id"] == answer.get_json()["id"] == rows[1]["note_id"]
    assert first["request_id"] == answer.headers["X-Request-Id"]
    assert first["body_sha256"] == hashlib.sha256(body).hexdigest() and first["body_bytes"] == len(body)
    assert rows[2]["body_sha256"] == hashlib.sha256(forged_body).hexdigest()
    assert rows[2]["chatwoot_message_id"] is None  # a refused body is never parsed
    assert rows[3]["reason"] == typing_event.get_json()["reason"]
    assert rows[4]["body_sha256"] is None and rows[4]["reason"] == "unsupported_media_type"
    assert all(r["duration_ms"] > 0 for r in rows)
    received = first["received_at"]
    assert datetime.now(UTC) - timedelta(minutes=1) < received <= datetime.now(UTC)
    # Never the body, never a secret.
    text = json.dumps(rows, default=str)
    assert payload["content"] not in text and "forged" not in text and WEBHOOK_SECRET not in text


def test_the_webhook_writes_nothing_to_the_database_for_the_audit(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row waits in the process; the webhook's answer does not wait for it."""
    _post(client, load_fixture("message_created__incoming_text"))  # the writer has started
    audit.flush()
    written: list[int] = []
    monkeypatch.setattr(audit, "_write", lambda rows: written.append(len(rows)))
    with audit._writer.flushing:  # the writer thread waits meanwhile
        answer, _ = _post(client, load_fixture("message_created__incoming_text"))
        assert answer.status_code == 200
        assert audit.pending() == 1 and written == [] and len(_rows()) == 1
    audit.flush()
    assert written == [1] and audit.pending() == 0


def test_the_writer_thread_writes_within_about_a_second(client: Any) -> None:
    _post(client, load_fixture("message_created__incoming_text"))
    deadline = time.monotonic() + 10
    while not _rows():
        assert time.monotonic() < deadline, "the writer did not write the row"
        time.sleep(0.1)
    assert audit.pending() == 0


def test_rows_wait_while_postgresql_is_down(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = audit._insert
    down = {"on": True}

    def insert(db: Any, rows: Any) -> None:
        if down["on"]:
            raise DatabaseUnavailable("connection refused")
        real(db, rows)

    monkeypatch.setattr(audit, "_insert", insert)
    for _ in range(3):
        _post(client, load_fixture("message_created__incoming_text"))
    assert audit.flush() == 0 and audit.pending() >= 3
    down["on"] = False
    audit.flush()
    assert audit.pending() == 0 and len(_rows()) == 3


def test_a_day_without_its_partition_gets_one(db: Any) -> None:
    later = datetime.now(UTC) + timedelta(days=40)
    row = (later.isoformat(), "req", None, 1, "42", "message_created", None, None, "valid", 200, "accepted")
    audit._write([(*row, None, 1.5, None, None)])
    name = f"webhook_deliveries_{later:%Y%m%d}"
    try:
        assert [r["request_id"] for r in _rows()] == ["req"]
    finally:
        with context.db().transaction() as cur:
            cur.execute(f"DROP TABLE {name}")


def test_partitions_older_than_the_audit_retention_are_dropped(db: Any, use_settings: Any) -> None:
    use_settings(audit_retention_days=30)
    today = datetime.now(UTC).date()
    with context.db().transaction() as cur:
        cur.execute("SELECT webhook_deliveries_ensure(%s, 1)", (today - timedelta(days=31),))
        cur.execute("SELECT webhook_deliveries_ensure(%s, 1)", (today - timedelta(days=30),))
    done = audit.maintain()
    assert done["dropped"] == [f"webhook_deliveries_{today - timedelta(days=31):%Y%m%d}"]
    with context.db().transaction() as cur:
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS kept",
            (f"webhook_deliveries_{today - timedelta(days=30):%Y%m%d}",),
        )
        assert cur.fetchone()["kept"]
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS ready",
            (f"webhook_deliveries_{today + timedelta(days=7):%Y%m%d}",),
        )
        assert cur.fetchone()["ready"]
        cur.execute("DROP TABLE IF EXISTS " + f"webhook_deliveries_{today - timedelta(days=30):%Y%m%d}")
    assert audit.maintain()["dropped"] == []


def test_flask_deliveries_show_answers_did_chatwoot_send_message_x(client: Any, runner: Any) -> None:
    payload = load_fixture("message_created__incoming_text")
    message_id = str(payload["id"])
    _post(client, payload, **{"X-Chatwoot-Delivery": "first-try"})
    _post(client, payload, **{"X-Chatwoot-Delivery": "second-try"})
    audit.flush()
    result = runner.invoke(
        args=["deliveries", "show", message_id, "--account", str(payload["account"]["id"])]
    )
    assert result.exit_code == 0, result.output
    assert f"2 deliveries of message {message_id} of account {payload['account']['id']}" in result.output
    for expected in ("first-try", "second-try", "accepted", "duplicate", "valid", "200"):
        assert expected in result.output
    assert "in the archive:" in result.output and "received" in result.output
    by_delivery = runner.invoke(args=["deliveries", "show", "--delivery", "second-try"])
    assert "duplicate" in by_delivery.output and "first-try" not in by_delivery.output
    unknown = runner.invoke(args=["deliveries", "show", "999999999"])
    assert unknown.exit_code == 0
    assert "no delivery of message 999999999" in unknown.output and "(no row:" in unknown.output
    usage = runner.invoke(args=["deliveries", "show"])
    assert usage.exit_code == 2 and "give a Chatwoot message id" in usage.output
    listed = runner.invoke(args=["deliveries", "list", "--outcome", "duplicate"])
    assert "second-try" in listed.output and "first-try" not in listed.output


def test_the_admin_api_shows_a_messages_deliveries(client: Any) -> None:
    payload = load_fixture("message_created__incoming_text")
    _post(client, payload)
    audit.flush()
    admin = {"Authorization": "Bearer test-admin-token"}
    found = client.get(f"/admin/deliveries?message_id={payload['id']}", headers=admin).get_json()
    assert [d["outcome"] for d in found["deliveries"]] == ["accepted"]
    assert found["archive"][0]["processing_status"] == "received"
    assert client.get("/admin/deliveries", headers=admin).status_code == 422
