"""The outbox: recorded before sending, sent once, retried on 429 and connection failures, never
sent twice after an unknown outcome, and not attempted when WhatsApp's reply window is closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from app.chatwoot import client as chatwoot
from app.chatwoot import outbox
from app.metrics import NOTICES
from tests.helpers.orders import ChatwootAPI, chatwoot_api_fixture, outbox_rows  # noqa: F401 (fixture)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without waiting, so the burst worker runs them (real RQ Retry, interval 0)."""
    monkeypatch.setattr(outbox, "RETRY_INTERVALS", (0, 0, 0))


def open_conversation(db: Any, can_reply: bool | None = True, last_incoming: datetime | None = None) -> None:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, "
            "can_reply, source_type, last_incoming_at) VALUES (1, 42, 287, %s, 'whatsapp', %s)",
            (can_reply, last_incoming or datetime.now(UTC)),
        )


def notices(kind: str, result: str) -> float:
    return NOTICES.labels(kind=kind, result=result)._value.get()


BODY = chatwoot.text_body("Your LinkedIn post is ready — open the app to review it. Order #1")


def test_record_is_once_per_key(db: Any, redis_conn: Any) -> None:
    first = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert isinstance(first, int)
    assert outbox.record(1, 42, "order_ready", "order:1:ready", BODY) is None
    assert outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY) == first
    [row] = outbox_rows(db)
    assert row["status"] == "pending"
    assert row["body"] == {**BODY, "content_attributes": {"outbox_key": "order:1:ready"}}


def test_an_invalid_body_is_refused_before_it_is_recorded(db: Any) -> None:
    with pytest.raises(chatwoot.InvalidMessage):
        outbox.record(
            1, 42, "question", "k", chatwoot.quick_reply_body("q", [{"title": "x" * 30, "value": "x"}])
        )
    assert outbox_rows(db) == []


def test_sent_once_with_the_exact_body(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    open_conversation(db)
    before = notices("order_ready", "sent")
    outbox_id = outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY, order_id=None)
    run_jobs()
    assert chatwoot_api.posted == [
        {
            "content": "Your LinkedIn post is ready — open the app to review it. Order #1",
            "message_type": "outgoing",
            "private": False,
            "content_type": "text",
            "content_attributes": {"outbox_key": "order:1:ready"},
        }
    ]
    [row] = outbox_rows(db)
    assert (row["id"], row["status"], row["chatwoot_message_id"], row["attempts"]) == (
        outbox_id,
        "sent",
        "9882",
        1,
    )
    assert row["sent_at"] is not None
    assert notices("order_ready", "sent") == before + 1
    # Enqueued again (a sweep, a second record): nothing more is sent.
    outbox.enqueue_send(outbox_id)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    assert chatwoot_api.create_calls() == 1


def test_429_then_200_sends_once(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, quick_retries: None
) -> None:
    open_conversation(db)
    chatwoot_api.fail_next(429)
    outbox.record_and_enqueue(1, 42, "command_reply", "note:5:reply", chatwoot.text_body("Done."))
    run_jobs()
    assert chatwoot_api.create_calls() == 2
    assert len(chatwoot_api.created[42]) == 1
    [row] = outbox_rows(db)
    assert (row["status"], row["attempts"], row["chatwoot_message_id"]) == ("sent", 2, "9882")
    assert row["error_details"] is None


def test_a_connection_failure_is_retried(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, quick_retries: None
) -> None:
    open_conversation(db)
    chatwoot_api.fail_next(requests.exceptions.ConnectTimeout("no route to host"))
    outbox.record_and_enqueue(1, 42, "command_reply", "note:6:reply", chatwoot.text_body("Done."))
    run_jobs()
    [row] = outbox_rows(db)
    assert row["status"] == "sent" and row["attempts"] == 2
    assert len(chatwoot_api.created[42]) == 1
    # The request never left: no need to look at the conversation first.
    assert not [c for c in chatwoot_api.rsps.calls if c.request.method == "GET"]


def test_401_is_recorded_as_failed_with_a_reason(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    open_conversation(db)
    before = notices("question", "failed")
    chatwoot_api.fail_next(401)
    outbox.record_and_enqueue(
        1, 42, "question", "order:1:ask:platform:0", chatwoot.text_body("Which platform?")
    )
    run_jobs()
    [row] = outbox_rows(db)
    assert row["status"] == "failed"
    assert row["error_details"].startswith("Chatwoot refused the API token (HTTP 401")
    assert chatwoot_api.create_calls() == 1
    assert notices("question", "failed") == before + 1


def test_an_unknown_outcome_found_in_the_conversation_is_not_sent_again(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, quick_retries: None
) -> None:
    open_conversation(db)
    chatwoot_api.fail_next(requests.exceptions.ReadTimeout("slow"), applied=True)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    assert chatwoot_api.create_calls() == 1
    assert [c.request.method for c in chatwoot_api.rsps.calls] == ["POST", "GET"]
    [row] = outbox_rows(db)
    assert (row["status"], row["chatwoot_message_id"], row["attempts"]) == ("sent", "9882", 1)
    assert len(chatwoot_api.created[42]) == 1


def test_a_5xx_after_the_request_left_is_checked_before_sending_again(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, quick_retries: None
) -> None:
    open_conversation(db)
    chatwoot_api.fail_next(502, applied=False)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    # Not found among the conversation's messages: sent again, once.
    assert [c.request.method for c in chatwoot_api.rsps.calls] == ["POST", "GET", "POST"]
    assert len(chatwoot_api.created[42]) == 1
    [row] = outbox_rows(db)
    assert row["status"] == "sent" and row["attempts"] == 2


def test_a_worker_that_died_mid_request_is_treated_as_an_unknown_outcome(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    open_conversation(db)
    outbox_id = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_id is not None
    # The earlier attempt reached Chatwoot, then the worker was killed before recording it.
    db.fetch_one("outbox.message_claim", {"id": outbox_id})
    chatwoot_api._keep(42, {**BODY, "content_attributes": {"outbox_key": "order:1:ready"}})
    outbox.enqueue_send(outbox_id)
    run_jobs()
    assert chatwoot_api.create_calls() == 0
    assert outbox_rows(db)[0]["status"] == "sent"


def test_retries_spent_end_in_failed_with_the_reason(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "RETRY_INTERVALS", (0,))
    open_conversation(db)
    chatwoot_api.fail_next(429)
    chatwoot_api.fail_next(429)
    outbox.record_and_enqueue(1, 42, "command_reply", "note:7:reply", chatwoot.text_body("Done."))
    run_jobs()
    [row] = outbox_rows(db)
    assert row["status"] == "failed"
    assert row["error_details"] == "gave up after 2 attempt(s): HTTP 429: status 429"


def test_can_reply_false_means_no_free_form_message(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    open_conversation(db, can_reply=False)
    before = notices("order_ready", "not_sent")
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    assert len(chatwoot_api.rsps.calls) == 0
    [row] = outbox_rows(db)
    assert row["status"] == "not_sent"
    assert row["error_details"] == "conversation.can_reply is false (WhatsApp 24-hour window closed)"
    assert notices("order_ready", "not_sent") == before + 1


def test_whatsapps_window_closes_24_hours_after_the_contacts_last_message(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    open_conversation(db, last_incoming=datetime.now(UTC) - timedelta(hours=25))
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    assert len(chatwoot_api.rsps.calls) == 0
    assert outbox_rows(db)[0]["status"] == "not_sent"
    assert "24-hour window" in outbox_rows(db)[0]["error_details"]


def test_a_private_note_to_agents_needs_no_reply_window(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    open_conversation(db, can_reply=False)
    outbox.record_and_enqueue(
        1, 42, "transcript", "note:9:transcript", chatwoot.text_body("Transcript: ...", private=True)
    )
    run_jobs()
    assert outbox_rows(db)[0]["status"] == "sent"
    assert chatwoot_api.posted[0]["private"] is True


def test_without_chatwoot_base_url_nothing_is_sent_and_the_reason_is_kept(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    from app.chatwoot import accounts

    use_settings(chatwoot_base_url="")
    accounts.forget_cached()
    outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    run_jobs()
    accounts.forget_cached()
    assert len(chatwoot_api.rsps.calls) == 0
    [row] = outbox_rows(db)
    assert (row["status"], row["error_details"]) == ("not_sent", "CHATWOOT_BASE_URL is not set")


def test_without_redis_the_row_waits_for_the_sweep(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import jobs

    def down(*_: Any, **__: Any) -> bool:
        raise jobs.QueueUnavailable("ConnectionError")

    monkeypatch.setattr(jobs, "enqueue", down)
    outbox_id = outbox.record_and_enqueue(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_rows(db)[0]["id"] == outbox_id
    assert outbox_rows(db)[0]["status"] == "pending"
