"""The numbers of the admin page (also `GET /admin/stats`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import context
from app.db import plain
from app.users.service import unmapped_contacts

BACKLOG_SQL = Path(__file__).resolve().parents[2] / "sql" / "10_backlog_by_status_and_age.sql"
"""The monitoring query the page shares with `flask monitor`, so both count the same backlog."""


def backlog() -> list[dict[str, Any]]:
    """Work waiting per stage, with the age of the oldest item in seconds."""
    with context.db().transaction() as cur:
        cur.execute(BACKLOG_SQL.read_text())
        rows = cur.fetchall()
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
