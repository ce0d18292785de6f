"""An attachment that could not be fetched, fetched again on an admin's request (CLI and admin API)."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from tests.helpers.archive import (
    PUBLIC_ADDRESS,
    attachments,
    ingest,
    note,
    objects,
    queued,
    run_archive,
    voice_note,
)

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS" + b"\x05" * 2500
FRONTEND = "https://app.example.com/rails/active_storage/blobs/redirect/eyJ5521--x/audioclip.ogg"
ADMIN = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture
def unavailable_voice_note(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]], run_jobs: Any, db: Any
) -> int:
    """A voice note whose audio sits on Chatwoot's FRONTEND_URL host, not allowed yet: the message
    is archived without it and its transcription finds no audio."""
    public_resolver["app.example.com"] = [PUBLIC_ADDRESS]
    http.add(responses.GET, FRONTEND, body=OGG, content_type="audio/ogg")
    payload = voice_note()
    payload["attachments"][0]["data_url"] = FRONTEND
    note_id = ingest(payload)
    run_archive(run_jobs)
    assert note(note_id)["processing_status"] == "stored"
    assert attachments(note_id)[0]["status"] == "unavailable"
    assert len(http.calls) == 0
    with db.transaction() as cur:  # what the transcription job records when there is no audio
        cur.execute(
            "UPDATE meeting_notes SET transcription_status = 'failed', error_details = 'no archived audio' "
            "WHERE id = %s",
            (note_id,),
        )
    return note_id


def allow_the_frontend_host(use_settings: Any, settings: Any) -> None:
    use_settings(media_allowed_hosts=(*settings.media_allowed_hosts, "app.example.com"))


def test_the_cli_fetches_an_unavailable_attachment_again(
    unavailable_voice_note: int, runner: Any, use_settings: Any, settings: Any, run_jobs: Any
) -> None:
    from app.archive import storage

    note_id = unavailable_voice_note
    allow_the_frontend_host(use_settings, settings)  # the operator's fix
    result = runner.invoke(args=["storage", "retry-attachments", str(note_id)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"queued: attachments 5521 of message {note_id}"
    assert f"archive-attachments_{note_id}" in queued("archive")
    run_archive(run_jobs)
    [att] = attachments(note_id)
    assert att["status"] == "stored" and att["error_details"] is None
    name = "whatsapp-messages/2026-11-20/9877/5521.ogg"
    assert objects(storage.bucket_name("account_1"))[name].download_as_bytes() == OGG
    # The audio is there now: the voice note is transcribed again.
    assert note(note_id)["transcription_status"] == "pending"
    assert f"transcribe_{note_id}" in queued("transcribe")
    # Nothing left to retry.
    again = runner.invoke(args=["storage", "retry-attachments", str(note_id)])
    assert again.exit_code == 1 and "no unavailable attachment" in again.output


def test_the_cli_refuses_an_unknown_message(runner: Any) -> None:
    result = runner.invoke(args=["storage", "retry-attachments", "424242"])
    assert result.exit_code == 1 and "no message 424242" in result.output


def test_the_admin_api_fetches_an_unavailable_attachment_again(
    unavailable_voice_note: int, client: Any, use_settings: Any, settings: Any, run_jobs: Any
) -> None:
    note_id = unavailable_voice_note
    url = f"/admin/messages/{note_id}/attachments/retry"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    bad = client.post(url, headers=ADMIN, json={"attachment_id": "five"})
    assert bad.status_code == 422 and bad.get_json()["error"] == "invalid"
    assert client.post(url, headers=ADMIN, data="[1]", content_type="application/json").status_code == 400
    missing = client.post("/admin/messages/424242/attachments/retry", headers=ADMIN)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert client.post(url, headers=ADMIN, json={"attachment_id": 1}).status_code == 409  # not that one

    allow_the_frontend_host(use_settings, settings)
    queued_now = client.post(url, headers=ADMIN, json={"attachment_id": 5521})
    assert queued_now.status_code == 202
    assert queued_now.get_json() == {"note_id": note_id, "attachments": [5521], "status": "queued"}
    conflict = client.post(url, headers=ADMIN)
    assert conflict.status_code == 409 and conflict.get_json()["error"] == "nothing_to_retry"
    run_archive(run_jobs)
    assert attachments(note_id)[0]["status"] == "stored"
