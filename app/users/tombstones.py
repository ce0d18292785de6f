"""Erasure tombstones: what keeps an erased user's data from coming back.

An erasure first records a tombstone for the user (its bucket) and for each of its contacts
(account, and each contact id, phone and identifier the user's links named). From then on:
- the ingest statement (app/queries/ingest.sql) stores nothing from a tombstoned contact: the
  webhook answers 200 `{"status": "ignored", "reason": "contact erased"}`, the spool replay and
  the backfill count it and drop it;
- archive jobs write nothing for a tombstoned bucket, and no process creates that bucket again.
The user's explicit re-consent (an admin action) lifts both.

Tombstones name nobody: each key is a keyed hash (HMAC-SHA256 with BUCKET_HASH_SECRET, the
secret that already names buckets), so the tables hold no user id, phone or identifier.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from app import context
from app.chatwoot.payloads import Contact
from app.db import queries

ERASED_REASON = "contact erased"
"""The reason given for a delivery from a tombstoned contact (the webhook's `ignored` answer)."""
_CONTACT_DOMAIN = "erased-contact"
_USER_DOMAIN = "erased-user"


def _digest(domain: str, text: str) -> str:
    key = context.settings().bucket_hash_secret.encode()
    return hmac.digest(key, f"{domain}\0{text}".encode("utf-8", "surrogatepass"), "sha256").hex()[:40]


def user_hash(user_id: str) -> str:
    """The keyed hash a tombstone keeps instead of the user id."""
    return _digest(_USER_DOMAIN, user_id)


def contact_key(link_type: str, value: Any) -> str:
    """The keyed hash of one contact key: `contact_id` 287, `phone` +5491155550123, `identifier` x."""
    return _digest(_CONTACT_DOMAIN, f"{link_type}\0{value}")


def contact_keys(contact: Contact) -> list[str]:
    """The hashes a contact is looked up by (its id, phone and identifier, those it has)."""
    keys = []
    if contact.id is not None:
        keys.append(contact_key("contact_id", contact.id))
    if contact.phone:
        keys.append(contact_key("phone", contact.phone))
    if contact.identifier:
        keys.append(contact_key("identifier", contact.identifier))
    return keys


def record(user_id: str, bucket_name: str, contacts: Iterable[tuple[int, str, Any]]) -> int:
    """Record the tombstones of a user and its contacts `(account id, link type, value)`, in one
    transaction; return how many contact keys are tombstoned. Safe to run again.

    It waits for the ingest statements in flight (a few milliseconds): once it returns, every
    message stored without seeing the tombstones is committed, so the erasure finds it."""
    owner = user_hash(user_id)
    rows = sorted({(int(account), contact_key(kind, value)) for account, kind, value in contacts})
    with context.db().transaction() as cur:
        cur.execute(queries["erase.tombstone_fence"])
        cur.execute(queries["erase.tombstone_user"], {"user_hash": owner, "bucket_name": bucket_name})
        if rows:
            cur.execute(
                queries["erase.tombstone_contacts"],
                {
                    "user_hash": owner,
                    "accounts": [account for account, _ in rows],
                    "keys": [key for _, key in rows],
                },
            )
        cur.execute(queries["erase.tombstoned_contacts"], {"user_hash": owner})
        found = cur.fetchone()
    return int(found["n"]) if found else 0


def lift(user_id: str) -> dict[str, Any] | None:
    """The user's re-consent: lift the user's tombstones; None when no erasure holds for it."""
    with context.db().transaction() as cur:
        cur.execute(queries["erase.tombstone_lift"], {"user_hash": user_hash(user_id)})
        lifted = cur.fetchone()
        if lifted is None:
            return None
        cur.execute(queries["erase.tombstone_release_contacts"], {"user_hash": user_hash(user_id)})
        released = cur.rowcount
    return {
        "user_id": user_id,
        "erased_at": lifted["erased_at"].isoformat(),
        "reconsented_at": lifted["restored_at"].isoformat(),
        "contacts_released": released,
    }


def bucket_erased(bucket_name: str) -> bool:
    """True when the bucket belongs to a user whose erasure holds."""
    return bool(erased_buckets([bucket_name]))


def erased_buckets(bucket_names: Iterable[str]) -> set[str]:
    """Those of the buckets that belong to users whose erasure holds (one round trip)."""
    names = sorted(set(bucket_names))
    if not names:
        return set()
    rows = context.db().run_prepared_all("erase.erased_buckets", {"names": names})
    return {str(r["bucket_name"]) for r in rows}


def erased_contact_keys(account_id: int) -> set[str]:
    """Every tombstoned contact key of an account (the backfill skips those conversations)."""
    rows = context.db().fetch_all("erase.account_contact_keys", {"account_id": account_id})
    return {str(r["key_hash"]) for r in rows}
