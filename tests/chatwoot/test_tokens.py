"""Which token can do what: an agent bot's token writes, a user's token reads.

Chatwoot lets an agent bot's access token only show, create and update conversations and create
messages (`app/controllers/concerns/access_token_auth_helper.rb`, BOT_ACCESSIBLE_ENDPOINTS);
listing conversations or messages answers 401 "Access to this endpoint is not authorized for bots"
(`Api::BaseController#validate_bot_access_token!`). The stand-in Chatwoot (tests/helpers/orders.py)
answers the same way. Here CHATWOOT_API_ACCESS_TOKEN is a bot's token.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import requests

from app.chatwoot import accounts, outbox, reads, send
from app.chatwoot import client as chatwoot
from tests.helpers.common import CHATWOOT_BASE_URL, CHATWOOT_BOT_TOKEN, CHATWOOT_TOKEN
from tests.helpers.orders import ChatwootAPI, chatwoot_api_fixture, message, outbox_rows  # noqa: F401 (fixture)

BODY = chatwoot.text_body("Your LinkedIn post is ready — open the app to review it. Order #1")


@pytest.fixture
def environ(environ: dict[str, str]) -> dict[str, str]:
    """The agent bot's token sends; no user token is configured."""
    return {**environ, "CHATWOOT_API_ACCESS_TOKEN": CHATWOOT_BOT_TOKEN}


@pytest.fixture(autouse=True)
def _fresh_accounts() -> None:
    accounts.forget_cached()


def open_conversation(db: Any) -> None:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, "
            "can_reply, source_type, last_incoming_at) VALUES (1, 42, 287, true, 'whatsapp', now())"
        )


def read_access(db: Any) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM chatwoot_read_access WHERE chatwoot_account_id = 1")
        row = cur.fetchone()
        return dict(row) if row else None


def with_retries_left(monkeypatch: pytest.MonkeyPatch, left: int = 1) -> None:
    """The send job as RQ runs it with retries still to come (SendLater schedules the next)."""
    monkeypatch.setattr(send, "_retries_left", lambda: left)


def test_the_client_tells_a_bot_tokens_refusal_apart(chatwoot_api: ChatwootAPI) -> None:
    bot = chatwoot.Client(CHATWOOT_BASE_URL, CHATWOOT_BOT_TOKEN, 1)
    assert bot.create_message(42, BODY)["id"] == 9882
    with pytest.raises(chatwoot.BotTokenRefused, match="not authorized for bots"):
        bot.list_messages(42)
    with pytest.raises(chatwoot.BotTokenRefused):
        bot.list_conversations()
    stranger = chatwoot.Client(CHATWOOT_BASE_URL, "nobody's token", 1)
    with pytest.raises(chatwoot.Unauthorized) as refused:
        stranger.list_messages(42)
    assert not isinstance(refused.value, chatwoot.BotTokenRefused)
    both = chatwoot.Client(CHATWOOT_BASE_URL, CHATWOOT_BOT_TOKEN, 1, read_token=CHATWOOT_TOKEN)
    assert [m["id"] for m in both.list_messages(42)] == [9882]
    assert [c.request.headers["api_access_token"] for c in chatwoot_api.rsps.calls][-1] == CHATWOOT_TOKEN


def test_reads_use_the_user_token_writes_the_api_token(settings: Any, use_settings: Any) -> None:

    config = accounts.resolve(1)
    assert (config.api_token, config.read_token) == (CHATWOOT_BOT_TOKEN, CHATWOOT_BOT_TOKEN)
    assert config.read_token_source == "CHATWOOT_API_ACCESS_TOKEN"
    use_settings(chatwoot_user_access_token=CHATWOOT_TOKEN)
    accounts.forget_cached()
    config = accounts.resolve(1)
    assert (config.api_token, config.read_token) == (CHATWOOT_BOT_TOKEN, CHATWOOT_TOKEN)
    assert config.read_token_source == "CHATWOOT_USER_ACCESS_TOKEN"


def test_an_account_has_its_own_user_token(db: Any, use_settings: Any) -> None:
    from cryptography.fernet import Fernet

    use_settings(secrets_encryption_key=Fernet.generate_key().decode())
    view = accounts.upsert(7, user_token="account-7-user-token")
    assert view["user_token_set"] is True and "account-7-user-token" not in str(view)
    client = chatwoot.client_for(7)
    assert (client.api_token, client.reads_with) == (CHATWOOT_BOT_TOKEN, "account-7-user-token")
    assert client.read_token_source == "the account's user access token"


def test_a_refused_read_never_fails_a_message_that_may_have_been_delivered(  # noqa: PLR0917 (fixtures)
    db: Any,
    deliver: Any,
    chatwoot_api: ChatwootAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_conn: Any,
) -> None:
    open_conversation(db)
    with_retries_left(monkeypatch)
    chatwoot_api.fail_next(requests.exceptions.ReadTimeout("slow"), applied=True)
    outbox_id = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_id is not None
    with pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)  # the request left; Chatwoot kept message 9882

    # Did it get through? Chatwoot refuses to list the conversation to a bot...
    with caplog.at_level(logging.WARNING, logger="app.chatwoot.reads"), pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)
    [row] = outbox_rows(db)
    assert row["status"] == "sending" and "listing refused" in row["error_details"]
    assert read_access(db)["can_read"] is False
    assert [r.getMessage() for r in caplog.records if r.name == "app.chatwoot.reads"] == [
        "Chatwoot refuses reads"
    ]
    assert chatwoot_api.calls("GET")[-1].endswith("/conversations/42/messages")

    # ...but our message comes back by webhook, carrying its outbox key: found, not sent again.
    assert deliver(chatwoot_api.webhook(9882)).get_json()["status"] == "accepted"
    gets = len(chatwoot_api.calls("GET"))
    assert send.send_outbox(outbox_id) == "sent"
    [row] = outbox_rows(db)
    assert (row["status"], row["chatwoot_message_id"]) == ("sent", "9882")
    assert chatwoot_api.create_calls() == 1
    assert len(chatwoot_api.calls("GET")) == gets  # the refusal is known: Chatwoot is not asked again


def test_without_an_echo_the_message_is_sent_again_after_the_wait(
    db: Any, chatwoot_api: ChatwootAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_conversation(db)
    with_retries_left(monkeypatch)
    chatwoot_api.fail_next(502)  # not applied: nothing to find
    outbox_id = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_id is not None
    with pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)
    with pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)  # no echo yet: wait
    monkeypatch.setattr(send, "ECHO_WAIT", timedelta(0))
    assert send.send_outbox(outbox_id) == "sent"
    assert chatwoot_api.create_calls() == 2 and len(chatwoot_api.created[42]) == 1


def test_with_no_retry_left_a_refused_read_sends_again_rather_than_fail(
    db: Any, chatwoot_api: ChatwootAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_conversation(db)
    with_retries_left(monkeypatch)
    chatwoot_api.fail_next(502)
    outbox_id = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_id is not None
    with pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)
    with_retries_left(monkeypatch, 0)
    assert send.send_outbox(outbox_id) == "sent"


def test_with_a_user_token_the_check_reads_and_the_bot_writes(
    db: Any, chatwoot_api: ChatwootAPI, monkeypatch: pytest.MonkeyPatch, use_settings: Any
) -> None:
    use_settings(chatwoot_user_access_token=CHATWOOT_TOKEN)
    accounts.forget_cached()
    open_conversation(db)
    with_retries_left(monkeypatch)
    chatwoot_api.fail_next(requests.exceptions.ReadTimeout("slow"), applied=True)
    outbox_id = outbox.record(1, 42, "order_ready", "order:1:ready", BODY)
    assert outbox_id is not None
    with pytest.raises(send.SendLater):
        send.send_outbox(outbox_id)
    assert send.send_outbox(outbox_id) == "sent"
    tokens = [(c.request.method, c.request.headers["api_access_token"]) for c in chatwoot_api.rsps.calls]
    assert tokens == [("POST", CHATWOOT_BOT_TOKEN), ("GET", CHATWOOT_TOKEN)]
    assert chatwoot_api.create_calls() == 1


# ------------------------------------------------------------------------------------------------
# the backfill with only a bot token


def test_with_only_a_bot_token_the_backfill_is_off_and_says_why_once(  # noqa: PLR0917 (fixtures)
    db: Any,
    client: Any,
    runner: Any,
    deliver: Any,
    chatwoot_api: ChatwootAPI,
    use_settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from app.ingest.backfill import backfill

    assert deliver(message()).get_json()["status"] == "accepted"  # conversation 42 is known
    with caplog.at_level(logging.INFO, logger="app.chatwoot.reads"):
        first = backfill(6 * 3600)
        calls = len(chatwoot_api.rsps.calls)
        second = backfill(6 * 3600)
    assert set(first.reads_off) == set(second.reads_off) == {1}
    assert "CHATWOOT_API_ACCESS_TOKEN is an agent bot's token" in first.reads_off[1]
    assert "CHATWOOT_USER_ACCESS_TOKEN" in first.reads_off[1]
    assert first.errors == [] and first.listed == 0
    assert len(chatwoot_api.rsps.calls) == calls == 1  # refused once, then not asked again
    said = [r.getMessage() for r in caplog.records if r.name == "app.chatwoot.reads"]
    assert said == ["Chatwoot refuses reads"]  # said once

    ready = client.get("/readyz").get_json()
    assert ready["chatwoot"]["backfill_off"]["1"] == first.reads_off[1]
    shown = runner.invoke(args=["monitor", "--only", "17_chatwoot_reads_refused"])
    assert shown.exit_code == 0 and "CHATWOOT_API_ACCESS_TOKEN" in shown.output

    # A user's token is configured: reads work again with it, the bot's token still writes.
    use_settings(chatwoot_user_access_token=CHATWOOT_TOKEN)
    accounts.forget_cached()
    third = backfill(6 * 3600)
    assert third.reads_off == {} and third.errors == []
    assert {c.request.headers["api_access_token"] for c in chatwoot_api.rsps.calls[calls:]} == {
        CHATWOOT_TOKEN
    }
    assert read_access(db)["can_read"] is True
    assert "chatwoot" not in client.get("/readyz").get_json()
    assert reads.refusal(1, CHATWOOT_BOT_TOKEN) is None
