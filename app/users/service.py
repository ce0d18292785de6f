"""Users and their contact links, as the admin API and the CLI manage them.

The one place where a user is created and where a user id is validated.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from app import context
from app.archive import storage
from app.chatwoot.payloads import normalize_phone
from app.db import plain, queries
from app.users.rehome import RehomeResult, rehome_messages
from app.users.rehome import schedule as schedule_rehome

log = logging.getLogger(__name__)

LANGUAGES = ("en", "pt", "es")
# A user id is part of URLs: printable, no slash, no surrounding spaces.
USER_ID_RULE = "a user id is 1 to 200 printable characters, no slash, no leading or trailing space"
USER_ID_RE = re.compile(r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]{0,198}[^\s/\x00-\x1f\x7f])?$")


class NotFound(LookupError):
    """No such user, link or account."""


class Conflict(Exception):
    """The request contradicts what exists (a user that exists already, a contact linked elsewhere)."""


class Invalid(ValueError):
    """Input the operation cannot use; the message says why."""


class LinkConflict(Conflict):
    """The contact is already linked to another user (use replace=True to move the link)."""


class InvalidContact(Invalid):
    """A contact reference that cannot be used (no id, phone or identifier; a malformed phone)."""


def link_values(
    contact_id: int | None, phone: str | None, identifier: str | None, region: str | None
) -> list[tuple[str, str]]:
    values: list[tuple[str, str]] = []
    if contact_id is not None:
        if int(contact_id) < 1:
            raise InvalidContact("a Chatwoot contact id is a positive number")
        values.append(("contact_id", str(int(contact_id))))
    if identifier is not None and identifier.strip():
        values.append(("identifier", identifier.strip()))
    if phone is not None and phone.strip():
        e164 = normalize_phone(phone, region)
        if not e164:
            raise InvalidContact(
                f"not a valid phone number: {phone!r} (write it with its country code, e.g. +5491155550123)"
            )
        values.append(("phone", e164))
    if not values:
        raise InvalidContact("give a contact id, a phone number or an identifier")
    return values


@dataclass
class LinkResult:
    user_id: str
    bucket_name: str
    created_user: bool
    added: list[tuple[str, str]] = field(default_factory=list)
    existing: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)


def link_contact(
    account_id: int,
    user_id: str,
    *,
    contact_id: int | None = None,
    phone: str | None = None,
    identifier: str | None = None,
    region: str | None = None,
    replace: bool = False,
    display_name: str | None = None,
) -> LinkResult:
    """Link a Chatwoot contact (by id, phone and/or identifier) to a user, creating the user.

    Raises LinkConflict when one of them is linked to another user and `replace` is False
    (nothing is changed then), InvalidContact for unusable input.
    """
    values = link_values(contact_id, phone, identifier, region)
    user = ensure_user(user_id, display_name=display_name)
    result = LinkResult(user["user_id"], user["bucket_name"], bool(user["created"]))
    db = context.db()
    with db.transaction() as cur:
        for link_type, value in values:
            params = {"account_id": account_id, "link_type": link_type, "link_value": value}
            cur.execute(queries["users.link_get"], params)
            existing = cur.fetchone()
            if existing is None:
                cur.execute(queries["users.link_insert"], {**params, "user_id": result.user_id})
                result.added.append((link_type, value))
            elif existing["user_id"] == result.user_id:
                result.existing.append((link_type, value))
            elif replace:
                cur.execute(queries["users.link_move"], {**params, "user_id": result.user_id})
                result.moved.append((link_type, value))
            else:
                raise LinkConflict(
                    f"{link_type.replace('_', ' ')} {value} of account {account_id} is already linked "
                    f"to user {existing['user_id']} (replace it explicitly to move it)"
                )
    log.info(
        "contact linked",
        extra={
            "account_id": account_id,
            "user_id": result.user_id,
            "added": [t for t, _ in result.added],
            "moved": [t for t, _ in result.moved],
        },
    )
    return result


def list_users(limit: int = 100, after: str = "") -> list[dict[str, Any]]:
    return [plain(r) for r in context.db().fetch_all("admin.user_list", {"limit": limit, "after": after})]


def get_user(user_id: str) -> dict[str, Any]:
    db = context.db()
    row = db.fetch_one("admin.user_with_stats", {"user_id": user_id})
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    row["links"] = db.fetch_all("admin.user_links", {"user_id": user_id})
    return dict(plain(row))


def validate_user_id(user_id: str) -> str:
    """The user id, or Invalid: it names a bucket and appears in URLs and commands."""
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise Invalid(USER_ID_RULE)
    settings = context.settings()
    if storage.valid_bucket_name(user_id) and user_id.startswith(settings.gcs_bucket_prefix):
        raise Invalid("a user id is not a bucket name")
    return user_id


def ensure_user(user_id: str, display_name: str | None = None, language: str | None = None) -> dict[str, Any]:
    """The user's row in user_bucket_mapping (with `created`), created with its bucket name when new.

    The one path by which users come to exist; the bucket itself is created on first archive.
    """
    validate_user_id(user_id)
    row = context.db().fetch_one(
        "users.user_create",
        {
            "user_id": user_id,
            "bucket_name": storage.bucket_name(user_id),
            "display_name": display_name,
            "language": language,
        },
    )
    assert row is not None
    if row["created"]:
        log.info("user created", extra={"user_id": user_id})
    return row


def create_user(
    user_id: str,
    *,
    display_name: str | None = None,
    language: str | None = None,
    notify_on_ready: bool = False,
) -> dict[str, Any]:
    """A new user (Conflict when it exists already)."""
    validate_user_id(user_id)
    if context.db().fetch_one("users.user_get", {"user_id": user_id}) is not None:
        raise Conflict(f"user {user_id!r} exists already")
    row = ensure_user(user_id, display_name=display_name, language=language)
    if not row["created"]:
        raise Conflict(f"user {user_id!r} exists already")
    if notify_on_ready:
        return update_user(user_id, notify_on_ready=True)
    return get_user(user_id)


_UNSET = object()


def update_user(
    user_id: str,
    *,
    display_name: Any = _UNSET,
    language: Any = _UNSET,
    notify_on_ready: Any = _UNSET,
) -> dict[str, Any]:
    """Change some fields of a user; a field left out stays as it is."""
    params = {
        "user_id": user_id,
        "set_display_name": display_name is not _UNSET,
        "display_name": None if display_name is _UNSET else display_name,
        "set_language": language is not _UNSET,
        "language": None if language is _UNSET else language,
        "set_notify_on_ready": notify_on_ready is not _UNSET,
        "notify_on_ready": False if notify_on_ready is _UNSET else bool(notify_on_ready),
    }
    if context.db().fetch_one("admin.user_update", params) is None:
        raise NotFound(f"no user {user_id!r}")
    log.info(
        "user updated",
        extra={
            "user_id": user_id,
            "fields": [k[4:] for k, v in params.items() if k.startswith("set_") and v],
        },
    )
    return get_user(user_id)


@dataclass
class LinkOutcome:
    user_id: str
    added: list[tuple[str, str]]
    existing: list[tuple[str, str]]
    moved: list[tuple[str, str]]
    account_id: int
    rehome_queued: bool

    def as_dict(self) -> dict[str, Any]:
        def pairs(items: list[tuple[str, str]]) -> list[dict[str, str]]:
            return [{"link_type": t, "link_value": v} for t, v in items]

        return {
            "user_id": self.user_id,
            "chatwoot_account_id": self.account_id,
            "added": pairs(self.added),
            "already_linked": pairs(self.existing),
            "moved": pairs(self.moved),
            "rehome_queued": self.rehome_queued,
        }


def default_account(account_id: int | None) -> int:
    found = account_id or context.settings().chatwoot_account_id
    if found is None:
        raise Invalid("give chatwoot_account_id (CHATWOOT_ACCOUNT_ID is not set)")
    return int(found)


def add_link(
    user_id: str,
    *,
    account_id: int | None = None,
    contact_id: int | None = None,
    phone: str | None = None,
    identifier: str | None = None,
    region: str | None = None,
    replace: bool = False,
    rehome: bool = True,
) -> LinkOutcome:
    """Link a contact to an existing user, then queue the move of its fallback-archived messages."""

    if context.db().fetch_one("users.user_get", {"user_id": user_id}) is None:
        raise NotFound(f"no user {user_id!r}")
    account = default_account(account_id)
    result = link_contact(
        account,
        user_id,
        contact_id=contact_id,
        phone=phone,
        identifier=identifier,
        region=region,
        replace=replace,
    )
    queued = schedule_rehome(account, user_id) if rehome else False
    return LinkOutcome(user_id, result.added, result.existing, result.moved, account, queued)


def remove_link(user_id: str, link_id: int) -> dict[str, Any]:
    row = context.db().fetch_one("admin.link_delete", {"user_id": user_id, "link_id": link_id})
    if row is None:
        raise NotFound(f"user {user_id!r} has no link {link_id}")
    log.info("contact unlinked", extra={"user_id": user_id, "link_type": row["link_type"]})
    return dict(plain(row))


def unmapped_contacts(limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    rows = context.db().fetch_all("admin.unmapped_contacts", {"limit": limit, "offset": offset})
    return [plain(r) for r in rows]


@dataclass
class MapResult:
    link: LinkResult
    rehome: RehomeResult


def map_contact(
    account_id: int,
    user_id: str,
    *,
    contact_id: int | None = None,
    phone: str | None = None,
    identifier: str | None = None,
    region: str | None = None,
    replace: bool = False,
    display_name: str | None = None,
) -> MapResult:
    """Link a contact to a user, then move the contact's archived messages into the user's bucket."""
    link = link_contact(
        account_id,
        user_id,
        contact_id=contact_id,
        phone=phone,
        identifier=identifier,
        region=region,
        replace=replace,
        display_name=display_name,
    )
    return MapResult(link, rehome_messages(account_id, link.user_id))
