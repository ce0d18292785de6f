"""Where attachment downloads may go, checked on the address connected to, and how long they may take.

Some tests talk to a real HTTP server on loopback (only `requests` of Chatwoot's own redirect is
mocked there), so that the connection code itself is what is tested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import responses

from tests.helpers.archive import (
    PUBLIC_ADDRESS,
    attachments,
    data_url,
    ingest,
    note,
    objects,
    queued,
    run_archive,
    voice_note,
)
from tests.helpers.common import CHATWOOT_TOKEN, load_fixture

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS" + b"\x02" * 3000
JPEG = b"\xff\xd8\xff\xe0" + b"\x03" * 4000


class LocalServer:
    """An HTTP server on 127.0.0.1 that counts its requests; `drip` sends its body one byte at a time."""

    def __init__(self, body: bytes, drip: float = 0.0):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "audio/ogg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if not drip:
                        self.wfile.write(body)
                        return
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(drip)
                except OSError:
                    return  # the client gave up

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def audio_server() -> Iterator[LocalServer]:
    server = LocalServer(OGG)
    yield server
    server.close()


# ------------------------------------------------------------------------------------------
# addresses


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:0:7f00:1",  # IPv4-translated
        "64:ff9b::7f00:1",  # NAT64, well-known prefix
        "64:ff9b::a9fe:a9fe",  # NAT64 to the metadata service
        "64:ff9b::10.1.2.3",
        "64:ff9b:1::808:808",  # local-use NAT64: a network of its own
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo
    ],
)
def test_ipv6_forms_embedding_a_private_ipv4_address_are_not_public(address: str) -> None:
    from app.archive import media

    assert not media.is_public_address(address)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_forms_embedding_a_public_ipv4_address_stay_public(address: str) -> None:
    from app.archive import media

    assert media.is_public_address(address)


def test_a_redirect_to_an_embedded_loopback_address_is_refused(
    http: responses.RequestsMock, public_resolver: Any
) -> None:
    from app.archive import media

    http.add(responses.GET, data_url(1, "a.ogg"), status=302, headers={"Location": "http://[::127.0.0.1]/x"})
    with pytest.raises(media.AttachmentRefused, match="non-public"):
        media.download(data_url(1, "a.ogg"), 1)
    assert len(http.calls) == 1


# ------------------------------------------------------------------------------------------
# hosts


def instagram_image(message_id: int = 9901, attachment_id: int = 6601) -> tuple[dict[str, Any], str]:
    """An incoming Instagram image as Chatwoot sends it: data_url and thumb_url are the CDN URL
    (app/models/attachment.rb: `metadata[:data_url] = metadata[:thumb_url] = external_url if
    instagram_incoming_message?`)."""
    payload = load_fixture("message_created__incoming_image_with_caption")
    payload["id"] = message_id
    payload["conversation"]["messages"] = []
    payload["conversation"]["channel"] = "Channel::Instagram"
    payload["conversation"]["meta"]["channel"] = "Channel::Instagram"
    payload["inbox"] = {"id": payload["inbox"]["id"], "name": "Instagram"}
    cdn = (
        "https://lookaside.fbsbx.com/ig_messaging_cdn/"
        f"?asset_id={attachment_id}18003&signature=AbzXq0PqjtA1-gwiQv0cH9cN"
    )
    attachment = payload["attachments"][0]
    attachment.update(id=attachment_id, message_id=message_id, data_url=cdn, thumb_url=cdn, file_type="image")
    return payload, cdn


def test_an_instagram_attachment_on_metas_cdn_is_archived_with_no_token(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]], run_jobs: Any
) -> None:
    from app.archive import storage

    public_resolver["lookaside.fbsbx.com"] = ["157.240.1.1"]
    payload, cdn = instagram_image()
    http.add(responses.GET, cdn, body=JPEG, content_type="image/jpeg")
    note_id = ingest(payload)
    run_archive(run_jobs)
    assert note(note_id)["processing_status"] == "stored"
    [att] = attachments(note_id)
    assert att["status"] == "stored" and att["content_type"] == "image/jpeg"
    name = f"whatsapp-messages/{payload['created_at'][:10]}/9901/6601.jpg"
    assert objects(storage.bucket_name("account_1"))[name].download_as_bytes() == JPEG
    [call] = http.calls
    sent = " ".join(f"{k}: {v}" for k, v in call.request.headers.items())
    assert CHATWOOT_TOKEN not in sent and "api_access_token" not in sent.lower()
    assert "authorization" not in sent.lower() and "cookie" not in sent.lower()


def test_data_url_on_chatwoots_frontend_host_needs_that_host_allowed(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]], use_settings: Any
) -> None:
    """Chatwoot builds data_url from FRONTEND_URL, which may differ from the API's base URL."""
    from app.archive import media

    public_resolver["app.example.com"] = [PUBLIC_ADDRESS]
    url = "https://app.example.com/rails/active_storage/blobs/redirect/eyJ1--x/a.ogg"
    http.add(responses.GET, url, body=OGG, content_type="audio/ogg")
    with pytest.raises(media.AttachmentRefused, match=r"app\.example\.com is not Chatwoot's"):
        media.download(url, 1)
    use_settings(media_allowed_hosts=(*media.HostPolicy.for_account(1).media_hosts, "app.example.com"))
    with media.download(url, 1) as file:
        assert file.size == len(OGG)


def test_subdomain_patterns() -> None:
    from app.archive.media import host_allowed

    patterns = ("*.fbcdn.net", "media.example.com")
    assert host_allowed("scontent-gru2-1.xx.fbcdn.net", patterns)
    assert host_allowed("media.example.com", patterns)
    for other in ("fbcdn.net", "evilfbcdn.net", "fbcdn.net.evil.com", "x.media.example.com"):
        assert not host_allowed(other, patterns), other


# ------------------------------------------------------------------------------------------
# connections


def test_a_name_that_resolves_elsewhere_when_connecting_is_refused(
    monkeypatch: pytest.MonkeyPatch, audio_server: LocalServer, settings: Any
) -> None:
    """DNS rebinding: the name is public when checked, loopback when connected to."""
    from app.archive import media

    answers: list[str] = []

    def rebinding(host: str) -> list[str]:
        answers.append(host)
        return [PUBLIC_ADDRESS] if len(answers) == 1 else ["127.0.0.1"]

    monkeypatch.setattr(media, "resolve", rebinding)
    storage_url = f"http://localhost:{audio_server.port}/a.ogg"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, data_url(1, "a.ogg"), status=302, headers={"Location": storage_url})
        rsps.add_passthru(f"http://localhost:{audio_server.port}")
        with pytest.raises(media.AttachmentRefused, match="non-public"):
            media.download(data_url(1, "a.ogg"), 1)
    assert audio_server.hits == 0


def test_the_chatwoot_host_on_a_private_address_is_reached(
    audio_server: LocalServer, use_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A self-hosted Chatwoot on the private network: its own host is trusted, nothing else is."""
    from app.archive import media
    from app.chatwoot import accounts

    opened: list[str] = []
    open_socket = media.open_socket

    def watched(address: str, port: int, timeout: float | None, options: Any) -> Any:
        opened.append(address)
        return open_socket(address, port, timeout, options)

    monkeypatch.setattr(media, "open_socket", watched)
    use_settings(chatwoot_base_url=f"http://127.0.0.1:{audio_server.port}")
    accounts.forget_cached()
    with media.download(f"http://127.0.0.1:{audio_server.port}/a.ogg", 1) as file:
        assert file.file.read() == OGG
    assert opened == ["127.0.0.1"] and audio_server.hits == 1
    use_settings(media_allowed_hosts=("localhost",), chatwoot_base_url="https://chat.example.com")
    accounts.forget_cached()
    with pytest.raises(media.AttachmentRefused):
        media.download(f"http://localhost:{audio_server.port}/a.ogg", 1)
    assert audio_server.hits == 1


def test_a_download_has_an_overall_deadline(use_settings: Any) -> None:
    """A server that sends a byte now and then (never slow enough for the read timeout)."""
    from app.archive import media
    from app.chatwoot import accounts

    server = LocalServer(b"OggS" + b"\x00" * 56, drip=0.25)  # 15 s in all
    try:
        use_settings(chatwoot_base_url=f"http://127.0.0.1:{server.port}", attachment_download_seconds=2)
        accounts.forget_cached()
        started = time.monotonic()
        with pytest.raises(media.AttachmentUnavailable, match="took longer than 2 s"):
            media.download(f"http://127.0.0.1:{server.port}/slow.ogg", 1)
        assert time.monotonic() - started < 10  # not the whole 15 s (a guard, not a benchmark)
    finally:
        server.close()


def test_a_slow_attachment_does_not_hold_the_message_back(
    use_settings: Any, run_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is archived without it after its attempts; the job's time stays bounded."""
    from rq import Retry

    from app.chatwoot import accounts
    from app.jobs import ARCHIVE_MESSAGE, enqueue

    server = LocalServer(b"OggS" + b"\x00" * 56, drip=0.25)
    try:
        use_settings(chatwoot_base_url=f"http://127.0.0.1:{server.port}", attachment_download_seconds=1)
        accounts.forget_cached()
        payload = voice_note()
        payload["attachments"][0]["data_url"] = f"http://127.0.0.1:{server.port}/slow.ogg"
        note_id = ingest(payload, enqueue=False)
        enqueue(ARCHIVE_MESSAGE, note_id, retry=Retry(max=1))  # past ATTACHMENT_ATTEMPTS
        run_archive(run_jobs)
    finally:
        server.close()
    row = note(note_id)
    assert row["processing_status"] == "stored"
    assert row["error_details"] == "attachment 5521 unavailable: download took longer than 1 s"
    assert queued("transcribe") == [f"transcribe_{note_id}"]
