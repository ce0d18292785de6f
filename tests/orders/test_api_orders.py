"""The main app's orders API: bearer token, queued orders, posting content, JSON errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers.orders import (
    ChatwootAPI,
    add_note,
    add_user,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    message,
    orders,
    outbox_rows,
)

TOKEN = {"Authorization": "Bearer test-api-token"}
COMPLETE_ORDER = "Write a long, friendly LinkedIn post with tips about hiring juniors"


def queued_order(db: Any, run_jobs: Any, **kwargs: Any) -> int:
    add_note(db, message(content=COMPLETE_ORDER), **kwargs)
    run_jobs()
    [order] = [o for o in orders(db) if o["status"] == "queued"][-1:]
    return int(order["id"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic test-api-token"},
        {"Authorization": "Bearer"},
    ],
)
def test_a_valid_bearer_token_is_required(client: Any, headers: dict[str, str]) -> None:
    for response in (
        client.get("/api/orders", headers=headers),
        client.post("/api/orders/1/ready", json={"content": "x"}, headers=headers),
    ):
        assert response.status_code == 401
        assert response.get_json() == {"error": "unauthorized", "detail": "a valid bearer token is required"}


def test_without_api_token_the_api_is_off(client: Any, use_settings: Any) -> None:
    use_settings(api_token="")
    response = client.get("/api/orders", headers={"Authorization": "Bearer "})
    assert response.status_code == 503
    assert response.get_json()["error"] == "api_disabled"


def test_queued_orders_are_listed_with_what_the_main_app_needs(
    client: Any, db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    order_id = queued_order(db, run_jobs)
    add_note(db, message("message_created__incoming_order"))  # stays clarifying
    run_jobs()
    response = client.get("/api/orders?status=queued", headers=TOKEN)
    assert response.status_code == 200
    body = response.get_json()
    assert [o["id"] for o in body["orders"]] == [order_id]
    listed = body["orders"][0]
    assert {k: listed[k] for k in ("status", "platform", "length", "tone", "topic", "subject")} == {
        "status": "queued",
        "platform": "LinkedIn",
        "length": "Long",
        "tone": "Friendly",
        "topic": "Tips",
        "subject": "hiring juniors",
    }
    assert listed["request_text"] == COMPLETE_ORDER
    assert listed["chatwoot_contact_id"] == 287 and listed["language"] == "en"
    assert body["next_after_id"] is None
    clarifying = client.get("/api/orders?status=clarifying", headers=TOKEN).get_json()["orders"]
    assert [o["status"] for o in clarifying] == ["clarifying"]
    assert client.get("/api/orders", headers=TOKEN).get_json()["orders"][0]["id"] == order_id


def test_paging(client: Any, db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    ids = [queued_order(db, run_jobs) for _ in range(3)]
    first = client.get("/api/orders?limit=2", headers=TOKEN).get_json()
    assert [o["id"] for o in first["orders"]] == ids[:2]
    rest = client.get(f"/api/orders?limit=2&after_id={first['next_after_id']}", headers=TOKEN).get_json()
    assert [o["id"] for o in rest["orders"]] == ids[2:]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("after_id=-1", "after_id"),
        ("limit=abc", "limit"),
    ],
)
def test_bad_list_queries(client: Any, query: str, field: str) -> None:
    response = client.get(f"/api/orders?{query}", headers=TOKEN)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid" and field in body["detail"]


def test_posting_content_makes_the_order_ready_and_keeps_the_draft(
    client: Any, db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    from app.archive import storage

    order_id = queued_order(db, run_jobs)
    response = client.post(
        f"/api/orders/{order_id}/ready", json={"content": "Hiring juniors: 5 tips."}, headers=TOKEN
    )
    assert response.status_code == 200
    order = response.get_json()["order"]
    assert (order["status"], order["content"], order["provider"]) == (
        "ready",
        "Hiring juniors: 5 tips.",
        "external",
    )
    assert order["ready_at"]
    run_jobs()
    [row] = orders(db)
    assert row["delivered_at"] is not None
    bucket = storage.bucket_name("account_1")
    assert row["gcs_storage_path"] == f"gs://{bucket}/orders/{order_id}/draft.json"
    draft = json.loads(gcs.bucket(bucket).blob(f"orders/{order_id}/draft.json").download_as_bytes())
    assert draft["content"] == "Hiring juniors: 5 tips." and draft["platform"] == "LinkedIn"
    # An unmapped contact never opted in: no notice.
    assert len(chatwoot_api.rsps.calls) == 0 and outbox_rows(db) == []

    # The same call again is harmless; other content is refused.
    again = client.post(
        f"/api/orders/{order_id}/ready", json={"content": "Hiring juniors: 5 tips."}, headers=TOKEN
    )
    assert again.status_code == 200
    other = client.post(f"/api/orders/{order_id}/ready", json={"content": "Something else"}, headers=TOKEN)
    assert other.status_code == 409 and other.get_json()["error"] == "conflict"


def test_a_link_is_enough(client: Any, db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    order_id = queued_order(db, run_jobs)
    response = client.post(
        f"/api/orders/{order_id}/ready",
        json={"content_url": "https://app.example.com/drafts/9"},
        headers=TOKEN,
    )
    assert response.status_code == 200
    assert response.get_json()["order"]["content_url"] == "https://app.example.com/drafts/9"


def test_ready_notice_only_with_opt_in(
    client: Any, db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_user(db, notify=True)
    order_id = queued_order(db, run_jobs, user_id="user-maria")
    client.post(f"/api/orders/{order_id}/ready", json={"content": "Draft"}, headers=TOKEN)
    run_jobs()
    assert chatwoot_api.posted == [
        {
            "content": f"Your LinkedIn post is ready — open the app to review it. Order #{order_id}",
            "message_type": "outgoing",
            "private": False,
            "content_type": "text",
            "content_attributes": {"outbox_key": f"order:{order_id}:ready"},
        }
    ]


@pytest.mark.parametrize(
    "case",
    [
        ("not json", "text/plain", 415, "unsupported_media_type"),
        ("[1, 2]", "application/json", 400, "bad_request"),
        ("{broken", "application/json", 400, "bad_request"),
        ("{}", "application/json", 422, "invalid"),
        ('{"content": ""}', "application/json", 422, "invalid"),
        ('{"content_url": "ftp://x.example.com/a"}', "application/json", 422, "invalid"),
        ('{"content": "x", "extra": 1}', "application/json", 422, "invalid"),
        ('{"content": 5}', "application/json", 422, "invalid"),
        (json.dumps({"content": "x" * 100_001}), "application/json", 422, "invalid"),
    ],
)
def test_bad_ready_bodies(
    client: Any, db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, case: tuple[str, str, int, str]
) -> None:
    body, content_type, status, error = case
    order_id = queued_order(db, run_jobs)
    response = client.post(
        f"/api/orders/{order_id}/ready", data=body, headers={**TOKEN, "Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert orders(db)[0]["status"] == "queued"


def test_unknown_and_unfinished_orders(
    client: Any, db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    missing = client.post("/api/orders/999/ready", json={"content": "x"}, headers=TOKEN)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    clarifying = client.post("/api/orders/1/ready", json={"content": "x"}, headers=TOKEN)
    assert clarifying.status_code == 409
    assert clarifying.get_json() == {"error": "conflict", "detail": "the order is clarifying"}
    assert client.get("/api/orders/1", headers=TOKEN).get_json()["order"]["status"] == "clarifying"
    assert client.get("/api/orders/999", headers=TOKEN).status_code == 404
