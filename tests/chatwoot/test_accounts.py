"""Per-account Chatwoot settings: encrypted at rest, rotation, fallback to the environment."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet

from app.chatwoot import accounts


@pytest.fixture
def keyed(use_settings: Any, db: Any) -> Any:
    accounts.forget_cached()
    return use_settings(secrets_encryption_key=Fernet.generate_key().decode())


def test_account_without_row_uses_the_environment(db: Any, settings: Any) -> None:
    accounts.forget_cached()
    config = accounts.resolve(5)
    assert config.own_row is False
    assert config.webhook_secrets == (settings.chatwoot_webhook_secret,)
    assert config.base_url == settings.chatwoot_base_url
    assert config.api_token == settings.chatwoot_api_access_token


def test_secrets_are_encrypted_at_rest_and_never_in_the_public_view(keyed: Any, db: Any) -> None:
    view = accounts.upsert(
        7, name="Acme", base_url="https://cw.acme.test/", api_token="tok-123456", webhook_secret="sec-one"
    )
    assert view["api_token_set"] and view["webhook_secret_set"]
    assert "tok-123456" not in str(view) and "sec-one" not in str(view)
    with db.transaction() as cur:
        cur.execute("SELECT row_to_json(a)::text AS raw FROM chatwoot_accounts a")
        raw = cur.fetchone()["raw"]
    assert "tok-123456" not in raw and "sec-one" not in raw
    config = accounts.resolve(7, use_cache=False)
    assert config.own_row and config.base_url == "https://cw.acme.test"
    assert config.api_token == "tok-123456"
    assert config.webhook_secrets == ("sec-one",)


def test_rotation_accepts_both_secrets_until_finished(keyed: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret="old-secret")
    accounts.upsert(7, webhook_secret="new-secret")
    assert accounts.resolve(7, use_cache=False).webhook_secrets == ("new-secret", "old-secret")
    assert accounts.finish_rotation(7)
    assert accounts.resolve(7, use_cache=False).webhook_secrets == ("new-secret",)


def test_key_rotation_reads_tokens_written_with_the_old_key(keyed: Any, db: Any, use_settings: Any) -> None:
    old_key = keyed.secrets_encryption_key
    accounts.upsert(8, api_token="token-under-old-key")
    use_settings(secrets_encryption_key=f"{Fernet.generate_key().decode()},{old_key}")
    assert accounts.resolve(8, use_cache=False).api_token == "token-under-old-key"


def test_storing_a_secret_without_a_key_is_refused(db: Any, use_settings: Any) -> None:
    use_settings(secrets_encryption_key="")
    with pytest.raises(accounts.SecretsKeyMissing):
        accounts.upsert(9, api_token="x")


def test_an_accounts_user_token_and_template_from_the_command_line(runner: Any, keyed: Any, db: Any) -> None:
    result = runner.invoke(
        args=[
            "accounts",
            "set",
            "7",
            "--user-token",
            "--ready-template",
            "content_ready",
            "--ready-template-language",
            "en:en_US,pt:pt_BR",
            "--ready-template-params",
            "order_id",
        ],
        input="user-token-7\n",
    )
    assert result.exit_code == 0, result.output
    assert "user-token-7" not in result.output
    assert "content_ready en:en_US,pt:pt_BR (order_id)" in result.output
    config = accounts.resolve(7, use_cache=False)
    assert config.read_token == "user-token-7" and config.api_token != "user-token-7"
    assert config.ready_template is not None
    assert config.ready_template.language("pt") == "pt_BR"
    assert config.ready_template.params == ("order_id",)
    assert config.ready_template.category == "UTILITY"

    refused = runner.invoke(args=["accounts", "set", "7", "--ready-template", "Content Ready"])
    assert refused.exit_code == 1 and "ready_template_name" in refused.output
    refused = runner.invoke(args=["accounts", "set", "7", "--ready-template-params", "what,name"])
    assert refused.exit_code == 1 and "ready_template_params" in refused.output
