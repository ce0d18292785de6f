"""Retention per Chatwoot account: "delete messages older than N days" (off by default).

Applied twice over:
- by the cron process (`apply_all`, every RETENTION_INTERVAL): for each account with a policy,
  the messages received more than N days ago (by PostgreSQL's clock, the one that wrote
  `created_at`, less SKEW_MARGIN), archived or given up on, each with every object kept for it
  (message JSON, attachments, transcript, updates) and then its rows (attachments, updates and
  transcriptions go with the message). A message still on its way to the archive waits for the
  next run. Users on legal hold are skipped, and the run says which holds kept what;
- by GCS (`sync_lifecycle`): a lifecycle Delete rule on `whatsapp-messages/` of each bucket,
  at N + 1 days, so that the storage deletes what the service did not (GCS counts from each
  object's creation, and never deletes an object under a hold). A bucket holding messages of
  several accounts gets the longest of their retentions, and none when one of them keeps
  messages for ever.
Each run is recorded in `retention_runs` (sql/30_retention.sql, `flask monitor`) and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.storage.bucket import LifecycleRuleDelete
from psycopg2.extras import Json

from app import context
from app.archive import storage
from app.db import plain
from app.records import exports
from app.users.service import Invalid, NotFound

log = logging.getLogger(__name__)

MAX_DAYS = 36500
SKEW_MARGIN_SECONDS = 3600
"""Seconds added to every retention: a clock off by minutes (a host, Chatwoot, GCS) never makes a
message go early, and a rerun a moment later finds nothing new."""
BATCH = 200
"""Messages whose objects and rows are deleted per round."""
MAX_BUCKET_PATCHES = 200
"""Buckets whose lifecycle rule one run changes (GCS allows about one change per bucket per second)."""
MESSAGES_RULE_PREFIX = f"{storage.MESSAGES_PREFIX}/"


def _days(days: Any) -> int:
    if isinstance(days, bool) or not isinstance(days, int):
        raise Invalid("the retention is a whole number of days")
    if days < 1:
        raise Invalid(
            f"the retention must be at least 1 day, got {days} (to keep messages for ever, turn retention off)"
        )
    if days > MAX_DAYS:
        raise Invalid(f"the retention is at most {MAX_DAYS} days, got {days}")
    return days


def _account(account_id: Any) -> int:
    if isinstance(account_id, bool) or not isinstance(account_id, int) or not 1 <= account_id <= 2**31 - 1:
        raise Invalid("a Chatwoot account id is a positive whole number")
    return account_id


def set_policy(account_id: int, days: int, set_by: str) -> dict[str, Any]:
    """Delete the account's messages older than `days` days, from the next run on."""
    row = context.db().fetch_one(
        "retention.retention_policy_set",
        {"account_id": _account(account_id), "days": _days(days), "set_by": set_by},
    )
    log.warning("retention set", extra={"account_id": account_id, "days": days, "by": set_by})
    return dict(plain(row or {}))


def clear_policy(account_id: int, cleared_by: str) -> dict[str, Any]:
    """Keep the account's messages for ever (the default)."""
    row = context.db().fetch_one("retention.retention_policy_delete", {"account_id": _account(account_id)})
    if row is None:
        raise NotFound(f"account {account_id} has no retention")
    log.warning("retention turned off", extra={"account_id": account_id, "by": cleared_by})
    return {"chatwoot_account_id": account_id, "days": None, "was": row["days"]}


def policies() -> list[dict[str, Any]]:
    return [plain(r) for r in context.db().fetch_all("retention.retention_policies")]


def recent_runs(limit: int = 20) -> list[dict[str, Any]]:
    return [plain(r) for r in context.db().fetch_all("retention.retention_runs_recent", {"limit": limit})]


@dataclass
class AccountRun:
    account_id: int
    days: int
    cutoff: str = ""
    messages_deleted: int = 0
    objects_deleted: int = 0
    kept_on_hold: int = 0
    holds: list[dict[str, Any]] = field(default_factory=list)
    status: str = "done"


def apply_all() -> list[AccountRun]:
    """Apply every account's retention (the cron process's pass); idempotent."""
    return [apply_account(int(p["chatwoot_account_id"]), int(p["days"])) for p in policies()]


def apply_account(account_id: int, days: int) -> AccountRun:
    db = context.db()
    started = db.fetch_one(
        "retention.retention_run_start",
        {"account_id": account_id, "days": days, "margin_seconds": SKEW_MARGIN_SECONDS},
    )
    assert started is not None
    cutoff = started["cutoff"]
    run = AccountRun(account_id, days, cutoff.isoformat())
    error: str | None = None
    try:
        after: tuple[Any, int] = ("-infinity", 0)
        while True:
            batch = db.fetch_all(
                "retention.retention_candidates",
                {
                    "account_id": account_id,
                    "cutoff": cutoff,
                    "after_at": after[0],
                    "after_id": after[1],
                    "limit": BATCH,
                },
            )
            if not batch:
                break
            for row in batch:
                run.objects_deleted += _delete_objects(row)
            gone = db.fetch_all(
                "retention.retention_delete_notes", {"ids": [int(r["id"]) for r in batch], "cutoff": cutoff}
            )
            run.messages_deleted += len(gone)
            after = (batch[-1]["created_at"], int(batch[-1]["id"]))
        for kept in db.fetch_all(
            "retention.retention_kept_on_hold", {"account_id": account_id, "cutoff": cutoff}
        ):
            run.kept_on_hold += int(kept["messages"])
            run.holds.append(plain(kept))
            first = kept["holds"][0]
            log.warning(
                f"retention kept {kept['messages']} message(s) of user {kept['user_id']}: "
                f"on legal hold #{first['id']} ({first['reason']})",
                extra={"account_id": account_id, "user_id": kept["user_id"], "holds": kept["holds"]},
            )
    except Exception as exc:
        run.status = "error"
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise
    finally:
        db.execute(
            "retention.retention_run_finish",
            {
                "run_id": started["id"],
                "status": run.status,
                "messages_deleted": run.messages_deleted,
                "objects_deleted": run.objects_deleted,
                "kept_on_hold": run.kept_on_hold,
                "holds": Json(run.holds) if run.holds else None,
                "error_details": error,
            },
        )
        log.warning(
            "retention applied",
            extra={
                "account_id": account_id,
                "days": days,
                "cutoff": run.cutoff,
                "messages_deleted": run.messages_deleted,
                "objects_deleted": run.objects_deleted,
                "kept_on_hold": run.kept_on_hold,
                "status": run.status,
            },
        )
    return run


def _delete_objects(row: dict[str, Any]) -> int:
    """Delete every object kept for one message; the count of those that were there."""
    uris = [row["gcs_storage_path"], row["transcript_path"], *row["update_paths"]]
    targets = [storage.parse_gs_uri(u) for u in uris if u]
    targets += [tuple(o.split("/", 1)) for o in row["attachment_objects"]]  # type: ignore[misc]
    return sum(1 for bucket, name in targets if storage.delete_object(bucket, name))


# ------------------------------------------------------------------------------------------
# GCS lifecycle


def _ours(rule: dict[str, Any]) -> bool:
    condition = rule.get("condition", {})
    return rule.get("action", {}).get("type") == "Delete" and condition.get("matchesPrefix") in (
        [MESSAGES_RULE_PREFIX],
        [exports.EXPORTS_PREFIX],
    )


def desired_rules(accounts: list[int], by_account: dict[int, int]) -> int | None:
    """The age (days) of a bucket's Delete rule for messages: the longest retention of the
    accounts it holds, plus one day; None when one of them keeps messages for ever."""
    if not accounts or any(a not in by_account for a in accounts):
        return None
    return max(by_account[a] for a in accounts) + 1


def sync_lifecycle(max_patches: int = MAX_BUCKET_PATCHES) -> dict[str, int]:
    """Set each bucket's Delete rules to match the retentions (and exports' time); only buckets
    whose rule changes are patched."""
    db = context.db()
    by_account = {int(p["chatwoot_account_id"]): int(p["days"]) for p in policies()}
    exports_age = context.settings().export_keep_days + 1
    with_exports = {
        r["bucket_name"] for r in db.fetch_all("retention.retention_buckets_with_exports") if r["bucket_name"]
    }
    wanted: dict[str, tuple[int | None, int | None, tuple[Any, Any]]] = {}
    for row in db.fetch_all("retention.retention_user_buckets"):
        name = str(row["bucket_name"])
        age = desired_rules([int(a) for a in row["accounts"] or []], by_account)
        wanted[name] = (
            age,
            exports_age if name in with_exports else None,
            (row["messages_age"], row["exports_age"]),
        )
    fallback = {storage.bucket_name(f"account_{a}"): a for a in _known_accounts(by_account)}
    for row in db.fetch_all("retention.retention_bucket_rules_get", {"buckets": list(fallback)}):
        name = str(row["bucket_name"])
        age = desired_rules([fallback[name]], by_account)
        wanted[name] = (age, None, (row["messages_age"], row["exports_age"]))
    patched = 0
    for name, (age, keep_exports, (had_age, had_exports)) in sorted(wanted.items()):
        if (age, keep_exports) == (had_age, had_exports):
            continue
        if patched >= max_patches:
            break
        _patch_lifecycle(name, age, keep_exports)
        db.execute(
            "retention.retention_bucket_rules_set",
            {"bucket_name": name, "messages_age": age, "exports_age": keep_exports},
        )
        patched += 1
    return {"buckets": len(wanted), "patched": patched}


def _known_accounts(by_account: dict[int, int]) -> set[int]:
    found = set(by_account)
    found.update(
        int(r["chatwoot_account_id"]) for r in context.db().fetch_all("retention.retention_accounts")
    )
    default = context.settings().chatwoot_account_id
    if default:
        found.add(int(default))
    return found


def _patch_lifecycle(bucket_name: str, messages_age: int | None, exports_age: int | None) -> None:
    try:
        bucket = context.gcs().get_bucket(bucket_name, timeout=storage.CALL_TIMEOUT)
    except gexc.NotFound:
        return
    rules: list[Any] = [dict(r) for r in bucket.lifecycle_rules if not _ours(dict(r))]
    if messages_age is not None:
        rules.append(LifecycleRuleDelete(age=messages_age, matches_prefix=[MESSAGES_RULE_PREFIX]))
    if exports_age is not None:
        rules.append(LifecycleRuleDelete(age=exports_age, matches_prefix=[exports.EXPORTS_PREFIX]))
    bucket.lifecycle_rules = rules
    bucket.patch(timeout=storage.CALL_TIMEOUT)
    log.info(
        "bucket lifecycle set",
        extra={"bucket": bucket_name, "messages_age": messages_age, "exports_age": exports_age},
    )
