"""Backfill: messages listed by Chatwoot's API that never arrived by webhook are ingested once."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from rq import Queue

from app.jobs import ARCHIVE_MESSAGE, job_id
from tests.helpers.common import CHATWOOT_BASE_URL, CHATWOOT_TOKEN, load_fixture

MESSAGES_URL = f"{CHATWOOT_BASE_URL}/api/v1/accounts/1/conversations/42/messages"
CONVERSATIONS_URL = f"{CHATWOOT_BASE_URL}/api/v1/accounts/1/conversations"
CONTACT = {"id": 287, "name": "María López", "phone_number": "+5491155550123", "type": "contact"}
AGENT = {"id": 3, "name": "Ana", "type": "user"}


def listed(message_id: int, message_type: int = 0, age: int = 60, **extra: Any) -> dict[str, Any]:
    """A message as Chatwoot's message list returns it (not the webhook format)."""
    return {
        "id": message_id,
        "content": f"message {message_id}",
        "inbox_id": 4,
        "conversation_id": 42,
        "message_type": message_type,
        "content_type": "text",
        "status": "sent",
        "content_attributes": {},
        "created_at": int(time.time()) - age,
        "private": False,
        "source_id": f"wamid.{message_id}",
        "sender": CONTACT if message_type == 0 else AGENT,
        **extra,
    }


@pytest.fixture(autouse=True)
def _fresh_accounts() -> None:
    """Account settings are cached per process; each test starts from its own settings."""
    from app.chatwoot.accounts import forget_cached

    forget_cached()


def notes(db: Any) -> dict[str, dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM meeting_notes ORDER BY id")
        return {r["chatwoot_message_id"]: dict(r) for r in cur.fetchall()}


@pytest.fixture
def known(db: Any, redis_conn: Any) -> dict[str, Any]:
    """Conversation 42 is known here: one message arrived by webhook (message 9876)."""
    from app.ingest.pipeline import ingest

    result = ingest(load_fixture("message_created__incoming_text"))
    assert result.status == "accepted"
    redis_conn.flushdb()
    return notes(db)


def messages_callback(pages: list[list[dict[str, Any]]]) -> Any:
    """Chatwoot's paging: the latest page without `before`, then pages before an id."""

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        assert request.headers["api_access_token"] == CHATWOOT_TOKEN
        before = parse_qs(urlparse(request.url).query).get("before")
        everything = sorted((m for page in pages for m in page), key=lambda m: m["id"])
        if before:
            everything = [m for m in everything if m["id"] < int(before[0])]
        page = everything[-20:]
        return 200, {}, json.dumps({"meta": {"contact": CONTACT}, "payload": page})

    return reply


@responses.activate
def test_missing_messages_are_ingested_once(db: Any, redis_conn: Any, known: Any) -> None:
    from app.ingest.backfill import backfill

    messages = [
        listed(9876, age=120),  # the one we have
        listed(9877),  # missed incoming
        listed(9878, message_type=2),  # activity: never archived
        listed(9879, message_type=1),  # missed outgoing reply of an agent
        listed(9880, message_type=0, age=30 * 3600),  # older than the window
    ]
    responses.add_callback(responses.GET, MESSAGES_URL, callback=messages_callback([messages]))
    responses.get(CONVERSATIONS_URL, json={"data": {"payload": []}})

    result = backfill(6 * 3600)
    assert (result.listed, result.missing, result.accepted) == (4, 2, 2)
    assert result.errors == []
    rows = notes(db)
    assert set(rows) == {"9876", "9877", "9879"}
    incoming, outgoing = rows["9877"], rows["9879"]
    assert incoming["message_type"] == "incoming" and incoming["sender_type"] == "contact"
    assert incoming["source_type"] == "whatsapp" and incoming["chatwoot_inbox_id"] == 4
    assert incoming["chatwoot_contact_id"] == 287 and incoming["chatwoot_conversation_id"] == 42
    assert incoming["classification_status"] == "pending" and incoming["processing_status"] == "received"
    assert incoming["message_created_at"].timestamp() == pytest.approx(time.time() - 60, abs=5)
    assert (
        incoming["payload"]["created_at"].endswith("Z") and incoming["payload"]["event"] == "message_created"
    )
    # An agent's message is archived for the contact's conversation, never processed.
    assert outgoing["message_type"] == "outgoing" and outgoing["sender_type"] == "user"
    assert outgoing["chatwoot_contact_id"] == 287 and outgoing["classification_status"] == "not_needed"
    assert sorted(Queue("archive", connection=redis_conn).job_ids) == sorted(
        [job_id(ARCHIVE_MESSAGE, incoming["id"]), job_id(ARCHIVE_MESSAGE, outgoing["id"])]
    )

    again = backfill(6 * 3600)
    assert (again.missing, again.accepted) == (0, 0)
    assert len(notes(db)) == 3


@responses.activate
def test_pages_back_until_the_window_ends(db: Any, redis_conn: Any, known: Any) -> None:
    from app.ingest.backfill import backfill

    messages = [listed(10_000 + i, age=3600 - i * 60) for i in range(45)]
    responses.add_callback(responses.GET, MESSAGES_URL, callback=messages_callback([messages]))
    responses.get(CONVERSATIONS_URL, json={"data": {"payload": []}})
    result = backfill(2 * 3600)
    assert result.accepted == 45
    befores = [
        parse_qs(urlparse(c.request.url).query).get("before", [None])[0]
        for c in responses.calls
        if "/messages" in c.request.url
    ]
    # Latest 20, then the 20 before the oldest of those, then the last 5.
    assert befores == [None, "10025", "10005"]


@responses.activate
def test_conversations_active_in_chatwoot_but_unknown_here(db: Any, redis_conn: Any) -> None:
    """A conversation whose every webhook was lost is found through Chatwoot's conversation list."""
    from app.ingest.backfill import backfill

    now = int(time.time())
    conversations = {
        "data": {
            "meta": {"all_count": 2},
            "payload": [
                {
                    "id": 77,
                    "inbox_id": 4,
                    "last_activity_at": now - 100,
                    "meta": {"channel": "Channel::Api", "sender": {"id": 900, "name": "Bo"}},
                },
                {"id": 78, "inbox_id": 4, "last_activity_at": now - 90 * 24 * 3600, "meta": {}},
            ],
        }
    }
    responses.get(CONVERSATIONS_URL, json=conversations)
    url77 = f"{CHATWOOT_BASE_URL}/api/v1/accounts/1/conversations/77/messages"
    responses.get(
        url77,
        json={
            "payload": [listed(501, sender={"id": 900, "name": "Bo", "type": "contact"}, conversation_id=77)]
        },
    )
    result = backfill(3600)
    assert result.accepted == 1, result.errors
    row = notes(db)["501"]
    assert row["chatwoot_conversation_id"] == 77 and row["source_type"] == "api"
    assert row["chatwoot_contact_id"] == 900
    assert not any("/conversations/78/" in c.request.url for c in responses.calls)


@responses.activate
def test_chatwoot_errors_are_counted_not_raised(db: Any, redis_conn: Any, known: Any) -> None:
    from app.ingest.backfill import backfill

    responses.get(CONVERSATIONS_URL, status=503)
    responses.get(MESSAGES_URL, status=502)
    result = backfill(3600)
    assert result.accepted == 0
    assert any("conversation list: HTTP 503" in e for e in result.errors)
    assert any("conversation 42: HTTP 502" in e for e in result.errors)


@responses.activate
def test_token_is_not_sent_along_a_redirect(db: Any, redis_conn: Any, known: Any) -> None:
    from app.ingest.backfill import backfill

    responses.get(CONVERSATIONS_URL, json={"data": {"payload": []}})
    responses.get(MESSAGES_URL, status=302, headers={"Location": "https://elsewhere.example.net/steal"})
    result = backfill(3600)
    assert any("redirect" in e for e in result.errors)
    assert all(urlparse(c.request.url).hostname == "chat.example.com" for c in responses.calls)


def test_without_chatwoot_configured_nothing_is_called(db: Any, redis_conn: Any, use_settings: Any) -> None:
    from app.ingest.backfill import backfill

    use_settings(chatwoot_base_url="")
    with responses.RequestsMock() as mocked:
        result = backfill(3600)
        assert len(mocked.calls) == 0
    assert result.accounts == 0
    assert result.errors == [] and result.not_configured == [1]


def test_to_webhook_keeps_what_the_webhook_would_carry() -> None:
    from app.ingest.backfill import Conversation, to_webhook

    attachment = {"id": 7, "file_type": "audio", "data_url": "https://chat.example.com/a.ogg"}
    payload = to_webhook(
        listed(5, created_at=1795702811, attachments=[attachment]),
        Conversation(1, 42, "Channel::Whatsapp", 4, CONTACT),
    )
    assert payload["created_at"] == "2026-11-26T14:20:11.000Z"
    assert payload["message_type"] == "incoming"
    assert payload["attachments"] == [attachment]
    assert payload["conversation"] == {
        "id": 42,
        "channel": "Channel::Whatsapp",
        "inbox_id": 4,
        "meta": {"sender": CONTACT},
    }
    assert payload["account"] == {"id": 1} and payload["inbox"] == {"id": 4}
    assert to_webhook(listed(6, message_type=3), Conversation(1, 42))["message_type"] == "template"


@responses.activate
def test_scheduled_job_and_cli(db: Any, redis_conn: Any, known: Any, runner: Any) -> None:
    from app.ingest.backfill_job import LOCK_KEY
    from app.ingest.backfill_job import backfill as job

    responses.get(CONVERSATIONS_URL, json={"data": {"payload": []}})
    responses.add_callback(responses.GET, MESSAGES_URL, callback=messages_callback([[listed(9901)]]))

    dry = runner.invoke(args=["backfill", "--dry-run", "--window", "2h"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["missing"] == 1
    assert "9901" not in notes(db)

    redis_conn.set(LOCK_KEY, "other", ex=60)
    assert job() == {"skipped": "another run is in progress"}
    redis_conn.delete(LOCK_KEY)
    summary = job()
    assert summary["accepted"] == 1
    assert "9901" in notes(db)
