"""Erasure of a user (GDPR): every object, row and spooled delivery kept about the user."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from requests import RequestException

from app import context
from app.archive import storage
from app.db import queries
from app.ingest import spool
from app.records import holds
from app.users import contacts as users

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """GCS failed during an erasure; what is done stays done and a second run finishes it."""


@contextmanager
def _gcs_step() -> Iterator[None]:

    from app.archive import storage

    try:
        yield
    except (GoogleAPIError, RequestException, OSError, storage.StorageError) as exc:
        raise StorageUnavailable(type(exc).__name__) from None


@dataclass
class ErasureReport:
    user_id: str
    bucket_name: str
    user_existed: bool
    bucket_objects_deleted: int = 0
    fallback_objects_deleted: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def nothing_left(self) -> bool:
        """True when this run found nothing to delete (the user was already erased)."""
        return not (self.bucket_objects_deleted or self.fallback_objects_deleted or any(self.rows.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "bucket_name": self.bucket_name,
            "user_existed": self.user_existed,
            "bucket_objects_deleted": self.bucket_objects_deleted,
            "fallback_objects_deleted": self.fallback_objects_deleted,
            "rows_deleted": dict(self.rows),
            "nothing_deleted": self.nothing_left,
        }


def erase_user(user_id: str) -> ErasureReport:
    """Delete everything kept about a user (GDPR erasure); safe to run again.

    In order: the user's bucket with every object in it, and the objects of the user's contacts
    still archived under an account's fallback bucket; then, in one transaction, the outbox
    messages, orders, conversations, messages (with their attachments, updates and transcripts),
    link codes, contact links, roll-up rows and the user itself; last, the bucket once more, in
    case an archive job wrote to it meanwhile. A run interrupted part-way is finished by the next.
    """

    db = context.db()
    holds.refuse_if_held(user_id)  # OnLegalHold: nothing is deleted while a legal hold is on
    user = db.fetch_one("users.user_get", {"user_id": user_id})
    bucket = str(user["bucket_name"]) if user else storage.bucket_name(user_id)
    report = ErasureReport(user_id, bucket, user_existed=user is not None)
    links = db.fetch_all("admin.user_links", {"user_id": user_id})
    contacts: dict[int, dict[str, list[Any]]] = {}
    for link in links:
        per = contacts.setdefault(
            int(link["chatwoot_account_id"]), {"contact_id": [], "phone": [], "identifier": []}
        )
        value: Any = int(link["link_value"]) if link["link_type"] == "contact_id" else link["link_value"]
        per[link["link_type"]].append(value)
    fallback: list[dict[str, Any]] = []
    for account_id, per in contacts.items():
        fallback += db.fetch_all(
            "admin.erase_fallback_notes",
            {
                "account_id": account_id,
                "contact_ids": per["contact_id"],
                "phones": per["phone"],
                "identifiers": per["identifier"],
            },
        )

    # Deliveries spooled while PostgreSQL was down go first, so that no replay brings them back.
    spool.purge_contacts(contacts)
    with _gcs_step():
        report.bucket_objects_deleted += storage.delete_bucket(bucket)
        for note in fallback:
            if not note["gcs_storage_path"]:
                continue
            source, _ = storage.parse_gs_uri(note["gcs_storage_path"])
            if source == bucket:
                continue
            day = note["message_created_at"] or note["created_at"]
            for name in storage.iter_message_objects(
                source, storage.message_prefix(day, note["chatwoot_message_id"])
            ):
                if storage.delete_object(source, name):
                    report.fallback_objects_deleted += 1

    contact_pairs = [(a, c) for a, per in contacts.items() for c in per["contact_id"]]
    with db.transaction() as cur:
        cur.execute(
            queries["admin.erase_note_keys"],
            {"user_id": user_id, "fallback_ids": [n["id"] for n in fallback]},
        )
        notes = cur.fetchall()
        note_ids = [n["id"] for n in notes]
        base = {
            "user_id": user_id,
            "note_ids": note_ids,
            "contact_accounts": [a for a, _ in contact_pairs],
            "contact_ids": [c for _, c in contact_pairs],
        }
        cur.execute(queries["admin.erase_find_orders"], base)
        orders = cur.fetchall()
        cur.execute(queries["admin.erase_find_conversations"], base)
        conversations = {(c["chatwoot_account_id"], c["chatwoot_conversation_id"]) for c in cur.fetchall()}
        for row in [*notes, *orders]:
            if row["chatwoot_account_id"] is not None and row["chatwoot_conversation_id"] is not None:
                conversations.add((row["chatwoot_account_id"], row["chatwoot_conversation_id"]))
        conv = {
            **base,
            "order_ids": [o["id"] for o in orders],
            "conversation_accounts": [a for a, _ in sorted(conversations)],
            "conversation_ids": [c for _, c in sorted(conversations)],
        }
        cur.execute(queries["admin.erase_outbox"], conv)
        report.rows["outbox"] = cur.rowcount
        cur.execute(queries["admin.erase_orders"], conv)
        report.rows["orders"] = cur.rowcount
        cur.execute(queries["admin.erase_conversations"], conv)
        report.rows["conversations"] = cur.rowcount
        cur.execute(queries["admin.erase_count_children"], base)
        children = cur.fetchone() or {}
        cur.execute(queries["admin.erase_notes"], base)
        report.rows["meeting_notes"] = cur.rowcount
        for name in ("message_updates", "message_attachments", "transcriptions"):
            report.rows[name] = int(children.get(name) or 0)
        cur.execute(queries["admin.erase_link_codes"], base)
        report.rows["link_codes"] = cur.rowcount
        cur.execute(queries["admin.erase_contact_links"], base)
        report.rows["contact_links"] = cur.rowcount
        cur.execute(queries["admin.erase_user_stats"], base)
        cur.execute(queries["admin.erase_bucket_rows"], {"bucket_name": bucket})
        cur.execute(queries["admin.erase_mapping"], base)
        report.rows["user_bucket_mapping"] = cur.rowcount
    with _gcs_step():
        report.bucket_objects_deleted += storage.delete_bucket(bucket)
    users_forget = getattr(users, "forget_cached", None)
    if callable(users_forget):
        users_forget()
    log.info(
        "user erased",
        extra={
            "user_id": user_id,
            "bucket_objects": report.bucket_objects_deleted,
            "fallback_objects": report.fallback_objects_deleted,
            "rows": report.rows,
        },
    )
    return report
