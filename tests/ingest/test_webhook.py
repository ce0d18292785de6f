"""`POST /webhooks/chatwoot` end to end: every fixture through the real Flask app into the real
PostgreSQL and Redis, every bad input, duplicates, updates, accounts, filters and logs."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from rq import Queue

from app.chatwoot import accounts, payloads
from app.jobs import ALL_QUEUES, ARCHIVE_MESSAGE, ARCHIVE_QUEUE, ARCHIVE_UPDATE, job_id
from tests.helpers.common import FIXTURES, WEBHOOK_SECRET, fixture_names, load_fixture, sign

URL = "/webhooks/chatwoot"
PHONE = "5491155550123"
PUBSUB_TOKEN = "nP7x3bQ6yXh9sKpLm2Vd4TfZ"

# What each fixture must leave behind: None for "200 ignored, nothing stored", else the row.
CONTACT_ROW = {
    "chatwoot_account_id": 1,
    "chatwoot_conversation_id": 42,
    "chatwoot_inbox_id": 4,
    "chatwoot_contact_id": 287,
    "source_type": "whatsapp",
    "is_private": False,
    "processing_status": "received",
}
EXPECTED: dict[str, dict[str, Any] | None] = {
    "message_created__incoming_text": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9876",
        "message_type": "incoming",
        "content_type": "text",
        "sender_type": "contact",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "message_created__incoming_voice_note": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9877",
        "message_type": "incoming",
        "content": None,
        "sender_type": "contact",
        "transcription_status": "pending",
        "classification_status": "pending",
    },
    "message_created__incoming_order": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9878",
        "message_type": "incoming",
        "sender_type": "contact",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "message_created__outgoing_agent": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9880",
        "message_type": "outgoing",
        "sender_type": "user",
        "transcription_status": "not_needed",
        "classification_status": "not_needed",
    },
    "message_created__private_note": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9881",
        "message_type": "outgoing",
        "is_private": True,
        "sender_type": "user",
        "transcription_status": "not_needed",
        "classification_status": "not_needed",
    },
    "message_created__outgoing_bot_quick_reply": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9882",
        "message_type": "outgoing",
        "content_type": "input_select",
        "sender_type": "agent_bot",
        "transcription_status": "not_needed",
        "classification_status": "not_needed",
    },
    # Alone, the delivery receipt is an update that arrived before its create: it creates it.
    "message_updated__outgoing_bot_delivered": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9882",
        "message_type": "outgoing",
        "content_type": "input_select",
        "sender_type": "agent_bot",
        "transcription_status": "not_needed",
        "classification_status": "not_needed",
    },
    "message_created__incoming_quick_reply_answer": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9883",
        "message_type": "incoming",
        "content": "LinkedIn",
        "sender_type": "contact",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "message_created__incoming_image_with_caption": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9884",
        "message_type": "incoming",
        "content": "Whiteboard from today's planning",
        "sender_type": "contact",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "message_created__incoming_email": {
        **CONTACT_ROW,
        "chatwoot_conversation_id": 77,
        "chatwoot_inbox_id": 9,
        "source_type": "email",
        "chatwoot_message_id": "9895",
        "message_type": "incoming",
        "content_type": "incoming_email",
        "sender_type": "contact",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    # Updates of our own messages that carry an answer or a refusal are classified.
    "message_updated__web_widget_submitted_values": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9890",
        "chatwoot_conversation_id": 43,
        "chatwoot_inbox_id": 5,
        "chatwoot_contact_id": 288,
        "source_type": "web_widget",
        "message_type": "outgoing",
        "content_type": "input_select",
        "sender_type": "agent_bot",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "message_updated__whatsapp_external_error": {
        **CONTACT_ROW,
        "chatwoot_message_id": "9886",
        "message_type": "outgoing",
        "content_type": "input_select",
        "sender_type": "agent_bot",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "seed_guide_test_message": {
        "chatwoot_account_id": 789,
        "chatwoot_message_id": "test-message-123",
        "chatwoot_conversation_id": 456,
        "chatwoot_inbox_id": None,
        "chatwoot_contact_id": 123,
        "source_type": "whatsapp",
        "message_type": "incoming",
        "content_type": None,
        "content": "Test WhatsApp message",
        "is_private": False,
        "sender_type": "contact",
        "message_created_at": datetime(2025, 1, 30, 10, 0, tzinfo=UTC),
        "processing_status": "received",
        "transcription_status": "not_needed",
        "classification_status": "pending",
    },
    "conversation_status_changed": None,
    "conversation_typing_on": None,
}


@pytest.fixture(autouse=True)
def _fresh_account_cache() -> Iterator[None]:
    accounts.forget_cached()
    yield
    accounts.forget_cached()


def rows(db: Any, table: str = "meeting_notes") -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY id")  # noqa: S608 (a fixed table name)
        return [dict(r) for r in cur.fetchall()]


def queued(redis_conn: Any) -> dict[str, list[Any]]:
    """Every queued job, by queue: (job id, function, args)."""
    out: dict[str, list[Any]] = {}
    for name in ALL_QUEUES:
        queue = Queue(name, connection=redis_conn)
        jobs = [queue.fetch_job(jid) for jid in queue.job_ids]
        if jobs:
            out[name] = [(j.id, j.func_name, tuple(j.args)) for j in jobs if j is not None]
    return out


def counter(outcome: str) -> float:
    return REGISTRY.get_sample_value("meeting_notes_webhooks_total", {"outcome": outcome}) or 0.0


def post_raw(client: Any, body: bytes, headers: dict[str, str], query: str = "") -> Any:
    return client.post(URL + query, data=body, headers=headers)


# ----------------------------------------------------------------------------------------------
# every fixture


@pytest.fixture(params=["utf8", "ascii"])
def send_fixture(request: pytest.FixtureRequest, client: Any) -> Callable[[str], Any]:
    """POST a fixture signed: as Chatwoot writes JSON (UTF-8), or with every non-ASCII character
    escaped (which takes the webhook's other way of removing secrets)."""

    def post(name: str) -> Any:
        data = load_fixture(name)
        body = json.dumps(data, ensure_ascii=request.param == "ascii").encode()
        assert (b"\\u" in body) == (request.param == "ascii" and name != "seed_guide_test_message")
        return client.post(URL, data=body, headers=sign(body))

    return post


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_fixture_end_to_end(name: str, send_fixture: Any, db: Any, redis_conn: Any) -> None:
    fixture = load_fixture(name)
    expected = EXPECTED[name]
    before = counter("ignored")

    response = send_fixture(name)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    stored = rows(db)
    if expected is None:
        assert body["status"] == "ignored" and body["reason"]
        assert stored == [] and queued(redis_conn) == {}
        assert counter("ignored") == before + 1
        return
    assert body == {"status": "accepted", "id": stored[0]["id"]}
    assert len(stored) == 1
    row = stored[0]
    for column, value in expected.items():
        assert row[column] == value, column
    if "content" not in expected:
        assert row["content"] == fixture["content"]
    assert row["content_fingerprint"] == payloads.fingerprint(fixture)
    if "message_created_at" not in expected:
        assert row["message_created_at"] == datetime.fromisoformat(fixture["created_at"])
    # The payload is kept as received, minus the secret.
    assert row["payload"] == payloads.strip_secrets(fixture)
    assert PUBSUB_TOKEN not in json.dumps(row["payload"])
    assert row["payload"]["conversation"].get("contact_inbox", {}).get("pubsub_token") is None
    assert rows(db, "message_updates") == []
    assert queued(redis_conn) == {
        ARCHIVE_QUEUE: [(job_id(ARCHIVE_MESSAGE, row["id"]), ARCHIVE_MESSAGE.func, (row["id"],))]
    }

    # The same delivery again (Chatwoot sends some twice): nothing new.
    again = send_fixture(name)
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "id": row["id"]}
    assert len(rows(db)) == 1 and rows(db, "message_updates") == []
    assert len(queued(redis_conn)[ARCHIVE_QUEUE]) == 1


def test_every_fixture_file_is_used() -> None:
    assert set(EXPECTED) == set(fixture_names())
    sources = "".join(p.read_text() for p in Path(__file__).resolve().parents[1].rglob("test_*.py"))
    unused = [name for name in fixture_names() if name not in sources]
    assert unused == []
    documented = (FIXTURES / "README.md").read_text()
    assert [name for name in fixture_names() if name not in documented] == []


# ----------------------------------------------------------------------------------------------
# bad input: its status, a JSON error, and nothing left behind


def _signed(payload: Any, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, sign(body, **kwargs)


def _text() -> dict[str, Any]:
    return load_fixture("message_created__incoming_text")


def _without(*path: str) -> dict[str, Any]:
    data = _text()
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


def _with(value: Any, *path: str) -> dict[str, Any]:
    data = _text()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def case_wrong_signature() -> tuple[bytes, dict[str, str]]:
    return _signed(_text(), secret="not-the-secret")


def case_stale_timestamp() -> tuple[bytes, dict[str, str]]:
    return _signed(_text(), timestamp=int(time.time()) - 301)


def case_future_timestamp() -> tuple[bytes, dict[str, str]]:
    return _signed(_text(), timestamp=int(time.time()) + 301)


def case_missing_headers() -> tuple[bytes, dict[str, str]]:
    return json.dumps(_text()).encode(), {"Content-Type": "application/json"}


def case_missing_signature() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    del headers["X-Chatwoot-Signature"]
    return body, headers


def case_missing_timestamp() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    del headers["X-Chatwoot-Timestamp"]
    return body, headers


def case_altered_after_signing() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    return body.replace(b"Idea for next week", b"Idea for next year"), headers


def case_signature_without_prefix() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    headers["X-Chatwoot-Signature"] = headers["X-Chatwoot-Signature"].removeprefix("sha256=")
    return body, headers


def case_signature_over_reserialised_json() -> tuple[bytes, dict[str, str]]:
    # Signed over compact JSON, sent pretty-printed: same object, different bytes.
    data = _text()
    _, headers = _signed(json.dumps(data, separators=(",", ":")).encode())
    return json.dumps(data, indent=2).encode(), headers


def case_not_json() -> tuple[bytes, dict[str, str]]:
    return _signed(b'{"event": "message_created", ')


def case_json_array() -> tuple[bytes, dict[str, str]]:
    return _signed([_text()])


def case_json_number() -> tuple[bytes, dict[str, str]]:
    return _signed(b"42")


def case_nan() -> tuple[bytes, dict[str, str]]:
    return _signed(b'{"event": "message_created", "id": NaN}')


def case_infinite_number() -> tuple[bytes, dict[str, str]]:
    return _signed(
        json.dumps(_text())
        .encode()
        .replace(b'"content_attributes": {}', b'"content_attributes": {"x": 1e400}')
    )


def case_not_utf8() -> tuple[bytes, dict[str, str]]:
    return _signed(b'{"event": "\xff\xfe"}')


def case_deeply_nested() -> tuple[bytes, dict[str, str]]:
    return _signed(b'{"event": "message_created", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def case_wrong_content_type() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    headers["Content-Type"] = "text/plain"
    return body, headers


def case_form_content_type() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return body, headers


def case_no_content_type() -> tuple[bytes, dict[str, str]]:
    body, headers = _signed(_text())
    del headers["Content-Type"]
    return body, headers


def case_missing_account() -> tuple[bytes, dict[str, str]]:
    return _signed(_without("account"))


def case_missing_id() -> tuple[bytes, dict[str, str]]:
    return _signed(_without("id"))


def case_missing_event() -> tuple[bytes, dict[str, str]]:
    return _signed(_without("event"))


def case_missing_conversation_id() -> tuple[bytes, dict[str, str]]:
    return _signed(_without("conversation", "id"))


def case_account_id_not_a_number() -> tuple[bytes, dict[str, str]]:
    return _signed(_with("one", "account", "id"))


def case_account_id_out_of_range() -> tuple[bytes, dict[str, str]]:
    return _signed(_with(2**40, "account", "id"))


def case_boolean_id() -> tuple[bytes, dict[str, str]]:
    return _signed(_with(True, "id"))


def case_private_as_string() -> tuple[bytes, dict[str, str]]:
    return _signed(_with("false", "private"))


def case_bad_created_at() -> tuple[bytes, dict[str, str]]:
    return _signed(_with("yesterday", "created_at"))


def case_attachment_without_id() -> tuple[bytes, dict[str, str]]:
    data = load_fixture("message_created__incoming_voice_note")
    del data["attachments"][0]["id"]
    return _signed(data)


def case_unknown_event() -> tuple[bytes, dict[str, str]]:
    return _signed(_with("message_exploded", "event"))


def case_activity_message() -> tuple[bytes, dict[str, str]]:
    return _signed(_with("activity", "message_type"))


BAD_INPUTS: list[tuple[Callable[[], tuple[bytes, dict[str, str]]], int, str, str | None]] = [
    # (case, status, error code or "ignored", a field the detail must name)
    (case_wrong_signature, 401, "unauthorized", None),
    (case_stale_timestamp, 401, "unauthorized", None),
    (case_future_timestamp, 401, "unauthorized", None),
    (case_missing_headers, 401, "unauthorized", None),
    (case_missing_signature, 401, "unauthorized", None),
    (case_missing_timestamp, 401, "unauthorized", None),
    (case_altered_after_signing, 401, "unauthorized", None),
    (case_signature_without_prefix, 401, "unauthorized", None),
    (case_signature_over_reserialised_json, 401, "unauthorized", None),
    (case_not_json, 400, "bad_request", None),
    (case_json_array, 400, "bad_request", None),
    (case_json_number, 400, "bad_request", None),
    (case_nan, 400, "bad_request", None),
    (case_infinite_number, 400, "bad_request", None),
    (case_not_utf8, 400, "bad_request", None),
    (case_deeply_nested, 400, "bad_request", None),
    (case_wrong_content_type, 415, "unsupported_media_type", None),
    (case_form_content_type, 415, "unsupported_media_type", None),
    (case_no_content_type, 415, "unsupported_media_type", None),
    (case_missing_account, 422, "invalid_payload", "account"),
    (case_missing_id, 422, "invalid_payload", "id"),
    (case_missing_event, 422, "invalid_payload", "event"),
    (case_missing_conversation_id, 422, "invalid_payload", "conversation.id"),
    (case_account_id_not_a_number, 422, "invalid_payload", "account.id"),
    (case_account_id_out_of_range, 422, "invalid_payload", "account.id"),
    (case_boolean_id, 422, "invalid_payload", "id"),
    (case_private_as_string, 422, "invalid_payload", "private"),
    (case_bad_created_at, 422, "invalid_payload", "created_at"),
    (case_attachment_without_id, 422, "invalid_payload", "attachments.0.id"),
    (case_unknown_event, 200, "ignored", None),
    (case_activity_message, 200, "ignored", None),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[c[0].__name__[5:] for c in BAD_INPUTS])
def test_bad_input_gets_its_status_and_leaves_nothing(
    bad: tuple[Callable[[], tuple[bytes, dict[str, str]]], int, str, str | None],
    client: Any,
    db: Any,
    redis_conn: Any,
    settings: Any,
) -> None:
    case, status, code, field_path = bad
    body, headers = case()
    response = post_raw(client, body, headers)

    assert response.status_code == status, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    if status == 200:
        assert answer["status"] == code and answer["reason"]
    else:
        assert set(answer) == {"error", "detail"} and answer["error"] == code
        assert answer["detail"]
    if field_path:
        assert field_path in answer["detail"], answer["detail"]
        assert all(isinstance(v, list) and v for v in answer["detail"].values())
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and WEBHOOK_SECRET not in text
    assert rows(db) == [] and rows(db, "message_updates") == []
    assert queued(redis_conn) == {}
    assert not Path(settings.spool_dir).exists() or list(Path(settings.spool_dir).iterdir()) == []


def test_a_lying_content_length_is_refused_before_reading(client: Any, db: Any) -> None:
    body, headers = _signed(_text())
    response = client.post(
        URL, data=body, headers=headers, environ_overrides={"CONTENT_LENGTH": str(33 * 1024 * 1024)}
    )
    assert response.status_code == 413
    assert rows(db) == []


def test_chunked_body_over_the_limit_is_refused(client: Any, db: Any, use_settings: Any) -> None:
    use_settings(max_webhook_bytes=4096)
    body, headers = _signed(_with("y" * 10_000, "content"))
    response = client.post(
        URL,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert rows(db) == []


def test_a_body_just_under_the_limit_is_accepted(deliver: Any, db: Any, use_settings: Any) -> None:
    use_settings(max_webhook_bytes=8192)
    data = _text()
    filler = 8192 - len(json.dumps(_with("", "content")).encode()) - 10
    data["content"] = "z" * filler
    assert len(json.dumps(data).encode()) <= 8192
    assert deliver(data).status_code == 200
    assert len(rows(db)) == 1


def test_unsigned_json_garbage_is_401_not_400(client: Any, db: Any) -> None:
    response = post_raw(client, b"not json", {"Content-Type": "application/json"})
    assert response.status_code == 401


# ----------------------------------------------------------------------------------------------
# updates


def test_delivery_receipt_after_create_adds_nothing(deliver: Any, db: Any, redis_conn: Any) -> None:
    created = deliver("message_created__outgoing_bot_quick_reply").get_json()
    receipt = deliver("message_updated__outgoing_bot_delivered")
    assert receipt.status_code == 200
    assert receipt.get_json() == {"status": "duplicate", "id": created["id"]}
    assert len(rows(db)) == 1
    assert rows(db, "message_updates") == []
    assert list(queued(redis_conn)) == [ARCHIVE_QUEUE]
    assert len(queued(redis_conn)[ARCHIVE_QUEUE]) == 1


def test_update_before_create_creates_the_message_once(deliver: Any, db: Any, redis_conn: Any) -> None:
    first = deliver("message_updated__outgoing_bot_delivered").get_json()
    assert first["status"] == "accepted"
    later = deliver("message_created__outgoing_bot_quick_reply").get_json()
    assert later == {"status": "duplicate", "id": first["id"]}
    stored = rows(db)
    assert len(stored) == 1 and stored[0]["chatwoot_message_id"] == "9882"
    assert rows(db, "message_updates") == []
    assert queued(redis_conn)[ARCHIVE_QUEUE] == [
        (job_id(ARCHIVE_MESSAGE, first["id"]), ARCHIVE_MESSAGE.func, (first["id"],))
    ]


def _update_of(name: str, **changes: Any) -> dict[str, Any]:
    data = load_fixture(name)
    data["event"] = "message_updated"
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "change",
    [
        {"content": "Idea for next week (edited)"},
        {"content_attributes": {"deleted": True}},
        {"private": True},
    ],
    ids=["edit", "deletion", "private"],
)
def test_an_update_that_changes_what_we_keep_is_appended_once(
    change: dict[str, Any], deliver: Any, db: Any, redis_conn: Any
) -> None:
    note = deliver("message_created__incoming_text").get_json()["id"]
    update = _update_of("message_created__incoming_text", **change)
    answer = deliver(update).get_json()
    assert answer["status"] == "accepted" and answer["id"] == note
    updates = rows(db, "message_updates")
    assert len(updates) == 1
    assert updates[0]["meeting_note_id"] == note
    assert updates[0]["processing_status"] == "received"
    assert updates[0]["fingerprint"] == payloads.fingerprint(update)
    assert updates[0]["payload"] == payloads.strip_secrets(update)
    assert answer["update_id"] == updates[0]["id"]
    jobs = queued(redis_conn)[ARCHIVE_QUEUE]
    assert (job_id(ARCHIVE_UPDATE, updates[0]["id"]), ARCHIVE_UPDATE.func, (updates[0]["id"],)) in jobs
    # The same update again, or a receipt of it: nothing more.
    assert deliver(update).get_json() == {"status": "duplicate", "id": note}
    assert (
        deliver({**update, "source_id": "wamid.other", "status": "read"}).get_json()["status"] == "duplicate"
    )
    assert len(rows(db, "message_updates")) == 1
    assert len(rows(db)) == 1
    assert rows(db)[0]["content"] == _text()["content"]  # the first version stays the row's own


def test_chatwoot_transcript_arriving_later_is_an_update(deliver: Any, db: Any) -> None:
    deliver("message_created__incoming_voice_note")
    update = _update_of("message_created__incoming_voice_note")
    update["attachments"][0]["transcribed_text"] = "Idea for the onboarding post"
    assert deliver(update).get_json()["status"] == "accepted"
    assert len(rows(db, "message_updates")) == 1


# ----------------------------------------------------------------------------------------------
# accounts, secrets, URL token, filters


@pytest.fixture
def keyed(app: Any, use_settings: Any) -> Any:
    """An encryption key for account secrets (set after the app, which installs its settings)."""
    return use_settings(secrets_encryption_key=Fernet.generate_key().decode())


def test_an_account_with_its_own_secret_needs_that_secret(keyed: Any, deliver: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret="account-seven-secret")
    message = _with(7, "account", "id")
    assert deliver(message).status_code == 401  # the environment's secret is not this account's
    assert rows(db) == []
    response = deliver(message, secret="account-seven-secret")
    assert response.status_code == 200, response.get_json()
    assert rows(db)[0]["chatwoot_account_id"] == 7
    # Another account without a row of its own still uses the environment's secret.
    assert deliver(_with(8, "account", "id")).status_code == 200


def test_both_secrets_are_accepted_during_a_rotation(keyed: Any, deliver: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret="old-secret-7")
    accounts.upsert(7, webhook_secret="new-secret-7")
    assert deliver(_with(7, "account", "id"), secret="old-secret-7").status_code == 200
    assert deliver(_with("m-2", "id") | {"account": {"id": 7}}, secret="new-secret-7").status_code == 200
    accounts.finish_rotation(7)
    refused = deliver(_with("m-3", "id") | {"account": {"id": 7}}, secret="old-secret-7")
    assert refused.status_code == 401
    assert len(rows(db)) == 2


def test_environment_rotation_accepts_the_previous_secret(use_settings: Any, deliver: Any, db: Any) -> None:
    use_settings(chatwoot_webhook_secret="brand-new-secret", chatwoot_webhook_secret_previous=WEBHOOK_SECRET)
    assert deliver("message_created__incoming_text").status_code == 200
    assert deliver("message_created__incoming_order", secret="brand-new-secret").status_code == 200
    assert deliver("message_created__outgoing_agent", secret="some-other-secret").status_code == 401


def test_url_token_for_installations_that_cannot_sign(
    use_settings: Any, client: Any, db: Any, json_logs: Any
) -> None:
    token = "url-token-0123456789abcdef"
    use_settings(chatwoot_webhook_secret="", webhook_url_token=token)
    body = json.dumps(_text()).encode()
    headers = {"Content-Type": "application/json", "X-Chatwoot-Delivery": "delivery-1"}
    assert post_raw(client, body, headers).status_code == 401
    assert post_raw(client, body, headers, "?token=wrong-token-0123456789").status_code == 401
    ok = post_raw(client, body, headers, f"?token={token}")
    assert ok.status_code == 200 and ok.get_json()["status"] == "accepted"
    assert len(rows(db)) == 1
    output = json_logs()
    assert token not in output
    assert "delivery-1" in output


def test_unsigned_deliveries_only_with_the_development_switch(
    use_settings: Any, client: Any, db: Any
) -> None:
    use_settings(chatwoot_webhook_secret="")
    body = json.dumps(_text()).encode()
    headers = {"Content-Type": "application/json"}
    refused = post_raw(client, body, headers)
    assert refused.status_code == 401
    assert "configured" in refused.get_json()["detail"]
    use_settings(chatwoot_webhook_secret="", allow_unsigned_webhooks=True)
    assert post_raw(client, body, headers).status_code == 200
    assert len(rows(db)) == 1


def test_inbox_filter_ignores_other_inboxes(
    use_settings: Any, deliver: Any, db: Any, redis_conn: Any
) -> None:
    use_settings(chatwoot_inbox_ids=(5, 6))
    response = deliver("message_created__incoming_text")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "reason": "inbox not archived"}
    assert rows(db) == [] and queued(redis_conn) == {}
    use_settings(chatwoot_inbox_ids=(4,))
    accounts.forget_cached()
    assert deliver("message_created__incoming_text").get_json()["status"] == "accepted"


def test_inbox_filter_of_an_account_row(keyed: Any, deliver: Any, db: Any) -> None:
    accounts.upsert(1, inbox_ids=[9])
    assert deliver("message_created__incoming_text").get_json()["status"] == "ignored"
    assert rows(db) == []


def test_non_message_events_are_counted_as_ignored(deliver: Any, db: Any) -> None:
    before = counter("ignored")
    for name in ("conversation_status_changed", "conversation_typing_on"):
        assert deliver(name).get_json()["status"] == "ignored"
    assert deliver({"event": "contact_updated", "id": 287, "phone_number": f"+{PHONE}"}).status_code == 200
    assert counter("ignored") == before + 3
    assert rows(db) == []


# ----------------------------------------------------------------------------------------------
# Redis down, logs, latency metric


def test_redis_down_still_accepts_and_keeps_the_row(services: Any, deliver: Any, db: Any) -> None:
    services.stop_redis()
    try:
        started = time.monotonic()
        response = deliver("message_created__incoming_text")
        elapsed = time.monotonic() - started
    finally:
        services.start_redis()
    assert response.status_code == 200
    assert response.get_json()["status"] == "accepted"
    assert len(rows(db)) == 1 and rows(db)[0]["processing_status"] == "received"
    assert elapsed < 4, "the webhook must not wait long for Redis"


@pytest.fixture
def json_logs(app: Any) -> Iterator[Callable[[], str]]:
    """The service's log lines as written (JSON, redacted), while the test runs."""
    root = logging.getLogger()
    configured = root.handlers[0]
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(configured.formatter)
    for item in configured.filters:
        handler.addFilter(item)
    root.addHandler(handler)
    yield buffer.getvalue
    root.removeHandler(handler)


def test_logs_are_json_with_request_and_delivery_ids_and_no_secrets(
    client: Any, db: Any, json_logs: Any
) -> None:
    data = load_fixture("message_created__incoming_voice_note")
    body = json.dumps(data).encode()
    headers = sign(body)
    headers["X-Chatwoot-Delivery"] = "6f1c2f5e-0c61-4c7e-9d4e-1b1f7a1d2c3b"
    response = post_raw(client, body, headers)
    assert response.status_code == 200
    bad = dict(headers, **{"X-Chatwoot-Signature": "sha256=" + "0" * 64})
    assert post_raw(client, body, bad).status_code == 401

    lines = [json.loads(line) for line in json_logs().splitlines() if line.strip()]
    hooks = [line for line in lines if line.get("message") == "webhook"]
    assert [h["http_status"] for h in hooks] == [200, 401]
    assert hooks[0]["request_id"] == response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", hooks[0]["request_id"])
    assert all(h["delivery_id"] == headers["X-Chatwoot-Delivery"] for h in hooks)
    assert hooks[0]["outcome"] == "accepted" and hooks[0]["message_id"] == 9877
    assert hooks[1]["outcome"] == "unauthorized"
    # A long integer id is an id, not a phone number: the log keeps it whole.
    long_id = dict(data, id=3_123_456_789_012)
    body = json.dumps(long_id).encode()
    assert post_raw(client, body, sign(body)).status_code == 200
    last = [json.loads(line) for line in json_logs().splitlines() if line.strip()][-1]
    assert last["message"] == "webhook" and last["message_id"] == 3_123_456_789_012
    everything = json_logs()
    for secret in (WEBHOOK_SECRET, PUBSUB_TOKEN, PHONE, headers["X-Chatwoot-Signature"][7:]):
        assert secret not in everything


def test_request_latency_is_observed(deliver: Any, db: Any) -> None:
    def count() -> float:
        return (
            REGISTRY.get_sample_value(
                "meeting_notes_http_request_duration_seconds_count", {"endpoint": "webhook"}
            )
            or 0.0
        )

    before = count()
    deliver("message_created__incoming_text")
    deliver({"event": "conversation_typing_off"})
    assert count() == before + 2


def test_signature_is_checked_over_the_raw_bytes(client: Any, db: Any) -> None:
    # Chatwoot's JSON, byte for byte (non-ASCII, spacing): verified as received, not re-serialised.
    body = (FIXTURES / "message_created__incoming_text.json").read_bytes()
    ts = str(int(time.time()))
    digest = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Chatwoot-Timestamp": ts,
        "X-Chatwoot-Signature": f"sha256={digest.upper()}",
    }
    response = post_raw(client, body, headers)
    assert response.status_code == 200, response.get_json()
    assert rows(db)[0]["payload"]["sender"]["name"] == "María López"


@pytest.mark.parametrize(
    "secret_text",
    [
        # The token twice (here also in the older-format copy of the message).
        '"messages": [{"contact_inbox": {"pubsub_token": "second-copy-of-the-token"}}]',
        # A key written with an escape: the same key once parsed.
        '"contact_inbox_2": {"pubsub\\u005ftoken": "escaped-key-token"}',
        # Another secret key somewhere else.
        '"custom_attributes": {"hmac_token": "inbox-hmac-token"}',
    ],
    ids=["twice", "escaped-key", "other-secret"],
)
def test_every_secret_is_removed_whatever_the_text(secret_text: str, client: Any, db: Any) -> None:
    text = (FIXTURES / "message_created__incoming_text.json").read_text()
    body = text.replace('"conversation": {', '"conversation": {' + secret_text + ",", 1).encode()
    parsed = json.loads(body)
    response = post_raw(client, body, sign(body))
    assert response.status_code == 200, response.get_json()
    stored = rows(db)[0]["payload"]
    assert stored == payloads.strip_secrets(parsed)
    dumped = json.dumps(stored)
    for token in (PUBSUB_TOKEN, "second-copy-of-the-token", "escaped-key-token", "inbox-hmac-token"):
        assert token not in dumped


def test_text_postgresql_cannot_store_is_replaced_not_refused(deliver: Any, db: Any) -> None:
    message = _with("nul \x00 and lone \ud800 surrogate", "content")
    message["content_attributes"] = {"k\x00ey": "v"}
    body = json.dumps(message).encode()  # json escapes them as \u0000 and \ud800
    assert deliver(json.loads(body)).status_code == 200
    row = rows(db)[0]
    assert row["content"] == "nul \ufffd and lone \ufffd surrogate"
    assert row["payload"]["content_attributes"] == {"k\ufffdey": "v"}


# ----------------------------------------------------------------------------------------------
# the database work of one delivery


def test_one_statement_in_autocommit_per_delivery(
    deliver: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2.extensions
    import psycopg2.extras

    from app import context

    deliver("message_created__incoming_text")  # the account's settings are read (and cached) once
    calls: list[tuple[bool, str]] = []

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            calls.append((self.connection.autocommit, str(query)[:40]))
            return super().execute(query, vars)

    class CountingDict(psycopg2.extras.RealDictCursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            calls.append((self.connection.autocommit, str(query)[:40]))
            return super().execute(query, vars)

    conn = context.db()._connection()
    monkeypatch.setattr(conn, "cursor_factory", Counting)
    monkeypatch.setattr(psycopg2.extras, "RealDictCursor", CountingDict)  # any other statement
    assert deliver("message_created__incoming_order").get_json()["status"] == "accepted"
    assert deliver("message_created__incoming_order").get_json()["status"] == "duplicate"
    update = _update_of("message_created__incoming_order", content="edited")
    assert deliver(update).get_json()["update_id"]
    monkeypatch.undo()
    # One statement each, without BEGIN/COMMIT: one round trip per delivery.
    assert [autocommit for autocommit, _ in calls] == [True, True, True]
    assert all(query.startswith("EXECUTE ingest_record") for _, query in calls)


def test_the_prepared_statement_is_prepared_again_when_the_server_forgot_it(deliver: Any, db: Any) -> None:
    from app import context
    from app import db as db_module

    deliver("message_created__incoming_text")
    with context.db().transaction() as cur:
        cur.execute("DEALLOCATE ingest_record")
    assert deliver("message_created__incoming_order").get_json()["status"] == "accepted"
    db_module._prepared_on.clear()  # prepared, but this process does not know it
    assert deliver("message_created__outgoing_agent").get_json()["status"] == "accepted"
    assert len(rows(db)) == 3


def test_ingest_is_the_path_for_replay_and_backfill(db: Any, redis_conn: Any) -> None:
    from app.chatwoot import schemas
    from app.ingest import pipeline as ingest

    message = load_fixture("message_created__incoming_image_with_caption")
    first = ingest.ingest(message)
    assert (first.status, first.created, first.enqueued) == ("accepted", True, True)
    assert ingest.ingest(message).status == "duplicate"
    quiet = ingest.ingest(message | {"id": 777}, enqueue_jobs=False)
    assert quiet.status == "accepted" and quiet.enqueued is None
    assert ingest.ingest(load_fixture("conversation_typing_on")).status == "ignored"
    with pytest.raises(schemas.InvalidPayload) as caught:
        ingest.ingest({"event": "message_created", "id": 1})
    assert "account" in caught.value.errors
    assert len(rows(db)) == 2
    assert queued(redis_conn)[ARCHIVE_QUEUE] == [
        (job_id(ARCHIVE_MESSAGE, first.note_id), ARCHIVE_MESSAGE.func, (first.note_id,))
    ]


def test_deliveries_skip_flasks_request_machinery_other_methods_do_not(
    app: Any, client: Any, deliver: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[str] = []
    original = type(app).full_dispatch_request

    def counting(self: Any) -> Any:
        from flask import request

        dispatched.append(f"{request.method} {request.path}")
        return original(self)

    monkeypatch.setattr(type(app), "full_dispatch_request", counting)
    assert deliver("message_created__incoming_text").get_json()["status"] == "accepted"
    assert dispatched == []  # straight to the webhook's handler, ahead of Flask
    wrong = client.get("/webhooks/chatwoot")
    assert wrong.status_code == 405 and wrong.is_json
    assert client.options("/webhooks/chatwoot").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert dispatched == ["GET /webhooks/chatwoot", "OPTIONS /webhooks/chatwoot", "GET /healthz"]
