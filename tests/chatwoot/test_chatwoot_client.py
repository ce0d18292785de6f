"""The Chatwoot Application API client: exact requests, errors sorted by what the caller does."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses

from app.chatwoot import client as chatwoot

BASE = "https://chat.example.com"
URL = f"{BASE}/api/v1/accounts/1/conversations/42/messages"


@pytest.fixture
def client() -> chatwoot.Client:
    return chatwoot.Client(base_url=BASE + "/", api_token="tok-abc", account_id=1)


@responses.activate
def test_create_message_posts_the_documented_payload_with_the_token_header(client: chatwoot.Client) -> None:
    responses.post(URL, json={"id": 9882, "content": "hi", "message_type": 1})
    body = chatwoot.quick_reply_body("Pick one", [{"title": "A", "value": "a"}, {"title": "B", "value": "b"}])
    message = client.create_message(42, body)
    assert message["id"] == 9882
    sent = responses.calls[0].request
    assert sent.headers["api_access_token"] == "tok-abc"
    assert json.loads(sent.body) == {
        "content": "Pick one",
        "message_type": "outgoing",
        "private": False,
        "content_type": "input_select",
        "content_attributes": {"items": [{"title": "A", "value": "a"}, {"title": "B", "value": "b"}]},
    }


def test_the_request_body_keys_are_those_of_chatwoots_create_message_schema() -> None:
    # Chatwoot's own OpenAPI description of its Application API (a copy kept with the tests).
    spec = json.loads(
        (
            __import__("pathlib").Path(__file__).resolve().parents[1]
            / "fixtures/reference/chatwoot-application-api.swagger.json"
        ).read_text()
    )
    schema = spec["components"]["schemas"]["conversation_message_create_payload"]
    assert set(schema["properties"]) >= chatwoot.ALLOWED_BODY_KEYS
    assert "input_select" in schema["properties"]["content_type"]["enum"]
    assert "outgoing" in schema["properties"]["message_type"]["enum"]


def test_source_id_is_never_sent() -> None:
    with pytest.raises(chatwoot.InvalidMessage, match="source_id"):
        chatwoot.validate_body({**chatwoot.text_body("hi"), "source_id": "wamid.X"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (chatwoot.text_body(""), "content"),
        (chatwoot.text_body("x" * 4097), "4096"),
        (chatwoot.quick_reply_body("x" * 1025, [{"title": "A", "value": "a"}]), "1024"),
        (chatwoot.quick_reply_body("q", [{"title": "A" * 21, "value": "a"}]), "20 characters"),
        (
            chatwoot.quick_reply_body(
                "q", [{"title": "Same", "value": "a"}, {"title": "same", "value": "b"}]
            ),
            "unique",
        ),
        (chatwoot.quick_reply_body("q", [{"title": str(i), "value": str(i)} for i in range(11)]), "1 to 10"),
        (chatwoot.quick_reply_body("q", []), "1 to 10"),
        ({**chatwoot.text_body("q"), "message_type": "incoming"}, "outgoing"),
        ({**chatwoot.text_body("q"), "content_type": "cards"}, "content_type"),
    ],
)
def test_whatsapp_limits_are_enforced_before_sending(body: dict[str, Any], message: str) -> None:
    with pytest.raises(chatwoot.InvalidMessage, match=message):
        chatwoot.validate_body(body)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, chatwoot.Unauthorized),
        (403, chatwoot.Unauthorized),
        (404, chatwoot.NotFound),
        (429, chatwoot.RateLimited),
        (400, chatwoot.BadRequest),
        (422, chatwoot.BadRequest),
        (500, chatwoot.OutcomeUnknown),
        (502, chatwoot.OutcomeUnknown),
        (503, chatwoot.OutcomeUnknown),
    ],
)
@responses.activate
def test_http_errors_are_sorted_by_what_the_caller_should_do(
    client: chatwoot.Client, status: int, error: type[Exception]
) -> None:
    responses.post(URL, json={"error": "nope"}, status=status, headers={"Retry-After": "7"})
    with pytest.raises(error) as caught:
        client.create_message(42, chatwoot.text_body("hi"))
    assert "tok-abc" not in str(caught.value)
    if status == 429:
        assert caught.value.retry_after == 7.0  # type: ignore[attr-defined]


@responses.activate
def test_a_read_timeout_leaves_the_outcome_unknown(client: chatwoot.Client) -> None:
    responses.post(URL, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(chatwoot.OutcomeUnknown):
        client.create_message(42, chatwoot.text_body("hi"))


@responses.activate
def test_a_connect_timeout_never_reached_chatwoot(client: chatwoot.Client) -> None:
    responses.post(URL, body=requests.exceptions.ConnectTimeout("no route"))
    with pytest.raises(chatwoot.Unavailable):
        client.create_message(42, chatwoot.text_body("hi"))


def test_a_refused_connection_is_unavailable() -> None:
    # A port nothing listens on: the request never leaves.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local = chatwoot.Client(base_url=f"http://127.0.0.1:{port}", api_token="t", account_id=1)
    with pytest.raises(chatwoot.Unavailable):
        local.create_message(42, chatwoot.text_body("hi"))


@responses.activate
def test_a_success_without_a_message_id_is_not_taken_for_a_sent_message(client: chatwoot.Client) -> None:
    responses.post(URL, body="<html>proxy page</html>", status=200)
    with pytest.raises(chatwoot.OutcomeUnknown):
        client.create_message(42, chatwoot.text_body("hi"))


@responses.activate
def test_list_messages_reads_the_payload_array(client: chatwoot.Client) -> None:
    responses.get(URL, json={"meta": {}, "payload": [{"id": 1, "content": "a"}, {"id": 2, "content": "b"}]})
    assert [m["id"] for m in client.list_messages(42)] == [1, 2]
    assert responses.calls[0].request.headers["api_access_token"] == "tok-abc"


@responses.activate
def test_list_messages_errors(client: chatwoot.Client) -> None:
    responses.get(URL, status=401, json={"error": "Invalid Access Token"})
    with pytest.raises(chatwoot.Unauthorized):
        client.list_messages(42)
    responses.replace(responses.GET, URL, status=502)
    with pytest.raises(chatwoot.Unavailable):
        client.list_messages(42)


def test_client_for_uses_the_account_configuration(db: Any, settings: Any, use_settings: Any) -> None:
    from app.chatwoot import accounts

    accounts.forget_cached()
    made = chatwoot.client_for(1)
    assert made.base_url == settings.chatwoot_base_url
    assert made.api_token == settings.chatwoot_api_access_token
    use_settings(chatwoot_base_url="")
    accounts.forget_cached()
    with pytest.raises(chatwoot.NotConfigured, match="CHATWOOT_BASE_URL"):
        chatwoot.client_for(1)
    accounts.forget_cached()
