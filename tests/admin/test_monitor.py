"""`flask monitor`, the sql/ files (runnable with psql) and the roll-ups they read."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import add_note, add_user, sql

pytestmark = pytest.mark.usefixtures("admin_env")

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def psql_binary() -> str | None:
    import devstack

    try:
        return str(devstack.pg_bindir() / "psql")
    except devstack.StackError:
        return None


@pytest.fixture
def activity() -> dict[str, Any]:
    """A little of everything the queries look at."""
    add_user("u1")
    add_user("u2")
    now = datetime.now(UTC)
    for _ in range(3):
        add_note(user_id="u1", stored_after=2.0)
    add_note(user_id="u2", stored_after=30.0, created_at=now - timedelta(days=2))
    add_note(status="error", error="gcs unavailable: 503")
    add_note(status="received")
    add_note(contact_id=950, name="Stranger", phone="+5511912345678")
    add_note(user_id="u1", transcription_status="pending")
    order = sql(
        "INSERT INTO orders (chatwoot_account_id, chatwoot_conversation_id, status, ready_at, created_at) "
        "VALUES (1, 42, 'ready', now(), now() - interval '10 minutes'), (1, 43, 'clarifying', NULL, now()) "
        "RETURNING id"
    )[0]["id"]
    sql(
        "INSERT INTO outbox (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, order_id, body, "
        "status, error_details) VALUES ('a', 1, 42, 'ready', %s, '{}', 'sent', NULL), "
        "('b', 1, 43, 'clarification', NULL, '{}', 'failed', 'chatwoot 422'), "
        "('c', 1, 44, 'clarification', NULL, '{}', 'pending', NULL)",
        (order,),
    )
    sql(
        "INSERT INTO message_attachments (meeting_note_id, chatwoot_attachment_id, size_bytes, bucket_name, "
        "status) SELECT id, 1, 3145728, %s, 'stored' FROM meeting_notes WHERE user_id = 'u1' LIMIT 1",
        (add_user("u3"),),
    )
    return {"now": now}


def monitor_sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (\S+) ==$", output, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_monitor_prints_every_query_as_a_table(runner: Any, activity: Any) -> None:
    result = runner.invoke(args=["monitor"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sections = monitor_sections(result.output)
    assert sorted(sections) == sorted(p.stem for p in SQL_DIR.glob("*.sql"))
    for name, text in sections.items():
        assert re.search(r"\(\d+ rows?, \d+ ms\)", text), name
    today = activity["now"].date().isoformat()
    per_day = next(line for line in sections["01_messages_per_day"].splitlines() if today in line)
    # 8 messages, one of them two days old: today 7 (5 stored, 1 error, 1 waiting)
    assert re.findall(r"\d+", per_day.split(today)[1]) == ["7", "5", "1"]
    assert re.search(r"\|\s+1\s+\|", sections["02_stored_without_user"])
    assert "gcs unavailable: 503" in sections["03_errors_last_24h"]
    backlog = {
        line.split("|")[1].strip(): line
        for line in sections["10_backlog_by_status_and_age"].splitlines()
        if "|" in line
    }
    assert re.findall(r"\|\s*(\d+)\s*\|", backlog["archive"])[0] == "1"
    assert re.findall(r"\|\s*(\d+)\s*\|", backlog["transcription"])[0] == "1"
    assert re.findall(r"\|\s*(\d+)\s*\|", backlog["outbox"])[0] == "1"
    assert today in sections["11_time_to_stored_by_day"]
    funnel = next(line for line in sections["12_orders_funnel"].splitlines() if today in line)
    assert re.findall(r"\|\s*(\d+)\s*(?=\|)", funnel)[:6] == ["2", "1", "1", "0", "1", "0"]
    assert "chatwoot 422" in sections["13_notices_sent_and_failed"]
    storage_rows = [
        line for line in sections["14_storage_per_user"].splitlines() if re.match(r"^\| u\d", line)
    ]
    # Largest first: u3's bucket holds the 3 MiB attachment; u1 has the most messages after it.
    assert storage_rows[0].startswith("| u3") and "3.0" in storage_rows[0]
    assert storage_rows[1].startswith("| u1") and re.search(r"\|\s+4\s+\|", storage_rows[1])
    assert (
        "Stranger" in sections["15_unmapped_contacts"]
        and "+5511912345678" in sections["15_unmapped_contacts"]
    )


def test_monitor_only_and_rebuild(runner: Any, activity: Any) -> None:
    result = runner.invoke(args=["monitor", "--only", "15_", "--rebuild-rollups"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "roll-ups rebuilt" in result.output
    assert list(monitor_sections(result.output)) == ["15_unmapped_contacts"]
    assert runner.invoke(args=["monitor", "--only", "nothing-like-this"]).exit_code == 1


def test_a_failing_query_is_reported_and_the_others_still_run(
    runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.admin import cli as admin_cli

    (tmp_path / "01_ok.sql").write_text("-- Fine.\nSELECT 1 AS one;\n")
    (tmp_path / "02_bad.sql").write_text("-- Broken.\nSELECT * FROM no_such_table;\n")
    (tmp_path / "03_ok.sql").write_text("SELECT 2 AS two;\n")
    monkeypatch.setattr(admin_cli, "SQL_DIR", tmp_path)
    result = runner.invoke(args=["monitor"])
    assert result.exit_code == 1
    sections = monitor_sections(result.output)
    assert "failed: UndefinedTable" in sections["02_bad"]
    assert "two" in sections["03_ok"] and "1 query failed" in result.output


def test_monitor_runs_another_folder_and_says_when_there_is_none(runner: Any, tmp_path: Path) -> None:
    (tmp_path / "01_mine.sql").write_text("-- An admin's own query.\nSELECT 41 + 1 AS answer;\n")
    result = runner.invoke(args=["monitor", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert list(monitor_sections(result.output)) == ["01_mine"] and "42" in result.output
    missing = runner.invoke(args=["monitor", "--dir", str(tmp_path / "gone")])
    assert missing.exit_code == 1 and "--dir" in missing.output


@pytest.mark.skipif(psql_binary() is None, reason="psql is not installed")
@pytest.mark.parametrize("name", sorted(p.name for p in SQL_DIR.glob("*.sql")))
def test_each_file_runs_in_psql(services: Any, activity: Any, name: str) -> None:
    result = subprocess.run(
        [
            str(psql_binary()),
            services.env["DATABASE_URL"],
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(SQL_DIR / name),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\(\d+ rows?\)", result.stdout)


def rollups() -> dict[str, list[dict[str, Any]]]:
    return {
        "daily": sql("SELECT * FROM message_daily_stats WHERE stored <> 0 OR errors <> 0 ORDER BY 1, 2"),
        "latency": sql("SELECT * FROM stored_latency_daily WHERE messages <> 0 ORDER BY 1, 2"),
        "users": sql("SELECT user_id, messages FROM user_storage_stats WHERE messages <> 0 ORDER BY 1"),
        "buckets": sql("SELECT * FROM bucket_storage_stats WHERE attachments <> 0 ORDER BY 1"),
    }


def test_rollups_follow_every_change_of_the_rows(activity: Any) -> None:
    # What the workers do: store, fail, re-home, erase; and a late retry of an error.
    received = add_note(status="received")
    sql(
        "UPDATE meeting_notes SET processing_status = 'stored', stored_at = now(), user_id = 'u2' WHERE id = %s",
        (received,),
    )
    failed = add_note(status="received")
    sql("UPDATE meeting_notes SET processing_status = 'error', error_details = 'x' WHERE id = %s", (failed,))
    sql("UPDATE meeting_notes SET processing_status = 'stored', stored_at = now() WHERE id = %s", (failed,))
    sql("UPDATE meeting_notes SET user_id = 'u3' WHERE user_id IS NULL AND processing_status = 'stored'")
    sql("UPDATE message_attachments SET bucket_name = 'elsewhere'")
    sql("DELETE FROM meeting_notes WHERE user_id = 'u2'")
    incremental = rollups()
    assert incremental["daily"] and incremental["latency"] and incremental["users"] and incremental["buckets"]
    sql("SELECT rebuild_monitoring_rollups()")
    assert rollups() == incremental


def test_a_new_message_from_the_webhook_does_not_touch_the_rollups(db: Any) -> None:
    add_note(status="received")
    assert rollups() == {"daily": [], "latency": [], "users": [], "buckets": []}
