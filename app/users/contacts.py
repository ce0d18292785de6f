"""Who a message belongs to: Chatwoot contacts linked to users, and moving archives to them.

A contact is recognised as a user by its Chatwoot contact id, its phone number (E.164) or its
identifier, through `contact_links` (per Chatwoot account) and `user_bucket_mapping`. A contact
nobody has linked yet belongs to the account's fallback key `account_<chatwoot account id>`,
with no user id. When a contact is linked later, its messages archived under the fallback are
moved into the user's bucket (copied, recorded, then deleted from the fallback bucket).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers

from app import context
from app.archive import storage
from app.db import queries

log = logging.getLogger(__name__)

LINK_TYPES = ("contact_id", "identifier", "phone")
"""In order of precedence when a contact matches links of several users."""
REHOME_PAGE = 500
"""Unmapped messages read per query while looking for a contact's messages."""
THROTTLE_WAIT_LIMIT = 120.0
"""Seconds a command waits in total for a bucket-creation slot."""


class LinkConflict(Exception):
    """The contact is already linked to another user (use replace=True to move the link)."""


class InvalidContact(ValueError):
    """A contact reference that cannot be used (no id, phone or identifier; a malformed phone)."""


@dataclass(frozen=True)
class Contact:
    """A Chatwoot contact as far as user mapping is concerned."""

    id: int | None = None
    phone: str | None = None
    """As Chatwoot sent it (usually E.164 already)."""
    identifier: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Contact:
        """From a Chatwoot contact/sender object (`id`, `phone_number`, `identifier`)."""
        if not data:
            return cls()
        raw_id = data.get("id")
        contact_id: int | None
        try:
            contact_id = int(raw_id) if raw_id is not None and str(raw_id).strip() else None
        except (TypeError, ValueError):
            contact_id = None
        phone = data.get("phone_number", data.get("phone"))
        identifier = data.get("identifier")
        return cls(
            id=contact_id,
            phone=str(phone).strip() if phone else None,
            identifier=str(identifier).strip() if identifier else None,
        )


def contact_from_payload(payload: Mapping[str, Any]) -> Contact:
    """The contact of a message: its sender when incoming, else the conversation's contact."""
    sender = payload.get("sender")
    if payload.get("message_type") == "incoming" and isinstance(sender, Mapping):
        return Contact.from_mapping(sender)
    conversation = payload.get("conversation")
    meta = conversation.get("meta") if isinstance(conversation, Mapping) else None
    contact = meta.get("sender") if isinstance(meta, Mapping) else None
    return Contact.from_mapping(contact if isinstance(contact, Mapping) else None)


def normalize_phone(raw: str | None, region: str | None = None) -> str | None:
    """E.164 (`+5491155550123`) of a phone number, or None when it is not a valid number.

    Without a leading `+`, `region` (an ISO country code such as "BR") says which country's
    numbering plan to read it in.
    """
    if not raw or not str(raw).strip():
        return None
    text = str(raw).strip()
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def fallback_key(account_id: int) -> str:
    """The user key of contacts not linked to any user (the seed guide's)."""
    return f"account_{int(account_id)}"


def find_user(account_id: int, contact: Contact | Mapping[str, Any]) -> tuple[str, str] | None:
    """(user_id, bucket_name) of the user a contact is linked to, or None."""
    c = contact if isinstance(contact, Contact) else Contact.from_mapping(contact)
    if c.id is None and not c.phone and not c.identifier:
        return None
    row = context.db().fetch_one(
        "users.find_link",
        {
            "account_id": account_id,
            "contact_id": str(c.id) if c.id is not None else None,
            "identifier": c.identifier or None,
            "phone": normalize_phone(c.phone) or None,
        },
    )
    return (row["user_id"], row["bucket_name"]) if row else None


def user_key_for(account_id: int, contact: Contact | Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(user key, user id): the linked user's id twice, else (`account_<id>`, None)."""
    found = find_user(account_id, contact) if contact is not None else None
    if found:
        return found[0], found[0]
    return fallback_key(account_id), None


def user_bucket(user_id: str) -> str:
    """The bucket of a user: as recorded for the user, else from the user key."""
    row = context.db().fetch_one("users.user_get", {"user_id": user_id})
    return str(row["bucket_name"]) if row else storage.bucket_name(user_id)


def ensure_user(user_id: str, display_name: str | None = None, language: str | None = None) -> dict[str, Any]:
    """The user's row in user_bucket_mapping, created (with its bucket name) when new."""
    user_id = user_id.strip()
    if not user_id or len(user_id) > 200:
        raise InvalidContact("a user id is 1 to 200 characters")
    if storage.valid_bucket_name(user_id) and user_id.startswith(context.settings().gcs_bucket_prefix):
        raise InvalidContact("a user id is not a bucket name")
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
    return row


def _link_values(
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
    values = _link_values(contact_id, phone, identifier, region)
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


# ------------------------------------------------------------------------------------------
# re-homing: from the account's fallback bucket to the user's own


@dataclass
class RehomeResult:
    messages: int = 0
    """Messages now recorded in the user's bucket."""
    objects_copied: int = 0
    objects_deleted: int = 0


def _message_day(row: Mapping[str, Any]) -> datetime:
    moment: datetime = row["message_created_at"] or row["created_at"]
    return moment


def _belongs_to(row: Mapping[str, Any], account_id: int, user_id: str, links: set[tuple[str, str]]) -> bool:
    """Whether an unmapped message's contact is now this user's (cheap filter, then the full rule)."""
    contact = Contact(
        id=row["chatwoot_contact_id"], phone=row["contact_phone"], identifier=row["contact_identifier"]
    )
    candidates = set()
    if contact.id is not None:
        candidates.add(("contact_id", str(contact.id)))
    if contact.identifier:
        candidates.add(("identifier", contact.identifier))
    if contact.phone:
        candidates.add(("phone", normalize_phone(contact.phone) or contact.phone))
    if not candidates & links:
        return False
    found = find_user(account_id, contact)
    return found is not None and found[0] == user_id


def _ensure_bucket_waiting(name: str) -> Any:
    """ensure_bucket for a command: wait for a creation slot instead of giving up."""
    deadline = time.monotonic() + THROTTLE_WAIT_LIMIT
    while True:
        try:
            return storage.ensure_bucket(name)
        except storage.BucketCreationThrottled as exc:
            if time.monotonic() + exc.retry_after > deadline:
                raise
            time.sleep(exc.retry_after)


def rehome_messages(account_id: int, user_id: str) -> RehomeResult:
    """Move the user's messages archived under the account's fallback into the user's bucket.

    Per message: copy every object (message JSON, attachments, transcript, updates), record the
    new place, then delete the old copies. Safe to run twice: an interrupted move is finished.
    """
    result = RehomeResult()
    db = context.db()
    target_name = user_bucket(user_id)
    target = None
    links = {
        (r["link_type"], r["link_value"])
        for r in db.fetch_all("users.links_of_user", {"user_id": user_id, "account_id": account_id})
    }
    after = 0
    while links:
        rows = db.fetch_all(
            "users.unmapped_archived_notes",
            {"account_id": account_id, "after_id": after, "limit": REHOME_PAGE},
        )
        if not rows:
            break
        after = rows[-1]["id"]
        for row in rows:
            if not _belongs_to(row, account_id, user_id, links):
                continue
            if target is None:
                target = _ensure_bucket_waiting(target_name)
            _move_one(row, user_id, target, result)
    for row in db.fetch_all("users.rehome_unfinished", {"user_id": user_id}):
        if target is None:
            target = _ensure_bucket_waiting(target_name)
        _finish_one(row, row["rehome_from_bucket"], target, result)
    log.info(
        "messages re-homed",
        extra={
            "account_id": account_id,
            "user_id": user_id,
            "messages": result.messages,
            "objects_copied": result.objects_copied,
            "objects_deleted": result.objects_deleted,
        },
    )
    return result


def _move_one(row: Mapping[str, Any], user_id: str, target: Any, result: RehomeResult) -> None:
    source, json_name = storage.parse_gs_uri(row["gcs_storage_path"])
    prefix = storage.message_prefix(_message_day(row), row["chatwoot_message_id"])
    if source == target.name:
        names: list[str] = []
    else:
        names = list(storage.iter_message_objects(source, prefix))
        for name in names:
            if storage.copy_object(source, name, target).created:
                result.objects_copied += 1
    with context.db().transaction() as cur:
        params = {
            "note_id": row["id"],
            "user_id": user_id,
            "path": storage.gs_uri(target.name, json_name),
            "from_bucket": source if source != target.name else None,
            "to_bucket": target.name,
        }
        cur.execute(queries["users.rehome_record_note"], params)
        if cur.rowcount == 0:
            return  # linked to someone else meanwhile; the copies stay harmlessly, the rows untouched
        if source != target.name:
            cur.execute(queries["users.rehome_record_attachments"], params)
            cur.execute(queries["users.rehome_record_updates"], params)
            cur.execute(queries["users.rehome_record_transcript"], params)
    result.messages += 1
    if source != target.name:
        _finish_one({**row, "gcs_storage_path": params["path"]}, source, target, result)


def _finish_one(row: Mapping[str, Any], source: str, target: Any, result: RehomeResult) -> None:
    """Delete the old copies of a message whose move is recorded (copying any late arrival first)."""
    prefix = storage.message_prefix(_message_day(row), row["chatwoot_message_id"])
    for name in storage.iter_message_objects(source, prefix):
        if storage.copy_object(source, name, target).created:
            result.objects_copied += 1
        if storage.delete_object(source, name):
            result.objects_deleted += 1
    context.db().execute("users.rehome_done", {"note_id": row["id"], "from_bucket": source})


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
