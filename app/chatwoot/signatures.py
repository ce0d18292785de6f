"""Chatwoot webhook authentication: HMAC signature with a timestamp window, or a URL token.

Chatwoot 4.11.2 and later sign each delivery: `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(
secret, "<X-Chatwoot-Timestamp>.<raw body>")>`. Older installations cannot sign; for them a
secret `?token=` on the webhook URL (WEBHOOK_URL_TOKEN) is the fallback.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"
DELIVERY_HEADER = "X-Chatwoot-Delivery"
SIGNATURE_PREFIX = "sha256="
MAX_TIMESTAMP_LENGTH = 20
"""Characters of a unix-seconds timestamp header worth parsing."""


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


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    method: str
    """`signature`, `url_token`, `unsigned` (development switch) or `none`."""
    reason: str = ""
    """Why it failed, safe to return to the caller (no secret in it)."""


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
    ts = timestamp.strip()
    if len(ts) > MAX_TIMESTAMP_LENGTH or not ts.isdigit():
        return f"{TIMESTAMP_HEADER} is not unix seconds"
    current = time.time() if now is None else now
    if abs(current - int(ts)) > tolerance:
        return f"{TIMESTAMP_HEADER} is outside the accepted window of {tolerance} s"
    given = signature.strip().lower().encode("utf-8", "replace")
    for secret in secrets:
        if secret and hmac.compare_digest(given, compute(secret, ts, body).encode()):
            return ""
    return "signature does not match"


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the URL token."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def authenticate(
    body: bytes,
    *,
    signature: str,
    timestamp: str,
    url_token: str | None,
    secrets: tuple[str, ...],
    expected_url_token: str,
    tolerance: int,
    allow_unsigned: bool,
    now: float | None = None,
) -> AuthResult:
    """Decide whether a delivery comes from our Chatwoot, from its signature headers ('' when
    absent) and the URL's `token` (None when absent).

    - Signed deliveries are checked against the account's secrets (current, then previous).
    - A delivery without signature headers needs the URL token, when one is configured.
    - `allow_unsigned` (development only; refused in production at start) accepts what cannot
      be checked; a signature that can be checked and is wrong is still refused.
    """
    signed = bool(signature or timestamp)
    if signed and secrets:
        reason = verify_signature(body, signature, timestamp, secrets=secrets, tolerance=tolerance, now=now)
        return AuthResult(not reason, "signature", reason)
    if expected_url_token and url_token is not None:
        if token_matches(url_token, expected_url_token):
            return AuthResult(True, "url_token")
        return AuthResult(False, "url_token", "wrong URL token")
    if allow_unsigned:
        return AuthResult(True, "unsigned")
    if secrets:
        return AuthResult(False, "signature", f"missing {SIGNATURE_HEADER} and {TIMESTAMP_HEADER}")
    if expected_url_token:
        return AuthResult(False, "url_token", "missing URL token")
    return AuthResult(False, "none", "no webhook secret or URL token is configured")
