"""Moving a contact's archive from the account's fallback bucket into its user's own bucket.

When a contact is linked to a user, the messages archived so far under the account's fallback
key are copied into the user's bucket, recorded there, then deleted from the fallback bucket.
The move is a job (`REHOME`, on the maintenance queue) that the reconciler queues again when
it was lost: a stored message whose contact now resolves to a user, but that still lives in a
fallback bucket, is work left to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app import context
from app.archive import storage
from app.chatwoot.payloads import Contact, normalize_phone
from app.db import queries
from app.jobs import REHOME, QueueUnavailable, enqueue
from app.users.contacts import find_user, user_bucket

log = logging.getLogger(__name__)

REHOME_PAGE = 500
"""Unmapped messages read per query while looking for a contact's messages."""
THROTTLE_WAIT_LIMIT = 120.0
"""Seconds a command waits in total for a bucket-creation slot."""


@dataclass
class RehomeResult:
    messages: int = 0
    """Messages now recorded in the user's bucket."""
    objects_copied: int = 0
    objects_deleted: int = 0


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
    prefix = storage.note_prefix(row)
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
    prefix = storage.note_prefix(row)
    for name in storage.iter_message_objects(source, prefix):
        if storage.copy_object(source, name, target).created:
            result.objects_copied += 1
        if storage.delete_object(source, name):
            result.objects_deleted += 1
    context.db().execute("users.rehome_done", {"note_id": row["id"], "from_bucket": source})


# ------------------------------------------------------------------------------------------
# the job


def schedule(account_id: int, user_id: str) -> bool:
    """Record that the user's fallback-archived messages of this account are to be moved, and
    queue the move. False when it was not queued now (already queued, or Redis is down): the
    request is durable and the reconciler queues it."""
    row = context.db().fetch_one("users.rehome_request", {"account_id": account_id, "user_id": user_id})
    assert row is not None
    try:
        return enqueue(REHOME, int(row["id"]))
    except QueueUnavailable:
        log.warning(
            "re-homing not queued: Redis unavailable; the reconciler queues it",
            extra={"account_id": account_id, "user_id": user_id},
        )
        return False


def rehome_request(request_id: int) -> dict[str, int]:
    """Job: carry out one move request (safe to run twice)."""
    db = context.db()
    request = db.fetch_one("users.rehome_request_get", {"id": request_id})
    if request is None or request["status"] != "pending":
        return {"messages": 0, "objects_copied": 0, "objects_deleted": 0}
    result = rehome_messages(int(request["chatwoot_account_id"]), str(request["user_id"]))
    db.execute("users.rehome_request_done", {"id": request_id, "messages": result.messages})
    return {
        "messages": result.messages,
        "objects_copied": result.objects_copied,
        "objects_deleted": result.objects_deleted,
    }
