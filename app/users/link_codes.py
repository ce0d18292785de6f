"""One-time link codes: an admin makes a 6-digit code for a user; the user sends `LINK 123456`
from WhatsApp, and the contact that sent it is linked to the user.

Only an HMAC of each code (keyed with SECRET_KEY) is stored. A code works once, for 10 minutes,
and failed attempts are limited per contact and per account, so that guessing one of the million
codes is hopeless. After linking, the contact's messages archived under the account's fallback
bucket are moved into the user's bucket by a job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from app import context
from app.chatwoot.payloads import normalize_phone
from app.db import UniqueViolation
from app.metrics import LINK_CODE_ALERTS
from app.users import rehome, service

log = logging.getLogger(__name__)

CODE_TTL_SECONDS = 600
"""Seconds a link code stays valid."""
CODE_DIGITS = 6
CONTACT_FAILURE_LIMIT = "5 per 15 minutes"
"""Wrong codes one contact may send before it must wait."""
ACCOUNT_ALERT_LIMIT = "100 per 10 minutes"
"""Wrong codes of all contacts of one Chatwoot account beyond which an alert is logged (someone
may be guessing from many numbers). It blocks nobody: a stranger must not be able to stop a
whole account's users from linking."""
LIMIT_PREFIX = "meeting-notes:link-codes"

_CODE_RE = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class LinkResult:
    """What a `LINK <code>` did. `reason` is one of: linked, already_linked, invalid_code,
    expired, used, too_many_attempts, no_contact, linked_to_another_user, unavailable."""

    ok: bool
    reason: str
    user_id: str | None = None


@dataclass(frozen=True)
class IssuedCode:
    code: str
    user_id: str
    expires_at: datetime
    chatwoot_account_id: int | None


class UnknownUser(LookupError):
    """No user with that id."""


def code_hash(code: str, secret: str | None = None) -> str:
    key = (secret if secret is not None else context.settings().secret_key).encode()
    return hmac.new(key, f"link-code:{code}".encode(), hashlib.sha256).hexdigest()


def issue_code(user_id: str, account_id: int | None = None) -> IssuedCode:
    """A new code for a user (earlier unused codes of the user stop working). Shown once."""
    db = context.db()
    if db.fetch_one("users.user_get", {"user_id": user_id}) is None:
        raise UnknownUser(user_id)
    db.execute("links.delete_unused_of_user", {"user_id": user_id})
    db.execute("links.delete_stale", {})
    for _ in range(20):
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        digest = code_hash(code)
        # A used or expired code with the same digits gives its place to the new one.
        db.execute("links.delete_inactive_hash", {"code_hash": digest})
        try:
            row = db.fetch_one(
                "links.code_insert",
                {
                    "user_id": user_id,
                    "account_id": account_id,
                    "code_hash": digest,
                    "ttl": CODE_TTL_SECONDS,
                },
            )
        except UniqueViolation:
            continue  # the same six digits are live for someone else: draw again
        assert row is not None
        log.info("link code issued", extra={"user_id": user_id, "account_id": account_id})
        return IssuedCode(code, user_id, row["expires_at"], account_id)
    raise RuntimeError("could not draw a free link code")


# ----------------------------------------------------------------------------------------------
# attempts


_limiters: dict[tuple[int, str], Any] = {}


def _limiter() -> Any:
    redis = context.redis()
    key = (id(redis), context.settings().redis_url)
    found = _limiters.get(key)
    if found is None:
        storage = RedisStorage(
            context.settings().redis_url, connection_pool=redis.connection_pool, key_prefix=LIMIT_PREFIX
        )
        found = MovingWindowRateLimiter(storage)
        _limiters.clear()
        _limiters[key] = found
    return found


def _attempt_keys(account_id: int, contact_id: int | None, phone: str | None) -> list[tuple[Any, str]]:
    """The limits that block: one per contact (and one per phone number, so that the same
    number seen as a new contact does not start afresh)."""
    keys = []
    if contact_id is not None:
        keys.append((parse(CONTACT_FAILURE_LIMIT), f"{account_id}:contact:{contact_id}"))
    if phone:
        keys.append((parse(CONTACT_FAILURE_LIMIT), f"{account_id}:phone:{phone}"))
    return keys


def _blocked(keys: list[tuple[Any, str]]) -> bool:
    limiter = _limiter()
    return not all(limiter.test(item, key) for item, key in keys)


def _count_failure(keys: list[tuple[Any, str]], account_id: int) -> None:
    limiter = _limiter()
    for item, key in keys:
        limiter.hit(item, key)
    if not limiter.hit(parse(ACCOUNT_ALERT_LIMIT), f"{account_id}:account"):
        LINK_CODE_ALERTS.inc()
        log.warning(
            "many wrong link codes in one account: someone may be guessing codes from many numbers",
            extra={"account_id": account_id, "limit": ACCOUNT_ALERT_LIMIT},
        )


# ----------------------------------------------------------------------------------------------
# redeeming


def redeem_link_code(account_id: int, contact_id: int | None, phone: str | None, code: str) -> LinkResult:
    """Link the contact that sent `LINK <code>` to the code's user; see LinkResult for reasons."""
    code = (code or "").strip()
    e164 = normalize_phone(phone) if phone else None
    if contact_id is None and not e164:
        return LinkResult(False, "no_contact")
    keys = _attempt_keys(account_id, contact_id, e164)
    try:
        if _blocked(keys):
            log.warning("link code refused: too many attempts", extra={"account_id": account_id})
            return LinkResult(False, "too_many_attempts")
    except Exception as exc:  # the attempt counters live in Redis: no counting, no redeeming
        log.error("link code attempts unavailable", extra={"error_type": type(exc).__name__})
        return LinkResult(False, "unavailable")
    if not _CODE_RE.match(code):
        _count_failure(keys, account_id)
        return LinkResult(False, "invalid_code")

    db = context.db()
    digest = code_hash(code)
    claimed = db.fetch_one(
        "links.code_claim",
        {"code_hash": digest, "account_id": account_id, "contact_id": contact_id},
    )
    if claimed is None:
        _count_failure(keys, account_id)
        row = db.fetch_one("links.get_by_hash", {"code_hash": digest})
        if row is None or (
            row["chatwoot_account_id"] is not None and row["chatwoot_account_id"] != account_id
        ):
            reason = "invalid_code"
        elif row["used_at"] is not None:
            reason = "used"
        else:
            reason = "expired"
        log.info("link code refused", extra={"account_id": account_id, "reason": reason})
        return LinkResult(False, reason)

    user_id = str(claimed["user_id"])
    try:
        link = service.link_contact(account_id, user_id, contact_id=contact_id, phone=e164)
    except service.LinkConflict:
        db.execute("links.unclaim", {"id": claimed["id"]})
        log.warning("link code refused: contact linked to another user", extra={"account_id": account_id})
        return LinkResult(False, "linked_to_another_user")
    except Exception:
        db.execute("links.unclaim", {"id": claimed["id"]})
        raise
    rehome.schedule(account_id, user_id)
    reason = "linked" if link.added else "already_linked"
    log.info("link code redeemed", extra={"account_id": account_id, "user_id": user_id, "reason": reason})
    return LinkResult(True, reason, user_id)
