"""The records tests: a user's archive written by the service's own jobs, and the GCS requests
the service sends (the emulators keep neither holds nor, for fake-gcs-server, lifecycle rules)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

from tests.helpers import archive as archive_helpers
from tests.helpers.archive import ingest, mock_attachment, text_message, voice_note
from tests.helpers.common import add_user

BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def records_env(archive_env: Any, http: responses.RequestsMock, public_resolver: Any) -> Any:
    """Empty tables, Redis and emulator; Chatwoot's media mocked; the audit buffer empty."""
    from app.ingest import audit

    audit.flush()
    return archive_env


@dataclass
class Archive:
    user_id: str
    contact_id: int
    note_ids: list[int] = field(default_factory=list)
    voice_ids: list[int] = field(default_factory=list)


def archive_user(
    http: responses.RequestsMock,
    user_id: str,
    contact_id: int,
    *,
    texts: int,
    voice_notes: int = 0,
    audio: bytes = b"OggS" + bytes(range(256)) * 8,
    language: str | None = None,
    start: datetime = BASE_TIME,
    content: Callable[[int], str] = lambda i: f"note number {i} about the quarterly plan",
    account_id: int = 1,
) -> Archive:
    """A user whose messages went through ingestion, the archive job and (voice notes) the
    transcription job, with Chatwoot's own transcript; one message a minute from `start`."""
    from app.archive.batch import archive_message
    from app.transcription.jobs import transcribe_message

    add_user(user_id, contact_id=contact_id, language=language, account_id=account_id)
    made = Archive(user_id, contact_id)
    first_id = contact_id * 100_000
    for i in range(texts):
        payload = text_message(
            first_id + i,
            contact_id=contact_id,
            account_id=account_id,
            content=content(i),
            created_at=(start + timedelta(minutes=i)).isoformat(),
            phone=None,
        )
        note_id = ingest(payload, enqueue=False)
        assert archive_message(note_id) == "stored"
        made.note_ids.append(note_id)
    for j in range(voice_notes):
        attachment_id = first_id + 50_000 + j
        payload = copy.deepcopy(voice_note(first_id + 60_000 + j, attachment_id, contact_id))
        payload["account"] = {"id": account_id, "name": "Test"}
        payload["created_at"] = (start + timedelta(minutes=texts + j)).isoformat()
        payload["attachments"][0]["transcribed_text"] = f"voice note {j} says the budget is approved"
        mock_attachment(http, attachment_id, "audioclip.ogg", audio + str(j).encode(), "audio/ogg")
        note_id = ingest(payload, enqueue=False)
        assert archive_message(note_id) == "stored"
        transcribe_message(note_id)
        made.note_ids.append(note_id)
        made.voice_ids.append(note_id)
    return made


class GcsRequests:
    """Every request the service's GCS client sends, with its JSON body (passed on unchanged)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def request(method: str, url: str, data: Any = None, **kwargs: Any) -> Any:
            body: Any = None
            if isinstance(data, bytes | str) and data[:1] in (b"{", "{"):
                body = json.loads(data)
            self.calls.append((method, url, body))
            return original(method, url, data=data, **kwargs)

        return request

    def patches(self, fragment: str = "") -> list[tuple[str, Any]]:
        return [(url, body) for method, url, body in self.calls if method == "PATCH" and fragment in url]


@pytest.fixture
def gcs_requests(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsRequests]:
    from app import context

    recorder = GcsRequests()
    client = context.gcs()
    monkeypatch.setattr(client._http, "request", recorder(client._http.request))
    yield recorder


@pytest.fixture
def metadata_emulator(records_env: Any, use_settings: Any, http: responses.RequestsMock) -> Iterator[str]:
    """A gcp-storage-emulator of the test's own as the service's GCS (it keeps lifecycle rules)."""
    with archive_helpers.metadata_emulator() as url:
        http.add_passthru(url)
        use_settings(storage_emulator_host=url)
        yield url
