"""Whether our buckets are what we promise: lifecycle, access, labels, soft delete.

`flask storage audit` reads the settings of every user bucket back from GCS: the buckets named
with our prefix in our project, and the ready buckets of `gcs_buckets`. A bucket made by hand,
by an older version, or changed since, is listed with how it differs; `--fix` sends our settings
again (other lifecycle rules and labels are kept), one bucket at a time at the shared rate of
GCS_BUCKET_CREATE_RATE. A second run finds nothing left to do and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc

from app import context
from app.archive import storage
from app.archive.gcs_client import project_id

log = logging.getLogger(__name__)


@dataclass
class Finding:
    bucket: str
    differences: list[str] = field(default_factory=list)
    fixed: bool = False
    error: str = ""


def _bucket_names() -> list[str]:
    """Our buckets: listed in our project by prefix, and the ready ones we recorded."""
    settings = context.settings()
    prefix = f"{settings.gcs_bucket_prefix}-"
    names = {
        b.name
        for b in context.gcs().list_buckets(
            prefix=prefix, project=project_id(settings), timeout=storage.CALL_TIMEOUT
        )
    }
    with context.db().transaction() as cur:
        cur.execute("SELECT bucket_name FROM gcs_buckets WHERE state = 'ready'")
        names.update(str(r["bucket_name"]) for r in cur.fetchall())
    return sorted(n for n in names if n.startswith(prefix))


def audit(fix: bool = False) -> Iterator[Finding]:
    """A finding for every bucket whose settings differ (or that is missing); fixed when `fix`."""
    client = context.gcs()
    for name in _bucket_names():
        try:
            bucket = client.get_bucket(name, timeout=storage.CALL_TIMEOUT)
        except gexc.NotFound:
            yield Finding(name, ["missing: recorded as ready, not in GCS (created again on next use)"])
            if fix:
                storage.forget_bucket(name)
            continue
        differences = storage.bucket_differences(bucket)
        if not differences:
            continue
        finding = Finding(name, differences)
        if fix:
            finding.fixed, finding.error = _fix(bucket)
        yield finding


def _fix(bucket: Any) -> tuple[bool, str]:
    try:
        storage.wait_for_update_slot(bucket.name)
        left = storage.set_required_settings(bucket)
    except (gexc.GoogleAPICallError, storage.StorageError) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:200]
    log.info("bucket settings set again", extra={"bucket": bucket.name, "left": left})
    return (not left), ("still differs: " + "; ".join(left)) if left else ""
