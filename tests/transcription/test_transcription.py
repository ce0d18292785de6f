"""Transcription of voice notes with the openai provider against a local Whisper API stub.

The archive's work is set up directly (row, attachment row, Ogg in the emulator's bucket); the
real PostgreSQL, Redis and GCS emulator do the rest. Only the Whisper API is a stub.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.transcription import TranscriptionError, TransientTranscriptionError, get_provider
from app.transcription.jobs import transcribe_message
from tests.helpers.transcription import (
    ATTACHMENT_ID,
    SENTENCE,
    Harness,
    Reply,
    chatwoot_transcribed_update,
    harness,
    speech,
)


@pytest.fixture
def h(db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Harness]:
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.openai()
        yield ready


# ---------------------------------------------------------------------------------------------
# the request the provider sends


def test_openai_request_is_multipart_with_ogg_name_model_and_language(h: Harness, tmp_path: Path) -> None:
    clip = tmp_path / "5521.oga"  # what mimetypes calls audio/ogg; the upload must say .ogg
    clip.write_bytes(speech(SENTENCE))
    h.stub.default_text = " Call the dentist tomorrow. "
    provider = get_provider(h.openai())
    assert provider is not None and provider.name == "openai"
    result = provider.transcribe(clip, language="pt")

    assert result.text == "Call the dentist tomorrow."
    assert result.provider == "openai" and result.model == "whisper-1" and result.language == "pt"
    assert result.audio_seconds is not None and 4 < result.audio_seconds < 10
    (upload,) = h.stub.uploads
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.headers["authorization"] == "Bearer sk-test-transcription-key"
    assert upload.filename == "5521.ogg"
    assert upload.file_content_type == "audio/ogg"
    assert upload.data == clip.read_bytes()
    assert upload.fields["model"] == "whisper-1"
    assert upload.fields["language"] == "pt"
    assert upload.fields["response_format"] == "json"


def test_no_language_field_when_the_language_is_unknown(h: Harness, tmp_path: Path) -> None:
    clip = tmp_path / "a.ogg"
    clip.write_bytes(speech(SENTENCE))
    provider = get_provider(h.openai())
    assert provider is not None
    provider.transcribe(clip, language=None)
    assert "language" not in h.stub.uploads[0].fields


def test_model_key_and_base_url_come_from_the_settings(h: Harness, tmp_path: Path) -> None:
    settings = h.openai(openai_api_key="gsk-other", transcription_model="whisper-large-v3-turbo")
    clip = tmp_path / "a.ogg"
    clip.write_bytes(speech(SENTENCE))
    provider = get_provider(settings)
    assert provider is not None
    provider.transcribe(clip, language=None)
    assert h.stub.uploads[0].fields["model"] == "whisper-large-v3-turbo"
    assert h.stub.uploads[0].headers["authorization"] == "Bearer gsk-other"


@pytest.mark.parametrize(
    ("status", "transient"),
    [(400, False), (401, False), (404, False), (413, False), (429, True), (500, True), (503, True)],
)
def test_provider_errors_are_sorted_by_what_a_retry_can_do(
    h: Harness, tmp_path: Path, status: int, transient: bool
) -> None:
    clip = tmp_path / "a.ogg"
    clip.write_bytes(speech(SENTENCE))
    h.stub.script = [Reply(status, {"error": {"message": f"problem {status}", "type": "x"}})]
    provider = get_provider(h.openai())
    assert provider is not None
    with pytest.raises(TranscriptionError) as caught:
        provider.transcribe(clip, language=None)
    assert isinstance(caught.value, TransientTranscriptionError) is transient
    assert f"HTTP {status}: problem {status}" in str(caught.value)
    assert len(h.stub.uploads) == 1  # the client's own retries are off: the job decides


# ---------------------------------------------------------------------------------------------
# the job


def test_job_stores_transcript_row_object_record_and_hands_over_to_classification(h: Harness) -> None:
    voice = speech(SENTENCE)
    note = h.note(voice, user_language="es", conversation_language="pt")
    h.stub.default_text = "Recordar llamar al dentista mañana."

    assert transcribe_message(note.id) == "done"

    row = h.row(note)
    assert row["transcription_status"] == "done"
    assert row["transcript"] == "Recordar llamar al dentista mañana."
    assert row["error_details"] is None
    (upload,) = h.stub.uploads
    assert upload.data == voice  # the archived copy, read from GCS
    assert upload.filename == f"{ATTACHMENT_ID}.ogg"
    assert upload.fields["language"] == "es"  # the user's own language wins over the conversation's

    record = h.record(note)
    assert record is not None
    assert (record["status"], record["provider"], record["model"]) == ("done", "openai", "whisper-1")
    assert record["language"] == "es"
    assert 4 < float(record["audio_seconds"]) < 10
    assert record["provider_seconds"] is not None and float(record["provider_seconds"]) >= 0
    assert (record["pieces"], record["provider_calls"]) == (1, 1)
    assert record["cost_per_minute"] == Decimal("0.006")
    expected = (record["audio_seconds"] / 60 * Decimal("0.006")).quantize(Decimal("0.000001"))
    assert record["estimated_cost"] == expected
    assert record["gcs_storage_path"] == f"gs://{note.bucket}/{note.transcript_object}"

    doc = h.transcript_object(note)
    assert doc is not None
    assert doc["text"] == "Recordar llamar al dentista mañana."
    assert (doc["provider"], doc["model"], doc["language"]) == ("openai", "whisper-1", "es")
    assert doc["meeting_note_id"] == note.id and doc["chatwoot_message_id"] == "9877"
    assert doc["attachment_ids"] == [ATTACHMENT_ID]

    assert h.queued("classify") == [f"classify_{note.id}"]


def test_conversation_language_is_the_hint_when_the_user_has_none(h: Harness) -> None:
    note = h.note(conversation_language="pt")
    transcribe_message(note.id)
    assert h.stub.uploads[0].fields["language"] == "pt"


def test_job_run_twice_makes_one_provider_call_and_one_transcript(h: Harness) -> None:
    note = h.note()
    h.stub.script = [Reply(body={"text": "first answer"}), Reply(body={"text": "second answer"})]

    assert transcribe_message(note.id) == "done"
    generation = h.gcs.bucket(note.bucket).get_blob(note.transcript_object).generation
    assert transcribe_message(note.id) == "already_done"

    assert len(h.stub.uploads) == 1
    assert h.row(note)["transcript"] == "first answer"
    assert h.gcs.bucket(note.bucket).get_blob(note.transcript_object).generation == generation
    record = h.record(note)
    assert record is not None and record["provider_calls"] == 1


def test_two_runs_at_once_make_one_provider_call(h: Harness) -> None:
    from app import context

    note = h.note()
    h.stub.script = [Reply(body={"text": "only once"}, delay=1.0)]
    outcomes: list[str] = []

    def run() -> None:
        try:
            outcomes.append(transcribe_message(note.id))
        finally:
            context.db().close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(outcomes) == ["done", "in_progress"]
    assert len(h.stub.uploads) == 1
    assert h.row(note)["transcript"] == "only once"


def test_a_transcript_object_left_by_a_stopped_run_stays_the_transcript(h: Harness) -> None:
    from app.archive import storage

    note = h.note()
    # A run that wrote the object, then died before its database transaction.
    storage.put_json(
        h.gcs.bucket(note.bucket),
        note.transcript_object,
        {
            "text": "written before the crash",
            "provider": "openai",
            "model": "whisper-1",
            "audio_seconds": 6.2,
        },
    )
    h.stub.default_text = "heard again"
    assert transcribe_message(note.id) == "done"
    # The archive is append-only: the row says what the object says.
    assert h.row(note)["transcript"] == "written before the crash"
    assert h.transcript_object(note)["text"] == "written before the crash"  # type: ignore[index]
    record = h.record(note)
    assert record is not None and record["gcs_storage_path"] == f"gs://{note.bucket}/{note.transcript_object}"


def test_a_finished_note_missing_its_object_gets_it_on_the_next_run(h: Harness) -> None:
    note = h.note()
    h.stub.default_text = "Buy bread."
    transcribe_message(note.id)
    h.gcs.bucket(note.bucket).blob(note.transcript_object).delete()
    with h.db.transaction() as cur:
        cur.execute(
            "UPDATE transcriptions SET gcs_storage_path = NULL WHERE meeting_note_id = %s", (note.id,)
        )

    assert transcribe_message(note.id) == "already_done"

    assert h.transcript_object(note)["text"] == "Buy bread."  # type: ignore[index]
    assert len(h.stub.uploads) == 1


def test_429_then_200_is_retried_and_done(h: Harness) -> None:
    note = h.note()
    h.stub.script = [
        Reply(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, {"Retry-After": "0"}),
        Reply(body={"text": "after the rate limit"}),
    ]
    assert transcribe_message(note.id) == "done"
    assert len(h.stub.uploads) == 2
    assert h.row(note)["transcript"] == "after the rate limit"
    record = h.record(note)
    assert record is not None and record["provider_calls"] == 2


def test_a_timeout_is_retried(h: Harness) -> None:
    h.openai(transcription_timeout=1)
    note = h.note()
    h.stub.script = [Reply(body={"text": "too late"}, delay=2.5), Reply(body={"text": "in time"})]
    assert transcribe_message(note.id) == "done"
    assert h.row(note)["transcript"] == "in time"


def test_500s_until_the_last_attempt_mark_the_note_failed_with_the_reason(h: Harness) -> None:
    h.openai(transcription_max_attempts=3)
    note = h.note()
    h.stub.responder = lambda upload: Reply(500, {"error": {"message": "The server had an error"}})

    assert transcribe_message(note.id) == "failed"

    assert len(h.stub.uploads) == 3
    row = h.row(note)
    assert row["transcription_status"] == "failed" and row["transcript"] is None
    assert "gave up after 3 calls" in row["error_details"]
    assert "HTTP 500: The server had an error" in row["error_details"]
    record = h.record(note)
    assert record is not None and record["status"] == "failed" and record["provider_calls"] == 3
    assert record["estimated_cost"] == 0
    assert h.transcript_object(note) is None
    # A voice note without text is still a message to classify (as a note).
    assert h.queued("classify") == [f"classify_{note.id}"]
    # Final: running the job again calls nobody.
    assert transcribe_message(note.id) == "already_failed"
    assert len(h.stub.uploads) == 3


def test_400_is_final_after_one_call(h: Harness) -> None:
    note = h.note()
    h.stub.responder = lambda upload: Reply(
        400, {"error": {"message": "Invalid file format.", "type": "invalid_request_error"}}
    )
    assert transcribe_message(note.id) == "failed"
    assert len(h.stub.uploads) == 1
    row = h.row(note)
    assert row["transcription_status"] == "failed"
    assert row["error_details"] == "transcription (openai): HTTP 400: Invalid file format."


def test_provider_none_skips_without_sending_anything(h: Harness) -> None:
    h.use_settings(transcription_provider="none")
    note = h.note()
    assert transcribe_message(note.id) == "skipped"
    row = h.row(note)
    assert row["transcription_status"] == "skipped" and row["transcript"] is None
    assert h.stub.uploads == []
    record = h.record(note)
    assert record is not None and (record["status"], record["provider"]) == ("skipped", "none")
    assert h.transcript_object(note) is None
    assert h.queued("classify") == [f"classify_{note.id}"]


def test_audio_the_archive_could_not_fetch_fails_with_the_archive_reason(h: Harness) -> None:
    note = h.note(attachment_status="missing")
    assert transcribe_message(note.id) == "failed"
    row = h.row(note)
    assert row["error_details"].startswith("no archived audio to transcribe: attachment 5521 missing")
    assert "404" in row["error_details"]
    assert h.stub.uploads == []


def test_archived_audio_gone_from_the_bucket_fails_clearly(h: Harness) -> None:
    note = h.note()
    h.gcs.bucket(note.bucket).blob(note.audio_object).delete()
    assert transcribe_message(note.id) == "failed"
    assert h.row(note)["error_details"] == (
        f"transcription (openai): the archived audio gs://{note.bucket}/{note.audio_object} is missing"
    )


def test_a_note_not_archived_yet_is_left_pending(h: Harness) -> None:
    note = h.note()
    with h.db.transaction() as cur:
        cur.execute("UPDATE meeting_notes SET processing_status = 'received' WHERE id = %s", (note.id,))
    assert transcribe_message(note.id) == "not_archived"
    assert h.row(note)["transcription_status"] == "pending"
    assert h.stub.uploads == []


def test_text_messages_and_missing_rows_are_left_alone(h: Harness) -> None:
    note = h.note()
    with h.db.transaction() as cur:
        cur.execute("UPDATE meeting_notes SET transcription_status = 'not_needed' WHERE id = %s", (note.id,))
    assert transcribe_message(note.id) == "not_needed"
    assert transcribe_message(999_999) == "gone"
    assert h.stub.uploads == []


# ---------------------------------------------------------------------------------------------
# Chatwoot's own transcript


def test_chatwoot_transcript_arriving_first_is_used_and_whisper_skipped(h: Harness) -> None:
    note = h.note()
    h.add_update(note, chatwoot_transcribed_update("  Chatwoot heard this.  "), "fp-transcribed")

    assert transcribe_message(note.id) == "done"

    assert h.stub.uploads == []
    row = h.row(note)
    assert (row["transcription_status"], row["transcript"]) == ("done", "Chatwoot heard this.")
    record = h.record(note)
    assert record is not None
    assert (record["provider"], record["provider_calls"], record["estimated_cost"]) == ("chatwoot", 0, 0)
    doc = h.transcript_object(note)
    assert doc is not None and (doc["provider"], doc["text"]) == ("chatwoot", "Chatwoot heard this.")
    assert h.queued("classify") == [f"classify_{note.id}"]


def test_chatwoot_transcript_in_the_created_message_itself_is_used(h: Harness) -> None:
    """An update that arrived before its create makes the row from the update's payload."""
    note = h.note(payload=chatwoot_transcribed_update("From the first payload."))
    assert transcribe_message(note.id) == "done"
    assert h.stub.uploads == []
    assert h.row(note)["transcript"] == "From the first payload."


def test_chatwoot_transcript_arriving_after_ours_does_not_replace_it(h: Harness) -> None:
    note = h.note()
    h.stub.default_text = "Ours came first."
    transcribe_message(note.id)
    h.add_update(note, chatwoot_transcribed_update("Chatwoot's, later."), "fp-later")

    assert transcribe_message(note.id) == "already_done"

    assert h.row(note)["transcript"] == "Ours came first."
    record = h.record(note)
    assert record is not None and record["provider"] == "openai"
    doc = h.transcript_object(note)
    assert doc is not None and doc["text"] == "Ours came first."
    assert len(h.stub.uploads) == 1


def test_chatwoot_transcript_of_only_some_of_the_audio_is_not_enough(h: Harness) -> None:
    payload = chatwoot_transcribed_update("Only the first one.")
    second = dict(payload["attachments"][0], id=5522, transcribed_text="")
    payload["attachments"].append(second)
    note = h.note(payload=payload)
    h.stub.default_text = "Ours, for all of it."
    assert transcribe_message(note.id) == "done"
    assert len(h.stub.uploads) == 1
    assert h.row(note)["transcript"] == "Ours, for all of it."


def test_an_empty_chatwoot_transcript_does_not_count(h: Harness) -> None:
    note = h.note()
    h.add_update(note, chatwoot_transcribed_update("   "), "fp-empty")
    assert transcribe_message(note.id) == "done"
    assert len(h.stub.uploads) == 1


# ---------------------------------------------------------------------------------------------
# audio over the provider's limit


def test_audio_over_the_limit_is_split_and_transcribed_in_order(h: Harness) -> None:
    long_note = speech(
        "The quarterly budget meeting moved to Thursday afternoon because the finance team is traveling."
        " | Remember to order three hundred blue notebooks for the new interns next month.",
        pause_seconds=1.0,
    )
    h.openai(transcription_max_upload_bytes=30_000)  # about 6 s of speech per piece
    assert len(long_note) > 30_000
    note = h.note(long_note)
    h.stub.transcribe_with_local_model()

    assert transcribe_message(note.id) == "done"

    assert len(h.stub.uploads) >= 2
    for upload in h.stub.uploads:
        assert len(upload.data) <= 30_000
        assert upload.filename is not None and upload.filename.endswith(".ogg")
        assert upload.data[:4] == b"OggS"
    text = h.row(note)["transcript"].lower()
    assert "budget" in text and "notebooks" in text
    assert text.index("budget") < text.index("notebooks")  # pieces in order
    record = h.record(note)
    assert record is not None and record["pieces"] == len(h.stub.uploads)
    assert 10 < float(record["audio_seconds"]) < 20


def test_audio_that_cannot_be_split_small_enough_is_refused_clearly(h: Harness) -> None:
    h.openai(transcription_max_upload_bytes=4_096)
    voice = speech(SENTENCE)
    assert len(voice) > 4_096
    note = h.note(voice)
    assert transcribe_message(note.id) == "failed"
    details = h.row(note)["error_details"]
    assert "over the provider's limit of 4096 bytes" in details
    assert "TRANSCRIPTION_MAX_UPLOAD_BYTES" in details
    assert h.stub.uploads == []


def test_a_type_the_provider_does_not_take_is_converted_to_ogg(h: Harness) -> None:
    aiff = speech(SENTENCE, suffix=".aiff")
    note = h.note(aiff, audio_name="5521.aiff", content_type="audio/aiff")
    assert transcribe_message(note.id) == "done"
    (upload,) = h.stub.uploads
    assert upload.filename is not None and upload.filename.endswith(".ogg")
    assert upload.data[:4] == b"OggS"


def test_unreadable_audio_over_the_limit_is_refused_with_ffmpeg_reason(h: Harness) -> None:
    h.openai(transcription_max_upload_bytes=200_000)
    note = h.note(b"OggS" + b"\x00garbage" * 40_000)
    assert transcribe_message(note.id) == "failed"
    assert "ffmpeg could not read the audio" in h.row(note)["error_details"]
    assert h.stub.uploads == []


# ---------------------------------------------------------------------------------------------
# the private note for agents


def test_transcript_private_note_is_recorded_once_in_the_outbox(h: Harness) -> None:
    h.openai(transcript_private_note=True)
    note = h.note()
    h.stub.default_text = "Buy bread for dinner."
    transcribe_message(note.id)
    transcribe_message(note.id)

    with h.db.transaction() as cur:
        cur.execute("SELECT * FROM outbox")
        rows = cur.fetchall()
    assert len(rows) == 1
    (row,) = rows
    assert (row["kind"], row["dedupe_key"]) == ("transcript", f"transcript:{note.id}")
    assert (row["chatwoot_account_id"], row["chatwoot_conversation_id"]) == (1, 42)
    assert row["body"]["private"] is True
    assert row["body"]["content"] == "Voice note transcript:\n\nBuy bread for dinner."
    assert h.queued("send") == [f"send_{row['id']}"]


def test_no_private_note_unless_asked(h: Harness) -> None:
    note = h.note()
    transcribe_message(note.id)
    with h.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM outbox")
        assert cur.fetchone()["n"] == 0


# ---------------------------------------------------------------------------------------------
# the monitoring query and the worker's start


def test_per_day_query_runs_unchanged_with_psql(h: Harness, services: Any) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql (the PostgreSQL client) is not installed: cannot run the file as an admin would")
    note = h.note()
    transcribe_message(note.id)
    sql_file = Path(__file__).resolve().parents[2] / "sql" / "20_transcription_per_day.sql"
    out = subprocess.run(
        [
            psql,
            services.env["DATABASE_URL"],
            "-X",
            "-A",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(sql_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    header = lines[0].split("|")
    assert header == [
        "day", "provider", "transcribed", "failed", "skipped", "audio_minutes", "provider_minutes",
        "real_time_factor", "estimated_cost_usd",
    ]  # fmt: skip
    rows = [dict(zip(header, line.split("|"), strict=True)) for line in lines[1:-1]]
    assert [r["provider"] for r in rows] == ["all", "openai"]
    assert rows[1]["transcribed"] == "1"
    assert 0.05 < float(rows[1]["audio_minutes"]) < 0.2
    assert Decimal(rows[1]["estimated_cost_usd"]) == Decimal("0.0006")  # ~6 s at 0.006 a minute


@pytest.fixture
def worker_start(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Worker pools that record how they were made instead of starting processes."""
    import workers.__main__ as entry

    started: list[tuple[Any, ...]] = []

    class Pool:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started.append((args, kwargs))

        def start(self, **kwargs: Any) -> None:
            return None

    # Whichever pool class the entry point uses, none starts: only the start-up is under test.
    monkeypatch.setattr("rq.worker_pool.WorkerPool", Pool)
    for module in (entry, importlib.import_module("workers.metered")):
        for name in dir(module):
            if name.endswith("WorkerPool"):
                monkeypatch.setattr(module, name, Pool)
    monkeypatch.setattr("app.logs.configure_logging", lambda *a, **k: None)
    return started


def test_the_worker_names_the_provider_and_model_at_start(
    h: Harness, caplog: pytest.LogCaptureFixture, worker_start: list[tuple[Any, ...]]
) -> None:
    import workers.__main__ as entry

    h.openai(transcription_model="whisper-1")
    with caplog.at_level("INFO", logger="workers"):
        assert entry.main(["--queues", "transcribe", "--processes", "1"]) == 0
    record = next(r for r in caplog.records if r.getMessage() == "worker starting")
    assert record.transcription_provider == "openai"  # type: ignore[attr-defined]
    assert record.transcription_model == "whisper-1"  # type: ignore[attr-defined]
    assert record.transcription_server == h.stub.base_url  # type: ignore[attr-defined]
    (args, kwargs) = worker_start[0]
    assert args[0] == ["transcribe"] and kwargs["num_workers"] == 1


@pytest.mark.parametrize(("provider", "serves_transcribe"), [("none", True), ("openai", False)])
def test_general_workers_also_skip_voice_notes_when_there_is_no_provider(
    h: Harness, worker_start: list[tuple[Any, ...]], provider: str, serves_transcribe: bool
) -> None:
    import workers.__main__ as entry

    h.openai(transcription_provider=provider)
    assert entry.main(["--processes", "1"]) == 0
    (args, _kwargs) = worker_start[0]
    assert ("transcribe" in args[0]) is serves_transcribe
    from app.jobs import GENERAL_QUEUES

    assert args[0][: len(GENERAL_QUEUES)] == list(GENERAL_QUEUES)


def test_local_provider_without_faster_whisper_stops_the_transcription_worker(
    h: Harness, worker_start: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    import importlib.util

    import workers.__main__ as entry

    h.use_settings(transcription_provider="local", local_whisper_model=str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "faster_whisper" else real_find_spec(name, *a),
    )
    assert entry.main(["--queues", "transcribe", "--processes", "1"]) == 2
    assert "TRANSCRIPTION_PROVIDER=local needs faster-whisper" in capsys.readouterr().err
    assert worker_start == []
