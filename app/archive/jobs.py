"""The archive jobs: a message and its media, or an update of it, into its owner's bucket.

`archive_message(note_id)`:
1. loads the row, its attachments so far and its owner in one query; a stored row is done;
2. the owner is the row's user, else the user a contact link names, else the account's
   fallback key; its bucket is created on first use (rate-limited across workers: when no
   slot is free soon, the job is scheduled again for later and the row stays `received`);
3. writes the message JSON, then each attachment's file (downloaded from Chatwoot, spooled to
   disk, streamed to GCS), every object with if_generation_match=0 (a rerun writes nothing new);
4. marks the row `stored` (only when the JSON and all media are), then queues transcription
   for a voice note, else classification, and any update that waited for the message.
A failure is retried by RQ with backoff; the last failure leaves `error` and a short reason
(a file that stayed unavailable: the JSON is archived and the row names the attachment).

`archive_update(update_id)` writes an update beside its message, once the message is archived,
then queues its classification when it is a version of our own message carrying an answer or a
refusal.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from app import context
from app.archive import media, storage
from app.db import DatabaseError, queries
from app.jobs import (
    ARCHIVE_MESSAGE,
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

log = logging.getLogger(__name__)

ERROR_DETAILS_MAX = 300
"""Characters of error_details kept on a row."""


class AttachmentsPending(Exception):
    """Some attachment files could not be archived yet (transient); the job is retried."""


class ArchiveRefused(Exception):
    """Archiving cannot succeed without an operator (a foreign bucket, a refused URL)."""


@dataclass(frozen=True)
class Owner:
    user_key: str
    user_id: str | None
    bucket_name: str


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
    from google.api_core import exceptions as gexc

    if isinstance(exc, AttachmentsPending | ArchiveRefused | media.MediaError | storage.StorageError):
        return _short(str(exc))
    if isinstance(exc, DatabaseError):
        return "database unavailable"
    if isinstance(exc, gexc.GoogleAPICallError):
        return _short(f"GCS error {exc.code or ''} ({type(exc).__name__})")
    if isinstance(exc, gexc.RetryError | ConnectionError | OSError):
        return "GCS unavailable"
    try:
        import requests

        if isinstance(exc, requests.RequestException):
            return "GCS unavailable"
    except ImportError:  # pragma: no cover
        pass
    return _short(f"unexpected {type(exc).__name__}")


def _final_attempt() -> bool:
    """Whether RQ will not run this job again after a failure."""
    from rq import get_current_job

    job = get_current_job()
    return job is not None and not job.retries_left


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


def archive_message(note_id: int) -> str:
    """Archive meeting_notes row `note_id`; return what happened."""
    started = time.perf_counter()
    written: dict[str, Any] = {}
    try:
        outcome = _archive_message(note_id, written)
    except storage.BucketCreationThrottled as exc:
        return _defer(ARCHIVE_MESSAGE, note_id, exc)
    except (ArchiveRefused, storage.PermanentStorageError) as exc:
        _record_failure(note_id, exc, True, written)
        JOBS.labels(job="archive_message", result="error").inc()
        return f"error: {_reason(exc)}"
    except Exception as exc:
        final = _final_attempt()
        _record_failure(note_id, exc, final, written)
        JOBS.labels(job="archive_message", result="error" if final else "retry").inc()
        raise
    JOBS.labels(job="archive_message", result="ok").inc()
    log.info(
        "message archived",
        extra={
            "note_id": note_id,
            "outcome": outcome,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return outcome


def _record_failure(note_id: int, exc: BaseException, final: bool, written: dict[str, Any]) -> None:
    """Note a failed run on the row: `error` when final (saying where the JSON is, if written)."""
    reason = _reason(exc)
    db = context.db()
    try:
        if final:
            with db.transaction() as cur:
                cur.execute(
                    queries["archive.mark_error"],
                    {
                        "note_id": note_id,
                        "error_details": reason,
                        "user_id": written.get("user_id"),
                        "path": written.get("path"),
                    },
                )
                cur.execute(queries["archive.attachments_missing"], {"note_id": note_id})
            log.error("archive failed", extra={"note_id": note_id, "reason": reason})
        else:
            db.execute("archive.note_retrying", {"note_id": note_id, "error_details": f"retrying: {reason}"})
            log.warning("archive failed; will retry", extra={"note_id": note_id, "reason": reason})
    except DatabaseError:
        log.warning("archive failure not recorded: database unavailable", extra={"note_id": note_id})


def _run_prepared(name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """`archive.execute_<name>`, prepared once per connection, in one round trip."""
    return context.db().run_prepared(f"archive.{name}", params)


def _archive_message(note_id: int, written: dict[str, Any]) -> str:
    row = _run_prepared("load_note", {"note_id": note_id})
    if row is None:
        return "gone"
    if row["processing_status"] == "stored":
        # Done before; make sure what follows was queued (a no-op when it is).
        _next_steps(note_id, row["transcription_status"], row["classification_status"], [])
        return "already stored"
    owner = _owner(row)
    fence = storage.write_fence(note_id, owner.bucket_name)
    if fence:  # erased (or being erased): nothing is written, no bucket is created
        return fence
    bucket = storage.ensure_bucket(owner.bucket_name)
    prefix = storage.message_prefix(
        row["message_created_at"] or row["created_at"], row["chatwoot_message_id"]
    )
    path = storage.put_json(bucket, storage.message_object(prefix), row["payload"])
    written.update(user_id=owner.user_id, path=path)
    notes = _archive_attachments(row, bucket, prefix)
    done = _run_prepared(
        "mark_stored",
        {
            "note_id": note_id,
            "user_id": owner.user_id,
            "path": path,
            "error_details": _short("; ".join(notes)) if notes else None,
        },
    )
    if done is None:
        if storage.write_fence(note_id, owner.bucket_name) == "message erased":
            # Erased while this job wrote: take back what it wrote (the erasure may be over).
            storage.discard_message(bucket.name, prefix)
            return "message erased"
        return "already stored"
    _next_steps(note_id, done["transcription_status"], done["classification_status"], done["waiting_updates"])
    return "stored"


def _archive_attachments(row: dict[str, Any], bucket: Any, prefix: str) -> list[str]:
    """Archive every attachment file not archived yet; return notes about skipped ones.

    Raises AttachmentsPending when some could not be archived now (the others are kept), and
    ArchiveRefused when one can never be (a URL pointing where we never go).
    """
    attachments = row["payload"].get("attachments") or []
    if not isinstance(attachments, list) or not attachments:
        return []
    done = {int(a["chatwoot_attachment_id"]): a for a in row["attachment_rows"] or []}
    notes: list[str] = []
    pending: list[str] = []
    refused: list[str] = []
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            continue
        att_id = _attachment_id(attachment, index)
        previous = done.get(att_id)
        if previous and previous["status"] in ("stored", "skipped"):
            if previous["status"] == "skipped" and previous.get("error_details"):
                notes.append(f"attachment {att_id} skipped: {previous['error_details']}")
            continue
        file_type = str(attachment.get("file_type") or "") or None
        base = {
            "note_id": row["id"],
            "attachment_id": att_id,
            "file_type": file_type,
            "content_type": None,
            "size_bytes": attachment.get("file_size")
            if isinstance(attachment.get("file_size"), int)
            else None,
            "bucket_name": None,
            "object_name": None,
        }
        if not media.has_file(attachment):
            _save_attachment(base, "skipped", None)
            continue
        try:
            with media.download(str(attachment["data_url"]), int(row["chatwoot_account_id"])) as file:
                name = storage.attachment_object(prefix, att_id, file.extension)
                storage.put_file(bucket, name, file.file, file.size, file.content_type)
                _save_attachment(
                    {
                        **base,
                        "content_type": file.content_type,
                        "size_bytes": file.size,
                        "bucket_name": bucket.name,
                        "object_name": name,
                    },
                    "stored",
                    None,
                )
        except media.AttachmentTooLarge as exc:
            _save_attachment(base, "skipped", exc.reason)
            notes.append(f"attachment {att_id} skipped: {exc.reason}")
        except media.MediaError as exc:
            if exc.permanent:
                _save_attachment(base, "missing", exc.reason)
                refused.append(f"attachment {att_id} refused: {exc.reason}")
            else:
                _save_attachment(base, "pending", exc.reason)
                pending.append(f"attachment {att_id} unavailable: {exc.reason}")
    if refused:
        raise ArchiveRefused("; ".join(refused + pending))
    if pending:
        raise AttachmentsPending("; ".join(pending))
    return notes


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


def _next_steps(
    note_id: int, transcription_status: str, classification_status: str, waiting_updates: list[int]
) -> None:
    """Queue what follows archiving; a Redis outage is left to the reconciler."""
    try:
        if transcription_status == "pending":
            enqueue(TRANSCRIBE_MESSAGE, note_id)
        elif classification_status == "pending":
            enqueue(CLASSIFY_MESSAGE, note_id)
        for update_id in waiting_updates or []:
            enqueue(ARCHIVE_UPDATE, update_id)
    except QueueUnavailable:
        log.warning("next step not queued: Redis unavailable", extra={"note_id": note_id})


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
        final = _final_attempt()
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
