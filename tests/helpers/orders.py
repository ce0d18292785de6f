"""Helpers for the orders tests: messages from the fixtures, and a mocked Chatwoot API.

`add_note` writes a meeting_notes row as ingestion and the archive leave it (stored, waiting
for classification); the end-to-end tests in test_orders_flow.py go through the webhook instead.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

from tests.helpers.common import CHATWOOT_BASE_URL, CHATWOOT_TOKEN, add_note_row, load_fixture
from tests.helpers.common import add_user as common_add_user
from tests.helpers.common import note as common_note

MESSAGES_URL = re.compile(
    re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/(\d+)/conversations/(\d+)/messages$"
)
FIRST_MESSAGE_ID = 9882
"""Our first message gets the id the quick-reply fixture answers (in_reply_to 9882)."""

_ids = itertools.count(50_000)


def message(
    fixture: str = "message_created__incoming_text",
    *,
    content: str | None = None,
    message_id: int | None = None,
    created_at: datetime | None = None,
    in_reply_to: int | None = None,
    conversation_id: int | None = None,
    contact_id: int | None = None,
    can_reply: bool | None = None,
) -> dict[str, Any]:
    """A fixture payload with a fresh id and time (now, unless given), and the changes asked."""
    payload = copy.deepcopy(load_fixture(fixture))
    payload["id"] = message_id if message_id is not None else next(_ids)
    payload["created_at"] = (created_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    if content is not None:
        payload["content"] = content
    if in_reply_to is not None:
        payload.setdefault("content_attributes", {})["in_reply_to"] = in_reply_to
    if conversation_id is not None:
        payload["conversation"]["id"] = conversation_id
    if contact_id is not None:
        payload["sender"]["id"] = contact_id
        payload["conversation"]["meta"]["sender"]["id"] = contact_id
        payload["conversation"]["contact_inbox"]["contact_id"] = contact_id
    if can_reply is not None:
        payload["conversation"]["can_reply"] = can_reply
    return payload


def add_note(
    db: Any,
    payload: dict[str, Any],
    *,
    stored: bool = True,
    user_id: str | None = None,
    transcript: str | None = None,
    transcription_status: str | None = None,
    enqueue: bool = True,
) -> int:
    """The row ingestion writes, as the archive completes it (stored), then classification queued."""
    from app.jobs import CLASSIFY_MESSAGE
    from app.jobs import enqueue as enqueue_job

    state: dict[str, Any] = {"processing_status": "stored" if stored else "received", "user_id": user_id}
    if stored:
        state["stored_at"] = datetime.now(UTC)
    if transcript is not None:
        state["transcript"] = transcript
    if transcription_status or transcript:
        state["transcription_status"] = transcription_status or "done"
    note_id = add_note_row(payload, **state)
    if enqueue and common_note(note_id)["classification_status"] == "pending":
        enqueue_job(CLASSIFY_MESSAGE, note_id)
    return note_id


def note(db: Any, note_id: int) -> dict[str, Any]:
    return common_note(note_id)


def orders(db: Any) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM orders ORDER BY id")
        return [dict(r) for r in cur.fetchall()]


def outbox_rows(db: Any) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM outbox ORDER BY id")
        return [dict(r) for r in cur.fetchall()]


def conversation(db: Any, account_id: int = 1, conversation_id: int = 42) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM conversations WHERE chatwoot_account_id = %s AND chatwoot_conversation_id = %s",
            (account_id, conversation_id),
        )
        row = cur.fetchone()
        return dict(row) if row else None


def add_user(
    db: Any,
    user_id: str = "user-maria",
    *,
    notify: bool = False,
    language: str | None = None,
    contact_id: int | None = 287,
    account_id: int = 1,
) -> str:
    """A mapped user (with the bucket name the archive gives it), linked to the fixtures' contact."""
    common_add_user(user_id, notify=notify, language=language, contact_id=contact_id, account_id=account_id)
    return user_id


class ChatwootAPI:
    """Chatwoot's create/list messages endpoints, mocked with `responses`; keeps what was posted."""

    def __init__(self, rsps: responses.RequestsMock):
        self.rsps = rsps
        self.posted: list[dict[str, Any]] = []
        self.created: dict[int, list[dict[str, Any]]] = {}
        self.next_id = FIRST_MESSAGE_ID
        self.failures: list[tuple[Any, bool]] = []
        rsps.add_callback(responses.POST, MESSAGES_URL, callback=self._create)
        rsps.add_callback(responses.GET, MESSAGES_URL, callback=self._list)

    def fail_next(self, outcome: Any, applied: bool = False) -> None:
        """The next create call answers `outcome` (a status code, or raises it) instead."""
        self.failures.append((outcome, applied))

    def _create(self, request: Any) -> tuple[int, dict[str, str], str]:
        assert request.headers["api_access_token"] == CHATWOOT_TOKEN
        body = json.loads(request.body)
        conversation_id = int(MESSAGES_URL.match(request.url).group(2))
        self.posted.append(body)
        if self.failures:
            outcome, applied = self.failures.pop(0)
            if applied:  # Chatwoot kept the message, but its answer never reached us
                self._keep(conversation_id, body)
            if isinstance(outcome, BaseException):
                raise outcome
            return int(outcome), {"Retry-After": "0"}, json.dumps({"error": f"status {outcome}"})
        message = self._keep(conversation_id, body)
        return 200, {}, json.dumps(message)

    def _keep(self, conversation_id: int, body: dict[str, Any]) -> dict[str, Any]:
        message = {
            "id": self.next_id,
            "content": body["content"],
            "content_type": body.get("content_type", "text"),
            "content_attributes": body.get("content_attributes", {}),
            "message_type": 1,
            "private": body.get("private", False),
            "conversation_id": conversation_id,
            "created_at": int(datetime.now(UTC).timestamp()),
            "status": "sent",
        }
        self.next_id += 1
        self.created.setdefault(conversation_id, []).append(message)
        return message

    def _list(self, request: Any) -> tuple[int, dict[str, str], str]:
        conversation_id = int(MESSAGES_URL.match(request.url.split("?")[0]).group(2))
        return 200, {}, json.dumps({"meta": {}, "payload": self.created.get(conversation_id, [])})

    @property
    def contents(self) -> list[str]:
        return [b["content"] for b in self.posted]

    def create_calls(self) -> int:
        return sum(1 for c in self.rsps.calls if c.request.method == "POST")


@pytest.fixture(name="chatwoot_api")
def chatwoot_api_fixture(settings: Any) -> Iterator[ChatwootAPI]:
    """The Chatwoot API mocked; any other HTTP request (but the GCS emulator) fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if settings.storage_emulator_host:
            rsps.add_passthru(settings.storage_emulator_host)
        yield ChatwootAPI(rsps)


def older(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


class ChatModelStub:
    """A local OpenAI-compatible `/v1/chat/completions` server: answers queued replies, keeps requests."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, str]] = []
        self.default: tuple[int, str] = (500, "")

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                status, content = stub.replies.pop(0) if stub.replies else stub.default
                payload = (
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 1,
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                    if status == 200
                    else {"error": {"message": "stub failure", "type": "server_error"}}
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, content: str | dict[str, Any], status: int = 200) -> None:
        self.replies.append((status, content if isinstance(content, str) else json.dumps(content)))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="chat_model")
def chat_model_fixture(use_settings: Any) -> Iterator[ChatModelStub]:
    """OpenAI configured against the local stub (classifier and drafting models)."""
    stub = ChatModelStub()
    use_settings(
        openai_api_key="sk-test-key",
        openai_base_url=stub.base_url,
        classifier_model="classifier-test",
        generation_model="writer-test",
    )
    try:
        yield stub
    finally:
        stub.close()
