"""One rule from a contact to a user: a contact linked by its identifier only is that user's
everywhere — its archive, its commands, its orders and its ready notice."""

from __future__ import annotations

from typing import Any

from app.archive import storage
from app.users import service
from tests.helpers.orders import ChatwootAPI, message, orders

TOKEN = {"Authorization": "Bearer test-api-token"}
USER = "user-ident"


def from_crm_contact(**changes: Any) -> dict[str, Any]:
    """A message from contact 9001, whose identifier is the CRM's; neither its id nor its phone is linked."""
    payload = message(contact_id=9001, **changes)
    for person in (payload["sender"], payload["conversation"]["meta"]["sender"]):
        person["identifier"] = "crm-555"
        person["phone_number"] = "+5491155550999"
    return payload


def test_a_contact_linked_by_identifier_is_its_user_in_every_stage(  # noqa: PLR0917 (fixtures)
    client: Any, deliver: Any, db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    service.link_contact(1, USER, identifier="crm-555")
    bucket = storage.bucket_name(USER)

    # The archive: the note goes to the user's own bucket, and the row names the user.
    note_id = deliver(from_crm_contact(content="an idea for later")).get_json()["id"]
    run_jobs()
    with db.transaction() as cur:
        cur.execute(
            "SELECT user_id, gcs_storage_path, message_kind FROM meeting_notes WHERE id = %s", (note_id,)
        )
        row = cur.fetchone()
    assert row["user_id"] == USER and row["gcs_storage_path"].startswith(f"gs://{bucket}/")
    assert row["message_kind"] == "note"

    # A command: /notify on turns the notice on for that user (not "send LINK <code>").
    deliver(from_crm_contact(content="/notify on"))
    run_jobs()
    assert service.get_user(USER)["notify_on_ready"] is True

    # An order: it belongs to the user.
    deliver(from_crm_contact(content="Write a long, friendly LinkedIn post with tips about hiring juniors"))
    run_jobs()
    [order] = orders(db)
    assert order["user_id"] == USER and order["status"] == "queued"

    # The ready notice: sent, because that user opted in.
    posted_before = len(chatwoot_api.posted)
    answer = client.post(f"/api/orders/{order['id']}/ready", json={"content": "Draft"}, headers=TOKEN)
    assert answer.status_code == 200
    run_jobs()
    notices = chatwoot_api.posted[posted_before:]
    assert [n["content_attributes"]["outbox_key"] for n in notices] == [f"order:{order['id']}:ready"]
