"""Tenants stay apart: no secret, token or URL token of one Chatwoot account serves another,
during an outage of PostgreSQL included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from app import context
from app.chatwoot import accounts
from app.chatwoot import client as chatwoot
from app.ingest import spool
from tests.helpers.common import WEBHOOK_SECRET, load_fixture, sign

URL = "/webhooks/chatwoot"
GLOBAL_TOKEN = "global-url-token-0123456789"
SEVEN_SECRET = "account-seven-own-secret"


@pytest.fixture(autouse=True)
def _accounts(app: Any, use_settings: Any) -> Iterator[None]:
    use_settings(secrets_encryption_key=Fernet.generate_key().decode(), webhook_url_token=GLOBAL_TOKEN)
    accounts.forget_cached()
    yield
    accounts.forget_cached()


def of_account(account_id: int, message_id: int, fixture: str = "message_created__incoming_text") -> bytes:
    payload = load_fixture(fixture) | {"account": {"id": account_id, "name": f"Account {account_id}"}}
    payload["id"] = message_id
    return json.dumps(payload).encode()


def post(client: Any, body: bytes, *, secret: str | None = None, token: str | None = None) -> Any:
    headers = sign(body, secret) if secret else {"Content-Type": "application/json"}
    url = f"{URL}?token={token}" if token is not None else URL
    return client.post(url, data=body, headers=headers)


def stored(db: Any, account_id: int) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM meeting_notes WHERE chatwoot_account_id = %s", (account_id,))
        return int(cur.fetchone()["n"])


def test_the_global_url_token_serves_only_accounts_without_a_secret_of_their_own(
    client: Any, db: Any
) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    # Account 7 has its own secret: the global token is no way in (it was: 200, stored under 7).
    assert post(client, of_account(7, 1), token=GLOBAL_TOKEN).status_code == 401
    # An account using the environment's settings still may use it.
    assert post(client, of_account(3, 2), token=GLOBAL_TOKEN).status_code == 200
    # An account's own URL token serves that account, and no other.
    accounts.upsert(8, url_token="account-eight-url-token")
    assert post(client, of_account(8, 3), token="account-eight-url-token").status_code == 200
    assert post(client, of_account(7, 4), token="account-eight-url-token").status_code == 401
    assert post(client, of_account(3, 5), token="account-eight-url-token").status_code == 401
    assert (stored(db, 7), stored(db, 3), stored(db, 8)) == (0, 1, 1)


def test_another_accounts_secret_never_signs_for_this_one(client: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    accounts.upsert(8, webhook_secret="account-eight-own-secret")
    assert post(client, of_account(7, 1), secret="account-eight-own-secret").status_code == 401
    assert post(client, of_account(7, 2), secret=WEBHOOK_SECRET).status_code == 401  # the environment's
    assert post(client, of_account(7, 3), secret=SEVEN_SECRET).status_code == 200
    # A body that names account 8 in its first bytes but 7 at its top level is verified for 7.
    tricky = b'{"sender": {"account": {"id": 8}},' + of_account(7, 4)[1:]
    assert post(client, tricky, secret="account-eight-own-secret").status_code == 401
    assert post(client, tricky, secret=SEVEN_SECRET).status_code == 200
    assert stored(db, 7) == 2


def test_inbox_secrets_sign_their_accounts_deliveries_with_rotation(client: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    accounts.set_inbox_secret(7, 12, "api-inbox-12-secret-v1")
    assert post(client, of_account(7, 1), secret="api-inbox-12-secret-v1").status_code == 200
    accounts.set_inbox_secret(7, 12, "api-inbox-12-secret-v2")
    assert post(client, of_account(7, 2), secret="api-inbox-12-secret-v1").status_code == 200  # rotating
    assert accounts.finish_inbox_rotation(7, 12)
    assert post(client, of_account(7, 3), secret="api-inbox-12-secret-v1").status_code == 401
    assert post(client, of_account(7, 4), secret="api-inbox-12-secret-v2").status_code == 200
    assert post(client, of_account(7, 5), secret=SEVEN_SECRET).status_code == 200  # the account's own still
    # An inbox secret of account 7 signs nothing for account 8.
    accounts.upsert(8, webhook_secret="account-eight-own-secret")
    assert post(client, of_account(8, 6), secret="api-inbox-12-secret-v2").status_code == 401
    assert stored(db, 7) == 4 and stored(db, 8) == 0


def test_events_without_an_account_are_verified_against_every_secret_held(client: Any, db: Any) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    typing = load_fixture("conversation_typing_on")
    typing.pop("account", None)
    body = json.dumps(typing).encode()
    answer = post(client, body, secret=SEVEN_SECRET)
    assert answer.status_code == 200 and answer.get_json()["status"] == "ignored"
    assert post(client, body, secret=WEBHOOK_SECRET).status_code == 200
    assert post(client, body, secret="nobody-holds-this-secret").status_code == 401


def test_postgres_down_a_cold_process_spools_unverified_and_keeps_tenants_apart(
    client: Any, db: Any, services: Any
) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    accounts.forget_cached()  # this process has not read the accounts since it started
    services.stop_postgres()
    try:
        genuine = [post(client, of_account(7, 100 + i), secret=SEVEN_SECRET) for i in range(6)]
        forged = [post(client, of_account(7, 200 + i), secret=WEBHOOK_SECRET) for i in range(6)]
    finally:
        services.start_postgres()
        context.db().close()
    # Never 503 while the spool works, and nothing decided with the environment's secret.
    assert [r.status_code for r in genuine + forged] == [200] * 12
    replayed = spool.replay()
    assert (replayed.accepted, replayed.forged) == (6, 6)
    assert stored(db, 7) == 6


def test_the_global_api_token_never_goes_to_another_host(settings: Any) -> None:
    accounts.upsert(7, base_url="https://other-chatwoot.example.org")
    assert accounts.resolve(7).api_token == ""
    with pytest.raises(chatwoot.NotConfigured):
        chatwoot.client_for(7)
    # On the environment's own host the environment's token still serves an account row.
    accounts.upsert(9, base_url=settings.chatwoot_base_url + "/")
    assert accounts.resolve(9).api_token == settings.chatwoot_api_access_token
    accounts.upsert(7, api_token="account-seven-api-token")
    assert chatwoot.client_for(7).api_token == "account-seven-api-token"


def test_naming_new_account_ids_costs_no_query_and_no_memory(client: Any, db: Any, monkeypatch: Any) -> None:
    accounts.registry()  # read once
    database = context.db()
    calls: list[str] = []
    original = database.fetch_all

    def counting(name: str, params: Any = None) -> Any:
        calls.append(name)
        return original(name, params)

    monkeypatch.setattr(database, "fetch_all", counting)
    for account_id in range(10_000, 10_300):
        assert post(client, of_account(account_id, 1), secret="wrong").status_code == 401
    assert calls == [] and len(accounts._registry) == 1


def test_an_account_whose_secrets_cannot_be_read_fails_closed(
    client: Any, db: Any, use_settings: Any
) -> None:
    accounts.upsert(7, webhook_secret=SEVEN_SECRET)
    use_settings(secrets_encryption_key=Fernet.generate_key().decode())  # not the key it was stored with
    accounts.forget_cached()
    # Its deliveries are refused (never checked with the environment's secret) ...
    assert post(client, of_account(7, 1), secret=SEVEN_SECRET).status_code == 401
    assert post(client, of_account(7, 2), secret=WEBHOOK_SECRET).status_code == 401
    # ... and every other account still works.
    assert post(client, of_account(1, 3), secret=WEBHOOK_SECRET).status_code == 200
