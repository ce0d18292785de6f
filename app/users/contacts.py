"""Who a message belongs to: the one rule from a Chatwoot contact to a user.

A contact (its id, identifier and phone, as the Message view of `app.chatwoot.payloads` reads
them) is linked to a user through `contact_links` (per Chatwoot account); which link wins is
decided by the SQL function `contact_user()` (migrations/0009), which every query and this
module call. A contact nobody has linked yet belongs to the account's fallback key
`account_<chatwoot account id>`, with no user id.
"""

from __future__ import annotations

from typing import Any

from app import context
from app.archive import storage
from app.chatwoot.payloads import Contact, normalize_phone

LINK_TYPES = ("contact_id", "identifier", "phone")
"""In order of precedence when a contact matches links of several users."""


def fallback_key(account_id: int) -> str:
    """The user key of contacts not linked to any user (the seed guide's)."""
    return f"account_{int(account_id)}"


def find_user(account_id: int, contact: Contact) -> tuple[str, str] | None:
    """(user_id, bucket_name) of the user a contact is linked to, or None."""
    if not contact.known:
        return None
    row = context.db().fetch_one("users.find_link", lookup_params(account_id, contact))
    return (row["user_id"], row["bucket_name"]) if row else None


def lookup_params(account_id: int, contact: Contact) -> dict[str, Any]:
    """The parameters of `contact_user()` for a contact."""
    return {
        "account_id": account_id,
        "contact_id": str(contact.id) if contact.id is not None else None,
        "identifier": contact.identifier or None,
        "phone": (normalize_phone(contact.phone) or contact.phone) if contact.phone else None,
    }


def user_key_for(account_id: int, contact: Contact | None) -> tuple[str, str | None]:
    """(user key, user id): the linked user's id twice, else (`account_<id>`, None)."""
    found = find_user(account_id, contact) if contact is not None else None
    if found:
        return found[0], found[0]
    return fallback_key(account_id), None


def user_bucket(user_id: str) -> str:
    """The bucket of a user: as recorded for the user, else from the user key."""
    row = context.db().fetch_one("users.user_get", {"user_id": user_id})
    return str(row["bucket_name"]) if row else storage.bucket_name(user_id)
