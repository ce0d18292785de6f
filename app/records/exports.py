"""Exports of a user's archive (GDPR access and portability): one zip, built by a job, streamed
into the user's bucket under `exports/`, handed out as a signed URL that expires.

The zip (`export-<id>/...`) holds:
- `messages.jsonl`: every message and every archived update, one JSON object a line, in time
  order, each with the copy archived in GCS (or, when that cannot be read, what was received);
- `files/<object name>`: each attachment and transcript archived for those messages;
- `manifest.json`, last: counts, the time range, and the size and SHA-256 of every other file
  (and what could not be read, with the reason).
The zip's own size and SHA-256 are kept on the export's row.

Memory stays flat: rows come through a server-side cursor, files are copied in pieces, the JSON
lines and the manifest's file list wait in temporary files, and the zip is uploaded in chunks
of EXPORT_CHUNK bytes. Every step is recorded in `export_events`: who asked, when it was built,
each signed URL handed out, its deletion (or the refusal of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote

import psycopg2
import psycopg2.extras
from google.api_core import exceptions as gexc
from google.auth.transport.requests import Request
from psycopg2.extras import Json

from app import context
from app.archive import storage
from app.archive.gcs_client import key_credentials
from app.db import plain, queries
from app.jobs import EXPORT_ARCHIVE, QueueUnavailable, enqueue
from app.records import holds
from app.users.service import Conflict, NotFound

log = logging.getLogger(__name__)

FORMAT = "meeting-notes-export"
FORMAT_VERSION = 1
EXPORTS_PREFIX = "exports/"
"""Where exports live in the user's bucket (a lifecycle rule deletes them after EXPORT_KEEP_DAYS + 1)."""
EXPORT_CHUNK = 8 * 1024 * 1024
"""Bytes uploaded per request (a multiple of 256 KiB): the most the upload holds in memory."""
COPY_PIECE = 1024 * 1024
"""Bytes of an attachment read from GCS at a time."""
CURSOR_ROWS = 200
"""Rows fetched from PostgreSQL at a time."""
EXPIRED_BATCH = 200


class ExportNotReady(Conflict):
    """The export is not built (yet): no URL to hand out."""


class ExportGone(Conflict):
    """The export was deleted."""


# ------------------------------------------------------------------------------------------
# requests, URLs, deletion


def request(user_id: str, requested_by: str, *, queue: bool = True) -> dict[str, Any]:
    """Record an export of a user's archive and queue the job that builds it (`queue=False`:
    the caller builds it, as `flask users export` does)."""
    user = context.db().fetch_one("users.user_get", {"user_id": user_id})
    if user is None:
        raise NotFound(f"no user {user_id!r}")
    with context.db().transaction() as cur:
        cur.execute(
            queries["exports.export_insert"],
            {"user_id": user_id, "requested_by": requested_by, "bucket_name": user["bucket_name"]},
        )
        export_id = int(cur.fetchone()["id"])
        _event(cur, export_id, "requested", requested_by)
    log.info("export requested", extra={"export_id": export_id, "user_id": user_id, "by": requested_by})
    queued = False
    with contextlib.suppress(QueueUnavailable):  # the cron process queues unfinished exports again
        queued = queue and enqueue(EXPORT_ARCHIVE, export_id)
    return {**get(export_id), "queued": queued}


def get(export_id: int) -> dict[str, Any]:
    row = context.db().fetch_one("exports.export_get", {"export_id": export_id})
    if row is None:
        raise NotFound(f"no export {export_id}")
    out: dict[str, Any] = plain(row)
    out["events"] = [
        plain(e) for e in context.db().fetch_all("exports.export_events_of", {"export_id": export_id})
    ]
    return out


def of_user(user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return [
        plain(r)
        for r in context.db().fetch_all("exports.exports_of_user", {"user_id": user_id, "limit": limit})
    ]


def issue_url(export_id: int, issued_by: str) -> dict[str, Any]:
    """A URL that downloads the export's zip until it expires (EXPORT_URL_TTL); recorded."""
    export = get(export_id)
    if export["status"] == "deleted":
        raise ExportGone(f"export {export_id} was deleted on {export['deleted_at']}")
    if export["status"] != "done":
        raise ExportNotReady(f"export {export_id} is {export['status']}: no file to download yet")
    ttl = context.settings().export_url_ttl
    url, signed = signed_url(export["bucket_name"], export["object_name"], ttl, f"export-{export_id}.zip")
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    with context.db().transaction() as cur:
        _event(cur, export_id, "url", issued_by, {"expires_at": expires_at.isoformat(), "signed": signed})
    log.info("export URL issued", extra={"export_id": export_id, "by": issued_by, "ttl": ttl})
    return {
        "export_id": export_id,
        "url": url,
        "signed": signed,
        "expires_at": expires_at.isoformat(),
        "size_bytes": export["size_bytes"],
        "sha256": export["sha256"],
    }


def delete(export_id: int, deleted_by: str) -> dict[str, Any]:
    """Delete an export's file; refused while its user is on legal hold."""
    export = get(export_id)
    if export["status"] == "deleted":
        return export
    try:
        holds.refuse_if_held(export["user_id"], f"deletion of export {export_id}")
    except holds.OnLegalHold as exc:
        with context.db().transaction() as cur:
            _event(cur, export_id, "refused", deleted_by, {"reason": str(exc)})
        raise
    objects = _delete_objects(export)
    with context.db().transaction() as cur:
        cur.execute(queries["exports.export_deleted"], {"export_id": export_id})
        _event(cur, export_id, "deleted", deleted_by, {"objects": objects})
    log.info("export deleted", extra={"export_id": export_id, "by": deleted_by, "objects": objects})
    return get(export_id)


def _delete_objects(export: dict[str, Any]) -> int:
    if not export["bucket_name"]:
        return 0
    deleted = 0
    for name in storage.list_objects(export["bucket_name"], f"{EXPORTS_PREFIX}{export['id']}/"):
        if storage.delete_object(export["bucket_name"], name):
            deleted += 1
    return deleted


def delete_expired(limit: int = EXPIRED_BATCH) -> dict[str, int]:
    """The cron process's pass: exports past EXPORT_KEEP_DAYS, except those of users on hold."""
    deleted = 0
    for row in context.db().fetch_all("exports.exports_expired", {"limit": limit}):
        try:
            delete(int(row["id"]), "retention")
            deleted += 1
        except holds.OnLegalHold:
            continue
    kept = context.db().fetch_one("exports.exports_expired_on_hold") or {"n": 0}
    if kept["n"]:
        log.warning("expired exports kept: on legal hold", extra={"exports": int(kept["n"])})
    return {"deleted": deleted, "kept_on_hold": int(kept["n"])}


REQUEUE_GRACE_SECONDS = 900
"""An export pending or running this long without news has lost its job: it is queued again (a job
still running keeps its id, and the new one is not queued)."""


def requeue_unfinished(limit: int = 100) -> dict[str, int]:
    """The cron process's pass: queue again the jobs of exports that stopped moving."""
    queued = 0
    for row in context.db().fetch_all(
        "exports.exports_unfinished", {"grace_seconds": REQUEUE_GRACE_SECONDS, "limit": limit}
    ):
        if enqueue(EXPORT_ARCHIVE, int(row["id"])):
            queued += 1
    return {"queued": queued}


def _event(cur: Any, export_id: int, event: str, actor: str, detail: dict[str, Any] | None = None) -> None:
    cur.execute(
        queries["exports.export_event"],
        {"export_id": export_id, "event": event, "actor": actor, "detail": Json(detail) if detail else None},
    )


# ------------------------------------------------------------------------------------------
# signed URLs


def signed_url(bucket_name: str, object_name: str, ttl: int, filename: str) -> tuple[str, bool]:
    """(URL, signed): a V4 signed URL valid `ttl` seconds. Against an emulator with no key to
    sign with, the emulator's plain download URL (not signed)."""
    settings = context.settings()
    blob = context.gcs().bucket(bucket_name).blob(object_name)
    options: dict[str, Any] = {
        "version": "v4",
        "expiration": timedelta(seconds=ttl),
        "method": "GET",
        "response_disposition": f'attachment; filename="{filename}"',
    }
    if settings.uses_gcs_emulator:
        options["api_access_endpoint"] = settings.storage_emulator_host
    credentials = _signing_credentials()
    if credentials is None:
        if settings.uses_gcs_emulator:
            host = settings.storage_emulator_host.rstrip("/")
            return (
                f"{host}/download/storage/v1/b/{bucket_name}/o/{quote(object_name, safe='')}?alt=media",
                False,
            )
        # Platform credentials without a key (GCE, Cloud Run): signed by the IAM signBlob API.
        platform = context.gcs()._credentials
        platform.refresh(Request())
        options["service_account_email"] = platform.service_account_email
        options["access_token"] = platform.token
        return blob.generate_signed_url(**options), True
    return blob.generate_signed_url(credentials=credentials, **options), True


def _signing_credentials() -> Any:
    """Credentials holding a private key: the GCS_* fields, or GOOGLE_APPLICATION_CREDENTIALS."""
    settings = context.settings()
    found = key_credentials(settings)
    if found is not None:
        return found
    if settings.uses_gcs_emulator:
        return None
    platform = context.gcs()._credentials
    return platform if hasattr(platform, "sign_bytes") and getattr(platform, "signer_email", None) else None


# ------------------------------------------------------------------------------------------
# the job


@dataclass
class Built:
    export_id: int
    status: str
    object_name: str | None = None
    size_bytes: int = 0
    sha256: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def build(export_id: int) -> Built:
    """The job: build the export's zip in the user's bucket; a finished export is left as it is.

    A failed run marks the export `failed` and raises (RQ retries it; a retry starts over, under
    a new object name, and deleting the export deletes what every attempt left)."""
    db = context.db()
    with db.transaction() as cur:
        cur.execute(queries["exports.export_start"], {"export_id": export_id})
        row = cur.fetchone()
    if row is None:
        found = db.fetch_one("exports.export_get", {"export_id": export_id})
        if found is None:
            raise NotFound(f"no export {export_id}")
        return Built(export_id, str(found["status"]), found["object_name"], found["size_bytes"] or 0)
    object_name = f"{EXPORTS_PREFIX}{export_id}/archive-{row['attempts']}.zip"
    try:
        bucket = storage.ensure_bucket(str(row["bucket_name"]))
        written = _write(bucket, object_name, export_id, str(row["user_id"]))
    except Exception as exc:
        # A failed upload may have been finished by its closing with part of the zip: not kept.
        with contextlib.suppress(Exception):
            storage.delete_object(str(row["bucket_name"]), object_name)
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        with db.transaction() as cur:
            cur.execute(queries["exports.export_failed"], {"export_id": export_id, "error_details": detail})
            _event(cur, export_id, "failed", "export job", {"error": detail, "attempt": row["attempts"]})
        log.error("export failed", extra={"export_id": export_id, "error_type": type(exc).__name__})
        raise
    with db.transaction() as cur:
        cur.execute(
            queries["exports.export_done"],
            {
                "export_id": export_id,
                "object_name": object_name,
                "size_bytes": written.size_bytes,
                "sha256": written.sha256,
                "summary": Json(written.summary),
                "keep_days": context.settings().export_keep_days,
            },
        )
        _event(
            cur,
            export_id,
            "built",
            "export job",
            {"object": object_name, "size_bytes": written.size_bytes, "sha256": written.sha256},
        )
    log.info(
        "export built",
        extra={"export_id": export_id, "size_bytes": written.size_bytes, **written.summary["counts"]},
    )
    written.export_id, written.status, written.object_name = export_id, "done", object_name
    return written


class _Sink:
    """What the zip is written to: counts and hashes the bytes on their way to the upload."""

    def __init__(self, out: IO[bytes]):
        self.out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.out.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        """Nothing: the upload sends full chunks, and the rest when it is closed."""


@dataclass
class _Manifest:
    """The manifest's counts, and its list of files kept in a temporary file as they are added."""

    root: str
    files: IO[str]
    missing: IO[str]
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("messages", "updates", "attachments", "transcripts", "files", "bytes", "missing"), 0
        )
    )
    first: str | None = None
    last: str | None = None

    def file(self, path: str, size: int, sha256: str, kind: str, source: str | None = None) -> None:
        entry = {"path": path, "size": size, "sha256": sha256, "kind": kind}
        if source:
            entry["source"] = source
        self.files.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.counts["files"] += 1
        self.counts["bytes"] += size

    def lost(self, what: str, reason: str, note_id: int) -> None:
        self.missing.write(json.dumps({"object": what, "reason": reason, "note_id": note_id}) + "\n")
        self.counts["missing"] += 1

    def at(self, moment: datetime | None) -> None:
        if moment is None:
            return
        text = moment.isoformat()
        self.first = self.first or text
        self.last = text


def _write(bucket: Any, object_name: str, export_id: int, user_id: str) -> Built:
    root = f"export-{export_id}/"
    blob = bucket.blob(object_name)
    with (
        tempfile.TemporaryFile() as lines,
        tempfile.TemporaryFile("w+", encoding="utf-8") as listed,
        tempfile.TemporaryFile("w+", encoding="utf-8") as missing,
    ):
        manifest = _Manifest(root, listed, missing)
        with blob.open(
            "wb",
            chunk_size=EXPORT_CHUNK,
            content_type="application/zip",
            if_generation_match=0,
            checksum="crc32c",
            timeout=storage.CALL_TIMEOUT,
        ) as upload:
            sink = _Sink(upload)
            with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
                jsonl = hashlib.sha256()
                for item in _items(user_id):
                    line = _line(item, archive, manifest) + b"\n"
                    lines.write(line)
                    jsonl.update(line)
                size = lines.tell()
                lines.seek(0)
                _add_stream(archive, root + "messages.jsonl", lines, size, deflate=True)
                manifest.file(root + "messages.jsonl", size, jsonl.hexdigest(), "messages")
                summary = _summary(export_id, user_id, manifest)
                _add_manifest(archive, root + "manifest.json", summary, listed, missing)
        return Built(export_id, "done", object_name, sink.size, sink.digest.hexdigest(), summary)


@contextmanager
def _snapshot() -> Iterator[Any]:
    """A connection of its own, in one REPEATABLE READ read-only transaction: the export is one
    consistent picture of the archive, read through a server-side cursor."""
    conn = psycopg2.connect(context.settings().database_url, application_name="meeting-notes-export")
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        yield conn
    finally:
        conn.close()


def _items(user_id: str) -> Iterator[dict[str, Any]]:
    with (
        _snapshot() as conn,
        conn.cursor(name="export_items", cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.itersize = CURSOR_ROWS
        cur.execute(queries["exports.export_items"], {"user_id": user_id})
        for row in cur:
            yield dict(row)


def _line(item: dict[str, Any], archive: zipfile.ZipFile, manifest: _Manifest) -> bytes:
    """One message or update as a JSON line; its files are added to the zip on the way."""
    note_id = int(item["note_id"])
    manifest.at(item["at"])
    if item["kind"] == "update":
        manifest.counts["updates"] += 1
        out: dict[str, Any] = {
            "type": "update",
            "id": int(item["update_id"]),
            "message": _message_ref(item),
            "received_at": plain(item["created_at"]),
        }
        out.update(_archived(item, manifest, "update"))
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    manifest.counts["messages"] += 1
    out = {
        "type": "message",
        "id": note_id,
        **_message_ref(item),
        "conversation_id": item["chatwoot_conversation_id"],
        "inbox_id": item["chatwoot_inbox_id"],
        "contact_id": item["chatwoot_contact_id"],
        "channel": item["source_type"],
        "message_type": item["message_type"],
        "content_type": item["content_type"],
        "private": item["is_private"],
        "sender_type": item["sender_type"],
        "sent_at": plain(item["message_created_at"]),
        "received_at": plain(item["created_at"]),
        "kind": item["message_kind"],
        "status": item["processing_status"],
        "content": item["content"],
        "transcript": item["transcript"],
        "attachments": [_attachment(a, archive, manifest, note_id) for a in item["attachments"] or []],
    }
    if item["transcript_path"]:
        out["transcript_file"] = _copy(item["transcript_path"], archive, manifest, note_id, "transcript")
    out.update(_archived(item, manifest, "message"))
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _message_ref(item: dict[str, Any]) -> dict[str, Any]:
    return {"account_id": item["chatwoot_account_id"], "message_id": item["chatwoot_message_id"]}


def _archived(item: dict[str, Any], manifest: _Manifest, kind: str) -> dict[str, Any]:
    """The archived JSON (from GCS); what was received when it cannot be read."""
    path = item["gcs_storage_path"]
    reason = "not archived yet"
    if path:
        bucket, name = storage.parse_gs_uri(str(path))
        try:
            return {"archived_object": name, "payload": json.loads(storage.read_bytes(bucket, name))}
        except gexc.NotFound:
            reason = "archived object not found"
        except ValueError:
            reason = "archived object is not JSON"
        manifest.lost(name, reason, int(item["note_id"]))
    if kind == "update":
        row = context.db().fetch_one("exports.export_update_payload", {"id": item["update_id"]})
    else:
        row = context.db().fetch_one("exports.export_note_payload", {"id": item["note_id"]})
    return {
        "archived_object": None,
        "payload_source": f"database ({reason})",
        "payload": row["payload"] if row else None,
    }


def _attachment(
    attachment: dict[str, Any], archive: zipfile.ZipFile, manifest: _Manifest, note_id: int
) -> dict[str, Any]:
    out = {k: attachment.get(k) for k in ("id", "file_type", "content_type", "size_bytes", "status")}
    if attachment.get("status") == "stored" and attachment.get("bucket") and attachment.get("object"):
        gs = storage.gs_uri(attachment["bucket"], attachment["object"])
        out["file"] = _copy(gs, archive, manifest, note_id, "attachment")
        if out["file"]:
            manifest.counts["attachments"] += 1
    return out


def _copy(gs: str, archive: zipfile.ZipFile, manifest: _Manifest, note_id: int, kind: str) -> str | None:
    """Copy an archived object into the zip under files/; its path there (None when unreadable)."""
    bucket_name, name = storage.parse_gs_uri(gs)
    path = f"{manifest.root}files/{name}"
    blob = context.gcs().bucket(bucket_name).blob(name)
    try:
        blob.reload(timeout=storage.CALL_TIMEOUT)
        with blob.open("rb", chunk_size=COPY_PIECE, timeout=storage.CALL_TIMEOUT) as source:
            size, digest = _add_stream(archive, path, source, blob.size, deflate=kind == "transcript")
    except gexc.NotFound:
        manifest.lost(name, "object not found", note_id)
        return None
    manifest.file(path, size, digest, kind, gs)
    if kind == "transcript":
        manifest.counts["transcripts"] += 1
    return path


def _add_stream(
    archive: zipfile.ZipFile, path: str, source: IO[bytes], size: int | None, *, deflate: bool
) -> tuple[int, str]:
    """Copy a stream into a new zip member in pieces; (bytes, SHA-256) of what was copied."""
    info = zipfile.ZipInfo(path, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    if size is not None:
        info.file_size = size
    digest = hashlib.sha256()
    copied = 0
    with archive.open(info, "w", force_zip64=size is None or size > 2**31) as member:
        while piece := source.read(COPY_PIECE):
            member.write(piece)
            digest.update(piece)
            copied += len(piece)
    return copied, digest.hexdigest()


def _summary(export_id: int, user_id: str, manifest: _Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "export_id": export_id,
        "user_id": user_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "time_range": {"first": manifest.first, "last": manifest.last},
        "counts": dict(manifest.counts),
    }


def _add_manifest(
    archive: zipfile.ZipFile, path: str, summary: dict[str, Any], listed: IO[str], missing: IO[str]
) -> None:
    """manifest.json: the summary, then the files and what was missing, written as they are read
    back from their temporary files."""
    info = zipfile.ZipInfo(path, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with archive.open(info, "w", force_zip64=True) as member:
        head = json.dumps(summary, ensure_ascii=False, indent=1)
        member.write(head[: head.rindex("}")].rstrip().encode() + b',\n "files": [')
        for key, source in (("files", listed), ("missing", missing)):
            if key == "missing":
                member.write(b'\n ],\n "missing": [')
            source.seek(0)
            first = True
            for entry in source:
                member.write((b"\n  " if first else b",\n  ") + entry.rstrip("\n").encode())
                first = False
        member.write(b"\n ]\n}\n")
