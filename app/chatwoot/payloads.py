"""Reading Chatwoot message payloads: what to strip, what to keep, what to process.

These functions take the payload as Chatwoot sends it (a dict, already validated by
`app.schemas` on the webhook path) and never raise on a missing key: the workers also call
them on stored payloads.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers

SECRET_KEY_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "apikey",
    "privatekey",
    "credential",
    "authorization",
    "cookie",
    "sessionid",
    "identifierhash",
)
"""A key is a secret's when, lowercased and without `_`, `-` or spaces, it contains one of these:
`pubsub_token` (conversation.contact_inbox: lets anyone read the conversation's live feed),
`hmac_token`, `identifier_hash`, `Password`, `apiKey`, `client_secret`, `x_token`... Such keys
are removed wherever they appear in a payload before it is stored, spooled or archived."""
_SECRET_KEY_RE = re.compile("|".join(SECRET_KEY_WORDS))
_KEY_NOISE = str.maketrans("", "", "_- .")

PUBSUB_TOKEN_PATH = ("conversation", "contact_inbox", "pubsub_token")
"""Where Chatwoot puts the one secret every message payload carries."""
# Raw-body markers after which the Python walk of strip_secrets is needed: an escape (\\u: NUL,
# surrogates, or a key written with escapes), or a word of a secret key in any case (the body
# is searched lowercased). Plain substring searches cost a tenth of one regular expression.
_WALK_NEEDED_MARKERS = (
    b"\\u",
    b"secret",
    b"passw",
    b"passphrase",
    b"api",
    b"private",
    b"credential",
    b"authorization",
    b"cookie",
    b"session",
    b"identifier_hash",
    b"identifierhash",
)
_TOKEN_WORD = b"token"
_PUBSUB_KEY = f'"{PUBSUB_TOKEN_PATH[-1]}"'.encode()


def is_secret_key(key: Any) -> bool:
    """Whether a payload key names a secret (see SECRET_KEY_WORDS)."""
    return isinstance(key, str) and _SECRET_KEY_RE.search(key.lower().translate(_KEY_NOISE)) is not None


MESSAGE_EVENTS = frozenset({"message_created", "message_updated"})
ARCHIVED_MESSAGE_TYPES = frozenset({"incoming", "outgoing", "template"})
MESSAGE_TYPES_BY_NUMBER = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
"""Chatwoot's enum, as its REST API (and older payload formats) send it."""
CONTACT = "contact"
"""The one sender type whose messages are processed; every other (user, agent_bot,
captain_assistant, ...) is our side: archived, never processed."""
OUTBOX_KEY_ATTRIBUTE = "outbox_key"
"""content_attributes key that marks a message we sent (app/chatwoot/outbox.py)."""
DEFAULT_SOURCE_TYPE = "whatsapp"
INT32_MAX = 2**31 - 1

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_REPLACEMENT = "\ufffd"
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")


def strip_secrets(payload: Any) -> Any:
    """A copy of the payload without secrets, and without what PostgreSQL cannot store.

    Removes every key that names a secret (is_secret_key) at any depth (`conversation.contact_inbox.pubsub_token`
    first of all) and replaces NUL characters and lone surrogates, which neither `jsonb` nor
    `text` columns accept, with U+FFFD.
    """
    if isinstance(payload, dict):
        return _strip_dict(payload)
    if isinstance(payload, list):
        return _strip_list(payload)
    if isinstance(payload, str):
        return _clean_text(payload)
    return payload


# The walk runs on every delivery: plain loops and exact type checks keep it cheap.
def _strip_dict(data: dict[Any, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for raw_key, raw in data.items():
        if is_secret_key(raw_key):
            continue
        value = raw
        kind = type(raw)
        if kind is str:
            if not raw.isascii() or "\x00" in raw:
                value = _clean_text(raw)
        elif kind is dict:
            value = _strip_dict(raw)
        elif kind is list:
            value = _strip_list(raw)
        key = raw_key
        if type(raw_key) is str and (not raw_key.isascii() or "\x00" in raw_key):
            key = _clean_text(raw_key)
        out[key] = value
    return out


def _strip_list(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for raw in items:
        kind = type(raw)
        if kind is str:
            out.append(_clean_text(raw) if not raw.isascii() or "\x00" in raw else raw)
        elif kind is dict:
            out.append(_strip_dict(raw))
        elif kind is list:
            out.append(_strip_list(raw))
        else:
            out.append(raw)
    return out


def _clean_text(text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # json.loads joins valid surrogate pairs, so any surrogate left here stands alone.
            text = "".join(_REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text.replace("\x00", _REPLACEMENT) if "\x00" in text else text


def pubsub_token_only(raw: bytes, payload: dict[str, Any]) -> bool | None:
    """Whether the JSON text `raw` (which parsed as `payload`) holds no secret but, perhaps,
    `conversation.contact_inbox.pubsub_token`, and nothing PostgreSQL cannot store.

    True: the token is there, and only there; False: no secret at all; None: it takes
    strip_secrets. The webhook then stores the text as received, without a second
    serialisation, and lets PostgreSQL drop the token.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        return None
    lowered = raw.lower()
    if any(marker in lowered for marker in _WALK_NEEDED_MARKERS):
        return None
    found = lowered.count(_TOKEN_WORD)
    if found == 0:
        return False
    contact_inbox = _dict(payload.get("conversation")).get("contact_inbox")
    if (
        found == 1
        and raw.count(_PUBSUB_KEY) == 1
        and isinstance(contact_inbox, dict)
        and PUBSUB_TOKEN_PATH[-1] in contact_inbox
    ):
        return True
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    """A positive integer id (from an int or a string of digits) that fits an `integer`
    column; None for anything else."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 10):
            return None
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= INT32_MAX:
        return value
    return None


def kept_content(payload: dict[str, Any]) -> dict[str, Any]:
    """What the archive keeps of a message: a change to any of it is a new version."""
    attachments = []
    for item in payload.get("attachments") or ():
        if isinstance(item, dict):
            attachments.append(
                {
                    "id": item.get("id"),
                    "file_type": item.get("file_type"),
                    "transcribed_text": item.get("transcribed_text") or "",
                }
            )
    attachments.sort(key=lambda a: str(a["id"]))
    return {
        "content": payload.get("content"),
        "content_attributes": payload.get("content_attributes") or {},
        "private": bool(payload.get("private")),
        "attachments": attachments,
    }


def fingerprint(payload: dict[str, Any]) -> str:
    """sha256 of what we keep (content, content_attributes, private, attachments and their
    transcripts); a new `source_id`, status or read receipt leaves it unchanged."""
    canonical = json.dumps(kept_content(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()


def message_type(payload: dict[str, Any]) -> str | None:
    value = payload.get("message_type")
    if isinstance(value, int) and not isinstance(value, bool):
        return MESSAGE_TYPES_BY_NUMBER.get(value)
    return value.lower() if isinstance(value, str) else None


def sender_type(payload: dict[str, Any]) -> str | None:
    """The sender's type in snake case, as sent (`contact`, `user`, `agent_bot`,
    `captain_assistant`...), or None (no sender, or one that names no type)."""
    sender = payload.get("sender")
    if not isinstance(sender, dict):
        return None
    raw = sender.get("type")
    if isinstance(raw, str) and raw.strip():
        value = _CAMEL_RE.sub("_", raw.strip()).replace("::", "_").lower()  # "AgentBot" -> "agent_bot"
        return "agent_bot" if value == "agentbot" else value[:50]
    # Older payloads give a contact sender no `type`; contacts only write incoming messages.
    return CONTACT if message_type(payload) == "incoming" else None


def source_type(payload: dict[str, Any]) -> str:
    """The channel in snake case without `Channel::`: `whatsapp`, `api`, `web_widget`..."""
    channel = _dict(payload.get("conversation")).get("channel")
    if not isinstance(channel, str) or not channel.strip():
        return DEFAULT_SOURCE_TYPE
    name = channel.strip().removeprefix("Channel::")
    return _CAMEL_RE.sub("_", name).replace("::", "_").replace(" ", "_").lower() or DEFAULT_SOURCE_TYPE


def normalize_phone(raw: Any, region: str | None = None) -> str | None:
    """E.164 (`+5491155550123`) of a phone number, or None when it is not a valid number.

    Without a leading `+`, `region` (an ISO country code such as "BR") says which country's
    numbering plan to read it in. Chatwoot sends E.164 already: that is kept as it is.
    """
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if not text:
        return None
    if _E164_RE.fullmatch(text):
        return text
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Contact:
    """A Chatwoot contact as far as linking it to a user is concerned."""

    id: int | None = None
    phone: str | None = None
    """E.164 when it is a valid number, else as sent."""
    identifier: str | None = None

    @classmethod
    def from_mapping(cls, data: Any, fallback_id: int | None = None) -> Contact:
        """From a Chatwoot contact (or sender) object: `id`, `phone_number`, `identifier`."""
        if not isinstance(data, dict):
            return cls(fallback_id)
        found = _int(data.get("id"))
        phone = data.get("phone_number", data.get("phone"))
        identifier = data.get("identifier")
        phone_text = (
            str(phone).strip() if isinstance(phone, str | int) and not isinstance(phone, bool) else ""
        )
        ident_text = str(identifier).strip() if isinstance(identifier, str | int) else ""
        return cls(
            id=found if found is not None else fallback_id,
            phone=(normalize_phone(phone_text) or phone_text[:64]) if phone_text else None,
            identifier=ident_text[:255] or None,
        )

    @property
    def known(self) -> bool:
        return self.id is not None or bool(self.phone) or bool(self.identifier)


def contact(payload: dict[str, Any]) -> Contact:
    """Whose message this is: the sender when a contact wrote it, else the conversation's contact
    (`conversation.meta.sender`, its id else `conversation.contact_inbox.contact_id`)."""
    conversation = _dict(payload.get("conversation"))
    inbox_contact = _int(_dict(conversation.get("contact_inbox")).get("contact_id"))
    sender = payload.get("sender")
    if sender_type(payload) == CONTACT and isinstance(sender, dict):
        found = Contact.from_mapping(sender)
        if found.id is not None:
            return found
    return Contact.from_mapping(_dict(conversation.get("meta")).get("sender"), inbox_contact)


def contact_id(payload: dict[str, Any]) -> int | None:
    return contact(payload).id


def inbox_id(payload: dict[str, Any]) -> int | None:
    found = _int(_dict(payload.get("inbox")).get("id"))
    return found if found is not None else _int(_dict(payload.get("conversation")).get("inbox_id"))


def account_id(payload: dict[str, Any]) -> int | None:
    found = _int(_dict(payload.get("account")).get("id"))
    return found if found is not None else _int(payload.get("account_id"))


def message_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("id")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value).strip():
        return str(value).strip()
    return None


def is_private(payload: dict[str, Any]) -> bool:
    return payload.get("private") is True


def has_audio(payload: dict[str, Any]) -> bool:
    return any(
        isinstance(a, dict) and a.get("file_type") == "audio" for a in payload.get("attachments") or ()
    )


def is_processable(payload: dict[str, Any]) -> bool:
    """See Message.processable."""
    return Message.of(payload).processable


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from Chatwoot's ISO 8601 string or unix seconds; None if absent.

    Raises ValueError for a value that is neither.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("not a time")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ValueError("not a time")


def in_reply_to(payload: dict[str, Any]) -> int | None:
    """The Chatwoot id of the message this one answers (a WhatsApp reply), if any."""
    return _int(_dict(payload.get("content_attributes")).get("in_reply_to"))


def is_ours(payload: dict[str, Any]) -> bool:
    """A message this service sent (it carries our outbox key)."""
    return OUTBOX_KEY_ATTRIBUTE in _dict(payload.get("content_attributes"))


def feedback(payload: dict[str, Any]) -> str | None:
    """What a version of one of our own messages tells the order flow: `answer` when the web
    widget's contact picked one of its quick replies (`content_attributes.submitted_values`),
    `refused` when the channel refused it (`content_attributes.external_error`); else None."""
    if message_type(payload) not in ("outgoing", "template") or is_private(payload) or not is_ours(payload):
        return None
    attributes = _dict(payload.get("content_attributes"))
    submitted = attributes.get("submitted_values")
    if isinstance(submitted, list) and submitted:
        return "answer"
    error = attributes.get("external_error")
    if isinstance(error, str) and error.strip():
        return "refused"
    return None


@dataclass(frozen=True)
class Message:
    """The one typed view of a Chatwoot message payload: every stage reads this instead of
    re-deriving who the contact is, whether it may be processed or what it answers.

    Built by `Message.of(payload)` from a webhook payload or a stored one; it never raises on
    a missing or malformed key (the webhook's schema has already refused those).
    """

    account_id: int | None
    message_id: str | None
    event: str
    conversation_id: int | None
    inbox_id: int | None
    contact: Contact
    source_type: str
    message_type: str | None
    sender_type: str | None
    content_type: str | None
    content: str | None
    is_private: bool
    message_created_at: datetime | None
    content_fingerprint: str
    has_audio: bool
    in_reply_to: int | None
    can_reply: bool | None
    ours: bool
    feedback: str | None = None
    """`answer` or `refused` for a version of our own message the order flow must see."""

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Message:
        try:
            created_at = parse_time(payload.get("created_at"))
        except (ValueError, OverflowError, OSError):
            created_at = None
        content = payload.get("content")
        content_type = payload.get("content_type")
        event = payload.get("event")
        can_reply = _dict(payload.get("conversation")).get("can_reply")
        return cls(
            account_id=account_id(payload),
            message_id=message_id(payload),
            event=event if isinstance(event, str) else "message_created",
            conversation_id=_int(_dict(payload.get("conversation")).get("id")),
            inbox_id=inbox_id(payload),
            contact=contact(payload),
            source_type=source_type(payload),
            message_type=message_type(payload),
            sender_type=sender_type(payload),
            content_type=content_type if isinstance(content_type, str) else None,
            content=content if isinstance(content, str) else None,
            is_private=is_private(payload),
            message_created_at=created_at,
            content_fingerprint=fingerprint(payload),
            has_audio=has_audio(payload),
            in_reply_to=in_reply_to(payload),
            can_reply=can_reply if isinstance(can_reply, bool) else None,
            ours=is_ours(payload),
            feedback=feedback(payload),
        )

    @property
    def processable(self) -> bool:
        """An incoming, public message a contact wrote: the only messages transcribed,
        classified or answered (never our own messages coming back)."""
        return (
            self.event in MESSAGE_EVENTS
            and self.message_type == "incoming"
            and self.sender_type == CONTACT
            and not self.is_private
            and not self.ours
        )

    @property
    def transcription_status(self) -> str:
        return "pending" if self.processable and self.has_audio else "not_needed"

    @property
    def classification_status(self) -> str:
        """`pending` for a contact's message, and for our own message carrying an answer or a
        refusal (app/orders/classify.py handles both)."""
        return "pending" if self.processable or self.feedback else "not_needed"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number too large for a float")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
"""Built once: json.loads with hooks builds a decoder for every call."""


def parse_body(body: bytes) -> Any:
    """The JSON value of a delivery's body, as json.loads reads bytes (UTF-8/16/32, with or
    without a BOM), without NaN or infinite numbers. Raises ValueError for anything else, a
    body nested too deep for the parser included."""
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
