"""The local spool: deliveries accepted while PostgreSQL is down, replayed when it is back.

Each web process appends to its own file in SPOOL_DIR (`<pid>.jsonl`, mode 0600): one JSON
line per delivery, fsync'd before the webhook answers 200. A verified delivery is kept with its
secrets removed. One that could not be verified (the process had never read the accounts'
settings when PostgreSQL went down) is kept as received, with its signature headers and a hash
of its URL token, and is verified against its own account's secrets at replay: one that fails
is dropped and counted, never stored.
`replay()` claims each file by renaming it under its lock, then feeds every line through
`app.ingest` (deduplicated, so a line replayed twice changes nothing) and deletes the file.
Lines that can no longer be read or validated go to `rejected.jsonl` for an operator.

`flask spool replay` runs it by hand; the worker's scheduler calls `replay()` when PostgreSQL
is back.
"""

from __future__ import annotations

import base64
import fcntl
import hmac
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask.cli import AppGroup

from app import context, metrics
from app.chatwoot import accounts, payloads, signatures
from app.chatwoot.payloads import normalize_phone
from app.chatwoot.schemas import InvalidPayload
from app.db import DatabaseUnavailable
from app.ingest.pipeline import IngestResult, prepare, record

if TYPE_CHECKING:
    from flask import Flask

    from app.ingest.pipeline import Prepared

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".jsonl"
CLAIMED_SUFFIX = ".replaying"
REJECTED_FILE = "rejected.jsonl"
FILE_MODE = 0o600
DIR_MODE = 0o700
FORMAT_VERSION = 1
UNVERIFIED_VERSION = 2
"""Lines kept as received, to be verified at replay."""


class SpoolUnavailable(Exception):
    """The spool could not be written (disk full, read-only, permissions)."""


def spool_dir() -> Path:
    return Path(context.settings().spool_dir)


def _ensure_dir(path: Path) -> None:
    created = not path.is_dir()
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if created:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_locked_append(path: Path) -> int:
    """An fd on `path`, opened for appending and locked; reopened if a replay renamed it meanwhile."""
    while True:
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            if not existed:
                os.fchmod(fd, FILE_MODE)
                _fsync_dir(path.parent)
            return fd
        os.close(fd)  # a replay claimed the file between our open and our lock: use a new one


def append(prepared: Prepared, *, request_id: str = "", delivery_id: str = "") -> Path:
    """Append a verified, prepared delivery to this process's spool file and fsync it.

    Raises SpoolUnavailable when it cannot be made durable.
    """
    meta = json.dumps(
        {
            "v": FORMAT_VERSION,
            "spooled_at": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "delivery_id": delivery_id,
        },
        separators=(",", ":"),
    )
    # The payload is already serialised once for PostgreSQL; reuse that text.
    line = (meta[:-1] + ',"payload":' + prepared.payload_json + "}\n").encode("utf-8")
    return _append_line(line)


def append_unverified(
    body: bytes,
    *,
    signature: str,
    timestamp: str,
    url_token: str | None,
    unsigned_allowed: bool,
    request_id: str = "",
    delivery_id: str = "",
) -> Path:
    """Append a delivery that could not be verified yet (see the module's docstring)."""
    entry = {
        "v": UNVERIFIED_VERSION,
        "spooled_at": datetime.now(UTC).isoformat(),
        "request_id": request_id,
        "delivery_id": delivery_id,
        "signature": signature[:200],
        "timestamp": timestamp[:40],
        "url_token_sha256": signatures.token_fingerprint(url_token) if url_token is not None else None,
        "unsigned_allowed": unsigned_allowed,
        "body_b64": base64.b64encode(body).decode("ascii"),
    }
    return _append_line((json.dumps(entry, separators=(",", ":")) + "\n").encode("ascii"))


def _append_line(line: bytes) -> Path:
    directory = spool_dir()
    path = directory / f"{os.getpid()}{SPOOL_SUFFIX}"
    try:
        _ensure_dir(directory)
        fd = _open_locked_append(path)
        try:
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SpoolUnavailable(type(exc).__name__) from None
    return path


@dataclass
class ReplayResult:
    files: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: int = 0
    forged: int = 0
    """Deliveries spooled unverified that failed verification at replay: dropped."""
    remaining_files: int = 0
    error: str = ""
    """Set when the replay stopped early (PostgreSQL down again); the rest stays spooled."""
    note_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("note_ids")
        return out


def pending_files(directory: Path | None = None) -> list[Path]:
    folder = directory or spool_dir()
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name.endswith((SPOOL_SUFFIX, CLAIMED_SUFFIX)) and p.name != REJECTED_FILE
    )


def status() -> dict[str, Any]:
    """Spooled files and lines waiting for a replay."""
    files = pending_files()
    lines = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                lines += sum(1 for _ in handle)
        except FileNotFoundError:
            continue
    return {"directory": str(spool_dir()), "files": len(files), "records": lines}


def _claim(path: Path) -> Path | None:
    """Rename a spool file under its lock so that writers start a new one; None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
            return None
        claimed = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}{CLAIMED_SUFFIX}")
        os.rename(path, claimed)
        _fsync_dir(path.parent)
        return claimed
    finally:
        os.close(fd)


def _reject(directory: Path, raw: bytes, reason: str) -> None:
    entry = json.dumps(
        {
            "rejected_at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "line": raw.decode("utf-8", "replace"),
        },
        ensure_ascii=False,
    )
    fd = os.open(directory / REJECTED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        _write_all(fd, (entry + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_rest(claimed: Path, current: bytes, rest: Any) -> None:
    """Write the lines not replayed yet to a new claimed file (before the old one is deleted)."""
    kept = claimed.with_name(f"{claimed.name.split('.')[0]}.{uuid.uuid4().hex[:12]}{CLAIMED_SUFFIX}")
    fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        _write_all(fd, current + b"".join(rest))
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(claimed.parent)


def replay() -> ReplayResult:
    """Write every spooled delivery into the database (deduplicated) and queue its jobs.

    Safe to run from several processes at once: a file being replayed is locked. Stops at the
    first sign that PostgreSQL is down again, keeping what was not replayed.
    """

    result = ReplayResult()
    directory = spool_dir()
    for path in pending_files(directory):
        claimed = _claim(path) if path.name.endswith(SPOOL_SUFFIX) else path
        if claimed is None:
            continue
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is replaying it
            if not claimed.exists():
                continue
            result.files += 1
            with os.fdopen(os.dup(fd), "rb") as handle:
                for raw in handle:
                    result.records += 1
                    try:
                        entry = json.loads(raw) if raw.endswith(b"\n") else None
                        if isinstance(entry, dict) and entry.get("v") == UNVERIFIED_VERSION:
                            verified = _verify_unverified(entry)
                            if verified is None:
                                result.forged += 1
                                continue
                            payload, body = verified
                            prepared = prepare(payload, raw=body)
                        else:
                            kept = entry.get("payload") if isinstance(entry, dict) else None
                            if not isinstance(kept, dict):
                                raise ValueError("not a spool record")
                            prepared = prepare(kept)
                        outcome = prepared if isinstance(prepared, IngestResult) else record(prepared)
                    except DatabaseUnavailable as exc:
                        result.error = f"PostgreSQL unavailable: {exc}"
                        result.records -= 1
                        _keep_rest(claimed, raw, handle)
                        break
                    except (ValueError, InvalidPayload) as exc:
                        # A torn last line (the process died before its fsync, so before its 200)
                        # or a record this version cannot read: kept aside, never dropped.
                        _reject(directory, raw, type(exc).__name__)
                        result.rejected += 1
                        continue
                    if outcome.status == "accepted":
                        result.accepted += 1
                        if outcome.note_id is not None:
                            result.note_ids.append(outcome.note_id)
                    elif outcome.status == "duplicate":
                        result.duplicates += 1
                    else:
                        result.ignored += 1
            claimed.unlink()
            _fsync_dir(directory)
            if result.error:
                break
        finally:
            os.close(fd)
    result.remaining_files = len(pending_files(directory))
    log.info("spool replayed", extra=result.as_dict())
    return result


def _verify_unverified(entry: dict[str, Any]) -> tuple[dict[str, Any], bytes] | None:
    """(payload, body) of a delivery spooled unverified once it proves to be its own account's;
    None (logged, counted) when it does not. Raises ValueError for a line that cannot be read."""
    body = base64.b64decode(str(entry.get("body_b64") or ""), validate=True)
    payload = payloads.parse_body(body)
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    registry = accounts.registry(0.0)
    settings = context.settings()
    claimed = payloads.account_id(payload)
    signature, timestamp = str(entry.get("signature") or ""), str(entry.get("timestamp") or "")
    ok = False
    if signature or timestamp:
        spooled_at = datetime.fromisoformat(str(entry.get("spooled_at")))
        when = signatures.ascii_int(timestamp)
        fresh = (
            when is not None and abs(spooled_at.timestamp() - when) <= settings.webhook_timestamp_tolerance
        )
        verifier = signatures.StreamVerifier(registry.candidates(claimed), timestamp)
        if fresh and verifier:
            verifier.update(body)
            ok = registry.signed_by(claimed, verifier.matched(signature))
    elif entry.get("url_token_sha256"):
        expected = registry.config(claimed).url_token if claimed is not None else ""
        ok = bool(expected) and hmac.compare_digest(
            str(entry["url_token_sha256"]), signatures.token_fingerprint(expected)
        )
    else:
        ok = bool(entry.get("unsigned_allowed")) and settings.allow_unsigned_webhooks
    if not ok:
        metrics.WEBHOOKS.labels("forged_dropped").inc()
        log.warning(
            "spooled delivery failed verification at replay: dropped",
            extra={
                "account_id": claimed,
                "request_id": entry.get("request_id"),
                "delivery_id": entry.get("delivery_id"),
            },
        )
        return None
    return payload, body


# ---------------------------------------------------------------------------------------------
# erasure: an erased user's deliveries leave the spool too


def purge(matches: Callable[[dict[str, Any]], bool]) -> int:
    """Remove every spooled delivery whose payload `matches`, rejected ones included; returns how many.

    Each file is rewritten under its lock and swapped in by rename: a web process waiting for the
    lock then sees a new file and appends to that; a replay holding the lock is waited for. A
    line that cannot be read is kept (it is nobody's, as far as we can tell).
    """
    directory = spool_dir()
    removed = 0
    for _ in range(2):  # a file claimed by a replay meanwhile is looked at under its new name
        for path in [*pending_files(directory), directory / REJECTED_FILE]:
            removed += _purge_file(path, matches)
    if removed:
        log.info("spool purged", extra={"deliveries_removed": removed})
    return removed


def purge_contacts(contacts: Mapping[int, Mapping[str, Sequence[Any]]]) -> int:
    """Remove the spooled deliveries of these contacts: `{account_id: {"contact_id": [...],
    "phone": [...], "identifier": [...]}}` (an erased user's contact links)."""
    wanted = {
        int(account): (
            {int(c) for c in links.get("contact_id", ())},
            {normalize_phone(str(p)) or str(p) for p in links.get("phone", ())},
            {str(i) for i in links.get("identifier", ())},
        )
        for account, links in contacts.items()
    }

    def matches(payload: dict[str, Any]) -> bool:
        message = payloads.Message.of(payload)
        if message.account_id not in wanted:
            return False
        contact_ids, phones, identifiers = wanted[message.account_id]
        found = message.contact
        return (
            found.id in contact_ids
            or (found.phone is not None and found.phone in phones)
            or (found.identifier is not None and found.identifier in identifiers)
        )

    return purge(matches)


def _spooled_payload(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
        if isinstance(entry, dict) and "payload" not in entry and isinstance(entry.get("line"), str):
            entry = json.loads(entry["line"])  # a rejected line keeps the original as text
    except ValueError:
        return None
    payload = entry.get("payload") if isinstance(entry, dict) else None
    return payload if isinstance(payload, dict) else None


def _purge_file(path: Path, matches: Callable[[dict[str, Any]], bool]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return 0  # claimed or purged meanwhile: the next pass sees it under its new name
        except FileNotFoundError:
            return 0
        kept: list[bytes] = []
        removed = 0
        with os.fdopen(os.dup(fd), "rb") as handle:
            for raw in handle:
                payload = _spooled_payload(raw)
                if payload is not None and matches(payload):
                    removed += 1
                else:
                    kept.append(raw)
        if removed:
            fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.purge")
            out = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                _write_all(out, b"".join(kept))
                os.fsync(out)
            finally:
                os.close(out)
            os.replace(fresh, path)
            _fsync_dir(path.parent)
        return removed
    finally:
        os.close(fd)


def register(app: Flask) -> None:
    """`flask spool replay` and `flask spool status`."""

    group = AppGroup("spool", help="Deliveries accepted while PostgreSQL was down.")

    @group.command("replay")
    def replay_command() -> None:
        """Write spooled deliveries into the database (deduplicated)."""
        outcome = replay()
        click.echo(json.dumps(outcome.as_dict()))
        if outcome.error:
            raise SystemExit(1)

    @group.command("status")
    def status_command() -> None:
        """Count spooled deliveries waiting for a replay."""
        click.echo(json.dumps(status()))

    app.cli.add_command(group)
