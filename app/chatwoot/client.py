"""Chatwoot Application API client: create a message in a conversation, list its messages.

Two tokens: writes (creating messages) use the API access token, which may be an agent bot's;
reads (listing conversations and messages) use the read token, a user's. Chatwoot lets an agent
bot's token only show, create and update conversations and create messages
(`app/controllers/concerns/access_token_auth_helper.rb`, BOT_ACCESSIBLE_ENDPOINTS): any other
endpoint answers 401 "Access to this endpoint is not authorized for bots" (BotTokenRefused).

Errors are sorted by what the caller should do: fix the token (Unauthorized), give up on the
conversation (NotFound) or on the message (BadRequest), retry later (RateLimited, Unavailable),
or look at the conversation before sending again (OutcomeUnknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from urllib3.exceptions import NameResolutionError, NewConnectionError

from app.chatwoot import accounts

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to Chatwoot."""
READ_TIMEOUT = 20.0
"""Seconds to wait for Chatwoot's answer once the request has left."""

MAX_TEXT_CHARS = 4096
"""WhatsApp's limit on a text message body."""
MAX_INTERACTIVE_BODY_CHARS = 1024
"""WhatsApp's limit on the body of a message with reply buttons or a list."""
MAX_BUTTON_TITLE_CHARS = 20
"""WhatsApp reply buttons (up to 3 items); list rows allow 24, so 20 fits both."""
MAX_ITEMS = 10
"""WhatsApp lists hold at most 10 rows."""
OUTBOX_KEY_ATTRIBUTE = "outbox_key"
"""Key in `content_attributes` carrying our outbox key; Chatwoot keeps and echoes it back."""

ALLOWED_BODY_KEYS = frozenset(
    {"content", "message_type", "private", "content_type", "content_attributes", "template_params"}
)
BOT_REFUSAL = "Access to this endpoint is not authorized for bots"
"""Chatwoot's 401 answer to an agent-bot token on an endpoint bots may not use."""


class ChatwootError(Exception):
    """A Chatwoot request failed; `reason` is short and safe to store."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class NotConfigured(ChatwootError):
    """No base URL (or no API token) for the account: nothing can be sent."""


class Unauthorized(ChatwootError):
    """401/403: the API token is wrong or lacks access; retrying will not help."""


class BotTokenRefused(Unauthorized):
    """401 "not authorized for bots": the token is an agent bot's and may not use this endpoint."""


class NotFound(ChatwootError):
    """404: the conversation (or account) does not exist."""


class RateLimited(ChatwootError):
    """429: retry after `retry_after` seconds."""

    def __init__(self, reason: str, status: int | None = 429, retry_after: float | None = None):
        super().__init__(reason, status)
        self.retry_after = retry_after


class Unavailable(ChatwootError):
    """The request never reached Chatwoot (connection refused, DNS, connect timeout): retry."""


class OutcomeUnknown(ChatwootError):
    """The request left but no usable answer came back (timeout, 5xx): it may have been applied."""


class BadRequest(ChatwootError):
    """400/422 and other 4xx: Chatwoot refused this body; sending it again will not help."""


class InvalidMessage(ValueError):
    """A message body breaks a limit that Chatwoot does not check but WhatsApp enforces."""


# ------------------------------------------------------------------------------------------
# Message bodies


def text_body(content: str, private: bool = False) -> dict[str, Any]:
    """A plain outgoing message (or a private note to agents)."""
    return {"content": content, "message_type": "outgoing", "private": private, "content_type": "text"}


def quick_reply_body(content: str, items: list[dict[str, str]]) -> dict[str, Any]:
    """An `input_select` question: up to 3 items render as buttons on WhatsApp, 4 to 10 as a list."""
    return {
        "content": content,
        "message_type": "outgoing",
        "private": False,
        "content_type": "input_select",
        "content_attributes": {"items": [{"title": i["title"], "value": i["value"]} for i in items]},
    }


def template_body(content: str, template_params: Mapping[str, Any]) -> dict[str, Any]:
    """An approved WhatsApp template (what WhatsApp delivers outside the 24-hour window); `content`
    is the text Chatwoot shows agents in the conversation."""
    return {
        "content": content,
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "template_params": dict(template_params),
    }


def _validate_template(params: Any) -> dict[str, Any]:
    """Chatwoot's `template_params`: name, category, language, processed_params (see its API)."""
    if not isinstance(params, Mapping):
        raise InvalidMessage("template_params: expected an object")
    for key in ("name", "category", "language"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise InvalidMessage(f"template_params.{key}: required text")
    processed = params.get("processed_params", {})
    if not isinstance(processed, Mapping) or not all(isinstance(v, Mapping) for v in processed.values()):
        raise InvalidMessage("template_params.processed_params: expected an object of objects")
    for key, value in (processed.get("body") or {}).items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidMessage(f"template_params.processed_params.body.{key}: required text")
    return {
        "name": params["name"],
        "category": params["category"],
        "language": params["language"],
        "processed_params": {k: dict(v) for k, v in processed.items()},
    }


def validate_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as it will be posted, or InvalidMessage naming the broken limit.

    `source_id` and any other key Chatwoot's create-message payload does not define are refused:
    a message created with a `source_id` is never delivered.
    """
    extra = set(body) - ALLOWED_BODY_KEYS
    if extra:
        raise InvalidMessage(f"unexpected keys in message body: {', '.join(sorted(extra))}")
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidMessage("content: required text")
    content_type = body.get("content_type", "text")
    if content_type not in ("text", "input_select"):
        raise InvalidMessage(f"content_type: {content_type!r} is not sent by this service")
    attributes = body.get("content_attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidMessage("content_attributes: expected an object")
    if content_type == "input_select":
        if len(content) > MAX_INTERACTIVE_BODY_CHARS:
            raise InvalidMessage(
                f"content: at most {MAX_INTERACTIVE_BODY_CHARS} characters with quick replies"
            )
        items = attributes.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise InvalidMessage(f"content_attributes.items: 1 to {MAX_ITEMS} items")
        titles: set[str] = set()
        for item in items:
            title = item.get("title") if isinstance(item, Mapping) else None
            value = item.get("value") if isinstance(item, Mapping) else None
            if not isinstance(title, str) or not title.strip() or not isinstance(value, str) or not value:
                raise InvalidMessage("content_attributes.items: each item needs a title and a value")
            if len(title) > MAX_BUTTON_TITLE_CHARS:
                raise InvalidMessage(f"item title {title!r}: at most {MAX_BUTTON_TITLE_CHARS} characters")
            if title.casefold() in titles:
                raise InvalidMessage(f"item title {title!r}: titles must be unique")
            titles.add(title.casefold())
    elif len(content) > MAX_TEXT_CHARS:
        raise InvalidMessage(f"content: at most {MAX_TEXT_CHARS} characters")
    clean: dict[str, Any] = {
        "content": content,
        "message_type": body.get("message_type", "outgoing"),
        "private": bool(body.get("private", False)),
        "content_type": content_type,
    }
    if clean["message_type"] != "outgoing":
        raise InvalidMessage("message_type: only outgoing messages are sent")
    if attributes:
        clean["content_attributes"] = dict(attributes)
    if "template_params" in body:
        if content_type != "text" or clean["private"]:
            raise InvalidMessage("template_params: only with a public text message")
        clean["template_params"] = _validate_template(body["template_params"])
    return clean


# ------------------------------------------------------------------------------------------
# The client


@dataclass
class Client:
    """Application API calls for one Chatwoot account."""

    base_url: str
    api_token: str = field(repr=False)
    """Writes: creating messages (an agent bot's token may)."""
    account_id: int
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    read_token: str = field(default="", repr=False)
    """Reads: listing conversations and messages (a user's token); empty: the API token."""
    read_token_source: str = "CHATWOOT_API_ACCESS_TOKEN"  # noqa: S105 (a setting's name)

    def _url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}{path}"

    def _messages_url(self, conversation_id: int) -> str:
        return self._url(
            f"/api/v1/accounts/{int(self.account_id)}/conversations/{int(conversation_id)}/messages"
        )

    def _headers(self, token: str | None = None) -> dict[str, str]:
        return {
            "api_access_token": token if token is not None else self.api_token,
            "Accept": "application/json",
        }

    @property
    def reads_with(self) -> str:
        return self.read_token or self.api_token

    def create_message(self, conversation_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a message; returns Chatwoot's message (with its `id`)."""
        payload = validate_body(body)
        try:
            response = self.session.post(
                self._messages_url(conversation_id),
                json=payload,
                headers=self._headers(),
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            raise Unavailable("connect timeout") from None
        except requests.exceptions.Timeout:
            raise OutcomeUnknown("timeout waiting for Chatwoot's answer") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise Unavailable("connection failed") from None
            raise OutcomeUnknown("connection lost after the request was sent") from None
        except requests.exceptions.RequestException as exc:
            raise Unavailable(type(exc).__name__) from None
        _raise_for_status(response, write=True)
        data = _json(response)
        if not isinstance(data, dict) or "id" not in data:
            raise OutcomeUnknown("Chatwoot answered without a message id", response.status_code)
        return data

    def get(self, path: str, params: Mapping[str, Any] | None = None, token: str | None = None) -> Any:
        """GET an Application API path with the read token (or `token`); the JSON answer."""
        try:
            response = self.session.get(
                self._url(path),
                params=params,
                headers=self._headers(token if token is not None else self.reads_with),
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"GET failed: {type(exc).__name__}") from None
        _raise_for_status(response, write=False)
        return _json(response)

    def list_messages(self, conversation_id: int, before: int | None = None) -> list[dict[str, Any]]:
        """The conversation's most recent messages (Chatwoot returns them a page at a time)."""
        data = self.get(
            f"/api/v1/accounts/{int(self.account_id)}/conversations/{int(conversation_id)}/messages",
            {"before": before} if before is not None else None,
        )
        payload = data.get("payload") if isinstance(data, dict) else data
        if not isinstance(payload, list):
            raise Unavailable("unexpected answer listing messages")
        return [m for m in payload if isinstance(m, dict)]

    def list_conversations(self, page: int = 1) -> list[dict[str, Any]]:
        """A page (25) of the account's conversations, any status, most recently active first."""
        data = self.get(
            f"/api/v1/accounts/{int(self.account_id)}/conversations",
            {"status": "all", "assignee_type": "all", "page": page},
        )
        body = data.get("data", data) if isinstance(data, dict) else {}
        items = body.get("payload") if isinstance(body, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def profile(self, token: str) -> dict[str, Any]:
        """`GET /api/v1/profile`: the user a token belongs to, with its accounts and roles.

        An agent bot's token gets BotTokenRefused (bots may not read profiles)."""
        data = self.get("/api/v1/profile", token=token)
        if not isinstance(data, dict):
            raise Unavailable("unexpected answer reading the profile")
        return data

    def show_conversation(self, conversation_id: int, token: str | None = None) -> dict[str, Any]:
        """`GET` one conversation (agent bots may, since Chatwoot 4.15); with the API token by default."""
        data = self.get(
            f"/api/v1/accounts/{int(self.account_id)}/conversations/{int(conversation_id)}",
            token=token if token is not None else self.api_token,
        )
        return data if isinstance(data, dict) else {}


def client_for(account_id: int) -> Client:
    """A client with the account's base URL and tokens (its own row, else the environment's)."""

    config = accounts.resolve(account_id)
    if not config.base_url:
        raise NotConfigured("CHATWOOT_BASE_URL is not set")
    if not config.api_token:
        raise NotConfigured("CHATWOOT_API_ACCESS_TOKEN is not set")
    return Client(
        base_url=config.base_url,
        api_token=config.api_token,
        account_id=account_id,
        read_token=config.read_token,
        read_token_source=config.read_token_source or "CHATWOOT_API_ACCESS_TOKEN",
    )


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection failed before any byte of the request was sent."""

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | NameResolutionError | ConnectionRefusedError):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
            continue
        args = getattr(current, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return False


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _describe(response: requests.Response) -> str:
    """Chatwoot's own error text, short (its bodies carry no secrets, but cap them anyway)."""
    data = _json(response)
    text = ""
    if isinstance(data, dict):
        for key in ("error", "message", "description", "errors"):
            if data.get(key):
                text = str(data[key])
                break
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _raise_for_status(response: requests.Response, write: bool) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403):
        data = _json(response)
        if isinstance(data, dict) and data.get("error") == BOT_REFUSAL:
            raise BotTokenRefused(f"the token is an agent bot's ({_describe(response)})", status)
        raise Unauthorized(f"Chatwoot refused the API token ({_describe(response)})", status)
    if status == 404:
        raise NotFound(f"conversation not found ({_describe(response)})", status)
    if status == 429:
        raise RateLimited(_describe(response), status, _retry_after(response))
    if status >= 500:
        if write:
            raise OutcomeUnknown(_describe(response), status)
        raise Unavailable(_describe(response), status)
    if 300 <= status < 400:
        raise BadRequest(f"unexpected redirect ({_describe(response)})", status)
    raise BadRequest(_describe(response), status)
