"""The archive jobs: a message and its media, or an update of it, into its owner's bucket.

`archive_message(note_id)` is queued by the webhook, one job per message. Run by a worker, the
job leads a batch (app/archive/batch.py): it takes other queued archive jobs with it and
archives them all at once, each message on its own. Each message:
1. is loaded with its attachments so far and its owner (one query per batch); a stored row is done;
2. its owner is the row's user, else the user a contact link names, else the account's fallback
   key; `_bucket_for` gives the owner's bucket, created on first use (rate-limited across
   workers: when no slot is free soon, the job is scheduled again for later and the row stays
   `received`). It is the one place where a message's bucket is created or chosen for writing;
3. its JSON is written (`storage.message_prefix` names it; a name taken by another message sends
   it to its account-qualified name), then each attachment's file (downloaded, spooled to disk,
   streamed to GCS), every object with if_generation_match=0 (a rerun writes nothing new). An
   attachment that cannot be fetched does not hold its message back: it is marked `unavailable`
   with the reason (at once when it is refused; after ATTACHMENT_ATTEMPTS runs when the failure
   may pass), and an admin may fetch it again later (`archive_attachments`);
4. the row becomes `stored` (batched with its neighbours: one statement), then transcription is
   queued for a voice note, else classification, and any update that waited for the message.
A failure is retried with backoff (RQ's Retry of the job); the last failure leaves `error` and a
short reason. One message's failure never fails or delays another's.

`archive_update(update_id)` writes an update beside its message, once the message is archived,
then queues its classification when it is a version of our own message carrying an answer or a
refusal. `archive_attachments(note_id)` fetches again the attachments of a stored message that an
admin asked to retry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as gexc
from rq import get_current_job

from app import context
from app.archive import media, storage
from app.db import DatabaseError, queries
from app.jobs import (
    ARCHIVE_ATTACHMENTS,
    ARCHIVE_MESSAGE,
    ARCHIVE_RETRY_INTERVALS,
    ARCHIVE_UPDATE,
    CLASSIFY_MESSAGE,
    CLASSIFY_UPDATE,
    TRANSCRIBE_MESSAGE,
    JobSpec,
    QueueUnavailable,
    enqueue,
)
from app.metrics import JOBS
from app.users import contacts as users
from app.users import tombstones

log = logging.getLogger(__name__)

ERROR_DETAILS_MAX = 300
"""Characters of error_details kept on a row."""
ATTACHMENT_ATTEMPTS = 3
"""Runs of a message's job that try an attachment failing in a way that may pass (a timeout, a
5xx, a 404 for longer than ATTACHMENT_RETRY_SECONDS) before it is marked unavailable and the
message goes on without it: the first run and two retries, about 35 s."""
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class AttachmentsPending(Exception):
    """Some attachment files could not be archived yet (transient); the job is retried."""


@dataclass(frozen=True)
class Owner:
    user_key: str
    user_id: str | None
    bucket_name: str


@dataclass(frozen=True)
class Attempt:
    """Which run of a message's job this is, as RQ counts them."""

    number: int
    """1 for the first run."""
    final: bool
    """RQ will not run the job again after a failure."""

    @classmethod
    def of(cls, retries_left: int | None, retries: int = len(ARCHIVE_RETRY_INTERVALS)) -> Attempt:
        """From RQ's count of the retries left (None: a job without retries) out of `retries`."""
        if retries_left is None:
            return cls(1, True)
        left = int(retries_left)
        return cls(max(1, retries - left + 1), left <= 0)

    @property
    def gives_up_attachments(self) -> bool:
        return self.final or self.number >= ATTACHMENT_ATTEMPTS


FIRST_TRY = Attempt(1, False)
"""A run outside RQ (a direct call): never the last."""


@dataclass
class Archived:
    """What archiving one message came to; the batch marks rows and queues next steps from it."""

    note_id: int
    outcome: str
    """stored | already stored | gone | deferred | failed, or why it may not be written
    (`owner erased`, `message erased`: settled like gone)"""
    user_id: str | None = None
    path: str | None = None
    """gs:// URI of the message JSON once written (also when something after it failed)."""
    notes: str | None = None
    """error_details of a stored row (attachments skipped or unavailable)."""
    error: BaseException | None = None
    statuses: tuple[str, str] | None = None
    """(transcription, classification) statuses of a row that was stored before."""
    seconds: float = 0.0

    @property
    def permanent(self) -> bool:
        return isinstance(self.error, storage.PermanentStorageError)


def _owner(row: dict[str, Any]) -> Owner:
    """Whose archive the message goes to: the row's user, else its contact's (app/users/contacts.py)."""
    if row["user_id"]:
        uid = str(row["user_id"])
        return Owner(uid, uid, row["owner_bucket_name"] or storage.bucket_name(uid))
    if row["linked_user_id"]:
        uid = str(row["linked_user_id"])
        return Owner(uid, uid, row["linked_bucket_name"])
    key = users.fallback_key(row["chatwoot_account_id"])
    return Owner(key, None, storage.bucket_name(key))


def _short(text: str) -> str:
    return " ".join(text.split())[:ERROR_DETAILS_MAX]


def _reason(exc: BaseException) -> str:
    """A short, safe description of a failure (no URLs, no payloads)."""
    if isinstance(exc, AttachmentsPending | media.MediaError | storage.StorageError):
        return _short(str(exc))
    if isinstance(exc, DatabaseError):
        return "database unavailable"
    if isinstance(exc, gexc.GoogleAPICallError):
        return _short(f"GCS error {exc.code or ''} ({type(exc).__name__})")
    if isinstance(exc, gexc.RetryError | ConnectionError | OSError | requests.RequestException):
        return "GCS unavailable"
    return _short(f"unexpected {type(exc).__name__}")


def current_attempt(spec: JobSpec = ARCHIVE_MESSAGE) -> Attempt:
    """The attempt of the RQ job running now (FIRST_TRY outside a worker)."""

    job = get_current_job()
    if job is None:
        return FIRST_TRY
    return Attempt.of(job.retries_left, len(spec.retry_intervals))


def _defer(spec: JobSpec, item_id: int, exc: storage.BucketCreationThrottled) -> str:
    """Run the job again when a bucket-creation slot should be free (the row stays as it is)."""
    delay = max(1, math.ceil(exc.retry_after))
    try:
        enqueue(spec, item_id, delay_seconds=delay, suffix=f"after{int(time.time()) + delay}")
    except QueueUnavailable:
        raise exc from None
    JOBS.labels(job=spec.func.rsplit(".", 1)[-1], result="retry").inc()
    log.info("bucket creation throttled; job scheduled again", extra={"id": item_id, "delay": delay})
    return f"deferred {delay} s"


# ------------------------------------------------------------------------------------------
# messages


def erased_owners(rows: Iterable[dict[str, Any]]) -> set[str]:
    """The buckets of loaded rows whose owner is an erased user (one query for a batch): their
    messages are not written, and no bucket is created for them."""
    return tombstones.erased_buckets(
        _owner(r).bucket_name for r in rows if r["processing_status"] != "stored"
    )


def archive_row(row: dict[str, Any], attempt: Attempt, erased: Collection[str] = ()) -> Archived:
    """Archive one loaded row (any thread; never raises): its JSON and attachments, not its status.

    `erased`: the buckets of the batch found to be erased users' when the rows were loaded
    (`erased_owners`). A row erased after its load is written, then taken back when its status is
    settled (the row is gone: app/archive/batch.py)."""
    started = time.perf_counter()
    note_id = int(row["id"])
    result = Archived(note_id, "failed")
    try:
        if row["processing_status"] == "stored":
            result.outcome = "already stored"
            result.statuses = (row["transcription_status"], row["classification_status"])
            return result
        owner = _owner(row)
        if owner.bucket_name in erased:  # nothing is written, no bucket is created
            result.outcome = "owner erased"
            return result
        bucket = _bucket_for(owner)
        result.path, prefix = _write_message(row, bucket)
        result.user_id = owner.user_id
        notes = _archive_attachments(row, bucket, prefix, attempt)
        result.notes = _short("; ".join(notes)) if notes else None
        result.outcome = "stored"
    except storage.BucketCreationThrottled as exc:
        result.outcome, result.error = "deferred", exc
    except Exception as exc:
        result.error = exc
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _bucket_for(owner: Owner) -> Any:
    """The owner's bucket, created on first use: where every object of a message goes."""
    return storage.ensure_bucket(owner.bucket_name)


def _write_message(row: dict[str, Any], bucket: Any) -> tuple[str, str]:
    """Write the message JSON; return (its gs:// URI, the prefix of its other objects)."""
    created = row["message_created_at"] or row["created_at"]
    account = int(row["chatwoot_account_id"])
    data = row["payload_json"].encode()
    same = _same_message(data, (row["payload_message_id"], row["payload_account_id"]))
    prefix = storage.message_prefix(created, row["chatwoot_message_id"], account)
    try:
        written = storage.write_bytes(bucket, storage.message_object(prefix), data, JSON_CONTENT_TYPE, same)
    except storage.ObjectConflict:
        qualified = storage.message_prefix(created, row["chatwoot_message_id"], account, qualified=True)
        if qualified == prefix:
            raise
        log.warning(
            "object name taken by another message; archived under its account-qualified name",
            extra={"note_id": row["id"], "object": storage.message_object(prefix)},
        )
        prefix = qualified
        written = storage.write_bytes(bucket, storage.message_object(prefix), data, JSON_CONTENT_TYPE, same)
    return written.uri, prefix


def _message_identity(doc: Any) -> tuple[str, str | None] | None:
    """(message id, account id) of a message document; None when it is not one."""
    if not isinstance(doc, dict) or doc.get("id") is None:
        return None
    account = doc.get("account")
    account_id = account.get("id") if isinstance(account, dict) else None
    return str(doc["id"]), None if account_id is None else str(account_id)


def _same_message(data: bytes, mine: tuple[str | None, str | None]) -> storage.Same:
    """Whether an existing object is this message (so its 412 means: archived before): the same
    bytes, or a message document with the same message id and account id."""

    def same(existing: bytes) -> bool:
        if existing == data:
            return True
        if mine[0] is None:
            return False
        try:
            return _message_identity(json.loads(existing)) == mine
        except ValueError:
            return False

    return same


def _archive_attachments(row: dict[str, Any], bucket: Any, prefix: str, attempt: Attempt) -> list[str]:
    """Archive every attachment file not archived yet; return notes about skipped or unavailable ones.

    Raises AttachmentsPending when some may still come (the others are kept; the job is retried).
    """
    attachments = row["attachments"] or []
    if not isinstance(attachments, list) or not attachments:
        return []
    done = {int(a["chatwoot_attachment_id"]): a for a in row["attachment_rows"] or []}
    notes: list[str] = []
    pending: list[str] = []
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            continue
        att_id = _attachment_id(attachment, index)
        previous = done.get(att_id)
        if previous and previous["status"] in ("stored", "skipped", "unavailable"):
            if previous["status"] != "stored" and previous.get("error_details"):
                notes.append(f"attachment {att_id} {previous['status']}: {previous['error_details']}")
            continue
        status, reason = _archive_attachment(
            row, attachment, att_id, bucket=bucket, prefix=prefix, attempt=attempt
        )
        if status == "pending":
            pending.append(f"attachment {att_id} unavailable: {reason}")
        elif reason:
            notes.append(f"attachment {att_id} {status}: {reason}")
    if pending:
        raise AttachmentsPending("; ".join(pending))
    return notes


def _archive_attachment(
    row: dict[str, Any],
    attachment: dict[str, Any],
    att_id: int,
    *,
    bucket: Any,
    prefix: str,
    attempt: Attempt,
) -> tuple[str, str | None]:
    """Fetch and store one attachment file; record and return (its status, the reason if not stored)."""
    file_type = str(attachment.get("file_type") or "") or None
    size = attachment.get("file_size")
    base = {
        "note_id": row["id"],
        "attachment_id": att_id,
        "file_type": file_type,
        "content_type": None,
        "size_bytes": size if isinstance(size, int) else None,
        "bucket_name": None,
        "object_name": None,
    }
    if not media.has_file(attachment):
        _save_attachment(base, "skipped", None)
        return "skipped", None
    try:
        with media.download(str(attachment["data_url"]), int(row["chatwoot_account_id"])) as file:
            name = storage.attachment_object(prefix, att_id, file.extension)
            storage.put_file(bucket, name, file.file, file.size, file.content_type)
            stored = {
                "content_type": file.content_type,
                "size_bytes": file.size,
                "bucket_name": bucket.name,
                "object_name": name,
            }
            _save_attachment({**base, **stored}, "stored", None)
            return "stored", None
    except media.AttachmentTooLarge as exc:
        _save_attachment(base, "skipped", exc.reason)
        return "skipped", exc.reason
    except media.MediaError as exc:
        if exc.permanent or attempt.gives_up_attachments:
            _save_attachment(base, "unavailable", exc.reason)
            log.warning(
                "attachment unavailable; the message goes on without it",
                extra={"note_id": row["id"], "attachment_id": att_id, "reason": exc.reason},
            )
            return "unavailable", exc.reason
        _save_attachment(base, "pending", exc.reason)
        return "pending", exc.reason


def _attachment_id(attachment: dict[str, Any], index: int) -> int:
    try:
        return int(attachment["id"])
    except (KeyError, TypeError, ValueError):
        return index  # hand-made payloads without ids: their position


def _save_attachment(values: dict[str, Any], status: str, error: str | None) -> None:
    context.db().execute(
        "archive.attachment_save",
        {**values, "status": status, "error_details": _short(error) if error else None},
    )


def record_failure(result: Archived, final: bool) -> None:
    """Note a failed run on the row: `error` when final (saying where the JSON is, if written)."""
    note_id = result.note_id
    assert result.error is not None
    reason = _reason(result.error)
    db = context.db()
    try:
        if final:
            with db.transaction() as cur:
                cur.execute(
                    queries["archive.mark_error"],
                    {
                        "note_id": note_id,
                        "error_details": reason,
                        "user_id": result.user_id,
                        "path": result.path,
                    },
                )
                cur.execute(queries["archive.attachments_unavailable"], {"note_id": note_id})
            log.error("archive failed", extra={"note_id": note_id, "reason": reason})
        else:
            db.execute("archive.note_retrying", {"note_id": note_id, "error_details": f"retrying: {reason}"})
            log.warning("archive failed; will retry", extra={"note_id": note_id, "reason": reason})
    except DatabaseError:
        log.warning("archive failure not recorded: database unavailable", extra={"note_id": note_id})


def next_steps(
    note_id: int, transcription_status: str, classification_status: str
) -> list[tuple[JobSpec, int]]:
    """The jobs that follow the archiving of a message: transcription of a voice note, else classification."""
    if transcription_status == "pending":
        return [(TRANSCRIBE_MESSAGE, note_id)]
    if classification_status == "pending":
        return [(CLASSIFY_MESSAGE, note_id)]
    return []


# ------------------------------------------------------------------------------------------
# updates


def archive_update(update_id: int) -> str:
    """Archive message_updates row `update_id` beside its message; return what happened."""
    try:
        outcome = _archive_update(update_id)
    except storage.BucketCreationThrottled as exc:
        return _defer(ARCHIVE_UPDATE, update_id, exc)
    except storage.PermanentStorageError as exc:
        _record_update_failure(update_id, exc, final=True)
        JOBS.labels(job="archive_update", result="error").inc()
        return f"error: {_reason(exc)}"
    except Exception as exc:
        final = current_attempt(ARCHIVE_UPDATE).final
        _record_update_failure(update_id, exc, final=final)
        JOBS.labels(job="archive_update", result="error" if final else "retry").inc()
        raise
    JOBS.labels(job="archive_update", result="ok").inc()
    return outcome


def _archive_update(update_id: int) -> str:
    db = context.db()
    row = db.fetch_one("archive.load_update", {"update_id": update_id})
    if row is None:
        return "gone"
    if row["processing_status"] == "stored":
        return "already stored"
    if not row["note_path"]:
        # Archived when its message is: archive_message queues it then.
        return "waiting for its message"
    bucket_name, json_name = storage.parse_gs_uri(row["note_path"])
    prefix = json_name.removesuffix(".json")
    fence = storage.write_fence(row["meeting_note_id"], bucket_name)
    if fence:
        return fence
    bucket = storage.ensure_bucket(bucket_name)
    name = storage.update_object(prefix, row["fingerprint"])
    path = storage.put_json(bucket, name, row["payload"])
    done = db.fetch_one("archive.update_stored", {"update_id": update_id, "path": path})
    if done is None and storage.write_fence(row["meeting_note_id"], bucket_name) == "message erased":
        storage.delete_object(bucket_name, name)  # erased while this job wrote
        return "message erased"
    if done is not None and done["classification_status"] == "pending":
        # A version of our own message with an answer or a refusal: the order flow's turn.
        try:
            enqueue(CLASSIFY_UPDATE, update_id)
        except QueueUnavailable:
            log.warning("classification not queued: Redis unavailable", extra={"update_id": update_id})
    return "stored"


def _record_update_failure(update_id: int, exc: BaseException, final: bool) -> None:
    reason = _reason(exc)
    try:
        if final:
            context.db().execute("archive.update_error", {"update_id": update_id, "error_details": reason})
            log.error("update archive failed", extra={"update_id": update_id, "reason": reason})
        else:
            context.db().execute(
                "archive.update_retrying", {"update_id": update_id, "error_details": f"retrying: {reason}"}
            )
    except DatabaseError:
        log.warning("update failure not recorded: database unavailable", extra={"update_id": update_id})


# ------------------------------------------------------------------------------------------
# attachments an admin asked to fetch again


def retry_attachments(note_id: int, attachment_id: int | None = None) -> list[int]:
    """Put the unavailable attachments of a message (all, or one) back to pending and queue their
    fetch; return their ids (empty: nothing to retry). Raises LookupError for an unknown message."""
    db = context.db()
    if db.fetch_one("archive.note_exists", {"note_id": note_id}) is None:
        raise LookupError(f"no message {note_id}")
    ids = [
        int(r["chatwoot_attachment_id"])
        for r in db.fetch_all(
            "archive.attachments_retry", {"note_id": note_id, "attachment_id": attachment_id}
        )
    ]
    if ids:
        # A job still queued from an earlier retry fetches these too.
        enqueue(ARCHIVE_ATTACHMENTS, note_id)
        log.info("attachments queued for another fetch", extra={"note_id": note_id, "attachments": ids})
    return ids


def archive_attachments(note_id: int) -> str:
    """Fetch the pending attachments of a stored message (an admin's retry); return what happened."""
    try:
        outcome = _archive_pending_attachments(note_id, current_attempt(ARCHIVE_ATTACHMENTS))
    except storage.BucketCreationThrottled as exc:
        return _defer(ARCHIVE_ATTACHMENTS, note_id, exc)
    except Exception:
        JOBS.labels(job="archive_attachments", result="retry").inc()
        raise
    JOBS.labels(job="archive_attachments", result="ok").inc()
    return outcome


def _archive_pending_attachments(note_id: int, attempt: Attempt) -> str:
    db = context.db()
    row = db.fetch_one("archive.attachments_pending", {"note_id": note_id})
    if row is None:
        return "gone"
    if row["processing_status"] != "stored" or not row["gcs_storage_path"]:
        return "message not archived yet (its own job fetches its attachments)"
    bucket_name, json_name = storage.parse_gs_uri(row["gcs_storage_path"])
    prefix = json_name.removesuffix(".json")
    states = {int(a["chatwoot_attachment_id"]): a for a in row["attachment_rows"] or []}
    attachments = row["payload"].get("attachments") or []
    todo = [
        (index, a)
        for index, a in enumerate(attachments if isinstance(attachments, list) else [])
        if isinstance(a, dict) and states.get(_attachment_id(a, index), {}).get("status") == "pending"
    ]
    if not todo:
        return "nothing to fetch"
    bucket = storage.ensure_bucket(bucket_name)
    outcomes: dict[int, str] = {}
    audio_stored = False
    for index, attachment in todo:
        att_id = _attachment_id(attachment, index)
        status, _ = _archive_attachment(
            row, attachment, att_id, bucket=bucket, prefix=prefix, attempt=attempt
        )
        outcomes[att_id] = status
        if status == "stored" and (attachment.get("file_type") == "audio"):
            audio_stored = True
    if audio_stored and db.execute("archive.transcription_again", {"note_id": note_id}):
        try:
            enqueue(TRANSCRIBE_MESSAGE, note_id)
        except QueueUnavailable:
            log.warning("transcription not queued: Redis unavailable", extra={"note_id": note_id})
    if "pending" in outcomes.values():
        raise AttachmentsPending(", ".join(f"attachment {a} {s}" for a, s in outcomes.items()))
    return ", ".join(f"attachment {a} {s}" for a, s in outcomes.items())
