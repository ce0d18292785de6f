"""marshmallow schemas of what Chatwoot sends to the webhook.

Only the fields the service reads are declared; every other field is kept (`unknown = INCLUDE`)
and the payload is stored as received (secrets removed), never as re-dumped by a schema.
Errors name each field by its path: `{"conversation.id": ["Missing data for required field."]}`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, missing, validate

from app.chatwoot.payloads import MESSAGE_EVENTS, MESSAGE_TYPES_BY_NUMBER, parse_time

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_MESSAGE_ID_LENGTH = 200
"""Characters allowed in a hand-made (string) message id."""


class InvalidPayload(Exception):
    """The payload does not match the schema; `errors` maps each field path to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid payload: " + ", ".join(sorted(errors)))
        self.errors = errors


class _Kept(Schema):
    class Meta:
        unknown = INCLUDE


def _id(maximum: int = INT32_MAX, **kwargs: Any) -> fields.Integer:
    """A positive id that fits its PostgreSQL column (integer by default)."""
    return fields.Integer(strict=False, validate=validate.Range(min=1, max=maximum), **kwargs)


class MessageId(fields.Field[str]):
    """Chatwoot's integer message id, or the string id of hand-made test messages."""

    default_error_messages = {
        "invalid": "Not a valid message id (a positive integer or a non-empty string).",
        "too_long": f"Longer than {MAX_MESSAGE_ID_LENGTH} characters.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= INT64_MAX:
            return str(value)
        if isinstance(value, str) and value.strip():
            if len(value) > MAX_MESSAGE_ID_LENGTH:
                raise self.make_error("too_long")
            return value.strip()
        raise self.make_error("invalid")


class MessageType(fields.Field[str]):
    """`incoming`, `outgoing`, `template` (or `activity`); the REST API's numbers are accepted too."""

    default_error_messages = {"invalid": "Not a valid message type."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and value in MESSAGE_TYPES_BY_NUMBER:
            return MESSAGE_TYPES_BY_NUMBER[value]
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
        raise self.make_error("invalid")


class ChatwootTime(fields.Field[Any]):
    """An ISO 8601 time (what webhooks send) or unix seconds (older formats)."""

    default_error_messages = {"invalid": "Not a valid ISO 8601 time or unix timestamp."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return parse_time(value)
        except (ValueError, TypeError, OverflowError, OSError):
            raise self.make_error("invalid") from None


class AccountSchema(_Kept):
    id = _id(required=True)


class InboxSchema(_Kept):
    id = _id(allow_none=True)


class SenderSchema(_Kept):
    id = _id(allow_none=True)
    type = fields.String(allow_none=True)


class ConversationSchema(_Kept):
    id = _id(required=True)
    inbox_id = _id(allow_none=True)
    channel = fields.String(allow_none=True)
    # `meta.sender` and `contact_inbox` (a whole database row) are only read for the contact
    # id, which app.payloads takes leniently (an id out of range is no contact id).


class AttachmentSchema(_Kept):
    id = _id(maximum=INT64_MAX, required=True)
    file_type = fields.String(allow_none=True)
    data_url = fields.String(allow_none=True)
    transcribed_text = fields.String(allow_none=True)


class Record(fields.Field[dict[str, Any]]):
    """A JSON object whose declared keys are checked by the fields of `schema`; every other key
    is kept as it is. What `fields.Nested(schema)` does for these small objects, without a
    schema's load machinery (hooks, unknown-field pass, many) for each of them: a third of the
    webhook's validation time. Errors are nested as Nested's are: `{"id": ["..."]}`."""

    default_error_messages = {"type": "Not a JSON object."}

    def __init__(self, schema: type[Schema], **kwargs: Any):
        super().__init__(**kwargs)
        self.members = dict(schema._declared_fields)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.make_error("type")
        out = dict(value)
        errors: dict[str, Any] = {}
        for name, member in self.members.items():
            try:
                loaded = member.deserialize(value.get(name, missing), name, value)
            except ValidationError as exc:
                errors[name] = exc.messages
                continue
            if loaded is not missing:
                out[name] = loaded
        if errors:
            raise ValidationError(errors)
        return out


class EventSchema(_Kept):
    """Any webhook: only its event name is read."""

    event = fields.String(required=True, validate=validate.Length(min=1, max=100))


class MessageSchema(EventSchema):
    """`message_created` and `message_updated`, and the seed guide's minimal test message."""

    id = MessageId(required=True)
    account = Record(AccountSchema, required=True)
    message_type = MessageType(required=True)
    content = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    content_attributes = fields.Dict(allow_none=True)
    private = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    created_at = ChatwootTime(allow_none=True)
    sender = Record(SenderSchema, allow_none=True)
    conversation = Record(ConversationSchema, required=True)
    inbox = Record(InboxSchema, allow_none=True)
    attachments = fields.List(Record(AttachmentSchema), allow_none=True)


_event_schema = EventSchema()
_message_schema = MessageSchema()


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict as `{"a.b.0.c": [messages]}`."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = (prefix or "_payload") if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
            for sub_path, texts in flatten_errors(value, path).items():
                out.setdefault(sub_path, []).extend(texts)
    elif isinstance(messages, list | tuple):
        out[prefix or "_payload"] = [str(m) for m in messages]
    else:
        out[prefix or "_payload"] = [str(messages)]
    return out


MAX_DEPTH = 32
"""Levels of nesting a payload may have (Chatwoot's own go about eight deep): deeper ones are
refused at ingestion, so that no later stage meets a structure it cannot walk."""


def too_deep(payload: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path of the first value nested more than `limit` levels deep, or None."""
    stack: list[tuple[Any, str, int]] = [(payload, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > limit:
            return path or "_payload"
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}.{i}" if path else str(i), depth + 1) for i, v in enumerate(value))
    return None


def load(payload: dict[str, Any], raw: bytes | None = None) -> dict[str, Any]:
    """Validate a webhook payload: the message schema for message events, else the event name.

    Returns the loaded data; raises InvalidPayload naming each bad field by its path (and the
    path of a value nested too deep). `raw`, the text the payload was parsed from, spares the
    depth walk when it holds too few brackets to be that deep.
    """
    if raw is None or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        path = too_deep(payload)
        if path is not None:
            shown = path if len(path) <= 200 else path[:100] + "..." + path[-97:]
            raise InvalidPayload({shown: [f"nested more than {MAX_DEPTH} levels deep"]})
    event = payload.get("event")
    schema = _message_schema if isinstance(event, str) and event in MESSAGE_EVENTS else _event_schema
    try:
        loaded: dict[str, Any] = schema.load(payload)
    except ValidationError as exc:
        raise InvalidPayload(flatten_errors(exc.messages)) from None
    return loaded
