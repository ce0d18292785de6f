"""Helpers for the orders tests: messages from the fixtures, and a stand-in Chatwoot API.

`add_note` writes a meeting_notes row as ingestion and the archive leave it (stored, waiting
for classification); the end-to-end tests in test_orders_flow.py go through the webhook instead.

`ChatwootAPI` behaves as Chatwoot does where the service depends on it:
- tokens (`app/controllers/concerns/access_token_auth_helper.rb`): a user's token may do
  everything; an agent bot's may create messages and show conversations, and gets 401 "Access
  to this endpoint is not authorized for bots" anywhere else (listing messages or conversations,
  the profile); any other token gets 401 "Invalid Access Token";
- what it creates comes back as webhooks built like `Message#webhook_data` (`webhook()`),
  including the web widget's answer (`widget_select()`: `submitted_values` set on our own
  `input_select` message, `Api::V1::Widget::MessagesController#update`) and WhatsApp's refusal
  (`whatsapp_refuse()`: `content_attributes.external_error`, `Whatsapp::IncomingMessageBaseService
  #update_message_with_status`), never as a new incoming message;
- `template_params` are kept in `additional_attributes` (`Messages::MessageBuilder#template_params`).
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

from tests.helpers.common import (
    CHATWOOT_BASE_URL,
    CHATWOOT_BOT_TOKEN,
    CHATWOOT_TOKEN,
    add_note_row,
    load_fixture,
)
from tests.helpers.common import add_user as common_add_user
from tests.helpers.common import note as common_note

MESSAGES_URL = re.compile(
    re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/(\d+)/conversations/(\d+)/messages(?:\?.*)?$"
)
CONVERSATIONS_URL = re.compile(
    re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/(\d+)/conversations(?:\?.*)?$"
)
CONVERSATION_URL = re.compile(re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/(\d+)/conversations/(\d+)$")
PROFILE_URL = re.compile(re.escape(CHATWOOT_BASE_URL) + r"/api/v1/profile$")
BOT_REFUSAL = {"error": "Access to this endpoint is not authorized for bots"}
INVALID_TOKEN = {"error": "Invalid Access Token"}
BOT = {"id": 3, "name": "Pacelane Bot", "type": "agent_bot"}
"""AgentBot#webhook_data of the bot whose token sends our messages."""
AGENT = {"id": 5, "name": "Ana Ops", "email": "ana@example.com", "type": "user"}
"""User#webhook_data of the user whose access token is CHATWOOT_TOKEN."""
CHANNEL_FIXTURES = {
    "whatsapp": "message_created__outgoing_bot_quick_reply",
    "web_widget": "message_updated__web_widget_submitted_values",
}
"""The conversation (Conversation#webhook_data) each channel's webhooks are built on."""
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
    """Chatwoot's Application API, as the service uses it, mocked with `responses`."""

    def __init__(
        self,
        rsps: responses.RequestsMock,
        user_tokens: tuple[str, ...] = (CHATWOOT_TOKEN,),
        bot_tokens: tuple[str, ...] = (CHATWOOT_BOT_TOKEN,),
    ):
        self.rsps = rsps
        self.user_tokens = set(user_tokens)
        self.bot_tokens = set(bot_tokens)
        self.accounts = {1}
        """Accounts the tokens belong to (EnsureCurrentAccountHelper refuses the others)."""
        self.posted: list[dict[str, Any]] = []
        self.created: dict[int, list[dict[str, Any]]] = {}
        self.channels: dict[int, str] = {}
        """Channel of a conversation (`whatsapp` unless set): which webhook shape it gets."""
        self.next_id = FIRST_MESSAGE_ID
        self.failures: list[tuple[Any, bool]] = []
        rsps.add_callback(responses.POST, MESSAGES_URL, callback=self._create)
        rsps.add_callback(responses.GET, MESSAGES_URL, callback=self._list)
        rsps.add_callback(responses.GET, CONVERSATIONS_URL, callback=self._conversations)
        rsps.add_callback(responses.GET, CONVERSATION_URL, callback=self._conversation)
        rsps.add_callback(responses.GET, PROFILE_URL, callback=self._profile)

    def fail_next(self, outcome: Any, applied: bool = False) -> None:
        """The next create call answers `outcome` (a status code, or raises it) instead."""
        self.failures.append((outcome, applied))

    # -- tokens, as access_token_auth_helper.rb sorts them -------------------------------------

    def _refused(self, request: Any, bots_may: bool) -> tuple[int, dict[str, str], str] | None:
        token = request.headers.get("api_access_token")
        if token not in self.user_tokens | self.bot_tokens:
            return 401, {}, json.dumps(INVALID_TOKEN)
        bot = token in self.bot_tokens
        if bot and not bots_may:
            return 401, {}, json.dumps(BOT_REFUSAL)
        account = re.search(r"/api/v1/accounts/(\d+)/", request.url)
        if account and int(account.group(1)) not in self.accounts:
            who = "Bot is" if bot else "You are"
            return 401, {}, json.dumps({"error": f"{who} not authorized to access this account"})
        return None

    def _sender(self, request: Any) -> dict[str, Any]:
        return BOT if request.headers.get("api_access_token") in self.bot_tokens else AGENT

    # -- endpoints ------------------------------------------------------------------------------

    def _create(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request, bots_may=True)
        if refused:
            return refused
        body = json.loads(request.body)
        conversation_id = int(MESSAGES_URL.match(request.url).group(2))
        self.posted.append(body)
        if self.failures:
            outcome, applied = self.failures.pop(0)
            if applied:  # Chatwoot kept the message, but its answer never reached us
                self._keep(conversation_id, body, self._sender(request))
            if isinstance(outcome, BaseException):
                raise outcome
            return int(outcome), {"Retry-After": "0"}, json.dumps({"error": f"status {outcome}"})
        message = self._keep(conversation_id, body, self._sender(request))
        return 200, {}, json.dumps(self._listed(message))

    def _keep(
        self, conversation_id: int, body: dict[str, Any], sender: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message = {
            "id": self.next_id,
            "content": body["content"],
            "content_type": body.get("content_type", "text"),
            "content_attributes": dict(body.get("content_attributes", {})),
            "additional_attributes": (
                {"template_params": body["template_params"]} if body.get("template_params") else {}
            ),
            "message_type": 1,
            "private": body.get("private", False),
            "conversation_id": conversation_id,
            "created_at": int(datetime.now(UTC).timestamp()),
            "status": "sent",
            "source_id": None,
            "sender": sender or BOT,
        }
        self.next_id += 1
        self.created.setdefault(conversation_id, []).append(message)
        return message

    @staticmethod
    def _listed(message: dict[str, Any]) -> dict[str, Any]:
        """A message as the API answers it (the list's format: integer type, unix time)."""
        return {k: v for k, v in message.items() if k != "sender"} | {"sender": message["sender"]}

    def _list(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request, bots_may=False)
        if refused:
            return refused
        conversation_id = int(MESSAGES_URL.match(request.url.split("?")[0]).group(2))
        listed = [self._listed(m) for m in self.created.get(conversation_id, [])]
        return 200, {}, json.dumps({"meta": {}, "payload": listed})

    def _conversations(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request, bots_may=False)
        if refused:
            return refused
        return 200, {}, json.dumps({"data": {"meta": {}, "payload": []}})

    def _conversation(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request, bots_may=True)  # `show` is a bot endpoint since 4.15
        if refused:
            return refused
        conversation_id = int(CONVERSATION_URL.match(request.url.split("?")[0]).group(2))
        return 200, {}, json.dumps({"id": conversation_id, "account_id": 1, "inbox_id": 4})

    def _profile(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refused(request, bots_may=False)
        if refused:
            return refused
        return (
            200,
            {},
            json.dumps(
                {
                    **AGENT,
                    "accounts": [{"id": 1, "name": "Pacelane", "role": "administrator", "status": "active"}],
                }
            ),
        )

    # -- what comes back by webhook ---------------------------------------------------------------

    def message(self, message_id: int) -> dict[str, Any]:
        for messages in self.created.values():
            for found in messages:
                if found["id"] == message_id:
                    return found
        raise KeyError(message_id)

    def webhook(self, message_id: int, event: str = "message_created") -> dict[str, Any]:
        """`Message#webhook_data` of one of the messages created, merged with `event`."""
        message = self.message(message_id)
        channel = self.channels.get(message["conversation_id"], "whatsapp")
        shape = copy.deepcopy(load_fixture(CHANNEL_FIXTURES[channel]))
        conversation = shape["conversation"]
        conversation["id"] = message["conversation_id"]
        push = {**copy.deepcopy(conversation["messages"][0]), **self._listed(message)}
        push["sender"] = {**message["sender"], "avatar_url": ""}
        push["sender_type"] = "AgentBot" if message["sender"]["type"] == "agent_bot" else "User"
        push["sender_id"] = message["sender"]["id"]
        conversation["messages"] = [push]
        created = datetime.fromtimestamp(message["created_at"], UTC)
        return {
            "account": shape["account"],
            "additional_attributes": message["additional_attributes"],
            "content_attributes": message["content_attributes"],
            "content_type": message["content_type"],
            "content": message["content"],
            "conversation": conversation,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "id": message["id"],
            "inbox": shape["inbox"],
            "message_type": "outgoing",
            "private": message["private"],
            "sender": message["sender"],
            "source_id": message["source_id"],
            "event": event,
        }

    def widget_select(self, message_id: int, title: str) -> dict[str, Any]:
        """The web widget's visitor picks an option of our `input_select` message: the widget
        PATCHes it with `submitted_values: [{title, value}]` (the item as sent), and Chatwoot
        sends `message_updated` of our outgoing message; no incoming message is created."""
        message = self.message(message_id)
        [item] = [i for i in message["content_attributes"]["items"] if i["title"] == title]
        message["content_attributes"]["submitted_values"] = [dict(item)]
        return self.webhook(message_id, "message_updated")

    def whatsapp_refuse(
        self, message_id: int, code: int = 131047, title: str = "Re-engagement message"
    ) -> dict[str, Any]:
        """WhatsApp's failed status for our message: `external_error` is "<code>: <title>", the
        status `failed` (never in the webhook), and `message_updated` is sent."""
        message = self.message(message_id)
        message["source_id"] = message["source_id"] or f"wamid.HBgN{message_id}"
        message["status"] = "failed"
        message["content_attributes"]["external_error"] = f"{code}: {title}"
        return self.webhook(message_id, "message_updated")

    @property
    def contents(self) -> list[str]:
        return [b["content"] for b in self.posted]

    def create_calls(self) -> int:
        return sum(1 for c in self.rsps.calls if c.request.method == "POST")

    def calls(self, method: str = "GET") -> list[str]:
        return [c.request.url.split("?")[0] for c in self.rsps.calls if c.request.method == method]


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
