"""Orders end to end: signed webhook → ingestion → archive → classification → outbox → Chatwoot.

The fixtures tell one story in conversation 42 (a note, an order, our question coming back, her
answer...). They are delivered with their own ids and a fresh `created_at` (WhatsApp's reply
window is measured from the contact's last message). Chatwoot's API and attachment downloads
are mocked with `responses`; the GCS emulator is real.
"""

from __future__ import annotations

import json
from typing import Any

import responses

from tests.helpers.common import load_fixture
from tests.helpers.orders import (
    ChatwootAPI,
    add_user,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    message,
    orders,
    outbox_rows,
)

TOKEN = {"Authorization": "Bearer test-api-token"}
IMAGE_URL = load_fixture("message_created__incoming_image_with_caption")["attachments"][0]["data_url"]


def story(name: str, **changes: Any) -> dict[str, Any]:
    """The fixture with its own message id, as if it had just been written."""
    return message(name, message_id=load_fixture(name)["id"], **changes)


def rows(db: Any) -> dict[str, dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM meeting_notes ORDER BY id")
        return {r["chatwoot_message_id"]: dict(r) for r in cur.fetchall()}


def message_api_calls(chatwoot_api: ChatwootAPI) -> list[str]:
    return [
        f"{c.request.method} {c.request.url}" for c in chatwoot_api.rsps.calls if "/messages" in c.request.url
    ]


def run_story_until_queued(deliver: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, db: Any) -> int:
    chatwoot_api.rsps.add(responses.GET, IMAGE_URL, body=b"\xff\xd8\xff\xe0 jpeg", content_type="image/jpeg")

    assert deliver(story("message_created__incoming_text")).get_json()["status"] == "accepted"
    assert deliver(story("message_created__incoming_image_with_caption")).get_json()["status"] == "accepted"
    run_jobs()
    assert message_api_calls(chatwoot_api) == []  # notes: nothing sent, ever

    assert deliver(story("message_created__incoming_order")).status_code == 200
    run_jobs()
    assert [b["content"].splitlines()[0] for b in chatwoot_api.posted] == [
        "Which platform would you like content for?"
    ]

    # Our question comes back (created, then delivered): archived, never processed.
    assert deliver(story("message_created__outgoing_bot_quick_reply")).get_json()["status"] == "accepted"
    assert deliver(story("message_updated__outgoing_bot_delivered")).status_code == 200
    run_jobs()
    assert len(chatwoot_api.posted) == 1

    # Her tap: "LinkedIn", in reply to our question (Chatwoot id 9882).
    deliver(story("message_created__incoming_quick_reply_answer"))
    run_jobs()
    assert chatwoot_api.posted[1]["content"].splitlines()[0] == "Which category fits this post best?"
    assert chatwoot_api.posted[1]["content_attributes"]["items"][2] == {"title": "Tips", "value": "tips"}

    deliver(message("message_created__incoming_text", content="3"))
    run_jobs()
    assert len(chatwoot_api.posted) == 2

    kept = rows(db)
    assert kept["9876"]["message_kind"] == "note" and kept["9884"]["message_kind"] == "note"
    assert kept["9878"]["message_kind"] == "order"
    assert kept["9882"]["classification_status"] == "not_needed" and kept["9882"]["message_kind"] is None
    assert kept["9883"]["message_kind"] == "answer"
    assert all(r["processing_status"] == "stored" for r in kept.values())
    [order] = orders(db)
    assert (order["status"], order["platform"], order["length"], order["tone"], order["topic"]) == (
        "queued",
        "LinkedIn",
        "Short",
        "Professional",
        "Tips",
    )
    assert order["subject"] == "our onboarding results"
    return int(order["id"])


def test_a_whole_order_from_first_message_to_ready_notice_with_opt_in(  # noqa: PLR0917 (fixtures)
    client: Any, deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    from app.users import contacts as users

    add_user(db, notify=True)
    order_id = run_story_until_queued(deliver, run_jobs, chatwoot_api, db)
    assert orders(db)[0]["user_id"] == "user-maria"

    listed = client.get("/api/orders?status=queued", headers=TOKEN).get_json()["orders"]
    assert [o["id"] for o in listed] == [order_id]
    ready = client.post(
        f"/api/orders/{order_id}/ready",
        json={"content": "Onboarding in 4 days: what we changed."},
        headers=TOKEN,
    )
    assert ready.status_code == 200
    run_jobs()

    assert chatwoot_api.posted[2] == {
        "content": f"Your LinkedIn post is ready — open the app to review it. Order #{order_id}",
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "content_attributes": {"outbox_key": f"order:{order_id}:ready"},
    }
    assert len(chatwoot_api.posted) == 3
    assert [r["kind"] for r in outbox_rows(db)] == ["question", "question", "order_ready"]
    assert all(r["status"] == "sent" for r in outbox_rows(db))
    [order] = orders(db)
    assert order["status"] == "ready" and order["delivered_at"] is not None
    bucket = users.user_bucket("user-maria")
    draft = json.loads(gcs.bucket(bucket).blob(f"orders/{order_id}/draft.json").download_as_bytes())
    assert draft["content"] == "Onboarding in 4 days: what we changed."

    # The notice comes back by webhook like any of our messages: archived, not processed.
    echoed = message("message_created__outgoing_bot_quick_reply", content=chatwoot_api.posted[2]["content"])
    echoed["content_type"] = "text"
    echoed["content_attributes"] = chatwoot_api.posted[2]["content_attributes"]
    assert deliver(echoed).get_json()["status"] == "accepted"
    run_jobs()
    assert len(chatwoot_api.posted) == 3


def test_no_ready_notice_without_opt_in(  # noqa: PLR0917 (fixtures)
    client: Any, deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_user(db, notify=False)
    order_id = run_story_until_queued(deliver, run_jobs, chatwoot_api, db)
    client.post(f"/api/orders/{order_id}/ready", json={"content": "Draft"}, headers=TOKEN)
    run_jobs()
    assert len(chatwoot_api.posted) == 2
    assert orders(db)[0]["status"] == "ready" and orders(db)[0]["delivered_at"] is not None


def test_a_duplicate_webhook_gives_one_question(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    order = story("message_created__incoming_order")
    assert deliver(order).get_json()["status"] == "accepted"
    assert deliver(order).get_json()["status"] == "duplicate"
    run_jobs()
    assert deliver(order).get_json()["status"] == "duplicate"
    run_jobs()
    assert len(chatwoot_api.posted) == 1
    assert len(orders(db)) == 1 and len(outbox_rows(db)) == 1


def test_our_own_and_agents_messages_are_archived_and_never_processed(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    for name in (
        "message_created__outgoing_bot_quick_reply",
        "message_created__outgoing_agent",
        "message_created__private_note",
    ):
        assert deliver(story(name)).get_json()["status"] == "accepted"
    run_jobs()
    assert len(chatwoot_api.rsps.calls) == 0
    for row in rows(db).values():
        assert row["processing_status"] == "stored"
        assert row["classification_status"] == "not_needed" and row["message_kind"] is None


def test_the_seed_guide_test_message_is_a_note(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    assert deliver("seed_guide_test_message").get_json()["status"] == "accepted"
    run_jobs()
    [row] = rows(db).values()
    assert row["message_kind"] == "note"
    assert len(chatwoot_api.rsps.calls) == 0


def test_a_question_outside_whatsapps_window_is_recorded_not_sent(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    deliver(story("message_created__incoming_order", can_reply=False))
    run_jobs()
    assert len(chatwoot_api.rsps.calls) == 0
    [row] = outbox_rows(db)
    assert row["status"] == "not_sent" and "can_reply is false" in row["error_details"]
