"""Contacts to users (by contact id, phone, identifier), `flask users link --create` and re-homing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import responses

from app.archive import storage
from app.users import rehome, service
from tests.helpers.archive import (
    attachments,
    ingest,
    mock_attachment,
    note,
    objects,
    run_archive,
    text_message,
    voice_note,
)
from tests.helpers.common import load_fixture

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS\x00\x02" + b"\x07" * 3000


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+5491155550123", None, "+5491155550123"),
        ("+54 9 11 5555-0123", None, "+5491155550123"),
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("11 98765-4321", "BR", "+5511987654321"),
        ("0044 20 7946 0018", None, None),
        ("11 98765-4321", None, None),
        ("not a phone", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_normalize_phone(raw: str | None, region: str | None, expected: str | None) -> None:
    from app.chatwoot.payloads import normalize_phone

    assert normalize_phone(raw, region) == expected


def test_contact_of_a_message() -> None:
    from app.chatwoot.payloads import Contact
    from app.chatwoot.payloads import contact as contact_from_payload

    incoming = load_fixture("message_created__incoming_text")
    assert contact_from_payload(incoming) == Contact(287, "+5491155550123", None)
    # An agent's message belongs to the conversation's contact, not to the agent.
    outgoing = load_fixture("message_created__outgoing_agent")
    assert contact_from_payload(outgoing).id == outgoing["conversation"]["meta"]["sender"]["id"]
    assert contact_from_payload(load_fixture("seed_guide_test_message")) == Contact(123, None, None)
    assert contact_from_payload({}) == Contact()


def test_user_key_for_unmapped_and_mapped_contacts(db: Any) -> None:
    from app.chatwoot.payloads import Contact
    from app.users import contacts as users

    maria = Contact.from_mapping({"id": 287, "phone_number": "+5491155550123", "identifier": None})
    assert users.user_key_for(1, maria) == ("account_1", None)
    assert users.user_key_for(789, Contact(123)) == ("account_789", None)
    service.link_contact(1, "user-phone", phone="+54 9 11 5555 0123")
    assert users.user_key_for(1, maria) == ("user-phone", "user-phone")
    # The contact id wins over the phone; the identifier over the phone too.
    service.link_contact(1, "user-id", contact_id=287)
    assert users.user_key_for(1, maria) == ("user-id", "user-id")
    service.link_contact(1, "user-ident", identifier="crm-1")
    assert users.user_key_for(1, Contact(999, "+5491155550123", "crm-1")) == (
        "user-ident",
        "user-ident",
    )
    # Links are per Chatwoot account.
    assert users.user_key_for(2, maria) == ("account_2", None)


def test_link_contact_is_idempotent_and_conflicts_are_explicit(db: Any) -> None:
    from app.chatwoot.payloads import Contact
    from app.users import contacts as users

    first = service.link_contact(1, "user-a", contact_id=287, phone="+5491155550123")
    assert first.created_user and len(first.added) == 2
    again = service.link_contact(1, "user-a", contact_id=287)
    assert not again.created_user and again.existing == [("contact_id", "287")] and not again.added
    with pytest.raises(service.LinkConflict, match="already linked to user user-a"):
        service.link_contact(1, "user-b", contact_id=287)
    assert users.user_key_for(1, Contact(287))[1] == "user-a"
    moved = service.link_contact(1, "user-b", contact_id=287, replace=True)
    assert moved.moved == [("contact_id", "287")]
    assert users.user_key_for(1, Contact(287))[1] == "user-b"
    with pytest.raises(service.InvalidContact):
        service.link_contact(1, "user-c")
    with pytest.raises(service.InvalidContact, match="not a valid phone"):
        service.link_contact(1, "user-c", phone="12")


def test_users_map_command_validates_input(runner: Any) -> None:
    result = runner.invoke(args=["users", "link", "u1", "--create"])
    assert result.exit_code != 0 and "--contact-id, --phone or --identifier" in result.output
    result = runner.invoke(args=["users", "link", "u1", "--create", "--phone", "555"])
    assert result.exit_code != 0 and "not a valid phone number" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(service.NotFound):
        service.get_user("u1")  # nothing half done


def test_users_link_without_an_account_creates_nothing(runner: Any, use_settings: Any, db: Any) -> None:
    use_settings(chatwoot_account_id=None)
    result = runner.invoke(args=["users", "link", "u2", "--create", "--contact-id", "5"])
    assert result.exit_code != 0 and "give --account" in result.output
    with pytest.raises(service.NotFound):
        service.get_user("u2")


# ------------------------------------------------------------------------------------------
# re-homing


def _archive_contact_history(http: responses.RequestsMock, run_jobs: Any, db: Any) -> dict[str, Any]:
    """Two messages of contact 287 (one with audio, a transcript and an update) and one of 300."""
    from app.archive import storage

    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg")
    voice = ingest(voice_note())
    text = ingest(text_message(9900, contact_id=287))
    other = ingest(text_message(9901, contact_id=300, phone="+14155550100"))
    run_archive(run_jobs)
    fallback = storage.bucket_name("account_1")
    # What the transcription and update jobs would have written beside the voice note.
    bucket = storage.ensure_bucket(fallback)
    storage.put_json(bucket, "whatsapp-messages/2026-11-20/9877/transcript.json", {"text": "hola"})
    fingerprint = hashlib.sha256(b"x").hexdigest()
    update_path = storage.put_json(
        bucket, f"whatsapp-messages/2026-11-20/9877/updates/{fingerprint}.json", {"event": "message_updated"}
    )
    with db.transaction() as cur:
        cur.execute(
            """INSERT INTO message_updates (meeting_note_id, fingerprint, payload, processing_status, gcs_storage_path)
               VALUES (%s, %s, %s, 'stored', %s)""",
            (voice, fingerprint, json.dumps({"event": "message_updated"}), update_path),
        )
        cur.execute(
            """INSERT INTO transcriptions (meeting_note_id, status, provider, gcs_storage_path)
               VALUES (%s, 'done', 'none', %s)""",
            (voice, f"gs://{fallback}/whatsapp-messages/2026-11-20/9877/transcript.json"),
        )
    return {"voice": voice, "text": text, "other": other, "fallback": fallback, "fingerprint": fingerprint}


def test_map_moves_the_contacts_archive_into_the_users_bucket(
    http: responses.RequestsMock, public_resolver: Any, run_jobs: Any, runner: Any, db: Any
) -> None:
    from app.archive import storage

    h = _archive_contact_history(http, run_jobs, db)
    assert len(objects(h["fallback"])) == 6

    result = runner.invoke(
        args=["users", "link", "user-maria", "--create", "--contact-id", "287", "--account", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "new user user-maria" in result.output
    assert "re-homed 2 message(s): 5 object(s) copied, 5 deleted" in result.output

    mine = storage.bucket_name("user-maria")
    assert set(objects(mine)) == {
        "whatsapp-messages/2026-11-20/9877.json",
        "whatsapp-messages/2026-11-20/9877/5521.ogg",
        "whatsapp-messages/2026-11-20/9877/transcript.json",
        f"whatsapp-messages/2026-11-20/9877/updates/{h['fingerprint']}.json",
        "whatsapp-messages/2026-11-20/9900.json",
    }
    assert objects(mine)["whatsapp-messages/2026-11-20/9877/5521.ogg"].download_as_bytes() == OGG
    # Nothing of hers is left in the account's bucket; the other contact's message stays.
    assert set(objects(h["fallback"])) == {"whatsapp-messages/2026-11-20/9901.json"}
    for key in ("voice", "text"):
        row = note(h[key])
        assert row["user_id"] == "user-maria"
        assert row["gcs_storage_path"].startswith(f"gs://{mine}/")
        assert row["rehome_from_bucket"] is None
    assert note(h["other"])["user_id"] is None
    assert attachments(h["voice"])[0]["bucket_name"] == mine
    with db.transaction() as cur:
        cur.execute("SELECT gcs_storage_path FROM message_updates WHERE meeting_note_id = %s", (h["voice"],))
        assert cur.fetchone()["gcs_storage_path"].startswith(f"gs://{mine}/")
        cur.execute("SELECT gcs_storage_path FROM transcriptions WHERE meeting_note_id = %s", (h["voice"],))
        assert (
            cur.fetchone()["gcs_storage_path"]
            == f"gs://{mine}/whatsapp-messages/2026-11-20/9877/transcript.json"
        )

    # Safe to run twice.
    again = runner.invoke(
        args=["users", "link", "user-maria", "--create", "--contact-id", "287", "--account", "1"]
    )
    assert again.exit_code == 0, again.output
    assert "already linked: contact id 287" in again.output
    assert "re-homed 0 message(s): 0 object(s) copied, 0 deleted" in again.output
    assert len(objects(mine)) == 5


def test_an_interrupted_move_is_finished_by_the_next_run(
    http: responses.RequestsMock, public_resolver: Any, run_jobs: Any, db: Any
) -> None:
    """Copied and recorded, but the old copies not deleted (a crash): the next run deletes them."""
    from app.archive import storage

    h = _archive_contact_history(http, run_jobs, db)
    service.map_contact(1, "user-maria", contact_id=287)
    mine = storage.bucket_name("user-maria")
    # Put the crash back: old copies still there (and one that only exists there: a late write).
    fallback = storage.ensure_bucket(h["fallback"])
    storage.put_json(fallback, "whatsapp-messages/2026-11-20/9877.json", {"old": True})
    storage.put_json(fallback, "whatsapp-messages/2026-11-20/9877/late.json", {"late": True})
    with db.transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET rehome_from_bucket = %s WHERE id = %s", (h["fallback"], h["voice"])
        )
    result = rehome.rehome_messages(1, "user-maria")
    assert result.objects_deleted == 2 and result.objects_copied == 1
    assert set(objects(h["fallback"])) == {"whatsapp-messages/2026-11-20/9901.json"}
    assert "whatsapp-messages/2026-11-20/9877/late.json" in objects(mine)
    assert note(h["voice"])["rehome_from_bucket"] is None


def test_messages_archived_after_mapping_go_straight_to_the_user(run_jobs: Any, db: Any) -> None:
    from app.archive import storage

    service.map_contact(1, "user-maria", phone="+5491155550123")
    note_id = ingest(text_message(9910, contact_id=287))
    run_archive(run_jobs)
    assert note(note_id)["user_id"] == "user-maria"
    assert storage.list_objects(storage.bucket_name("account_1"), "") == []


def test_a_move_whose_job_was_lost_is_queued_again_by_the_reconciler(
    run_jobs: Any, db: Any, redis_conn: Any, use_settings: Any
) -> None:
    from app.jobs import REHOME, job_id
    from app.reconcile import sweep
    from tests.helpers.archive import ingest, objects, text_message

    ingest(text_message(8101, contact_id=287))
    run_jobs(queues=("archive",))
    service.link_contact(1, "user-lost", contact_id=287)
    # The move is recorded, but its job never reaches Redis (Redis restarted empty meanwhile).
    request = db.fetch_one("users.rehome_request", {"account_id": 1, "user_id": "user-lost"})
    redis_conn.flushdb()
    use_settings(reconcile_grace=0)
    [outcome] = [o for o in sweep(grace=0) if o.stage == "rehome"]
    assert (outcome.row_id, outcome.action) == (request["id"], "enqueued")
    assert job_id(REHOME, request["id"]) in {
        j.decode() for j in redis_conn.lrange("rq:queue:maintenance", 0, -1)
    }
    run_jobs(queues=("maintenance",))
    with db.transaction() as cur:
        cur.execute("SELECT status, messages_moved FROM rehome_requests WHERE id = %s", (request["id"],))
        assert dict(cur.fetchone()) == {"status": "done", "messages_moved": 1}
    assert any(name.endswith("/8101.json") for name in objects(storage.bucket_name("user-lost")))


@pytest.mark.parametrize("user_id", ["a/b", " padded", "tab\there", "x" * 201, ""])
def test_every_way_of_creating_a_user_refuses_the_same_ids(runner: Any, client: Any, user_id: str) -> None:
    result = runner.invoke(args=["users", "link", user_id, "--create", "--contact-id", "5"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    result = runner.invoke(args=["users", "create", user_id])
    assert result.exit_code != 0
    answer = client.post(
        "/admin/users", json={"user_id": user_id}, headers={"Authorization": "Bearer test-admin-token"}
    )
    assert answer.status_code == 422
    with pytest.raises(service.Invalid):
        service.ensure_user(user_id)


def test_a_user_made_by_the_cli_is_addressable_by_the_admin_api(runner: Any, client: Any) -> None:
    assert runner.invoke(args=["users", "link", "maría.ö-1", "--create", "--contact-id", "5"]).exit_code == 0
    answer = client.get("/admin/users/maría.ö-1", headers={"Authorization": "Bearer test-admin-token"})
    assert answer.status_code == 200 and answer.get_json()["user_id"] == "maría.ö-1"
