"""app.payloads: secrets stripped, the fingerprint of what we keep, and the columns of a message."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.chatwoot import payloads
from tests.helpers.common import fixture_names, load_fixture

MESSAGE_FIXTURES = [n for n in fixture_names() if n.startswith("message_") or n.startswith("seed_")]


def test_strip_secrets_removes_the_pubsub_token_and_keeps_everything_else() -> None:
    original = load_fixture("message_created__incoming_voice_note")
    kept = copy.deepcopy(original)
    clean = payloads.strip_secrets(original)
    assert original == kept, "the input is not changed"
    assert "pubsub_token" not in clean["conversation"]["contact_inbox"]
    del kept["conversation"]["contact_inbox"]["pubsub_token"]
    assert clean == kept


def test_strip_secrets_at_any_depth() -> None:
    payload = {
        "a": [{"hmac_token": "x", "keep": 1}, {"nested": {"access_token": "y", "identifier_hash": "z"}}],
        "api_access_token": "t",
        "secret": "s",
        "password": "p",
        "fine": "value",
    }
    assert payloads.strip_secrets(payload) == {"a": [{"keep": 1}, {"nested": {}}], "fine": "value"}


def test_strip_secrets_replaces_what_postgresql_cannot_store() -> None:
    cleaned = payloads.strip_secrets({"t\x00": ["a\x00b", "lone \udc00", "ok é 😀"], "n": None, "i": 5})
    assert cleaned == {"t\ufffd": ["a\ufffdb", "lone \ufffd", "ok é 😀"], "n": None, "i": 5}
    json.dumps(cleaned).encode("utf-8")


def test_fingerprint_ignores_receipts_and_source_ids() -> None:
    created = load_fixture("message_created__outgoing_bot_quick_reply")
    delivered = load_fixture("message_updated__outgoing_bot_delivered")
    assert payloads.fingerprint(created) == payloads.fingerprint(delivered)
    receipt = dict(created, status="read", source_id="wamid.X", updated_at="2026-11-21T00:00:00Z")
    receipt["conversation"] = dict(created["conversation"], status="resolved", unread_count=0)
    assert payloads.fingerprint(receipt) == payloads.fingerprint(created)


@pytest.mark.parametrize(
    "change",
    [
        {"content": "edited"},
        {"content": None},
        {"content_attributes": {"deleted": True}},
        {"private": True},
    ],
)
def test_fingerprint_changes_with_what_we_keep(change: dict[str, Any]) -> None:
    message = load_fixture("message_created__incoming_text")
    assert payloads.fingerprint(message) != payloads.fingerprint(message | change)


def test_fingerprint_follows_attachments_and_their_transcripts() -> None:
    voice = load_fixture("message_created__incoming_voice_note")
    transcribed = copy.deepcopy(voice)
    transcribed["attachments"][0]["transcribed_text"] = "hello"
    assert payloads.fingerprint(voice) != payloads.fingerprint(transcribed)
    resized = copy.deepcopy(voice)
    resized["attachments"][0]["data_url"] = "https://other.example/x"
    resized["attachments"][0]["file_size"] = 1
    assert payloads.fingerprint(voice) == payloads.fingerprint(resized)
    removed = dict(voice, attachments=[])
    assert payloads.fingerprint(voice) != payloads.fingerprint(removed)
    # Equivalent empty values do not count as a change.
    assert payloads.fingerprint(removed) == payloads.fingerprint(
        {k: v for k, v in removed.items() if k != "attachments"}
    )
    assert payloads.fingerprint(dict(removed, content_attributes=None)) == payloads.fingerprint(
        dict(removed, content_attributes={})
    )


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("Channel::Whatsapp", "whatsapp"),
        ("Channel::Api", "api"),
        ("Channel::WebWidget", "web_widget"),
        ("Channel::Telegram", "telegram"),
        ("Channel::Email", "email"),
        ("Channel::Sms", "sms"),
        ("Channel::TwilioSms", "twilio_sms"),
        ("Channel::FacebookPage", "facebook_page"),
        ("Channel::TwitterProfile", "twitter_profile"),
        ("Channel::Line", "line"),
        (None, "whatsapp"),
        ("", "whatsapp"),
    ],
)
def test_source_type_is_the_channel_in_snake_case(channel: str | None, expected: str) -> None:
    message = load_fixture("message_created__incoming_text")
    message["conversation"]["channel"] = channel
    assert payloads.source_type(message) == expected


def test_source_type_when_the_payload_names_no_channel() -> None:
    assert payloads.source_type({"conversation": {"id": 1}}) == "whatsapp"
    assert payloads.source_type({}) == "whatsapp"


@pytest.mark.parametrize(
    ("name", "sender", "processable"),
    [
        ("message_created__incoming_text", "contact", True),
        ("message_created__incoming_voice_note", "contact", True),
        ("message_created__incoming_order", "contact", True),
        ("message_created__incoming_quick_reply_answer", "contact", True),
        ("message_created__incoming_image_with_caption", "contact", True),
        ("message_created__incoming_email", "contact", True),
        ("seed_guide_test_message", "contact", True),
        ("message_created__outgoing_agent", "user", False),
        ("message_created__outgoing_bot_quick_reply", "agent_bot", False),
        ("message_updated__outgoing_bot_delivered", "agent_bot", False),
        ("message_created__private_note", "user", False),
        ("message_updated__web_widget_submitted_values", "agent_bot", False),
        ("message_updated__whatsapp_external_error", "agent_bot", False),
    ],
)
def test_sender_type_and_is_processable(name: str, sender: str, processable: bool) -> None:
    message = load_fixture(name)
    assert payloads.sender_type(message) == sender
    assert payloads.is_processable(message) is processable


def test_every_message_fixture_is_classified_here() -> None:
    names = {p[0] for p in test_sender_type_and_is_processable.pytestmark[0].args[1]}  # type: ignore[attr-defined]
    assert names == set(MESSAGE_FIXTURES)


def test_is_processable_refuses_templates_private_and_senderless_messages() -> None:
    text = load_fixture("message_created__incoming_text")
    assert not payloads.is_processable(text | {"private": True})
    assert not payloads.is_processable(text | {"message_type": "template", "sender": None})
    assert not payloads.is_processable(text | {"message_type": "outgoing"})
    assert not payloads.is_processable(text | {"event": "conversation_updated"})
    assert payloads.sender_type(text | {"sender": None}) is None
    assert payloads.sender_type(text | {"sender": {"id": 1, "type": "AgentBot"}}) == "agent_bot"
    # Every sender type is kept as sent; anything but a contact is our side, never processed.
    assistant = text | {"sender": {"id": 1, "type": "captain_assistant"}}
    assert payloads.sender_type(assistant) == "captain_assistant"
    assert not payloads.is_processable(assistant)
    assert payloads.sender_type(text | {"sender": {"id": 1, "type": "SomethingNew"}}) == "something_new"


def test_contact_id_of_incoming_and_outgoing_messages() -> None:
    incoming = load_fixture("message_created__incoming_text")
    assert payloads.contact_id(incoming) == 287
    outgoing = load_fixture("message_created__outgoing_agent")
    assert outgoing["sender"]["id"] != 287
    assert payloads.contact_id(outgoing) == 287  # conversation.meta.sender
    without_meta = copy.deepcopy(outgoing)
    del without_meta["conversation"]["meta"]
    assert payloads.contact_id(without_meta) == 287  # contact_inbox.contact_id
    assert payloads.contact_id({"message_type": "outgoing", "conversation": {}}) is None
    huge = incoming | {"sender": {"id": 2**40}}
    assert payloads.contact_id(huge) == 287  # out of an integer column's range: not an id


def test_message_view_of_the_voice_note() -> None:
    fields = payloads.Message.of(load_fixture("message_created__incoming_voice_note"))
    assert fields == payloads.Message(
        account_id=1,
        message_id="9877",
        event="message_created",
        conversation_id=42,
        inbox_id=4,
        contact=payloads.Contact(287, "+5491155550123", None),
        source_type="whatsapp",
        message_type="incoming",
        content_type="text",
        content=None,
        is_private=False,
        sender_type="contact",
        message_created_at=datetime(2026, 11, 20, 14, 21, 40, 117000, tzinfo=UTC),
        content_fingerprint=fields.content_fingerprint,
        has_audio=True,
        in_reply_to=None,
        can_reply=True,
        ours=False,
    )
    assert (fields.processable, fields.transcription_status, fields.classification_status) == (
        True,
        "pending",
        "pending",
    )


def test_message_view_of_rest_api_numbers_and_unix_times() -> None:
    message = load_fixture("message_created__incoming_text") | {"message_type": 0, "created_at": 1795702811}
    fields = payloads.Message.of(message)
    assert fields.message_type == "incoming"
    assert fields.message_created_at == datetime.fromtimestamp(1795702811, tz=UTC)
    assert fields.classification_status == "pending"


def test_parse_time() -> None:
    assert payloads.parse_time("2026-11-20T14:21:40.117Z") == datetime(
        2026, 11, 20, 14, 21, 40, 117000, tzinfo=UTC
    )
    assert payloads.parse_time("2025-01-30T10:00:00") == datetime(2025, 1, 30, 10, tzinfo=UTC)
    assert payloads.parse_time(None) is None
    with pytest.raises(ValueError):
        payloads.parse_time("yesterday")
    with pytest.raises(ValueError):
        payloads.parse_time(True)


@pytest.mark.parametrize(
    "key",
    [
        "Password",
        "apiKey",
        "client_secret",
        "x_token",
        "pubsub_token",
        "hmac_token",
        "identifier_hash",
        "PRIVATE-KEY",
        "Authorization",
        "refresh token",
        "api_key",
        "sessionId",
        "user.passwd",
    ],
)
def test_secret_keys_are_removed_at_any_depth_whatever_their_case(key: str) -> None:
    payload = load_fixture("message_created__incoming_text")
    payload["content_attributes"] = {"form": [{"fields": {key: "s3cr3t-value", "label": "kept"}}], key: "x"}
    raw = json.dumps(payload).encode()
    assert payloads.pubsub_token_only(raw, payload) is None  # the fast path does not skip it
    clean = payloads.strip_secrets(payload)
    assert "s3cr3t-value" not in json.dumps(clean)
    assert clean["content_attributes"]["form"][0]["fields"] == {"label": "kept"}
    assert key not in clean["content_attributes"]


@pytest.mark.parametrize(
    "key", ["identifier", "source_id", "hmac_verified", "content", "phone_number", "name"]
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not payloads.is_secret_key(key)


@pytest.mark.parametrize(
    ("name", "feedback"),
    [
        ("message_updated__web_widget_submitted_values", "answer"),
        ("message_updated__whatsapp_external_error", "refused"),
        ("message_updated__outgoing_bot_delivered", None),
        ("message_created__incoming_quick_reply_answer", None),
    ],
)
def test_our_answered_or_refused_message_is_classified_not_processed(name: str, feedback: str | None) -> None:
    message = payloads.Message.of(load_fixture(name))
    assert message.feedback == feedback
    assert message.processable is (name == "message_created__incoming_quick_reply_answer")
    assert message.classification_status == ("pending" if feedback or message.processable else "not_needed")


def test_only_our_own_messages_carry_feedback() -> None:
    answered = load_fixture("message_updated__web_widget_submitted_values")
    del answered["content_attributes"]["outbox_key"]  # an agent's or another bot's question
    assert payloads.feedback(answered) is None
    refused = load_fixture("message_updated__whatsapp_external_error")
    refused["private"] = True
    assert payloads.feedback(refused) is None
    refused = load_fixture("message_updated__whatsapp_external_error")
    refused["content_attributes"]["external_error"] = "  "
    assert payloads.feedback(refused) is None
