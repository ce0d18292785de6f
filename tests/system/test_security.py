"""Hardening: where attachment downloads may go, where the API token may go, what logs may say,
and that an erased user leaves nothing in the spool.

Chatwoot here is a real HTTP server on loopback (a self-hosted Chatwoot on a private address);
"another host" is a second one on another port, which must never receive a request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import devstack
import pytest
import responses

from app.users import service
from tests.helpers.common import (
    BUCKET_HASH_SECRET,
    CHATWOOT_BASE_URL,
    CHATWOOT_TOKEN,
    WEBHOOK_SECRET,
    base_environ,
    load_fixture,
    sign,
)
from tests.helpers.faults import Processes
from tests.system.test_faults import IMAGE_BYTES, ChatwootStub, wait_http

URL_TOKEN = "url-token-0123456789abcdef"
PHONE = "+5491155550123"


@pytest.fixture
def chatwoot(settings: Any, use_settings: Any) -> Iterator[ChatwootStub]:
    """The account's Chatwoot: a stub on 127.0.0.1 (a private address), with one file."""
    from app.chatwoot.accounts import forget_cached

    stub = ChatwootStub().start()
    stub.files["41"] = IMAGE_BYTES
    use_settings(chatwoot_base_url=stub.url)
    forget_cached()
    yield stub
    stub.stop()
    forget_cached()


@pytest.fixture
def other_host() -> Iterator[ChatwootStub]:
    """Another server on loopback: nothing may be sent to it."""
    stub = ChatwootStub(token="other").start()
    stub.files["41"] = b"not ours"
    yield stub
    stub.stop()


def download(url: str, account_id: int = 1) -> bytes:
    from app.archive import media

    with media.download(url, account_id, retry_seconds=0) as got:
        return got.file.read()


# ---------------------------------------------------------------------------------------------
# data_url: the account's Chatwoot host, then that host or public addresses only


def test_data_url_on_the_chatwoot_host_is_fetched_whatever_its_address(chatwoot: ChatwootStub) -> None:
    assert download(f"{chatwoot.url}/rails/active_storage/blobs/redirect/41/photo.jpg") == IMAGE_BYTES
    paths = [path for _, path, _ in chatwoot.requests_seen]
    assert paths == ["/rails/active_storage/blobs/redirect/41/photo.jpg", "/storage/41"]


def test_data_url_on_another_host_is_refused_unasked(
    chatwoot: ChatwootStub, other_host: ChatwootStub
) -> None:
    from app.archive.media import AttachmentRefused

    for url in (
        f"{other_host.url}/storage/41",
        f"http://localhost:{other_host.url.rsplit(':', 1)[1]}/storage/41",
        f"{chatwoot.url.replace('http://', 'http://user:pw@')}/storage/41",
        "file:///etc/passwd",
        "ftp://127.0.0.1/storage/41",
    ):
        with pytest.raises(AttachmentRefused):
            download(url)
    assert other_host.requests_seen == []
    assert chatwoot.requests_seen == []


@pytest.mark.parametrize(
    "target",
    [
        "{other}/storage/41",  # another loopback service
        "http://10.0.0.8/file.jpg",
        "http://192.168.1.20:9000/file.jpg",
        "http://172.16.5.4/file.jpg",
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "http://[::1]:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "gopher://127.0.0.1/x",
        "file:///etc/passwd",
    ],
)
def test_redirects_never_reach_private_addresses(
    chatwoot: ChatwootStub, other_host: ChatwootStub, target: str
) -> None:
    from app.archive.media import AttachmentRefused

    chatwoot.redirects["/attachments/1"] = target.format(other=other_host.url)
    with pytest.raises(AttachmentRefused):
        download(f"{chatwoot.url}/attachments/1")
    assert other_host.requests_seen == []


def test_a_name_resolving_to_a_private_address_is_refused(
    chatwoot: ChatwootStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.archive import media

    answers = {
        "internal.example.com": ["10.1.2.3"],
        "mixed.example.com": ["93.184.216.34", "127.0.0.1"],  # one private answer is enough
    }
    monkeypatch.setattr(media, "resolve", lambda host: answers[host])
    for host in answers:
        chatwoot.redirects["/attachments/2"] = f"http://{host}/file.jpg"
        with pytest.raises(media.AttachmentRefused):
            download(f"{chatwoot.url}/attachments/2")


def test_redirect_to_the_same_chatwoot_host_and_to_public_storage(
    chatwoot: ChatwootStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.archive import media

    chatwoot.redirects["/attachments/3"] = "/storage/41"
    assert download(f"{chatwoot.url}/attachments/3") == IMAGE_BYTES

    monkeypatch.setattr(media, "resolve", lambda host: ["93.184.216.34"])
    storage_url = "https://files.example-cdn.com/blob/41?X-Amz-Signature=abc"
    chatwoot.redirects["/attachments/4"] = storage_url
    with responses.RequestsMock() as mocked:
        mocked.add_passthru(chatwoot.url)
        mocked.get(storage_url, body=b"public copy", content_type="image/jpeg")
        assert download(f"{chatwoot.url}/attachments/4") == b"public copy"
        assert "api_access_token" not in {h.lower() for h in mocked.calls[-1].request.headers}


def test_private_hosts_allowed_by_configuration(
    chatwoot: ChatwootStub, other_host: ChatwootStub, use_settings: Any
) -> None:
    from app.archive.media import AttachmentRefused

    chatwoot.redirects["/attachments/5"] = f"{other_host.url}/storage/41"
    with pytest.raises(AttachmentRefused):
        download(f"{chatwoot.url}/attachments/5")
    use_settings(chatwoot_base_url=chatwoot.url, chatwoot_allowed_private_hosts=("127.0.0.1",))
    assert download(f"{chatwoot.url}/attachments/5") == b"not ours"


def test_each_account_has_its_own_chatwoot_host(
    chatwoot: ChatwootStub, other_host: ChatwootStub, settings: Any, use_settings: Any, db: Any
) -> None:
    from app.archive.media import AttachmentRefused
    from app.chatwoot import accounts

    use_settings(secrets_encryption_key="k9Zt3ZBqXv0zJm2n5uE6aYt8oP1sQw4rLc7dHf0gJkM=")
    accounts.upsert(2, base_url=other_host.url, api_token="account-2-token")
    accounts.forget_cached()
    assert download(f"{other_host.url}/storage/41", account_id=2) == b"not ours"
    with pytest.raises(AttachmentRefused):
        download(f"{other_host.url}/storage/41", account_id=1)
    with pytest.raises(AttachmentRefused):
        download(f"{chatwoot.url}/storage/41", account_id=2)


# ---------------------------------------------------------------------------------------------
# the API token never leaves for another host


def test_attachment_downloads_carry_no_token(chatwoot: ChatwootStub) -> None:
    download(f"{chatwoot.url}/rails/active_storage/blobs/redirect/41/photo.jpg")
    for _, _, headers in chatwoot.requests_seen:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert "api_access_token" not in lowered and "authorization" not in lowered
        assert CHATWOOT_TOKEN not in json.dumps(headers)


def test_chatwoot_client_never_follows_a_redirect_elsewhere(
    chatwoot: ChatwootStub, other_host: ChatwootStub
) -> None:
    from app.chatwoot import client as api

    path = "/api/v1/accounts/1/conversations/42/messages"
    chatwoot.redirects[path] = f"{other_host.url}{path}"
    client = api.Client(base_url=chatwoot.url, api_token=CHATWOOT_TOKEN, account_id=1)
    with pytest.raises(api.ChatwootError):
        client.create_message(42, api.text_body("hello"))
    with pytest.raises(api.ChatwootError):
        client.list_messages(42)
    assert other_host.requests_seen == []
    assert [m for m, p, _ in chatwoot.requests_seen if p.startswith(path)] == ["POST", "GET"]


# ---------------------------------------------------------------------------------------------
# logs: no secrets, no URL tokens, no full phone numbers


def _forbidden(settings: Any) -> list[str]:
    return [
        WEBHOOK_SECRET,
        CHATWOOT_TOKEN,
        URL_TOKEN,
        BUCKET_HASH_SECRET,
        "test-api-token",
        "test-admin-token",
        "nP7x3bQ6yXh9sKpLm2Vd4TfZ",  # conversation.contact_inbox.pubsub_token of the fixtures
        "SIGNEDSTORAGESECRET",
        PHONE,
        PHONE.lstrip("+"),
        PHONE[-10:],
    ]


def test_pipeline_logs_hold_no_secrets_tokens_or_phone_numbers(  # noqa: PLR0917 (fixtures)
    client: Any, db: Any, redis_conn: Any, gcs: Any, run_jobs: Any, use_settings: Any, capsys: Any
) -> None:
    """Deliveries (signed, by URL token, refused), archive with media, classification and a
    reply sent to Chatwoot, at DEBUG level: the log lines never carry a secret or a phone."""
    from app.logs import configure_logging, settings_secrets

    settings = use_settings(webhook_url_token=URL_TOKEN, log_level="DEBUG")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", settings_secrets(settings))
        capsys.readouterr()
        logs = _run_pipeline(client, settings, run_jobs, capsys)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert '"message": "webhook"' in logs and "archive" in logs  # the pipeline did log
    for secret in _forbidden(settings):
        assert secret not in logs, f"{secret[:6]}... found in the logs"
    assert "Traceback" not in logs


def _run_pipeline(client: Any, settings: Any, run_jobs: Any, capsys: Any) -> str:
    image = load_fixture("message_created__incoming_image_with_caption")
    data_url = image["attachments"][0]["data_url"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_passthru(settings.storage_emulator_host)
        mocked.get(
            data_url,
            status=302,
            headers={"Location": f"{CHATWOOT_BASE_URL}/blob?X-Amz-Signature=SIGNEDSTORAGESECRET&token=x"},
        )
        mocked.get(
            re.compile(re.escape(CHATWOOT_BASE_URL) + r"/blob.*"), body=IMAGE_BYTES, content_type="image/jpeg"
        )
        mocked.post(
            re.compile(re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/1/conversations/\d+/messages"),
            json={"id": 555, "content": "ok"},
        )
        mocked.get(
            re.compile(re.escape(CHATWOOT_BASE_URL) + r"/api/v1/accounts/1/conversations/\d+/messages"),
            json={"payload": []},
        )
        for name in ("message_created__incoming_text", "message_created__incoming_order"):
            payload = load_fixture(name)
            payload["created_at"] = time.strftime(
                "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()
            )  # reply window open
            body = json.dumps(payload).encode()
            assert client.post("/webhooks/chatwoot", data=body, headers=sign(body)).status_code == 200
        body = json.dumps(image).encode()
        by_token = client.post(
            f"/webhooks/chatwoot?token={URL_TOKEN}", data=body, headers={"Content-Type": "application/json"}
        )
        assert by_token.status_code == 200
        wrong = client.post(
            f"/webhooks/chatwoot?token={URL_TOKEN}x", data=body, headers={"Content-Type": "application/json"}
        )
        assert wrong.status_code == 401
        assert (
            client.post("/webhooks/chatwoot", data=body, headers=sign(body, secret="wrong")).status_code
            == 401
        )
        run_jobs()
        assert any("/messages" in c.request.url and c.request.method == "POST" for c in mocked.calls)
    captured = capsys.readouterr()
    return str(captured.err + captured.out)


def test_web_request_log_has_no_url_token(services: Any, tmp_path: Path) -> None:
    """The web process as the local stack starts it: its access log names the path, never `?token=`."""
    port = devstack.free_port()
    env = {
        **os.environ,
        **base_environ(services, tmp_path),
        "WEB_PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "WEBHOOK_URL_TOKEN": URL_TOKEN,
        "NO_GCE_CHECK": "true",
    }
    procs = Processes(env, tmp_path / "logs")
    try:
        procs.start("web", devstack.app_commands(env)["web"])
        wait_http(f"http://127.0.0.1:{port}/healthz")
        import requests

        body = json.dumps(load_fixture("seed_guide_test_message")).encode()
        url = f"http://127.0.0.1:{port}/webhooks/chatwoot?token={URL_TOKEN}"
        answer = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 200, answer.text
        wrong = requests.post(url + "x", data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert wrong.status_code == 401
        other = requests.get(f"http://127.0.0.1:{port}/api/orders/1?token={URL_TOKEN}", timeout=10)
        assert other.status_code in {401, 404}
    finally:
        procs.stop_all()
    log = (tmp_path / "logs" / "web.log").read_text()
    assert URL_TOKEN not in log and "token=" not in log
    assert "Logging error" not in log and "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # One line per request, from the app (the web server keeps no access log of its own).
    deliveries = [line for line in lines if line.get("path") == "/webhooks/chatwoot"]
    assert [(d["message"], d["http_status"]) for d in deliveries] == [("webhook", 200), ("webhook", 401)]
    requests_logged = [line for line in lines if line.get("message") == "request"]
    assert [(r["path"], r["http_status"]) for r in requests_logged] == [
        ("/api/orders/1", other.status_code)
    ]  # /healthz, polled while starting, is logged at DEBUG only
    assert all(isinstance(line["duration_ms"], float | int) for line in deliveries + requests_logged)


# ---------------------------------------------------------------------------------------------
# the spool and erasure


def test_spool_purge_removes_only_that_contacts_deliveries(db: Any, settings: Any) -> None:
    from app.ingest import spool
    from app.ingest.pipeline import prepare

    def spooled(name: str, **changes: Any) -> None:
        payload = load_fixture(name)
        payload.update(changes)
        spool.append(prepare(payload))

    spooled("message_created__incoming_text")  # contact 287, the one erased
    spooled("message_created__incoming_order", id=777)  # the same contact
    spooled("message_created__outgoing_agent", id=778)  # our reply in the contact's conversation
    other = load_fixture("message_created__incoming_text")
    other["id"] = 779
    other["sender"] = {**other["sender"], "id": 999, "phone_number": "+5511912345678"}
    other["conversation"]["meta"]["sender"] = dict(other["sender"])
    other["conversation"]["contact_inbox"]["contact_id"] = 999
    spool.append(prepare(other))
    spooled("seed_guide_test_message")  # another account
    # A line that could not be replayed, kept aside for an operator, is purged too.
    rejected = Path(settings.spool_dir) / spool.REJECTED_FILE
    rejected.write_text(
        json.dumps(
            {"reason": "x", "line": json.dumps({"payload": load_fixture("message_created__incoming_text")})}
        )
        + "\n"
    )
    assert spool.status()["records"] == 5

    removed = spool.purge_contacts({1: {"contact_id": [], "phone": ["+54 9 11 5555-0123"], "identifier": []}})
    assert removed == 4
    left = [
        json.loads(line)["payload"]["id"]
        for p in spool.pending_files()
        for line in p.read_text().splitlines()
    ]
    assert sorted(map(str, left)) == ["779", "test-message-123"]
    assert rejected.read_text() == ""
    assert spool.purge_contacts({1: {"contact_id": [999], "phone": [], "identifier": []}}) == 1


def test_an_erased_user_leaves_nothing_in_the_spool(
    db: Any, redis_conn: Any, gcs: Any, settings: Any
) -> None:
    """Deliveries spooled while PostgreSQL was down are erased with the user: a later replay
    brings nothing of theirs back."""
    from app.ingest import spool
    from app.ingest.pipeline import ingest, prepare
    from app.users import erase

    user_id = "maria"
    service.link_contact(1, user_id, contact_id=287, phone=PHONE)
    ingest(load_fixture("message_created__incoming_order"))
    spool.append(prepare(load_fixture("message_created__incoming_text")))
    assert spool.status()["records"] == 1

    erase.erase_user(user_id)
    assert spool.status()["records"] == 0
    assert spool.replay().accepted == 0
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM meeting_notes WHERE chatwoot_contact_id = 287")
        assert cur.fetchone()["n"] == 0
