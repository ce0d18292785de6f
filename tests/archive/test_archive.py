"""The archive job: rows to GCS objects at the contract's paths, media, retries, next steps."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import responses

from app.users import service
from tests.helpers.archive import (
    attachments,
    data_url,
    ingest,
    mock_attachment,
    note,
    objects,
    queued,
    read_json,
    run_archive,
    text_message,
    voice_note,
)
from tests.helpers.common import load_fixture

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS\x00\x02" + bytes(range(256)) * 40


def bucket_of(user_key: str) -> str:
    from app.archive import storage

    return storage.bucket_name(user_key)


# ------------------------------------------------------------------------------------------
# text messages


def test_seed_guide_message_is_archived_in_the_account_bucket(run_jobs: Any, use_settings: Any) -> None:
    use_settings(chatwoot_account_id=789)  # the seed guide's account is the installation's
    note_id = ingest(load_fixture("seed_guide_test_message"))
    run_archive(run_jobs)
    row = note(note_id)
    bucket = bucket_of("account_789")
    name = "whatsapp-messages/2025-01-30/test-message-123.json"
    assert row["processing_status"] == "stored"
    assert row["gcs_storage_path"] == f"gs://{bucket}/{name}"
    assert row["user_id"] is None
    assert row["stored_at"] is not None and row["error_details"] is None
    assert set(objects(bucket)) == {name}
    archived = read_json(bucket, name)
    assert archived["id"] == "test-message-123" and archived["content"] == "Test WhatsApp message"
    assert objects(bucket)[name].content_type.startswith("application/json")


def test_message_json_is_the_payload_without_secrets(run_jobs: Any) -> None:
    payload = load_fixture("message_created__incoming_text")
    note_id = ingest(payload)
    run_archive(run_jobs)
    row = note(note_id)
    bucket = bucket_of("account_1")
    name = f"whatsapp-messages/2026-11-20/{payload['id']}.json"
    assert row["gcs_storage_path"] == f"gs://{bucket}/{name}"
    archived = read_json(bucket, name)
    assert "pubsub_token" not in json.dumps(archived)
    assert archived["content"] == payload["content"]
    assert archived["sender"]["phone_number"] == payload["sender"]["phone_number"]


def test_stored_text_message_goes_on_to_classification(run_jobs: Any) -> None:
    note_id = ingest(load_fixture("message_created__incoming_text"))
    run_archive(run_jobs)
    assert f"classify_{note_id}" in queued("classify")
    assert queued("transcribe") == []


def test_our_own_messages_are_archived_but_not_processed(run_jobs: Any) -> None:
    ids = [
        ingest(load_fixture(name))
        for name in ("message_created__outgoing_agent", "message_created__private_note")
    ]
    run_archive(run_jobs)
    for note_id in ids:
        assert note(note_id)["processing_status"] == "stored"
    assert queued("classify") == [] and queued("transcribe") == []
    # Outgoing messages belong to the conversation's contact, in the same bucket.
    assert {note(i)["gcs_storage_path"].split("/")[2] for i in ids} == {bucket_of("account_1")}


def test_a_job_run_twice_writes_one_object(gcs: Any) -> None:
    from app.archive.batch import archive_message

    note_id = ingest(text_message(5001), enqueue=False)
    assert archive_message(note_id) == "stored"
    bucket = bucket_of("account_1")
    blob = gcs.bucket(bucket).get_blob("whatsapp-messages/2026-11-20/5001.json")
    assert archive_message(note_id) == "already stored"
    again = gcs.bucket(bucket).get_blob("whatsapp-messages/2026-11-20/5001.json")
    assert again.generation == blob.generation
    assert list(objects(bucket)) == ["whatsapp-messages/2026-11-20/5001.json"]


def test_a_rerun_after_a_crash_between_upload_and_commit_finishes(gcs: Any, db: Any) -> None:
    """The object is there (412 on the second write: the same message) and the row still says received."""
    from app.archive import storage
    from app.archive.batch import archive_message

    payload = text_message(5002)
    note_id = ingest(payload, enqueue=False)
    bucket = storage.ensure_bucket(bucket_of("account_1"))
    earlier = storage.write_json(bucket, "whatsapp-messages/2026-11-20/5002.json", note(note_id)["payload"])
    generation = gcs.bucket(bucket.name).get_blob("whatsapp-messages/2026-11-20/5002.json").generation
    assert earlier.created
    assert archive_message(note_id) == "stored"
    row = note(note_id)
    assert row["processing_status"] == "stored"
    assert row["gcs_storage_path"] == f"gs://{bucket.name}/whatsapp-messages/2026-11-20/5002.json"
    assert gcs.bucket(bucket.name).get_blob("whatsapp-messages/2026-11-20/5002.json").generation == generation
    assert list(objects(bucket.name)) == ["whatsapp-messages/2026-11-20/5002.json"]


def test_a_missing_row_is_nothing_to_do() -> None:
    from app.archive.batch import archive_message

    assert archive_message(999_999) == "gone"


def test_mapped_contact_goes_to_the_users_bucket(run_jobs: Any, db: Any) -> None:

    service.link_contact(1, "user-maria", contact_id=287)
    note_id = ingest(text_message(5003, contact_id=287))
    other = ingest(text_message(5004, contact_id=300, phone="+14155550100"))
    run_archive(run_jobs)
    row = note(note_id)
    assert row["user_id"] == "user-maria"
    assert row["gcs_storage_path"] == f"gs://{bucket_of('user-maria')}/whatsapp-messages/2026-11-20/5003.json"
    assert note(other)["user_id"] is None
    assert note(other)["gcs_storage_path"].startswith(f"gs://{bucket_of('account_1')}/")
    assert db.fetch_one("users.user_get", {"user_id": "user-maria"})["bucket_created_at"] is not None


def test_contact_recognised_by_phone_written_loosely(run_jobs: Any) -> None:

    service.link_contact(1, "user-phone", phone="+54 9 11 5555-0199")
    note_id = ingest(text_message(5005, contact_id=301, phone="+54 9 11 5555 0199"))
    by_identifier = ingest(text_message(5006, contact_id=302, phone=None, identifier="crm-77"))
    service.link_contact(1, "user-crm", identifier="crm-77")
    run_archive(run_jobs)
    assert note(note_id)["user_id"] == "user-phone"
    assert note(by_identifier)["user_id"] == "user-crm"


def test_foreign_bucket_leaves_the_row_in_error_without_data(
    use_settings: Any, gcs: Any, run_jobs: Any
) -> None:
    use_settings(gcs_project_number="424242")
    gcs.create_bucket(bucket_of("account_1"))  # the name is taken elsewhere
    note_id = ingest(text_message(5007))
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "error"
    assert "another project" in row["error_details"] or "not ours" in row["error_details"]
    assert objects(bucket_of("account_1")) == {}
    assert queued("classify") == []


# ------------------------------------------------------------------------------------------
# attachments


def test_voice_note_audio_is_archived_beside_the_message(
    http: responses.RequestsMock, public_resolver: Any, run_jobs: Any
) -> None:
    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg")
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    row = note(note_id)
    bucket = bucket_of("account_1")
    assert row["processing_status"] == "stored", row["error_details"]
    assert row["gcs_storage_path"] == f"gs://{bucket}/whatsapp-messages/2026-11-20/9877.json"
    stored = objects(bucket)
    audio = stored["whatsapp-messages/2026-11-20/9877/5521.ogg"]
    assert audio.content_type == "audio/ogg"
    assert audio.download_as_bytes() == OGG
    [att] = attachments(note_id)
    assert att["status"] == "stored"
    assert (att["bucket_name"], att["object_name"]) == (bucket, "whatsapp-messages/2026-11-20/9877/5521.ogg")
    assert (
        att["content_type"] == "audio/ogg" and att["size_bytes"] == len(OGG) and att["file_type"] == "audio"
    )
    # Redirect followed; the API token sent nowhere.
    assert [c.request.url.split("?")[0] for c in http.calls] == [
        "https://chat.example.com/rails/active_storage/blobs/redirect/eyJ5521--x/audioclip.ogg",
        "https://storage.example-cdn.com/media/5521/audioclip.ogg",
    ]
    for call in http.calls:
        assert "api_access_token" not in {k.lower() for k in call.request.headers}
        assert "Authorization" not in call.request.headers
    # A voice note goes to transcription first.
    assert queued("transcribe") == [f"transcribe_{note_id}"]
    assert queued("classify") == []


def test_attachment_that_404s_at_first_is_retried(
    http: responses.RequestsMock, public_resolver: Any, use_settings: Any, run_jobs: Any
) -> None:
    use_settings(attachment_retry_seconds=10)
    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg", not_found_first=2)
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    assert note(note_id)["processing_status"] == "stored"
    assert attachments(note_id)[0]["status"] == "stored"
    assert len(http.calls) == 4  # 404, 404, 302, 200


def test_image_with_caption(http: responses.RequestsMock, public_resolver: Any, run_jobs: Any) -> None:
    payload = load_fixture("message_created__incoming_image_with_caption")
    jpeg = b"\xff\xd8\xff\xe0" + b"\x01" * 5000
    http.add(
        responses.GET,
        payload["attachments"][0]["data_url"],
        status=302,
        headers={"Location": "https://storage.example-cdn.com/w.jpg"},
    )
    http.add(responses.GET, "https://storage.example-cdn.com/w.jpg", body=jpeg, content_type="image/jpeg")
    note_id = ingest(payload)
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "stored"
    name = f"whatsapp-messages/2026-11-20/{payload['id']}/5530.jpg"
    assert objects(bucket_of("account_1"))[name].content_type == "image/jpeg"
    assert f"classify_{note_id}" in queued("classify")


def test_attachments_without_a_file_live_in_the_json_only(
    http: responses.RequestsMock, run_jobs: Any
) -> None:
    payload = text_message(5010)
    payload["attachments"] = [
        {
            "id": 7001,
            "file_type": "location",
            "coordinates_lat": -34.6,
            "coordinates_long": -58.4,
            "data_url": None,
        },
        {"id": 7002, "file_type": "contact", "fallback_title": "+5491100000000", "data_url": ""},
    ]
    note_id = ingest(payload)
    run_archive(run_jobs)
    assert note(note_id)["processing_status"] == "stored"
    assert [a["status"] for a in attachments(note_id)] == ["skipped", "skipped"]
    assert list(objects(bucket_of("account_1"))) == ["whatsapp-messages/2026-11-20/5010.json"]
    assert len(http.calls) == 0


def test_attachment_over_the_size_cap_is_skipped(
    http: responses.RequestsMock, public_resolver: Any, use_settings: Any, run_jobs: Any
) -> None:
    use_settings(max_attachment_bytes=4096)
    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg")
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "stored"
    assert "attachment 5521 skipped" in row["error_details"]
    [att] = attachments(note_id)
    assert att["status"] == "skipped" and "limit" in att["error_details"]
    assert list(objects(bucket_of("account_1"))) == ["whatsapp-messages/2026-11-20/9877.json"]


def test_large_attachment_is_streamed_through_a_temporary_file(
    http: responses.RequestsMock, public_resolver: Any, run_jobs: Any
) -> None:
    """Over 8 MiB: spooled to disk and sent with a resumable upload."""
    big = hashlib.sha256(b"seed").digest() * (9 * 1024 * 1024 // 32 + 7)
    mock_attachment(http, 5521, "audioclip.ogg", big, "video/mp4")
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    assert note(note_id)["processing_status"] == "stored"
    blob = objects(bucket_of("account_1"))["whatsapp-messages/2026-11-20/9877/5521.mp4"]
    assert blob.size == len(big)
    assert blob.download_as_bytes() == big


def test_attachment_that_stays_unavailable_never_strands_its_message(
    http: responses.RequestsMock, public_resolver: Any, use_settings: Any, run_jobs: Any
) -> None:
    """After its last attempt the attachment is `unavailable`; the message is stored and goes on."""
    from rq import Retry

    from app.jobs import ARCHIVE_MESSAGE, enqueue

    use_settings(attachment_retry_seconds=1)
    http.add(responses.GET, voice_note()["attachments"][0]["data_url"], status=404)
    note_id = ingest(voice_note(), enqueue=False)
    enqueue(ARCHIVE_MESSAGE, note_id, retry=Retry(max=1))  # one immediate retry, then final
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "stored"
    assert row["error_details"] == "attachment 5521 unavailable: not found (404)"
    assert row["gcs_storage_path"] == f"gs://{bucket_of('account_1')}/whatsapp-messages/2026-11-20/9877.json"
    [att] = attachments(note_id)
    assert att["status"] == "unavailable" and att["error_details"] == "not found (404)"
    assert list(objects(bucket_of("account_1"))) == ["whatsapp-messages/2026-11-20/9877.json"]
    # The voice note goes on: transcription finds no audio and says why, then classification.
    assert queued("transcribe") == [f"transcribe_{note_id}"]


def test_a_failed_attempt_leaves_the_row_retryable(
    http: responses.RequestsMock, public_resolver: Any, use_settings: Any, run_jobs: Any, redis_conn: Any
) -> None:
    from rq.registry import ScheduledJobRegistry

    use_settings(attachment_retry_seconds=1)
    http.add(responses.GET, voice_note()["attachments"][0]["data_url"], status=503)
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "received"
    assert row["error_details"] == "retrying: attachment 5521 unavailable: HTTP 503"
    assert attachments(note_id)[0]["status"] == "pending"
    assert f"archive_{note_id}" in ScheduledJobRegistry("archive", connection=redis_conn).get_job_ids()


def test_data_url_off_the_allowed_hosts_is_refused_and_the_message_goes_on(
    http: responses.RequestsMock, run_jobs: Any
) -> None:
    payload = voice_note()
    payload["attachments"][0]["data_url"] = "https://attacker.example.net/file.ogg"
    note_id = ingest(payload)
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "stored"
    reason = "data_url host attacker.example.net is not Chatwoot's nor an allowed media host"
    assert row["error_details"] == f"attachment 5521 unavailable: {reason}"
    [att] = attachments(note_id)
    assert att["status"] == "unavailable" and att["error_details"] == reason
    assert len(http.calls) == 0
    assert queued("transcribe") == [f"transcribe_{note_id}"]


def test_redirect_to_a_private_address_is_refused(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]], run_jobs: Any
) -> None:
    public_resolver["storage.example-cdn.com"] = ["10.0.0.12"]
    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg")
    note_id = ingest(voice_note())
    run_archive(run_jobs)
    row = note(note_id)
    assert row["processing_status"] == "stored"
    assert "non-public address" in row["error_details"]
    assert attachments(note_id)[0]["status"] == "unavailable"
    assert len(http.calls) == 1  # the storage host was never asked


# ------------------------------------------------------------------------------------------
# updates


def test_update_is_archived_beside_its_message_once_it_is_stored(db: Any, run_jobs: Any) -> None:
    from app.archive.jobs import archive_update

    payload = text_message(5020)
    note_id = ingest(payload, enqueue=False)
    fingerprint = hashlib.sha256(b"edited").hexdigest()
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO message_updates (meeting_note_id, fingerprint, payload) VALUES (%s, %s, %s) RETURNING id",
            (note_id, fingerprint, json.dumps({**payload, "event": "message_updated", "content": "edited"})),
        )
        update_id = cur.fetchone()["id"]
    assert archive_update(update_id) == "waiting for its message"
    from app.jobs import ARCHIVE_MESSAGE, enqueue

    enqueue(ARCHIVE_MESSAGE, note_id)
    run_archive(run_jobs)  # the message, then the update it queued
    bucket = bucket_of("account_1")
    name = f"whatsapp-messages/2026-11-20/5020/updates/{fingerprint}.json"
    assert read_json(bucket, name)["content"] == "edited"
    row = db.fetch_one("archive.load_update", {"update_id": update_id})
    assert row["processing_status"] == "stored"
    assert archive_update(update_id) == "already stored"


# ------------------------------------------------------------------------------------------
# from the webhook


def test_webhook_to_archive(
    deliver: Any, http: responses.RequestsMock, public_resolver: Any, run_jobs: Any, db: Any
) -> None:
    """Every fixture through the webhook: each message archived once, our receipts add nothing."""
    from tests.helpers.common import fixture_names

    mock_attachment(http, 5521, "audioclip.ogg", OGG, "audio/ogg")
    voice = load_fixture("message_created__incoming_voice_note")
    voice["attachments"][0]["data_url"] = data_url(5521, "audioclip.ogg")
    image = load_fixture("message_created__incoming_image_with_caption")
    http.add(
        responses.GET,
        image["attachments"][0]["data_url"],
        body=b"\xff\xd8\xff" + b"\x00" * 100,
        content_type="image/jpeg",
    )
    payloads = [voice, image] + [
        load_fixture(n)
        for n in fixture_names()
        if n not in ("message_created__incoming_voice_note", "message_created__incoming_image_with_caption")
    ]
    for payload in payloads + payloads:  # everything twice, as Chatwoot sometimes does
        assert deliver(payload).status_code == 200
    run_archive(run_jobs)
    with db.transaction() as cur:
        cur.execute(
            "SELECT chatwoot_account_id, chatwoot_message_id, processing_status, gcs_storage_path FROM meeting_notes"
        )
        rows = cur.fetchall()
    created = {p["id"] for p in payloads if p["event"].startswith("message_created")}
    # An update whose create never came creates the message.
    messages = [
        p
        for p in payloads
        if p["event"].startswith("message_created")
        or (p["event"] == "message_updated" and p["id"] not in created)
    ]
    assert len(rows) == len(messages)
    assert {r["processing_status"] for r in rows} == {"stored"}
    account_1 = objects(bucket_of("account_1"))
    for payload in messages:
        if payload["account"]["id"] != 1:
            continue
        assert f"whatsapp-messages/{payload['created_at'][:10]}/{payload['id']}.json" in account_1
    assert "whatsapp-messages/2026-11-20/9877/5521.ogg" in account_1
    assert any(n.endswith("/5530.jpg") for n in account_1)
    # Account 789 is not the installation's (CHATWOOT_ACCOUNT_ID=1): its account id is in the name.
    assert list(objects(bucket_of("account_789"))) == [
        "whatsapp-messages/accounts/789/2025-01-30/test-message-123.json"
    ]
    # One object per message and attachment, whatever was delivered twice.
    assert len(account_1) == len([p for p in messages if p["account"]["id"] == 1]) + 2
