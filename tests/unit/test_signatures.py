"""app.signatures: Chatwoot's HMAC over "<timestamp>.<raw body>", the window, the URL token."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from app.chatwoot import signatures

BODY = b'{"event":"message_created","id":1}'
SECRET = "s3cret-value"
NOW = 1_800_000_000


def chatwoot_signature(secret: str, ts: int, body: bytes) -> str:
    """Exactly what Chatwoot's lib/webhooks/trigger.rb computes."""
    return "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def auth(**overrides: Any) -> signatures.AuthResult:
    options: dict[str, Any] = {
        "signature": chatwoot_signature(SECRET, NOW, BODY),
        "timestamp": str(NOW),
        "url_token": None,
        "secrets": (SECRET,),
        "expected_url_token": "",
        "tolerance": 300,
        "allow_unsigned": False,
        "now": NOW,
    }
    options.update(overrides)
    body = options.pop("body", BODY)
    return signatures.authenticate(body, **options)


def test_compute_matches_chatwoot() -> None:
    assert signatures.compute(SECRET, str(NOW), BODY) == chatwoot_signature(SECRET, NOW, BODY)
    headers = signatures.sign_headers(SECRET, BODY, timestamp=NOW)
    assert headers[signatures.SIGNATURE_HEADER] == chatwoot_signature(SECRET, NOW, BODY)
    assert headers[signatures.TIMESTAMP_HEADER] == str(NOW)


def test_a_good_signature_passes() -> None:
    assert auth() == signatures.AuthResult(True, "signature")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"body": BODY + b" "}, "does not match"),
        ({"signature": chatwoot_signature("other", NOW, BODY)}, "does not match"),
        ({"signature": chatwoot_signature(SECRET, NOW, BODY)[7:]}, "does not match"),
        ({"signature": "sha1=abc"}, "does not match"),
        ({"signature": "sha256=é"}, "does not match"),
        ({"timestamp": str(NOW - 301)}, "window"),
        ({"timestamp": str(NOW + 301)}, "window"),
        ({"timestamp": "soon"}, "unix seconds"),
        ({"timestamp": "1" * 40}, "unix seconds"),
        ({"timestamp": ""}, "missing X-Chatwoot-Timestamp"),
        ({"signature": ""}, "missing X-Chatwoot-Signature"),
        ({"signature": "", "timestamp": ""}, "missing"),
    ],
)
def test_bad_signatures_fail_with_a_reason(overrides: dict[str, Any], reason: str) -> None:
    result = auth(**overrides)
    assert not result.ok and reason in result.reason
    assert SECRET not in result.reason


def test_the_window_edges_and_its_setting() -> None:
    at_edge = NOW - 300
    assert auth(timestamp=str(at_edge), signature=chatwoot_signature(SECRET, at_edge, BODY)).ok
    late = NOW - 3000
    assert not auth(timestamp=str(late), signature=chatwoot_signature(SECRET, late, BODY)).ok
    assert auth(timestamp=str(late), signature=chatwoot_signature(SECRET, late, BODY), tolerance=3600).ok


def test_uppercase_hex_is_accepted() -> None:
    assert auth(signature="sha256=" + chatwoot_signature(SECRET, NOW, BODY)[7:].upper()).ok


def test_rotation_accepts_current_and_previous_secret() -> None:
    old = chatwoot_signature("old-secret", NOW, BODY)
    assert auth(signature=old, secrets=("new-secret", "old-secret")).ok
    assert not auth(signature=old, secrets=("new-secret",)).ok


def test_url_token() -> None:
    token = "a-long-url-token-0123456789"
    unsigned = {"signature": "", "timestamp": "", "secrets": (), "expected_url_token": token}
    assert auth(**unsigned, url_token=token) == signatures.AuthResult(True, "url_token")
    assert not auth(**unsigned, url_token="wrong").ok
    assert not auth(**unsigned, url_token="").ok
    assert auth(**unsigned).reason == "missing URL token"
    # With both configured, an unsigned delivery may use the token; a signed one must verify.
    assert auth(signature="", timestamp="", expected_url_token=token, url_token=token).ok
    assert not auth(signature="sha256=00", expected_url_token=token, url_token=token).ok


def test_unsigned_switch() -> None:
    nothing = {"signature": "", "timestamp": "", "secrets": ()}
    assert auth(**nothing).reason == "no webhook secret or URL token is configured"
    assert auth(**nothing, allow_unsigned=True) == signatures.AuthResult(True, "unsigned")
    # With a secret configured, the switch lets unsigned deliveries in but not wrong signatures.
    assert auth(signature="", timestamp="", allow_unsigned=True).ok
    assert not auth(signature="sha256=00", allow_unsigned=True).ok


def test_token_matches_is_exact() -> None:
    assert signatures.token_matches("abc", "abc")
    assert not signatures.token_matches("abcd", "abc")
    assert not signatures.token_matches(None, "abc")
    assert not signatures.token_matches("abc", "")
    assert not signatures.token_matches("ábc", "abc")
