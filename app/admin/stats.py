"""The numbers of the admin page (also `GET /admin/stats`)."""

from __future__ import annotations

from typing import Any

from app import context
from app.db import plain
from app.users.service import unmapped_contacts


def backlog() -> list[dict[str, Any]]:
    """Work waiting per stage, with the age of the oldest item in seconds.

    `admin.dashboard_backlog` is the statement of sql/10_backlog_by_status_and_age.sql (a test
    keeps the two the same), so the page and `flask monitor` count the same backlog; the page
    never reads the admins' folder, where files may be renamed or edited.
    """
    rows = context.db().fetch_all("admin.dashboard_backlog")
    out = []
    for row in rows:
        age = row["oldest_age"]
        out.append(
            {
                "stage": row["stage"],
                "waiting": int(row["waiting"]),
                "oldest_seconds": int(age.total_seconds()) if age is not None else None,
            }
        )
    return out


def dashboard(days: int = 14, limit: int = 10) -> dict[str, Any]:
    """The numbers of the admin page: per day, backlog, recent errors, unmapped contacts."""
    db = context.db()
    per_day = [plain(r) for r in db.fetch_all("admin.dashboard_days", {"days": days})]
    return {
        "today": per_day[-1] if per_day else None,
        "days": per_day,
        "backlog": backlog(),
        "errors": [plain(r) for r in db.fetch_all("admin.dashboard_errors", {"limit": limit})],
        "unmapped": unmapped_contacts(limit=limit),
    }
