"""app.schemas: what Chatwoot sends is accepted, unknown fields are kept, errors name the path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.chatwoot import schemas
from tests.helpers.common import fixture_names, load_fixture


@pytest.mark.parametrize("name", fixture_names())
def test_every_fixture_loads(name: str) -> None:
    schemas.load(load_fixture(name))


def test_the_seed_guides_minimal_message_with_a_string_id() -> None:
    loaded = schemas.load(load_fixture("seed_guide_test_message"))
    assert loaded["id"] == "test-message-123"
    assert loaded["account"]["id"] == 789
    assert "inbox" not in loaded


def test_unknown_fields_are_kept_at_every_level() -> None:
    message = load_fixture("message_created__incoming_text")
    message["brand_new_field"] = {"x": 1}
    message["conversation"]["another_new_field"] = [1, 2]
    message["account"]["plan"] = "pro"
    loaded = schemas.load(message)
    assert loaded["brand_new_field"] == {"x": 1}
    assert loaded["conversation"]["another_new_field"] == [1, 2]
    assert loaded["account"]["plan"] == "pro"
    assert loaded["conversation"]["messages"] == message["conversation"]["messages"]


def _errors(payload: dict[str, Any]) -> dict[str, list[str]]:
    with pytest.raises(schemas.InvalidPayload) as caught:
        schemas.load(payload)
    return caught.value.errors


def test_errors_name_each_field_by_its_path() -> None:
    message = load_fixture("message_created__incoming_voice_note")
    del message["account"]
    message["conversation"]["id"] = "forty-two"
    message["attachments"][0]["id"] = None
    message["inbox"]["id"] = -4
    message["private"] = "no"
    errors = _errors(message)
    assert set(errors) == {"account", "conversation.id", "attachments.0.id", "inbox.id", "private"}
    assert errors["account"] == ["Missing data for required field."]
    assert all(isinstance(m, str) for messages in errors.values() for m in messages)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"id": 1.5}, "id"),
        ({"id": [1]}, "id"),
        ({"account": {"id": 0}}, "account.id"),
        ({"account": {}}, "account.id"),
        ({"account": "1"}, "account"),
        ({"message_type": None}, "message_type"),
        ({"message_type": 9}, "message_type"),
        ({"content": 5}, "content"),
        ({"content_attributes": [1]}, "content_attributes"),
        ({"created_at": "not a time"}, "created_at"),
        ({"sender": "María"}, "sender"),
        ({"sender": {"id": "x"}}, "sender.id"),
        ({"conversation": None}, "conversation"),
        ({"conversation": {"id": 2**31}}, "conversation.id"),
        ({"attachments": {"id": 1}}, "attachments"),
        ({"event": ""}, "event"),
    ],
)
def test_invalid_field(change: dict[str, Any], path: str) -> None:
    message = copy.deepcopy(load_fixture("message_created__incoming_text")) | change
    assert path in _errors(message)


@pytest.mark.parametrize(
    "change",
    [
        {"id": 9876},
        {"id": "9876"},
        {"content": None},
        {"content_attributes": None},
        {"sender": None},
        {"private": None},
        {"created_at": None},
        {"created_at": 1795702811},
        {"message_type": 0},
        {"message_type": "template"},
        {"conversation": {"id": "42"}},
        {"inbox": None},
    ],
)
def test_valid_variants(change: dict[str, Any]) -> None:
    schemas.load(load_fixture("message_created__incoming_text") | change)


def test_other_events_need_only_their_name() -> None:
    assert schemas.load({"event": "contact_created", "id": "anything"})["event"] == "contact_created"
    assert set(_errors({"id": 1})) == {"event"}
    assert set(_errors({"event": 42})) == {"event"}


def test_flatten_errors() -> None:
    nested = {"a": {"b": ["bad"], 0: {"c": ["worse"]}}, "_schema": ["whole"], "d": {"_schema": ["type"]}}
    assert schemas.flatten_errors(nested) == {
        "a.b": ["bad"],
        "a.0.c": ["worse"],
        "_payload": ["whole"],
        "d": ["type"],
    }


def test_nested_objects_name_each_bad_member_and_refuse_other_types() -> None:
    message = load_fixture("message_created__incoming_voice_note")
    message["conversation"] = "not an object"
    message["account"] = {"id": None, "plan": "kept"}
    message["attachments"] = [{"id": "x"}, {"file_type": 3}]
    assert _errors(message) == {
        "conversation": ["Not a JSON object."],
        "account.id": ["Field may not be null."],
        "attachments.0.id": ["Not a valid integer."],
        "attachments.1.id": ["Missing data for required field."],
        "attachments.1.file_type": ["Not a valid string."],
    }
