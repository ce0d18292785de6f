"""`flask chatwoot check`: reaches the API with each token, says what each may do, sends nothing.

The stand-in Chatwoot answers tokens as `access_token_auth_helper.rb` does: a user's token gets
its profile (`GET /api/v1/profile`, `api/v1/models/_user.json.jbuilder`: the user's accounts and
roles), a bot's token gets 401 "Access to this endpoint is not authorized for bots" there and on
list endpoints, and may show a conversation.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.chatwoot import accounts
from tests.helpers.common import CHATWOOT_BOT_TOKEN, CHATWOOT_TOKEN
from tests.helpers.orders import ChatwootAPI, chatwoot_api_fixture, message  # noqa: F401 (fixture)


@pytest.fixture(autouse=True)
def _fresh_accounts() -> None:
    accounts.forget_cached()


def run_check(runner: Any, *args: str) -> Any:
    accounts.forget_cached()
    return runner.invoke(args=["chatwoot", "check", *args])


def lines(output: str) -> dict[str, str]:
    """`writes`, `reads`, `template` -> the line's text after its state."""
    found = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] in ("writes", "reads", "template"):
            found[parts[0]] = f"{parts[1]} {parts[2]}"
    return found


def test_a_bot_that_writes_and_a_user_that_reads(
    runner: Any, deliver: Any, db: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    assert deliver(message()).get_json()["status"] == "accepted"  # conversation 42 is known
    use_settings(chatwoot_api_access_token=CHATWOOT_BOT_TOKEN, chatwoot_user_access_token=CHATWOOT_TOKEN)
    result = run_check(runner)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("account 1 (https://chat.example.com): warn")
    found = lines(result.output)
    assert found["writes"] == (
        "ok CHATWOOT_API_ACCESS_TOKEN is an agent bot's token: may create messages, show and update "
        "conversations; reaches conversation 42 of account 1"
    )
    assert found["reads"] == (
        "ok CHATWOOT_USER_ACCESS_TOKEN is a user's token (Ana Ops, administrator of account 1) and lists "
        "conversations and messages: the backfill is on"
    )
    assert found["template"].startswith("warn no WhatsApp template for ready notices")
    assert chatwoot_api.create_calls() == 0  # nothing sent
    assert {c.request.method for c in chatwoot_api.rsps.calls} == {"GET"}
    assert CHATWOOT_TOKEN not in result.output and CHATWOOT_BOT_TOKEN not in result.output


def test_with_only_a_bot_token_the_backfill_is_said_off(
    runner: Any, db: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(chatwoot_api_access_token=CHATWOOT_BOT_TOKEN, whatsapp_ready_template_name="content_ready")
    result = run_check(runner)
    assert result.exit_code == 0, result.output
    found = lines(result.output)
    assert found["writes"].startswith("ok CHATWOOT_API_ACCESS_TOKEN is an agent bot's token")
    assert "no conversation known yet" in found["writes"]
    assert found["reads"].startswith(
        "warn CHATWOOT_API_ACCESS_TOKEN is an agent bot's token and may not list"
    )
    assert "the backfill is off" in found["reads"] and "CHATWOOT_USER_ACCESS_TOKEN" in found["reads"]
    assert found["template"].startswith("ok ready notices after the 24-hour window use content_ready")
    with db.transaction() as cur:
        cur.execute("SELECT can_read FROM chatwoot_read_access WHERE chatwoot_account_id = 1")
        assert cur.fetchone()["can_read"] is False


def test_one_user_token_for_everything(runner: Any, db: Any, chatwoot_api: ChatwootAPI) -> None:
    result = run_check(runner)
    assert result.exit_code == 0, result.output
    found = lines(result.output)
    assert found["writes"] == (
        "ok CHATWOOT_API_ACCESS_TOKEN is a user's token (Ana Ops, administrator of account 1); may create messages"
    )
    assert found["reads"] == (
        "ok CHATWOOT_API_ACCESS_TOKEN lists conversations and messages: the backfill is on"
    )


def test_a_refused_token_fails_the_check(
    runner: Any, db: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(chatwoot_api_access_token="revoked-token")
    result = run_check(runner)
    assert result.exit_code == 1
    found = lines(result.output)
    assert found["writes"].startswith("fail CHATWOOT_API_ACCESS_TOKEN refused")
    assert "Invalid Access Token" in found["writes"]
    assert "not wired for sending" in result.output


def test_a_user_of_another_account_cannot_write_here(runner: Any, db: Any, chatwoot_api: ChatwootAPI) -> None:
    result = run_check(runner, "--account", "2")
    assert result.exit_code == 1
    assert lines(result.output)["writes"].startswith(
        "fail CHATWOOT_API_ACCESS_TOKEN is a user's token (Ana Ops), but not a member of account 2"
    )


def test_chatwoot_unreachable_or_not_configured(
    runner: Any, db: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(chatwoot_base_url="https://elsewhere.example.com")
    result = run_check(runner)
    assert result.exit_code == 1
    assert lines(result.output)["writes"].startswith(
        "fail Chatwoot did not answer at https://elsewhere.example.com"
    )
    use_settings(chatwoot_base_url="")
    result = run_check(runner)
    assert result.exit_code == 1
    assert "CHATWOOT_BASE_URL is not set" in result.output
