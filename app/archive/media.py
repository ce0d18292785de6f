"""Attachment files: fetched only from allowed hosts, only from public addresses (checked on the
address connected to), redirects followed one by one, size and time capped, spooled to a
temporary file (never wholly in memory) on their way to GCS.

Where a download may go:
- `data_url` itself must be on the account's Chatwoot host (its base URL) or on a host of
  MEDIA_ALLOWED_HOSTS (default: Meta's CDN, where Instagram and Facebook attachments live; add the
  host of Chatwoot's FRONTEND_URL when it differs from CHATWOOT_BASE_URL);
- a redirect may go anywhere public (storage services sign URLs on hosts of their own);
- every connection, the first included, goes to a public address only, checked on the address
  the socket is opened to (a name that resolves to a private address when we connect is refused,
  whatever it resolved to before: DNS rebinding fails). IPv6 forms that embed an IPv4 address
  (mapped, compatible, NAT64, 6to4, Teredo) are judged by that IPv4 address. The account's
  Chatwoot host and CHATWOOT_ALLOWED_PRIVATE_HOSTS (a self-hosted Chatwoot with storage on its own
  network) are the exceptions.

No download carries a token or a cookie (Chatwoot's attachment URLs need none; our API token
never leaves for a download), nor `.netrc` credentials or proxies from the environment. One
download may take ATTACHMENT_DOWNLOAD_SECONDS in all, however slowly the server sends.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import logging
import mimetypes
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from app import context
from app.chatwoot.accounts import resolve as resolve_account

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds of one download request; ATTACHMENT_DOWNLOAD_SECONDS bounds it all."""
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
# addresses


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The NAT64 well-known prefix (RFC 6052): the last 32 bits are an IPv4 address."""
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
"""Local-use NAT64 prefixes (RFC 8215): a network's own translator, never public."""
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""Deprecated IPv4-compatible addresses (`::127.0.0.1`)."""
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""IPv4-translated addresses (RFC 2765)."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it embeds one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    for network in (_NAT64, _IPV4_COMPATIBLE, _IPV4_TRANSLATED):
        if ip in network:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """A globally routable unicast address; an IPv6 form embedding an IPv4 address is judged by it."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip.teredo is not None:
            return False  # a translator or tunnel of some network of its own
        inner = embedded_ipv4(ip)
        if inner is not None:
            ip = inner
    return bool(ip.is_global) and not ip.is_multicast


def system_resolve(host: str) -> list[str]:
    """Every address a host name resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise AttachmentUnavailable(f"cannot resolve {host}") from exc
    return sorted({str(info[4][0]) for info in infos})


resolve: Callable[[str], list[str]] = system_resolve
"""The resolver of every download (checks and connections); tests replace it."""


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        return list(resolve(host))


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


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """`host` is one of `patterns`: a name as it is, or `*.name` for any subdomain of name."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and fnmatch.fnmatchcase(host, pattern):
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class HostPolicy:
    """Where a download may go for one account."""

    chatwoot: tuple[str, str, int] | None
    """(scheme, host, port) of the account's Chatwoot; None when no base URL is configured."""
    allowed_private: frozenset[str]
    media_hosts: tuple[str, ...] = ()
    """MEDIA_ALLOWED_HOSTS: where data_url may point besides the Chatwoot host."""

    @classmethod
    def for_account(cls, account_id: int) -> HostPolicy:

        settings = context.settings()
        base_url = resolve_account(account_id).base_url
        chatwoot = _host_port(base_url) if base_url else None
        return cls(chatwoot, frozenset(settings.chatwoot_allowed_private_hosts), settings.media_allowed_hosts)

    def _is_chatwoot(self, url: str) -> bool:
        if self.chatwoot is None:
            return False
        _, host, port = _host_port(url)
        return (host, port) == self.chatwoot[1:]

    @property
    def trusted_hosts(self) -> frozenset[str]:
        """Hosts that may be on private addresses: the account's Chatwoot and the allowed private ones."""
        return self.allowed_private | ({self.chatwoot[1]} if self.chatwoot else set())

    def check_first(self, url: str) -> None:
        """data_url itself must be on the account's Chatwoot host or an allowed media host."""
        _, host, _ = _host_port(url)
        if self._is_chatwoot(url):
            return
        if not host_allowed(host, self.media_hosts):
            raise AttachmentRefused(f"data_url host {host} is not Chatwoot's nor an allowed media host")
        self.check_redirect(url)

    def check_redirect(self, url: str) -> None:
        """A redirect may go to the Chatwoot host, an allowed private host, or public addresses only.

        A check before the request, for a clear reason; the connection checks again (`_Guard`).
        """
        _, host, _ = _host_port(url)
        if self._is_chatwoot(url) or host in self.allowed_private:
            return
        addresses = _addresses(host)
        if not addresses:
            raise AttachmentUnavailable(f"cannot resolve {host}")
        if not all(is_public_address(a) for a in addresses):
            raise AttachmentRefused(f"redirect to a non-public address ({host})")


# ------------------------------------------------------------------------------------------
# connections that check the address they open, within a deadline


class AddressRefused(Exception):
    """A connection would have gone to a non-public address (raised through requests as is)."""

    def __init__(self, host: str):
        super().__init__(f"connection to a non-public address ({host})")
        self.host = host


def open_socket(address: str, port: int, timeout: float | None, options: Any) -> socket.socket:
    """A TCP connection to one address (tests watch this)."""
    sock = socket.create_connection((address, port), timeout)
    for option in options or ():
        sock.setsockopt(*option)
    return sock


@dataclass
class _Guard:
    """The rules and the clock of one download: which hosts may be private, when it must end."""

    trusted: frozenset[str]
    deadline: float
    """time.monotonic() by which the download must be over."""
    sockets: list[socket.socket] = field(default_factory=list)
    expired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, host: str, port: int, timeout: float | None, options: Any) -> socket.socket:
        host = host.strip("[]").lower().rstrip(".")
        addresses = _addresses(host)
        trusted = host in self.trusted
        if not addresses:
            raise AttachmentUnavailable(f"cannot resolve {host}")
        if not trusted and not all(is_public_address(a) for a in addresses):
            raise AddressRefused(host)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AttachmentUnavailable("download deadline passed")
        timeout = min(timeout, left) if timeout is not None else left
        error: OSError | None = None
        for address in addresses:
            try:
                sock = open_socket(address, port, timeout, options)
            except OSError as exc:
                error = exc
                continue
            if not trusted and not is_public_address(str(sock.getpeername()[0])):
                sock.close()
                raise AddressRefused(host)
            with self._lock:
                if self.expired:
                    sock.close()
                    raise AttachmentUnavailable("download deadline passed")
                self.sockets.append(sock)
            return sock
        raise error or OSError(f"cannot connect to {host}")

    def expire(self) -> None:
        """The deadline passed: cut every connection of the download (a blocked read returns)."""
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _CheckedConnection(HTTPConnection):
    guard: _Guard

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            return self.guard.connect(self._dns_host, self.port, timeout, self.socket_options)
        except (AddressRefused, AttachmentUnavailable):
            raise
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(self, f"failed to connect: {exc}") from exc


class _CheckedHTTPSConnection(HTTPSConnection):
    guard: _Guard

    def _new_conn(self) -> socket.socket:
        return _CheckedConnection._new_conn(self)  # type: ignore[arg-type]


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter whose connections go through a `_Guard`."""

    def __init__(self, guard: _Guard):
        self._guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_conn = type("GuardedHTTPConnection", (_CheckedConnection,), {"guard": self._guard})
        https_conn = type("GuardedHTTPSConnection", (_CheckedHTTPSConnection,), {"guard": self._guard})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }


def _session(guard: _Guard) -> requests.Session:
    """A session for one download: no token, cookie, .netrc or proxy; connections checked."""
    http = requests.Session()
    http.trust_env = False
    http.headers.clear()
    http.headers.update({"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"})
    adapter = _CheckedAdapter(guard)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


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


def _fetch_once(url: str, policy: HostPolicy, max_bytes: int, deadline: float) -> Download:
    guard = _Guard(policy.trusted_hosts, deadline)
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), guard.expire)
    timer.daemon = True
    timer.start()
    http = _session(guard)
    try:
        return _follow(http, url, policy, max_bytes)
    except AddressRefused as exc:
        raise AttachmentRefused(str(exc)) from None
    except MediaError:
        if guard.expired:
            raise AttachmentUnavailable(_too_slow()) from None
        raise
    except requests.RequestException as exc:
        if guard.expired:
            raise AttachmentUnavailable(_too_slow()) from None
        if isinstance(exc, requests.Timeout):
            raise AttachmentUnavailable("timed out") from None
        raise AttachmentUnavailable(f"connection failed ({type(exc).__name__})") from None
    finally:
        timer.cancel()
        http.close()


def _too_slow() -> str:
    return f"download took longer than {context.settings().attachment_download_seconds} s"


def _follow(http: requests.Session, url: str, policy: HostPolicy, max_bytes: int) -> Download:
    policy.check_first(url)
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        response = http.get(current, stream=True, allow_redirects=False, timeout=TIMEOUT)
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
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
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
    """Download an attachment within ATTACHMENT_DOWNLOAD_SECONDS, retrying 404 with backoff for
    `retry_seconds` (ATTACHMENT_RETRY_SECONDS) of that time."""
    settings = context.settings()
    policy = HostPolicy.for_account(account_id)
    limit = settings.max_attachment_bytes if max_bytes is None else max_bytes
    deadline = time.monotonic() + settings.attachment_download_seconds
    budget = settings.attachment_retry_seconds if retry_seconds is None else retry_seconds
    retrying = Retrying(
        retry=retry_if_exception_type(AttachmentNotReady),
        wait=wait_exponential(multiplier=0.25, max=8),
        stop=stop_after_delay(max(0.0, min(budget, deadline - time.monotonic()))),
        reraise=True,
    )
    result: Download = retrying(_fetch_once, data_url, policy, limit, deadline)
    return result


def has_file(attachment: dict[str, Any]) -> bool:
    """Whether an attachment carries a file to archive (else it lives in the message JSON only)."""
    return bool(attachment.get("data_url")) and str(attachment.get("file_type") or "") not in NO_FILE_TYPES
