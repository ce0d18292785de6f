"""Attachment downloads: where requests may go, redirects, 404 retries, size cap, content types."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from tests.helpers.archive import PUBLIC_ADDRESS, data_url, mock_attachment, storage_url

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS" + b"\x01" * 2000


def test_system_resolver_and_public_addresses() -> None:
    from app.archive import media

    assert "127.0.0.1" in media.system_resolve("localhost") or "::1" in media.system_resolve("localhost")
    for private in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fd00::1",
                    "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "not an address"):  # fmt: skip
        assert not media.is_public_address(private), private
    for public in (PUBLIC_ADDRESS, "8.8.8.8", "2606:4700:4700::1111"):
        assert media.is_public_address(public), public


def test_download_follows_the_redirect_with_no_token(
    http: responses.RequestsMock, public_resolver: Any
) -> None:
    from app.archive import media

    mock_attachment(http, 1, "a.ogg", OGG, "audio/ogg; codecs=opus")
    with media.download(data_url(1, "a.ogg"), 1) as file:
        assert file.file.read() == OGG
        assert (file.size, file.content_type, file.extension) == (len(OGG), "audio/ogg", ".ogg")
    for call in http.calls:
        assert not {"api_access_token", "authorization", "cookie"} & {k.lower() for k in call.request.headers}


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:8000/admin",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/x",  # resolved by the system resolver: loopback
        "http://10.0.0.7/bucket/file.ogg",
        "file:///etc/passwd",
        "https://user:pass@storage.example-cdn.com/x",
    ],
)
def test_redirects_never_go_to_private_addresses(
    http: responses.RequestsMock, public_resolver: Any, target: str
) -> None:
    from app.archive import media

    http.add(responses.GET, data_url(1, "a.ogg"), status=302, headers={"Location": target})
    with pytest.raises(media.AttachmentRefused):
        media.download(data_url(1, "a.ogg"), 1)
    assert len(http.calls) == 1


def test_a_host_resolving_to_a_private_address_is_refused(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]]
) -> None:
    from app.archive import media

    public_resolver["storage.example-cdn.com"] = [PUBLIC_ADDRESS, "192.168.0.10"]
    mock_attachment(http, 1, "a.ogg", OGG, "audio/ogg")
    with pytest.raises(media.AttachmentRefused, match="non-public"):
        media.download(data_url(1, "a.ogg"), 1)


def test_allowed_private_hosts(
    http: responses.RequestsMock, public_resolver: dict[str, list[str]], use_settings: Any
) -> None:
    from app.archive import media

    use_settings(chatwoot_allowed_private_hosts=("minio.internal",))
    public_resolver["minio.internal"] = ["10.0.0.5"]
    http.add(
        responses.GET,
        data_url(1, "a.ogg"),
        status=302,
        headers={"Location": "http://minio.internal:9000/b/a"},
    )
    http.add(responses.GET, "http://minio.internal:9000/b/a", body=OGG, content_type="audio/ogg")
    with media.download(data_url(1, "a.ogg"), 1) as file:
        assert file.size == len(OGG)


def test_data_url_must_be_on_the_accounts_chatwoot(
    http: responses.RequestsMock, db: Any, public_resolver: Any
) -> None:
    from app.archive import media
    from app.chatwoot import accounts

    for url in (
        "https://evil.example.net/rails/active_storage/blobs/redirect/x/a.ogg",
        "http://chat.example.com/rails/active_storage/blobs/redirect/x/a.ogg",  # not the configured scheme/port
        "https://chat.example.com:8443/rails/active_storage/blobs/redirect/x/a.ogg",
    ):
        with pytest.raises(media.AttachmentRefused, match="not Chatwoot's nor an allowed media host"):
            media.download(url, 1)
    # An account with its own Chatwoot: its host, not the environment's.
    accounts.upsert(7, name="Other", base_url="https://support.example.org")
    http.add(responses.GET, "https://support.example.org/files/a.ogg", body=OGG, content_type="audio/ogg")
    with media.download("https://support.example.org/files/a.ogg", 7) as file:
        assert file.size == len(OGG)
    with pytest.raises(media.AttachmentRefused):
        media.download(data_url(1, "a.ogg"), 7)
    assert len(http.calls) == 1


def test_without_a_chatwoot_base_url_only_the_allowed_media_hosts(
    http: responses.RequestsMock, public_resolver: Any, use_settings: Any
) -> None:
    from app.archive import media
    from app.chatwoot import accounts

    use_settings(chatwoot_base_url="", media_allowed_hosts=("*.example-cdn.com",))
    accounts.forget_cached()
    http.add(responses.GET, storage_url(1, "a.ogg"), body=OGG, content_type="audio/ogg")
    with media.download(storage_url(1, "a.ogg"), 1) as file:
        assert file.size == len(OGG)
    for refused in ("http://127.0.0.1:5000/x.ogg", "https://elsewhere.example.org/x.ogg"):
        with pytest.raises(media.AttachmentRefused):
            media.download(refused, 1)


def test_too_many_redirects(http: responses.RequestsMock) -> None:
    from app.archive import media

    url = data_url(1, "a.ogg")
    http.add(responses.GET, url, status=302, headers={"Location": url})
    with pytest.raises(media.AttachmentRefused, match="redirects"):
        media.download(url, 1)
    assert len(http.calls) == media.MAX_REDIRECTS + 1


def test_404_is_retried_then_given_up(http: responses.RequestsMock, public_resolver: Any) -> None:
    from app.archive import media

    mock_attachment(http, 1, "a.ogg", OGG, "audio/ogg", not_found_first=3)
    with media.download(data_url(1, "a.ogg"), 1, retry_seconds=10) as file:
        assert file.size == len(OGG)
    http.add(responses.GET, data_url(2, "b.ogg"), status=404)
    with pytest.raises(media.AttachmentNotReady):
        media.download(data_url(2, "b.ogg"), 1, retry_seconds=0.5)
    assert len([c for c in http.calls if "eyJ2" in c.request.url]) >= 2


def test_server_errors_are_transient(http: responses.RequestsMock) -> None:
    from app.archive import media

    http.add(responses.GET, data_url(1, "a.ogg"), status=502)
    with pytest.raises(media.AttachmentUnavailable, match="HTTP 502"):
        media.download(data_url(1, "a.ogg"), 1)


def test_size_cap_with_and_without_content_length(http: responses.RequestsMock, public_resolver: Any) -> None:
    from app.archive import media

    big = b"x" * 10_000
    http.add(
        responses.GET,
        data_url(1, "a.bin"),
        body=big,
        content_type="application/pdf",
        headers={"Content-Length": str(len(big))},
    )
    with pytest.raises(media.AttachmentTooLarge, match="10000 bytes"):
        media.download(data_url(1, "a.bin"), 1, max_bytes=5000)

    # No Content-Length: the cap applies while reading.
    http.add(responses.GET, data_url(2, "b.bin"), body=b"y" * 20_000, content_type="application/pdf")
    with pytest.raises(media.AttachmentTooLarge, match="limit"):
        media.download(data_url(2, "b.bin"), 1, max_bytes=5000)


def test_large_files_are_spooled_to_disk(http: responses.RequestsMock, public_resolver: Any) -> None:
    from app.archive import media

    body = b"z" * (media.SPOOL_MEMORY_BYTES * 2 + 5)
    mock_attachment(http, 1, "v.mp4", body, "video/mp4")
    with media.download(data_url(1, "v.mp4"), 1) as file:
        assert file.file._rolled  # type: ignore[attr-defined]  # on disk, not in memory
        assert file.size == len(body) and file.extension == ".mp4"


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("audio/ogg", ".ogg"),
        ("audio/ogg; codecs=opus", ".ogg"),
        ("AUDIO/OGG", ".ogg"),
        ("audio/mpeg", ".mp3"),
        ("image/jpeg", ".jpg"),
        ("video/mp4", ".mp4"),
        ("application/pdf", ".pdf"),
        ("application/x-unknown-thing", ".bin"),
    ],
)
def test_extension_from_content_type(content_type: str, extension: str) -> None:
    from app.archive.media import extension_for

    assert extension_for(content_type) == extension


def test_content_type_guessed_when_the_server_does_not_say(
    http: responses.RequestsMock, public_resolver: Any
) -> None:
    from app.archive import media

    mock_attachment(http, 1, "photo.png", b"\x89PNG" + b"\x00" * 10, "application/octet-stream")
    with media.download(data_url(1, "photo.png"), 1) as file:
        assert (file.content_type, file.extension) == ("image/png", ".png")
