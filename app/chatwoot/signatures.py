"""Chatwoot webhook authentication: HMAC signature with a timestamp window, or a URL token.

Chatwoot 4.12.0 and later sign each delivery of an account webhook, and 4.13.0 and later each
delivery of an API-channel inbox with that channel's secret: `X-Chatwoot-Signature: sha256=<hex
HMAC-SHA256(secret, "<X-Chatwoot-Timestamp>.<raw body>")>` (Chatwoot's lib/webhooks/trigger.rb).
Older installations cannot sign; for them a secret `?token=` on the webhook URL is the fallback.

The body is verified as it streams in (`StreamVerifier`): an unauthenticated body never has to
be held in memory or parsed before it is known to be Chatwoot's.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"
DELIVERY_HEADER = "X-Chatwoot-Delivery"
SIGNATURE_PREFIX = "sha256="
MAX_TIMESTAMP_LENGTH = 20
"""Characters of a unix-seconds timestamp header worth parsing."""
SIGNING_HELP = (
    "see the README, 'Connecting real services' (where the webhook's secret is), and docs/ingestion.md, "
    "'Authentication' (how a delivery is signed)"
)


def compute(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value Chatwoot sends for `body` at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def sign_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers of a signed delivery, as Chatwoot would send them (benchmarks, tests, tools)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: compute(secret, ts, body),
    }


def ascii_int(text: str, max_length: int = MAX_TIMESTAMP_LENGTH) -> int | None:
    """The value of a string of ASCII digits, or None (`str.isdigit` also accepts `²` and `②`)."""
    value = text.strip()
    if not value or len(value) > max_length or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    method: str
    """`signature`, `url_token`, `unsigned` (development switch) or `none`."""
    reason: str = ""
    """Why it failed, safe to return to the caller (no secret in it)."""


def timestamp_problem(timestamp: str, tolerance: int, now: float | None = None) -> str:
    """'' when the timestamp header is unix seconds within `tolerance` of now; else the reason."""
    ts = ascii_int(timestamp)
    if ts is None:
        return f"{TIMESTAMP_HEADER} is not unix seconds"
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        return f"{TIMESTAMP_HEADER} is outside the accepted window of {tolerance} s"
    return ""


class StreamVerifier:
    """HMACs of a body as it streams in, one per candidate secret; says which secret signed it.

    Candidates are (secret, owner) pairs; `matched()` returns the owners of every secret whose
    signature equals the header (several owners can share one secret).
    """

    def __init__(self, candidates: Iterable[tuple[str, Hashable]], timestamp: str):
        prefix = timestamp.strip().encode() + b"."
        self._macs: dict[str, tuple[hmac.HMAC, list[Hashable]]] = {}
        for secret, owner in candidates:
            if not secret:
                continue
            if secret in self._macs:
                self._macs[secret][1].append(owner)
                continue
            mac = hmac.new(secret.encode(), prefix, hashlib.sha256)
            self._macs[secret] = (mac, [owner])

    def __bool__(self) -> bool:
        return bool(self._macs)

    def update(self, chunk: bytes) -> None:
        for mac, _ in self._macs.values():
            mac.update(chunk)

    def matched(self, signature: str) -> list[Hashable]:
        given = signature.strip().lower().encode("utf-8", "replace")
        owners: list[Hashable] = []
        for mac, names in self._macs.values():
            expected = (SIGNATURE_PREFIX + mac.hexdigest()).encode()
            if hmac.compare_digest(given, expected):
                owners.extend(names)
        return owners


def verify_signature(
    body: bytes,
    signature: str,
    timestamp: str,
    *,
    secrets: Iterable[str],
    tolerance: int,
    now: float | None = None,
) -> str:
    """'' when one of `secrets` signed `body` at a timestamp within `tolerance` seconds of now;
    else the reason it did not."""
    if not signature:
        return f"missing {SIGNATURE_HEADER}"
    if not timestamp:
        return f"missing {TIMESTAMP_HEADER}"
    problem = timestamp_problem(timestamp, tolerance, now)
    if problem:
        return problem
    verifier = StreamVerifier(((s, s) for s in secrets), timestamp)
    verifier.update(body)
    return "" if verifier.matched(signature) else "signature does not match"


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a URL token."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def token_fingerprint(token: str) -> str:
    """What the spool keeps of a URL token it cannot check yet (never the token itself)."""
    return hashlib.sha256(b"url-token:" + token.encode("utf-8", "replace")).hexdigest()
