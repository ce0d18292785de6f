"""Which token may read: what Chatwoot answered about each account's read token, kept.

Chatwoot refuses an agent bot's token on every list endpoint ("Access to this endpoint is not
authorized for bots"). When a read is refused so, the account's read token is recorded as one
that cannot read (by a fingerprint, never the token): the backfill is then off for the account,
said once in the log, shown by `/readyz` and `flask monitor` (sql/17_chatwoot_reads.sql), until
the token changes. The send job then relies on our own messages echoed back by webhook.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from app import context

log = logging.getLogger(__name__)

FIX = (
    "set CHATWOOT_USER_ACCESS_TOKEN to a Chatwoot user's access token (or "
    "`flask accounts set {account} --user-token`)"
)


def fingerprint(token: str) -> str:
    """A short one-way fingerprint of a token: tells tokens apart without keeping them."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def refusal(account_id: int, token: str) -> str | None:
    """Why this account's reads are off: the recorded refusal of this very token, else None."""
    row = context.db().fetch_one("chatwoot.read_access_get", {"account_id": account_id})
    if row is None or row["can_read"] or row["token_fingerprint"] != fingerprint(token):
        return None
    return str(row["detail"] or "Chatwoot refused the read token")


def record(account_id: int, token: str, source: str, can_read: bool, detail: str | None = None) -> bool:
    """Keep what Chatwoot answered to a read with this token; True when that is news (logged)."""
    if not can_read:
        detail = (
            f"backfill off: {source} is an agent bot's token, and Chatwoot refuses bots on list "
            f"endpoints ({detail or 'not authorized for bots'}); " + FIX.format(account=account_id)
        )
    row = context.db().fetch_one(
        "chatwoot.read_access_record",
        {
            "account_id": account_id,
            "fingerprint": fingerprint(token),
            "source": source,
            "can_read": can_read,
            "detail": (detail or "")[:500] or None,
        },
    )
    changed = bool(row and row["changed"])
    if changed and not can_read:
        log.warning("Chatwoot refuses reads", extra={"account_id": account_id, "reason": detail})
    elif changed:
        log.info("Chatwoot accepts reads", extra={"account_id": account_id, "token_source": source})
    return changed


def refused_accounts() -> list[dict[str, Any]]:
    """Accounts whose read token Chatwoot refuses, with why (for /readyz)."""
    return context.db().fetch_all("chatwoot.read_access_refused", {})
