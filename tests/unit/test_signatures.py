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
    """verify_signature's verdict, as an AuthResult."""
    options: dict[str, Any] = {
        "signature": chatwoot_signature(SECRET, NOW, BODY),
        "timestamp": str(NOW),
        "secrets": (SECRET,),
        "tolerance": 300,
        "now": NOW,
    }
    options.update(overrides)
    body = options.pop("body", BODY)
    reason = signatures.verify_signature(body, **options)
    return signatures.AuthResult(not reason, "signature", reason)


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


@pytest.mark.parametrize(
    "timestamp",
    [
        "²³",
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",
        "1e9",
        " 17 ",
        "+1800000000",
        "-5",
    ],
)
def test_only_ascii_digits_are_a_timestamp(timestamp: str) -> None:
    # str.isdigit() accepts superscripts and other scripts' digits, which int() then refuses.
    assert signatures.ascii_int(timestamp) is None or timestamp.strip() == "17"
    assert "unix seconds" in signatures.timestamp_problem(timestamp, 300, now=NOW) or "window" in (
        signatures.timestamp_problem(timestamp, 300, now=NOW)
    )


def test_a_streamed_body_verifies_like_a_whole_one_and_names_its_secrets_owner() -> None:
    verifier = signatures.StreamVerifier([("other", 8), (SECRET, 7), (SECRET, 0)], str(NOW))
    for piece in (BODY[:5], BODY[5:17], BODY[17:]):
        verifier.update(piece)
    assert verifier.matched(chatwoot_signature(SECRET, NOW, BODY)) == [7, 0]
    assert verifier.matched(chatwoot_signature("nobody", NOW, BODY)) == []
    assert not signatures.StreamVerifier([("", 1)], str(NOW))


def test_token_matches_is_exact() -> None:
    assert signatures.token_matches("abc", "abc")
    assert not signatures.token_matches("abcd", "abc")
    assert not signatures.token_matches(None, "abc")
    assert not signatures.token_matches("abc", "")
    assert not signatures.token_matches("ábc", "abc")
