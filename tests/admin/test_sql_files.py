"""The admins' `sql/` folder against its two references: the seed guide, and the app's own queries.

No servers: these compare texts. (Each file runs in psql in test_monitor.py, and within 100 ms on
1 million messages in `make bench-sql`.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.db import QUERIES_DIR, load_queries

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "sql"

SEED_GUIDE = (
    "WHATSAPP_INTEGRATION_IMPLEMENTATION.md of github.com/Pacelane/pacelane-app "
    "(commit 24cced48042fed37d848a0bcf301343262df1135), section 6.1 Database Monitoring Queries"
)
"""Where the seed guide's three queries are written (the lines below are copied from it as they are,
the spaces at the end of some lines included)."""

GUIDE_QUERIES = {
    "01_messages_per_day.sql": (
        "-- Monitor message ingestion rate\n"
        "SELECT \n"
        "  DATE(created_at) as date,\n"
        "  COUNT(*) as messages_received,\n"
        "  COUNT(CASE WHEN processing_status = 'stored' THEN 1 END) as successfully_stored,\n"
        "  COUNT(CASE WHEN processing_status = 'error' THEN 1 END) as errors\n"
        "FROM meeting_notes \n"
        "WHERE source_type = 'whatsapp'\n"
        "  AND created_at >= NOW() - INTERVAL '7 days'\n"
        "GROUP BY DATE(created_at)\n"
        "ORDER BY date DESC;\n"
    ),
    "02_stored_without_user.sql": (
        "-- Check for unprocessed messages\n"
        "SELECT COUNT(*) as unprocessed_messages\n"
        "FROM meeting_notes \n"
        "WHERE source_type = 'whatsapp' \n"
        "  AND processing_status = 'stored'\n"
        "  AND user_id IS NULL;\n"
    ),
    "03_errors_last_24h.sql": (
        "-- Error analysis\n"
        "SELECT \n"
        "  error_details,\n"
        "  COUNT(*) as error_count\n"
        "FROM meeting_notes \n"
        "WHERE source_type = 'whatsapp' \n"
        "  AND processing_status = 'error'\n"
        "  AND created_at >= NOW() - INTERVAL '24 hours'\n"
        "GROUP BY error_details;\n"
    ),
}


@pytest.mark.parametrize("name", sorted(GUIDE_QUERIES))
def test_the_first_three_files_are_the_seed_guides_queries_unchanged(name: str) -> None:
    assert (SQL_DIR / name).read_bytes().decode("utf-8") == GUIDE_QUERIES[name], SEED_GUIDE


def test_the_richer_variants_are_kept_under_other_names() -> None:
    per_day = (SQL_DIR / "04_messages_per_day_30_days.sql").read_text()
    assert "interval '30 days'" in per_day and "AS total_messages" in per_day
    errors = (SQL_DIR / "05_errors_last_24h_by_reason.sql").read_text()
    assert "max(updated_at) AS last_seen" in errors and "ORDER BY occurrences DESC" in errors


SHARED = re.compile(r"^--.*\bsame statement as sql/(\S+\.sql)\b", re.MULTILINE)
"""How an app query names the admins' file that runs the same statement."""


def statement(text: str) -> str:
    """A query without its comment lines, trailing spaces and final semicolon."""
    lines = [line.rstrip() for line in text.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(line for line in lines if line).strip().rstrip(";").rstrip()


def shared_queries() -> list[tuple[str, str]]:
    """(app query name, sql/ file name) of every query the app shares with the admins' folder."""
    found = []
    for key, body in load_queries().items():
        found += [(key, name) for name in SHARED.findall(body)]
    return found


def test_where_the_app_and_sql_share_a_query_the_text_is_the_same() -> None:
    shared = shared_queries()
    assert ("admin.dashboard_backlog", "10_backlog_by_status_and_age.sql") in shared
    queries = load_queries()
    for key, name in shared:
        assert (SQL_DIR / name).exists(), f"{key} names sql/{name}, which does not exist"
        assert statement(queries[key]) == statement((SQL_DIR / name).read_text()), (
            f"{key} and sql/{name} must run the same statement; change both"
        )


def test_the_app_keeps_its_queries_in_app_queries() -> None:
    """Only `flask monitor` (which runs the admins' files by design) may look into sql/."""
    readers = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        text = path.read_text()
        if re.search(r"""["']sql["']""", text) and path.relative_to(ROOT).as_posix() != "app/admin/cli.py":
            readers.append(path.relative_to(ROOT).as_posix())
    assert readers == []
    assert QUERIES_DIR == ROOT / "app" / "queries"
