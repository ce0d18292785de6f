"""Legal holds: while a user is on hold, nothing of theirs is deleted.

A hold (reason, who placed it, when) is a row of `legal_holds`. While one is on:
- erasure, retention deletes and the deletion of the user's exports are refused, each with the
  words "on legal hold" and the hold's number and reason (`refuse_if_held`); a database trigger
  refuses the deletion of the user's row too, whatever deletes it;
- in GCS, every object of the user's bucket has a temporary hold, and the bucket's default
  event-based hold gives one to each new object (GCS then refuses to delete them, lifecycle
  rules included). Lifting the last hold turns the default off and releases both holds.
The GCS side is made to match the rows by a job (`apply_storage`), queued when a hold is placed or
lifted and swept by the cron process until it is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.exceptions import GoogleAPIError
from requests import RequestException

from app import context
from app.archive import storage
from app.db import plain, queries
from app.jobs import APPLY_HOLD, QueueUnavailable, enqueue
from app.users.service import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)

MAX_REASON = 500
MAX_ACTOR = 200
SWEEP_BATCH = 100
"""Users whose GCS holds the cron process brings up to date per run."""


class OnLegalHold(Conflict):
    """A delete refused because the user is on legal hold; the message names the hold."""

    def __init__(self, user_id: str, holds: list[dict[str, Any]], action: str):
        self.user_id = user_id
        self.holds = holds
        self.action = action
        first = holds[0]
        more = f" and {len(holds) - 1} more" if len(holds) > 1 else ""
        super().__init__(
            f"{action} refused: user {user_id} is on legal hold #{first['id']} "
            f"({first['reason']}; placed by {first['placed_by']} on {_day(first['placed_at'])}){more}"
        )


class UserErased(Conflict):
    """The user was erased: there is nothing left to hold."""


def _day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else str(value)


def _text(value: str | None, what: str, limit: int) -> str:
    cleaned = " ".join((value or "").split())
    if not cleaned:
        raise Invalid(f"{what} is required")
    if len(cleaned) > limit:
        raise Invalid(f"{what}: at most {limit} characters")
    return cleaned


def active(user_id: str) -> list[dict[str, Any]]:
    """The holds on a user now, oldest first."""
    return context.db().fetch_all("holds.holds_active", {"user_id": user_id})


def refuse_if_held(user_id: str, action: str = "erasure") -> None:
    """Raise OnLegalHold when the user is on hold (call it before deleting anything of theirs)."""
    holds = active(user_id)
    if holds:
        log.warning(
            "delete refused: on legal hold",
            extra={"user_id": user_id, "action": action, "holds": [h["id"] for h in holds]},
        )
        raise OnLegalHold(user_id, holds, action)


def _user(user_id: str) -> dict[str, Any]:
    db = context.db()
    user = db.fetch_one("holds.hold_user", {"user_id": user_id})
    if user is not None:
        return user
    try:
        bucket = storage.bucket_name(user_id)
    except ValueError:
        raise NotFound("a user id is required") from None
    erased = db.fetch_one("holds.hold_bucket_erased", {"bucket_name": bucket})
    if erased and erased["erased"]:
        raise UserErased(f"user {user_id} was erased: nothing of theirs is kept to hold")
    raise NotFound(f"no user {user_id!r}")


def place(user_id: str, reason: str, placed_by: str) -> dict[str, Any]:
    """Put a user on legal hold; the GCS holds follow (a job, swept by the cron process)."""
    reason = _text(reason, "the reason", MAX_REASON)
    placed_by = _text(placed_by, "who places the hold", MAX_ACTOR)
    user = _user(user_id)
    with context.db().transaction() as cur:
        cur.execute(
            queries["holds.hold_insert"], {"user_id": user_id, "reason": reason, "placed_by": placed_by}
        )
        hold = dict(cur.fetchone())
        cur.execute(
            queries["holds.hold_storage_pending"], {"user_id": user_id, "bucket_name": user["bucket_name"]}
        )
    log.info(
        "legal hold placed",
        extra={"user_id": user_id, "hold_id": hold["id"], "placed_by": placed_by},
    )
    hold["storage"] = _queue(hold["id"])
    return dict(plain(hold))


def lift(user_id: str, hold_id: int, lifted_by: str, reason: str | None = None) -> dict[str, Any]:
    """Lift one hold; when it was the user's last, the GCS holds are released (a job)."""
    lifted_by = _text(lifted_by, "who lifts the hold", MAX_ACTOR)
    lift_reason = _text(reason, "the reason", MAX_REASON) if reason and reason.strip() else None
    user = _user(user_id)
    with context.db().transaction() as cur:
        cur.execute(
            queries["holds.hold_lift"],
            {"hold_id": hold_id, "user_id": user_id, "lifted_by": lifted_by, "lift_reason": lift_reason},
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(queries["holds.hold_get"], {"hold_id": hold_id})
            found = cur.fetchone()
            if found is None or found["user_id"] != user_id:
                raise NotFound(f"user {user_id} has no legal hold #{hold_id}")
            raise Conflict(f"legal hold #{hold_id} was already lifted on {_day(found['lifted_at'])}")
        hold = dict(row)
        cur.execute(
            queries["holds.hold_storage_pending"], {"user_id": user_id, "bucket_name": user["bucket_name"]}
        )
        cur.execute(queries["holds.holds_active"], {"user_id": user_id})
        still = len(cur.fetchall())
    log.info(
        "legal hold lifted",
        extra={"user_id": user_id, "hold_id": hold_id, "lifted_by": lifted_by, "holds_left": still},
    )
    hold["holds_left"] = still
    hold["storage"] = _queue(hold_id)
    return dict(plain(hold))


def of_user(user_id: str) -> dict[str, Any]:
    """Every hold of a user (on and lifted) and the state of its GCS holds."""
    _user(user_id)
    db = context.db()
    storage_row = db.fetch_one("holds.hold_storage_get", {"user_id": user_id})
    return {
        "user_id": user_id,
        "on_hold": bool(active(user_id)),
        "holds": [plain(h) for h in db.fetch_all("holds.holds_of_user", {"user_id": user_id})],
        "storage": plain(
            {k: storage_row[k] for k in ("state", "bucket_name", "updated_at")} if storage_row else None
        ),
    }


def all_active() -> list[dict[str, Any]]:
    return [plain(h) for h in context.db().fetch_all("holds.holds_all_active")]


def _queue(hold_id: int) -> str:
    try:
        enqueue(APPLY_HOLD, hold_id)
    except QueueUnavailable:
        return "pending (the cron process applies it)"
    return "queued"


# ------------------------------------------------------------------------------------------
# GCS


@dataclass
class StorageResult:
    user_id: str
    state: str
    objects_changed: int = 0


def apply_for_hold(hold_id: int) -> StorageResult | None:
    """The job: make GCS match the holds of the hold's user. None when the hold is gone."""
    hold = context.db().fetch_one("holds.hold_get", {"hold_id": hold_id})
    if hold is None:
        return None
    return apply_storage(str(hold["user_id"]))


def apply_storage(user_id: str, attempts: int = 3) -> StorageResult:
    """Set (or release) the GCS holds of a user's bucket to match the user's holds; idempotent.

    Holds placed or lifted while it runs make it run again (up to `attempts` times; the cron
    process's sweep finishes what is left)."""
    db = context.db()
    result = StorageResult(user_id, "pending")
    for _ in range(attempts):
        row = db.fetch_one("holds.hold_storage_get", {"user_id": user_id})
        if row is None:
            return StorageResult(user_id, "released")
        bucket, held = str(row["bucket_name"]), bool(row["held"])
        error = None
        try:
            result = set_bucket_holds(user_id, bucket, held)
        except storage_errors() as exc:
            result = StorageResult(user_id, "error")
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        done = db.fetch_one(
            "holds.hold_storage_done",
            {
                "user_id": user_id,
                "state": result.state,
                "objects_changed": result.objects_changed,
                "error_details": error,
                "seen": row["updated_at"],
            },
        )
        if done is not None:
            log.info(
                "legal hold storage",
                extra={"user_id": user_id, "state": result.state, "objects_changed": result.objects_changed},
            )
            if error:
                raise HoldStorageError(error)
            return result
    return result


class HoldStorageError(Exception):
    """GCS failed while holds were set or released; the job is retried and the cron sweeps it."""


def storage_errors() -> tuple[type[BaseException], ...]:
    return (GoogleAPIError, RequestException, OSError, storage.StorageError)


def set_bucket_holds(user_id: str, bucket_name: str, on: bool) -> StorageResult:
    """With `on`: the bucket's default event-based hold first (objects written from then on are
    held), then a temporary hold on every object. Without: the default off first, then both holds
    released on every object."""
    client = context.gcs()
    bucket = client.bucket(bucket_name)
    try:
        bucket.reload(timeout=storage.CALL_TIMEOUT)
    except gexc.NotFound:
        return StorageResult(user_id, "no_bucket" if on else "released")
    if bool(bucket.default_event_based_hold) != on:
        bucket.default_event_based_hold = on
        bucket.patch(timeout=storage.CALL_TIMEOUT)
    changed = _each_object(bucket_name, lambda blob: _hold_object(blob, on))
    return StorageResult(user_id, "held" if on else "released", changed)


def _each_object(bucket_name: str, change: Callable[[Any], bool]) -> int:
    blobs: Iterable[Any] = context.gcs().list_blobs(
        bucket_name,
        fields="items(name,generation,temporaryHold,eventBasedHold),nextPageToken",
        timeout=storage.CALL_TIMEOUT,
    )
    return sum(1 for blob in blobs if change(blob))


def _hold_object(blob: Any, on: bool) -> bool:
    """Set or release one object's holds; True when a request was sent."""
    if on and blob.temporary_hold is True:
        return False
    if not on and blob.temporary_hold is False and not blob.event_based_hold:
        return False
    blob.temporary_hold = on
    if not on:
        blob.event_based_hold = False
    try:
        blob.patch(timeout=storage.CALL_TIMEOUT)
    except gexc.NotFound:
        return False
    return True


def sweep(limit: int = SWEEP_BATCH) -> dict[str, int]:
    """The cron process's pass: users whose GCS holds are not up to date (a job was lost, GCS
    failed, or the bucket did not exist yet)."""
    counts: dict[str, int] = {}
    for row in context.db().fetch_all("holds.hold_storage_todo", {"limit": limit}):
        try:
            state = apply_storage(str(row["user_id"])).state
        except HoldStorageError:
            state = "error"
        counts[state] = counts.get(state, 0) + 1
    return counts
