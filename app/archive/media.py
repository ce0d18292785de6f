"""Attachment files from Chatwoot: checked hosts, redirects followed one by one, size capped,
spooled to a temporary file (never wholly in memory) on their way to GCS.

`data_url` is a Chatwoot URL that redirects to the storage service. It needs no token, so the
download session carries none (and ignores `.netrc` and proxies from the environment). The first
URL must be on the account's Chatwoot host; a redirect may go to that host or to a public
address, never to a loopback, private or link-local one unless the host is listed in
CHATWOOT_ALLOWED_PRIVATE_HOSTS (a self-hosted Chatwoot with storage on its own network).
"""

from __future__ import annotations

import ipaddress
import logging
import mimetypes
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from app import context

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds of one download request."""
CHUNK_BYTES = 256 * 1024
SPOOL_MEMORY_BYTES = 1024 * 1024
"""Files up to this size stay in memory; larger ones go to a temporary file."""
USER_AGENT = "meeting-notes-archive/1"
NO_FILE_TYPES = frozenset({"location", "contact", "fallback", "share"})
"""Attachment types that carry no file of ours (coordinates, a contact card, an external link)."""

_EXTENSIONS = {
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/webm": ".weba",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/heic": ".heic",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/json": ".json",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
}


class MediaError(Exception):
    """An attachment could not be downloaded; `reason` is short and safe to store and log."""

    permanent = False

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AttachmentNotReady(MediaError):
    """Chatwoot answered 404: the file may not be there yet."""


class AttachmentUnavailable(MediaError):
    """A transient failure (timeout, refused connection, 5xx...): worth retrying later."""


class AttachmentRefused(MediaError):
    """The URL or a redirect goes where we never send requests."""

    permanent = True


class AttachmentTooLarge(MediaError):
    """Larger than MAX_ATTACHMENT_BYTES."""

    permanent = True


# ------------------------------------------------------------------------------------------
# where requests may go


def system_resolve(host: str) -> list[str]:
    """Every address a host name resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise AttachmentUnavailable(f"cannot resolve {host}") from exc
    return sorted({str(info[4][0]) for info in infos})


resolve: Callable[[str], list[str]] = system_resolve
"""The resolver used for redirect targets; tests replace it (requests is mocked there)."""


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


def _host_port(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AttachmentRefused("not an http(s) URL")
    if parts.username or parts.password:
        raise AttachmentRefused("URL with credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AttachmentRefused("URL with a bad port") from None
    return parts.scheme, parts.hostname.lower().rstrip("."), port


@dataclass(frozen=True)
class HostPolicy:
    """Where a download may go for one account."""

    chatwoot: tuple[str, str, int] | None
    """(scheme, host, port) of the account's Chatwoot; None when no base URL is configured."""
    allowed_private: frozenset[str]

    @classmethod
    def for_account(cls, account_id: int) -> HostPolicy:
        from app.chatwoot.accounts import resolve as resolve_account

        base_url = resolve_account(account_id).base_url
        chatwoot = _host_port(base_url) if base_url else None
        return cls(chatwoot, frozenset(context.settings().chatwoot_allowed_private_hosts))

    def _is_chatwoot(self, url: str) -> bool:
        if self.chatwoot is None:
            return False
        _, host, port = _host_port(url)
        return (host, port) == self.chatwoot[1:]

    def check_first(self, url: str) -> None:
        """data_url itself must be on the account's Chatwoot host."""
        _host_port(url)
        if self.chatwoot is None:
            # No Chatwoot configured for this account: only public addresses are fetched.
            self.check_redirect(url)
            return
        if not self._is_chatwoot(url):
            raise AttachmentRefused("data_url is not on the account's Chatwoot host")

    def check_redirect(self, url: str) -> None:
        """A redirect may go to the Chatwoot host, an allowed private host, or public addresses only."""
        _, host, _ = _host_port(url)
        if self._is_chatwoot(url) or host in self.allowed_private:
            return
        try:
            addresses: Iterable[str] = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            addresses = resolve(host)
        addresses = list(addresses)
        if not addresses:
            raise AttachmentUnavailable(f"cannot resolve {host}")
        if not all(is_public_address(a) for a in addresses):
            raise AttachmentRefused(f"redirect to a non-public address ({host})")


# ------------------------------------------------------------------------------------------
# downloads


@dataclass
class Download:
    """A downloaded file, spooled; close it when done."""

    file: IO[bytes]
    size: int
    content_type: str
    extension: str

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_sessions: dict[tuple[int, int], requests.Session] = {}


def session() -> requests.Session:
    """One HTTP session per process and thread: keeps connections open between downloads."""
    key = (os.getpid(), threading.get_ident())
    found = _sessions.get(key)
    if found is None:
        found = requests.Session()
        found.trust_env = False  # no .netrc credentials, no proxy settings from the environment
        found.headers.clear()
        found.headers.update({"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"})
        _sessions[key] = found
    return found


def content_type_of(response: requests.Response, url: str) -> str:
    raw = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if raw and raw != "application/octet-stream":
        return raw
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    return guessed or raw or "application/octet-stream"


def extension_for(content_type: str) -> str:
    """The file extension of a content type (`.ogg` for audio/ogg); `.bin` when unknown."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(ctype) or mimetypes.guess_extension(ctype) or ".bin"


def _fetch_once(url: str, policy: HostPolicy, max_bytes: int) -> Download:
    http = session()
    http.cookies.clear()
    policy.check_first(url)
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            response = http.get(current, stream=True, allow_redirects=False, timeout=TIMEOUT)
        except requests.Timeout:
            raise AttachmentUnavailable("timed out") from None
        except requests.RequestException as exc:
            raise AttachmentUnavailable(f"connection failed ({type(exc).__name__})") from None
        if response.is_redirect:
            location = response.headers.get("Location", "")
            response.close()
            current = urljoin(current, location)
            policy.check_redirect(current)
            continue
        with response:
            return _read(response, current, max_bytes)
    raise AttachmentRefused(f"more than {MAX_REDIRECTS} redirects")


def _read(response: requests.Response, url: str, max_bytes: int) -> Download:
    status = response.status_code
    if status == 404:
        raise AttachmentNotReady("not found (404)")
    if status >= 400:
        raise AttachmentUnavailable(f"HTTP {status}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise AttachmentTooLarge(f"{int(declared)} bytes, over the {max_bytes}-byte limit")
    ctype = content_type_of(response, url)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise AttachmentTooLarge(f"over the {max_bytes}-byte limit")
            spool.write(chunk)
    except requests.RequestException as exc:
        spool.close()
        raise AttachmentUnavailable(f"download interrupted ({type(exc).__name__})") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Download(spool, size, ctype, extension_for(ctype))


def download(
    data_url: str, account_id: int, max_bytes: int | None = None, retry_seconds: float | None = None
) -> Download:
    """Download an attachment, retrying 404 with backoff for `retry_seconds` (ATTACHMENT_RETRY_SECONDS)."""
    settings = context.settings()
    policy = HostPolicy.for_account(account_id)
    limit = settings.max_attachment_bytes if max_bytes is None else max_bytes
    budget = settings.attachment_retry_seconds if retry_seconds is None else retry_seconds
    retrying = Retrying(
        retry=retry_if_exception_type(AttachmentNotReady),
        wait=wait_exponential(multiplier=0.25, max=8),
        stop=stop_after_delay(budget),
        reraise=True,
    )
    result: Download = retrying(_fetch_once, data_url, policy, limit)
    return result


def has_file(attachment: dict[str, Any]) -> bool:
    """Whether an attachment carries a file to archive (else it lives in the message JSON only)."""
    return bool(attachment.get("data_url")) and str(attachment.get("file_type") or "") not in NO_FILE_TYPES
