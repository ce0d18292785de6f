"""The admin API: token and rate limits, users, links, link codes, unmapped contacts, erasure,
Chatwoot accounts — with secrets absent from every response."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.helpers.admin import (
    ADMIN_TOKEN,
    AUTH,
    add_link,
    add_note,
    add_user,
    assert_absent,
    count,
    sql,
    unreachable,
)

pytestmark = pytest.mark.usefixtures("admin_env")

ENDPOINTS = [
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/u1"),
    ("PATCH", "/admin/users/u1"),
    ("PUT", "/admin/users/u1/notify"),
    ("DELETE", "/admin/users/u1"),
    ("POST", "/admin/users/u1/links"),
    ("DELETE", "/admin/users/u1/links/1"),
    ("POST", "/admin/users/u1/link-code"),
    ("POST", "/admin/users/u1/reconsent"),
    ("GET", "/admin/contacts/unmapped"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/accounts"),
    ("PUT", "/admin/accounts/7"),
    ("POST", "/admin/accounts/7/finish-rotation"),
    ("DELETE", "/admin/accounts/7"),
    ("PUT", "/admin/accounts/7/inboxes/12/secret"),
    ("POST", "/admin/accounts/7/inboxes/12/finish-rotation"),
    ("DELETE", "/admin/accounts/7/inboxes/12/secret"),
    ("GET", "/admin/accounts/ai"),
    ("GET", "/admin/accounts/7/ai"),
    ("PUT", "/admin/accounts/7/ai"),
    ("DELETE", "/admin/accounts/7/ai"),
]


def call(client: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
    if body is not None:
        kwargs["json"] = body
    return client.open(path, method=method, **kwargs)


ENDPOINTS += [
    # records: exports, legal holds, retention, search, the delivery audit trail
    ("POST", "/admin/users/u1/exports"),
    ("GET", "/admin/users/u1/exports"),
    ("GET", "/admin/exports/3"),
    ("POST", "/admin/exports/3/url"),
    ("DELETE", "/admin/exports/3"),
    ("GET", "/admin/users/u1/holds"),
    ("POST", "/admin/users/u1/holds"),
    ("DELETE", "/admin/users/u1/holds/5"),
    ("GET", "/admin/holds"),
    ("GET", "/admin/retention"),
    ("PUT", "/admin/retention/7"),
    ("DELETE", "/admin/retention/7"),
    ("GET", "/admin/search"),
    ("GET", "/admin/deliveries"),
]


def test_every_admin_route_is_in_the_table(app: Any) -> None:
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    expected = {(m, re.sub(r"/u1\b", "/<user_id>", p)) for m, p in ENDPOINTS}
    expected = {
        (
            m,
            p.replace("/links/1", "/links/<int:link_id>")
            .replace("/7", "/<int:account_id>")
            .replace("/12/", "/<int:inbox_id>/")
            .replace("/exports/3", "/exports/<int:export_id>")
            .replace("/holds/5", "/holds/<int:hold_id>"),
        )
        for m, p in expected
    }
    assert routes == expected


# ----------------------------------------------------------------------------------------------
# token and rate limits


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "basic", "empty"],
)
def test_no_or_wrong_token_is_401_json(client: Any, method: str, path: str, headers: dict[str, str]) -> None:
    response = call(client, method, path, body={}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_absent(response.data, ADMIN_TOKEN)
    assert count("user_bucket_mapping") == 0


def test_a_token_with_extra_characters_is_refused(client: Any) -> None:
    for token in (ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], ADMIN_TOKEN.upper()):
        assert (
            call(client, "GET", "/admin/users", headers={"Authorization": f"Bearer {token}"}).status_code
            == 401
        )
    assert call(client, "GET", "/admin/users").status_code == 200


def test_many_failed_attempts_stop_the_guesser_not_the_admins(
    client: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    allowed = int(settings.admin_auth_failure_limit.split()[0])
    for _ in range(allowed):
        assert (
            call(client, "GET", "/admin/users", headers={"Authorization": "Bearer guess"}).status_code == 401
        )
    refused = call(client, "GET", "/admin/users", headers={"Authorization": "Bearer guess"})
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "too_many_requests"
    assert "admin sign-in failures over the limit" in caplog.text
    # The right token from the same address (the same proxy) still gets in.
    assert call(client, "GET", "/admin/users").status_code == 200
    assert call(client, "GET", "/admin/users", headers={"Authorization": "Bearer guess2"}).status_code == 429
    # Another address is not affected.
    other = client.get("/admin/users", headers=AUTH, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 200


def test_successful_requests_do_not_count_as_failures(client: Any, settings: Any) -> None:
    allowed = int(settings.admin_auth_failure_limit.split()[0])
    for _ in range(allowed + 5):
        assert call(client, "GET", "/admin/users").status_code == 200


def test_requests_are_rate_limited_per_address(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    app = create_app(replace(settings, admin_rate_limit="5 per minute"))
    client = app.test_client()
    assert [call(client, "GET", "/admin/users").status_code for _ in range(6)] == [200] * 5 + [429]


def test_the_limiter_runs_only_for_the_admin_blueprints(app: Any, client: Any) -> None:
    limiter = app.extensions["admin_limiter"]

    def owned(hook: Any) -> bool:
        target = getattr(hook, "func", hook)  # a functools.partial, or a bound method
        return getattr(target, "__self__", None) is limiter or limiter in getattr(hook, "args", ())

    for table in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        assert not any(owned(hook) for hook in table.get(None, []))
    assert any(owned(hook) for hook in app.before_request_funcs["admin"])
    assert any(owned(hook) for hook in app.before_request_funcs["admin_page"])
    # The limit is checked before the token: refused addresses never reach the comparison.
    assert owned(app.before_request_funcs["admin"][0])
    # Other requests carry no rate-limit headers.
    assert "X-RateLimit-Limit" not in client.get("/healthz").headers
    assert "X-RateLimit-Limit" in call(client, "GET", "/admin/users").headers


def test_admin_api_is_off_without_a_token_setting(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    client = create_app(replace(settings, admin_api_token="")).test_client()
    response = call(client, "GET", "/admin/users", headers={"Authorization": "Bearer "})
    assert response.status_code == 503
    assert response.get_json()["error"] == "admin_disabled"


# ----------------------------------------------------------------------------------------------
# users


def test_create_show_update_and_list_users(client: Any) -> None:
    from app.archive import storage

    created = call(
        client, "POST", "/admin/users", {"user_id": "u-1", "display_name": "Ana", "language": "pt"}
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["bucket_name"] == storage.bucket_name("u-1")
    assert body["notify_on_ready"] is False and body["language"] == "pt" and body["links"] == []

    assert call(client, "POST", "/admin/users", {"user_id": "u-1"}).status_code == 409
    assert call(client, "GET", "/admin/users/u-1").get_json()["display_name"] == "Ana"
    assert call(client, "GET", "/admin/users/nobody").status_code == 404

    updated = call(client, "PATCH", "/admin/users/u-1", {"display_name": None, "notify_on_ready": True})
    assert updated.status_code == 200
    assert updated.get_json()["display_name"] is None and updated.get_json()["notify_on_ready"] is True
    assert updated.get_json()["language"] == "pt"  # left out: unchanged
    assert call(client, "PATCH", "/admin/users/nobody", {"language": "en"}).status_code == 404

    call(client, "POST", "/admin/users", {"user_id": "u-0"})
    listed = call(client, "GET", "/admin/users").get_json()["users"]
    assert [u["user_id"] for u in listed] == ["u-0", "u-1"]
    assert call(client, "GET", "/admin/users?limit=1&after=u-0").get_json()["users"][0]["user_id"] == "u-1"


def test_set_notify_on_ready(client: Any) -> None:
    add_user("u-2")
    response = call(client, "PUT", "/admin/users/u-2/notify", {"notify_on_ready": True})
    assert response.status_code == 200 and response.get_json()["notify_on_ready"] is True
    assert sql("SELECT notify_on_ready FROM user_bucket_mapping")[0]["notify_on_ready"] is True
    assert (
        call(client, "PUT", "/admin/users/u-2/notify", {"notify_on_ready": False}).get_json()[
            "notify_on_ready"
        ]
        is False
    )
    assert call(client, "PUT", "/admin/users/u-2/notify", {"notify_on_ready": "yes"}).status_code == 422
    assert call(client, "PUT", "/admin/users/u-2/notify", {}).status_code == 422
    assert call(client, "PUT", "/admin/users/zz/notify", {"notify_on_ready": True}).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "a/b"}, "user_id"),
        ({"user_id": " padded"}, "user_id"),
        ({"user_id": "x" * 201}, "user_id"),
        ({"user_id": "ok", "language": "fr"}, "language"),
        ({"user_id": "ok", "notify_on_ready": 1}, "notify_on_ready"),
        ({"user_id": "ok", "bucket_name": "mine"}, "bucket_name"),
        ({"user_id": 12}, "user_id"),
    ],
)
def test_user_input_errors_name_the_field(client: Any, body: dict[str, Any], field: str) -> None:
    response = call(client, "POST", "/admin/users", body)
    assert response.status_code == 422
    assert field in response.get_json()["detail"]
    assert count("user_bucket_mapping") == 0


def test_bodies_that_are_not_json_objects(client: Any) -> None:
    assert (
        client.post(
            "/admin/users", data="[1]", headers={**AUTH, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        client.post(
            "/admin/users", data="{oops", headers={**AUTH, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        client.post(
            "/admin/users", data="user_id=x", headers={**AUTH, "Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    assert call(client, "PATCH", "/admin/users/u", {}).status_code == 422


# ----------------------------------------------------------------------------------------------
# links


def test_link_contact_queues_the_move_of_its_archive(client: Any, redis_conn: Any) -> None:
    from rq import Queue

    add_user("u-3")
    response = call(
        client, "POST", "/admin/users/u-3/links", {"contact_id": 287, "phone": "+54 9 11 5555-0123"}
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert {(a["link_type"], a["link_value"]) for a in body["added"]} == {
        ("contact_id", "287"),
        ("phone", "+5491155550123"),
    }
    assert body["chatwoot_account_id"] == 1 and body["rehome_queued"] is True
    assert Queue("maintenance", connection=redis_conn).count == 1

    again = call(client, "POST", "/admin/users/u-3/links", {"contact_id": 287})
    assert again.status_code == 200 and again.get_json()["already_linked"] == [
        {"link_type": "contact_id", "link_value": "287"}
    ]
    shown = call(client, "GET", "/admin/users/u-3").get_json()["links"]
    assert len(shown) == 2

    link_id = next(link["id"] for link in shown if link["link_type"] == "phone")
    removed = call(client, "DELETE", f"/admin/users/u-3/links/{link_id}")
    assert removed.status_code == 200 and removed.get_json()["deleted"]["link_value"] == "+5491155550123"
    assert call(client, "DELETE", f"/admin/users/u-3/links/{link_id}").status_code == 404


def test_link_refusals(client: Any) -> None:
    add_user("u-4")
    add_user("u-5")
    add_link("u-5", "contact_id", "300")
    assert call(client, "POST", "/admin/users/u-4/links", {"contact_id": 300}).status_code == 409
    moved = call(client, "POST", "/admin/users/u-4/links", {"contact_id": 300, "replace": True})
    assert moved.status_code == 201 and moved.get_json()["moved"][0]["link_value"] == "300"
    assert call(client, "POST", "/admin/users/u-4/links", {"phone": "12"}).status_code == 422
    assert call(client, "POST", "/admin/users/u-4/links", {}).status_code == 422
    assert call(client, "POST", "/admin/users/u-4/links", {"contact_id": -1}).status_code == 422
    assert call(client, "POST", "/admin/users/nobody/links", {"contact_id": 9}).status_code == 404
    assert count("user_bucket_mapping", "user_id = 'nobody'") == 0


def test_linking_moves_the_contacts_archive_into_the_users_bucket(client: Any, run_jobs: Any) -> None:
    from app.archive import storage
    from tests.helpers.archive import ingest, objects, text_message

    note_id = ingest(text_message(5001, contact_id=555, phone="+5491155550999"))
    run_jobs(queues=("archive",))
    fallback = storage.bucket_name("account_1")
    assert any(name.endswith("/5001.json") for name in objects(fallback))

    add_user("u-6")
    assert call(client, "POST", "/admin/users/u-6/links", {"contact_id": 555}).status_code == 201
    run_jobs(queues=("maintenance",))
    row = sql("SELECT user_id, gcs_storage_path FROM meeting_notes WHERE id = %s", (note_id,))[0]
    assert row["user_id"] == "u-6"
    assert row["gcs_storage_path"].startswith(f"gs://{storage.bucket_name('u-6')}/")
    assert not any(name.endswith("/5001.json") for name in objects(fallback))


# ----------------------------------------------------------------------------------------------
# link codes


def test_link_code_is_shown_once_and_stored_hashed(client: Any) -> None:
    add_user("u-7")
    response = call(client, "POST", "/admin/users/u-7/link-code", {})
    assert response.status_code == 201
    body = response.get_json()
    assert re.fullmatch(r"\d{6}", body["code"])
    assert f"LINK {body['code']}" in body["instructions"]
    assert response.headers["Cache-Control"] == "no-store"
    stored = json.dumps(sql("SELECT * FROM link_codes"), default=str)
    assert body["code"] not in stored
    assert call(client, "POST", "/admin/users/nobody/link-code", {}).status_code == 404
    assert call(client, "POST", "/admin/users/u-7/link-code", {"chatwoot_account_id": "x"}).status_code == 422


# ----------------------------------------------------------------------------------------------
# unmapped contacts and the page's numbers


def test_unmapped_contacts_with_message_counts(client: Any) -> None:
    for _ in range(3):
        add_note(contact_id=900, name="Unknown A", phone="+5511999990000")
    add_note(contact_id=901, name="Unknown B", phone="+5511999990001", status="error", error="timeout")
    add_user("u-8")
    add_note(contact_id=287, user_id="u-8")
    # Linked but not moved yet: not listed as unmapped.
    add_link("u-8", "contact_id", "902")
    add_note(contact_id=902)
    contacts = call(client, "GET", "/admin/contacts/unmapped").get_json()["contacts"]
    assert [(c["contact_id"], c["messages"], c["stored"]) for c in contacts] == [(900, 3, 3), (901, 1, 0)]
    assert contacts[0]["name"] == "Unknown A" and contacts[0]["phone"] == "+5511999990000"
    assert len(call(client, "GET", "/admin/contacts/unmapped?limit=1").get_json()["contacts"]) == 1
    assert call(client, "GET", "/admin/contacts/unmapped?limit=0").status_code == 422


def test_stats_count_today_backlog_errors(client: Any) -> None:
    add_note(status="stored")
    add_note(status="stored")
    add_note(status="error", error="gcs unavailable")
    add_note(status="received")
    stats = call(client, "GET", "/admin/stats").get_json()
    assert stats["today"]["received"] == 4
    assert (stats["today"]["stored"], stats["today"]["errors"], stats["today"]["waiting"]) == (2, 1, 1)
    assert len(stats["days"]) == 14
    backlog = {b["stage"]: b["waiting"] for b in stats["backlog"]}
    assert backlog["archive"] == 1 and backlog["archive error"] == 1
    assert stats["errors"][0]["error_details"] == "gcs unavailable"


# ----------------------------------------------------------------------------------------------
# erasure


def _user_with_everything(user_id: str) -> dict[str, Any]:
    """A user with a bucket of objects, messages, an order, notices, a conversation, links, a code,
    and one message of a linked contact still in the account's fallback bucket."""
    from app.archive import storage
    from app.users import link_codes as links

    bucket = add_user(user_id)
    target = storage.ensure_bucket(bucket)
    storage.put_json(target, "whatsapp-messages/2026-11-20/1.json", {"id": 1})
    storage.put_bytes(target, "whatsapp-messages/2026-11-20/1/10.ogg", b"OggS", "audio/ogg")
    add_link(user_id, "contact_id", "287")
    add_link(user_id, "phone", "+5491155550123")
    mine = add_note(user_id=user_id, contact_id=287, conversation_id=42, bucket=bucket)
    add_note(user_id=user_id, contact_id=287, conversation_id=42, bucket=bucket, status="error", error="x")
    fallback_bucket = storage.bucket_name("account_1")
    fallback = storage.ensure_bucket(fallback_bucket)
    pending = add_note(contact_id=287, conversation_id=43, bucket=fallback_bucket)
    path = sql("SELECT gcs_storage_path FROM meeting_notes WHERE id = %s", (pending,))[0]["gcs_storage_path"]
    storage.put_json(fallback, path.split("/", 3)[3], {"id": pending})
    other = add_note(contact_id=999, conversation_id=77, bucket=fallback_bucket, phone="+5511988887777")
    other_path = sql("SELECT gcs_storage_path FROM meeting_notes WHERE id = %s", (other,))[0][
        "gcs_storage_path"
    ]
    storage.put_json(fallback, other_path.split("/", 3)[3], {"id": other})
    sql("INSERT INTO message_updates (meeting_note_id, fingerprint, payload) VALUES (%s, 'f', '{}')", (mine,))
    order = sql(
        "INSERT INTO orders (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id, "
        "source_meeting_note_id, status) VALUES (1, 42, 287, %s, %s, 'ready') RETURNING id",
        (user_id, mine),
    )[0]["id"]
    sql(
        "INSERT INTO outbox (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, order_id, body) "
        "VALUES ('k1', 1, 42, 'ready', %s, '{}'), ('k2', 1, 43, 'clarification', NULL, '{}'), "
        "('k3', 1, 77, 'clarification', NULL, '{}')",
        (order,),
    )
    sql(
        "INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id) "
        "VALUES (1, 42, 287, %s), (1, 77, 999, NULL)",
        (user_id,),
    )
    links.issue_code(user_id)
    return {"bucket": bucket, "fallback": fallback_bucket, "other": other, "other_path": other_path}


def test_erase_deletes_everything_and_reports_it_then_finds_nothing(client: Any) -> None:
    from tests.helpers.archive import objects

    setup = _user_with_everything("u-9")
    response = call(client, "DELETE", "/admin/users/u-9")
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["user_existed"] is True and report["bucket_name"] == setup["bucket"]
    assert report["bucket_objects_deleted"] == 2
    assert report["fallback_objects_deleted"] == 1
    assert report["rows_deleted"] == {
        "outbox": 2,
        "orders": 1,
        "conversations": 1,
        "meeting_notes": 3,
        "message_updates": 1,
        "message_attachments": 0,
        "transcriptions": 0,
        "link_codes": 1,
        "contact_links": 2,
        "user_bucket_mapping": 1,
    }
    assert report["nothing_deleted"] is False
    for table in ("user_bucket_mapping", "contact_links", "link_codes", "orders"):
        assert count(table) == 0, table
    assert count("meeting_notes") == 1 and count("outbox") == 1 and count("conversations") == 1
    assert count("user_storage_stats", "user_id = 'u-9'") == 0
    from app import context

    assert context.gcs().lookup_bucket(setup["bucket"]) is None
    # Another contact's archive in the same fallback bucket is untouched.
    assert setup["other_path"].split("/", 3)[3] in objects(setup["fallback"])

    second = call(client, "DELETE", "/admin/users/u-9")
    assert second.status_code == 200
    again = second.get_json()
    assert again["nothing_deleted"] is True and again["user_existed"] is False
    assert again["bucket_objects_deleted"] == 0 and set(again["rows_deleted"].values()) == {0}


def test_erase_of_an_unknown_user_is_an_empty_report(client: Any) -> None:
    response = call(client, "DELETE", "/admin/users/never-existed")
    assert response.status_code == 200
    assert response.get_json()["nothing_deleted"] is True


def test_erase_with_gcs_down_says_to_run_it_again(client: Any, use_settings: Any) -> None:
    from app.archive import storage

    add_user("u-10")
    add_note(user_id="u-10")
    storage.CALL_RETRY_SECONDS = 0.2
    with unreachable(use_settings, storage_emulator_host="http://127.0.0.1:{port}"):
        response = call(client, "DELETE", "/admin/users/u-10")
    assert response.status_code == 503
    assert response.get_json()["error"] == "storage_unavailable"
    assert count("meeting_notes") == 1  # nothing was deleted from the database
    assert call(client, "DELETE", "/admin/users/u-10").get_json()["rows_deleted"]["meeting_notes"] == 1


# ----------------------------------------------------------------------------------------------
# Chatwoot accounts


@pytest.fixture
def keyed(use_settings: Any) -> Any:
    from app.chatwoot import accounts

    accounts.forget_cached()
    return use_settings(secrets_encryption_key=Fernet.generate_key().decode())


def test_accounts_secrets_are_write_only(client: Any, keyed: Any) -> None:
    token, secret, new_secret = "cw-token-7f3a9c", "hook-secret-8d2b", "hook-secret-rotated-1"
    responses = []
    put = call(
        client,
        "PUT",
        "/admin/accounts/7",
        {
            "name": "Acme",
            "base_url": "https://cw.acme.test",
            "api_token": token,
            "webhook_secret": secret,
            "inbox_ids": [3],
        },
    )
    responses.append(put)
    assert put.status_code == 200
    assert put.get_json()["api_token_set"] is True and put.get_json()["webhook_secret_set"] is True
    responses.append(call(client, "PUT", "/admin/accounts/7", {"webhook_secret": new_secret}))
    assert responses[-1].get_json()["previous_webhook_secret_set"] is True
    responses.append(call(client, "GET", "/admin/accounts"))
    assert [a["chatwoot_account_id"] for a in responses[-1].get_json()["accounts"]] == [7]
    responses.append(call(client, "POST", "/admin/accounts/7/finish-rotation"))
    assert responses[-1].get_json()["finished"] is True
    responses.append(call(client, "GET", "/admin/stats"))
    responses.append(call(client, "GET", "/admin/users"))
    responses.append(call(client, "DELETE", "/admin/accounts/7"))
    assert responses[-1].status_code == 200
    responses.append(call(client, "DELETE", "/admin/accounts/7"))
    assert responses[-1].status_code == 404
    for response in responses:
        assert_absent(response.data, token, secret, new_secret, ADMIN_TOKEN, keyed.secrets_encryption_key)


def test_account_input_errors(client: Any, keyed: Any) -> None:
    assert call(client, "PUT", "/admin/accounts/7", {"base_url": "ftp://x"}).status_code == 422
    assert call(client, "PUT", "/admin/accounts/7", {"inbox_ids": ["a"]}).status_code == 422
    assert call(client, "PUT", "/admin/accounts/7", {"webhook_secret": "short"}).status_code == 422
    assert call(client, "PUT", "/admin/accounts/7", {"api_token": "t", "extra": 1}).status_code == 422
    assert call(client, "PUT", "/admin/accounts/0", {}).status_code == 404
    assert count("chatwoot_accounts") == 0


def test_storing_an_account_secret_without_the_key_is_a_clear_error(client: Any, use_settings: Any) -> None:
    use_settings(secrets_encryption_key="")
    response = call(client, "PUT", "/admin/accounts/7", {"api_token": "tok-123456"})
    assert response.status_code == 409 and response.get_json()["error"] == "secrets_key_missing"
    assert_absent(response.data, "tok-123456")


def test_database_down_is_503_json(client: Any, use_settings: Any) -> None:
    with unreachable(use_settings, database_url="postgresql://postgres@127.0.0.1:{port}/none"):
        response = call(client, "GET", "/admin/users")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    assert call(client, "GET", "/admin/users").status_code == 200


def test_behind_a_trusted_proxy_each_client_is_limited_apart(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    def guess(client: Any, address: str) -> int:
        return int(
            client.get(
                "/admin/users",
                headers={"Authorization": "Bearer guess", "X-Forwarded-For": address},
                environ_base={"REMOTE_ADDR": "127.0.0.1"},
            ).status_code
        )

    allowed = int(settings.admin_auth_failure_limit.split()[0])
    proxied = create_app(replace(settings, trusted_proxies=1)).test_client()
    assert [guess(proxied, "203.0.113.7") for _ in range(allowed + 1)][-1] == 429
    assert guess(proxied, "198.51.100.20") == 401  # another client behind the same proxy

    redis_conn.flushdb()
    direct = create_app(settings).test_client()  # TRUSTED_PROXIES=0: the header is not believed
    assert [guess(direct, "203.0.113.7") for _ in range(allowed + 1)][-1] == 429
    assert guess(direct, "198.51.100.20") == 429
