"""Erasure of a user (GDPR): every object, row and spooled delivery kept about the user.

The order is what makes it hold while the user's messages still arrive:
1. tombstones first (app/users/tombstones.py): from then on the ingest statement stores nothing
   from the user's contacts, archive jobs write nothing to the user's bucket and no process
   creates it again;
2. the spooled deliveries of the user's contacts;
3. the user's bucket, in rounds until it is gone (soft delete set to 0 first, so that GCS keeps
   nothing this deletes), and the user's objects in the accounts' fallback buckets;
4. the rows, in one transaction;
5. step 3 once more, for what a job that was already writing left behind.
The tombstones stay until the user consents again (`tombstones.lift`).
"""

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
from app.users import tombstones

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """GCS failed during an erasure; what is done stays done and a second run finishes it."""


@contextmanager
def _gcs_step() -> Iterator[None]:
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
    soft_delete_turned_off: bool = False
    """The user's bucket had soft delete on (or unknown): it was set to 0 before any deletion."""
    soft_deleted: storage.SoftDeleted = field(default_factory=storage.SoftDeleted)
    """The user's objects that deletions before this erasure left soft-deleted: GCS keeps them
    until `soft_deleted.until` and deletes none sooner."""
    bucket_rounds: int = 0
    """Rounds of deleting the user's bucket's objects before the bucket could be deleted."""
    contacts_tombstoned: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def nothing_left(self) -> bool:
        """True when this run found nothing to delete (the user was already erased)."""
        return not (self.bucket_objects_deleted or self.fallback_objects_deleted or any(self.rows.values()))

    @property
    def soft_delete(self) -> str:
        """What GCS soft delete keeps after this erasure, in a sentence."""
        mine = "nothing this erasure deleted is kept by soft delete"
        until = self.soft_deleted.until.isoformat() if self.soft_deleted.until else None
        if self.soft_deleted.objects:
            return (
                f"{mine}; {self.soft_deleted.objects} object(s) deleted earlier are kept by GCS until "
                f"{until or 'their hard-delete time'} (GCS deletes no soft-deleted object sooner)"
            )
        if until:
            return f"{mine}; a bucket of that name deleted earlier is kept by GCS until {until}"
        return f"{mine}, and no soft-deleted object of the user is left"

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "bucket_name": self.bucket_name,
            "user_existed": self.user_existed,
            "bucket_objects_deleted": self.bucket_objects_deleted,
            "fallback_objects_deleted": self.fallback_objects_deleted,
            "soft_delete_turned_off": self.soft_delete_turned_off,
            "soft_deleted_objects_kept": self.soft_deleted.objects,
            "soft_deleted_kept_until": self.soft_deleted.until.isoformat()
            if self.soft_deleted.until
            else None,
            "soft_delete": self.soft_delete,
            "bucket_rounds": self.bucket_rounds,
            "contacts_tombstoned": self.contacts_tombstoned,
            "rows_deleted": dict(self.rows),
            "nothing_deleted": self.nothing_left,
        }


@dataclass
class _Objects:
    """Objects of the user's messages in buckets that are not the user's own (fallback buckets)."""

    live: dict[str, set[str]] = field(default_factory=dict)
    """bucket -> message prefixes whose objects may still be there."""
    soft: dict[str, set[str]] = field(default_factory=dict)
    """bucket -> message prefixes whose soft-deleted copies may be there."""

    def add(self, bucket: str, prefix: str, live: bool) -> None:
        self.soft.setdefault(bucket, set()).add(prefix)
        if live:
            self.live.setdefault(bucket, set()).add(prefix)


def _prefix(row: dict[str, Any]) -> str:
    return storage.note_prefix(row)


def erase_user(user_id: str) -> ErasureReport:
    """Delete everything kept about a user (GDPR erasure) and keep it from coming back; safe to
    run again. Raises StorageUnavailable when GCS fails part-way (the next run finishes)."""
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
    seen = db.fetch_all("erase.user_contacts_seen", {"user_id": user_id})
    report.contacts_tombstoned = tombstones.record(
        user_id,
        bucket,
        [(a, kind, v) for a, per in contacts.items() for kind, values in per.items() for v in values]
        + [(r["chatwoot_account_id"], "contact_id", r["chatwoot_contact_id"]) for r in seen],
    )

    objects = _Objects()
    fallback: list[dict[str, Any]] = []
    for account_id, per in contacts.items():
        found = db.fetch_all(
            "admin.erase_fallback_notes",
            {
                "account_id": account_id,
                "contact_ids": per["contact_id"],
                "phones": per["phone"],
                "identifiers": per["identifier"],
            },
        )
        fallback += found
        for note in found:
            # Where its job writes: the recorded path, else the account's fallback bucket.
            source = (
                storage.parse_gs_uri(note["gcs_storage_path"])[0]
                if note["gcs_storage_path"]
                else storage.bucket_name(users.fallback_key(account_id))
            )
            if source != bucket:
                objects.add(source, _prefix(note), live=True)
    for note in db.fetch_all("erase.user_messages", {"user_id": user_id}):
        prefix = _prefix(note)
        # Moved from the account's fallback bucket: soft-deleted copies may be kept there.
        objects.add(storage.bucket_name(users.fallback_key(note["chatwoot_account_id"])), prefix, live=False)
        for other in (note["rehome_from_bucket"], note["gcs_storage_path"]):
            other_bucket = storage.parse_gs_uri(other)[0] if other and other.startswith("gs://") else other
            if other_bucket and other_bucket != bucket:
                objects.add(other_bucket, prefix, live=True)

    # Deliveries spooled while PostgreSQL was down go first, so that no replay brings them back.
    spool.purge_contacts(contacts)
    with _gcs_step():
        _erase_objects(report, bucket, objects, first=True)

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
    # A job that was writing when the rows went finds them gone and takes its objects back; one
    # that finished just before left them here.
    with _gcs_step():
        _erase_objects(report, bucket, objects, first=False)
    log.info(
        "user erased",
        extra={
            "user_id": user_id,
            "bucket_objects": report.bucket_objects_deleted,
            "fallback_objects": report.fallback_objects_deleted,
            "soft_deleted_kept": report.soft_deleted.objects,
            "bucket_rounds": report.bucket_rounds,
            "contacts_tombstoned": report.contacts_tombstoned,
            "rows": report.rows,
        },
    )
    return report


def _erase_objects(report: ErasureReport, bucket: str, objects: _Objects, *, first: bool) -> None:
    """One pass over GCS: the user's bucket until it is gone, then the user's objects elsewhere.
    The first pass also counts what soft delete keeps from before."""
    erased = storage.erase_bucket(bucket)
    report.bucket_objects_deleted += erased.objects_deleted
    report.soft_delete_turned_off = report.soft_delete_turned_off or erased.soft_delete_turned_off
    report.bucket_rounds += erased.rounds
    if first:
        report.soft_deleted.add(erased.soft_deleted)
    for name in sorted(objects.soft):
        elsewhere = storage.erase_message_objects(
            name, objects.soft[name], objects.live.get(name, set()), count_soft_deleted=first
        )
        report.fallback_objects_deleted += elsewhere.objects_deleted
        if first:
            report.soft_deleted.add(elsewhere.soft_deleted)
