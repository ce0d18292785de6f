"""Configuration, schema, health endpoints and the monitoring SQL files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from app.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "DATABASE_URL": "postgresql://u@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443",
}


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"STORAGE_EMULATOR_HOST": ""}, "STORAGE_EMULATOR_HOST"),
        ({"GCS_BUCKET_PREFIX": "Bad_Prefix"}, "GCS_BUCKET_PREFIX"),
        ({"GCS_BUCKET_PREFIX": "google-notes"}, "GCS_BUCKET_PREFIX"),
        ({"GCS_BUCKET_PREFIX": "goog-notes"}, "GCS_BUCKET_PREFIX"),
        ({"GCS_BUCKET_PREFIX": "a" * 31}, "GCS_BUCKET_PREFIX"),
        ({"GCS_PRIVATE_KEY": "not a key", "GCS_CLIENT_EMAIL": "a@b"}, "GCS_PRIVATE_KEY"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"WEBHOOK_TIMESTAMP_TOLERANCE": "soon"}, "WEBHOOK_TIMESTAMP_TOLERANCE"),
        ({"CHATWOOT_ACCOUNT_ID": "abc"}, "CHATWOOT_ACCOUNT_ID"),
        ({"CHATWOOT_BASE_URL": "chat.example.com"}, "CHATWOOT_BASE_URL"),
        ({"TRANSCRIPTION_PROVIDER": "openai"}, "OPENAI_API_KEY"),
        ({"TRANSCRIPTION_PROVIDER": "whisper"}, "TRANSCRIPTION_PROVIDER"),
        ({"SECRETS_ENCRYPTION_KEY": "short"}, "SECRETS_ENCRYPTION_KEY"),
        ({"APP_ENV": "production"}, "CHATWOOT_WEBHOOK_SECRET"),
        ({"APP_ENV": "production", "CHATWOOT_WEBHOOK_SECRET": "s" * 32}, "BUCKET_HASH_SECRET"),
        (
            {"APP_ENV": "production", "CHATWOOT_WEBHOOK_SECRET": "s" * 32, "ALLOW_UNSIGNED_WEBHOOKS": "true"},
            "ALLOW_UNSIGNED_WEBHOOKS",
        ),
    ],
)
def test_bad_configuration_names_the_variable(changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**MINIMAL, **changes})
    assert str(caught.value).startswith(variable + ":")


def test_defaults_and_private_key_escapes() -> None:
    key = "-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n"
    s = load_settings(
        {**MINIMAL, "GCS_PRIVATE_KEY": key, "GCS_CLIENT_EMAIL": "sa@p.iam", "GCS_PROJECT_ID": "p"}
    )
    assert s.gcs_private_key.startswith("-----BEGIN PRIVATE KEY-----\nabc\n")
    assert s.gcs_bucket_prefix == "pacelane-whatsapp"
    assert s.webhook_timestamp_tolerance == 300
    assert s.max_webhook_bytes == 32 * 1024 * 1024
    assert s.effective_transcription_provider == "none"
    assert "abc" not in repr(s)
    assert s.public_summary()["gcs_private_key"] == "(set)"


def test_production_accepts_safe_settings() -> None:
    s = load_settings(
        {
            **MINIMAL,
            "APP_ENV": "production",
            "CHATWOOT_WEBHOOK_SECRET": "w" * 32,
            "BUCKET_HASH_SECRET": "b" * 32,
            "SECRET_KEY": "k" * 32,
            "SECRETS_ENCRYPTION_KEY": "x" * 43 + "=",
        }
    )
    assert s.production


def test_entry_points_print_one_line_on_bad_config(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "", "HOME": str(tmp_path)}
    for cmd in ([sys.executable, "-m", "workers"], [sys.executable, "-c", "import wsgi"]):
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "configuration error: DATABASE_URL: not set (a libpq URL such as postgresql://user@host:5432/db)"
        ]


def test_migrations_apply_to_an_empty_database_and_are_idempotent(services: Any) -> None:
    from app.migrate import pending, upgrade

    admin = psycopg2.connect(services.env["DATABASE_URL"])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS migration_check")
        cur.execute("CREATE DATABASE migration_check")
    url = services.env["DATABASE_URL"].rsplit("/", 1)[0] + "/migration_check"
    try:
        # Two processes at once: each migration is applied exactly once.
        code = "import sys; from app.migrate import upgrade; print(len(upgrade(sys.argv[1])))"
        procs = [
            subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        counts = sorted(int(p.communicate(timeout=60)[0].strip()) for p in procs)
        total = len(list((ROOT / "migrations").glob("*.sql")))
        assert counts == [0, total]
        assert upgrade(url) == []
        assert pending(url) == []
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT to_regclass('meeting_notes'), to_regclass('user_bucket_mapping'), to_regclass('conversations'), to_regclass('orders')"
            )
            assert all(cur.fetchone())
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS migration_check WITH (FORCE)")
        admin.close()


def test_meeting_notes_constraints(db: Any) -> None:
    from app.db import UniqueViolation

    insert = (
        "INSERT INTO meeting_notes (chatwoot_account_id, chatwoot_message_id, payload, processing_status) "
        "VALUES (%s, %s, '{}', %s)"
    )
    with db.transaction() as cur:
        cur.execute(insert, (1, "10", "received"))
    with pytest.raises(UniqueViolation), db.transaction() as cur:
        cur.execute(insert, (1, "10", "received"))
    with pytest.raises(psycopg2.errors.CheckViolation), db.transaction() as cur:
        cur.execute(insert, (1, "11", "archived"))


def test_healthz(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_checks_every_dependency(client: Any, gcs: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["checks"] == {"postgres": "ok", "redis": "ok", "gcs": "ok"}
    assert body["workers"]["workers"] == 0
    assert body["workers"]["scheduler"] is False


def test_readyz_names_the_dependency_that_is_down(client: Any, use_settings: Any) -> None:
    use_settings(redis_url="redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["redis"]
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", sorted((ROOT / "sql").glob("*.sql")), ids=lambda p: p.name)
def test_sql_files_run_unchanged_with_psql(path: Path, services: Any, db: Any) -> None:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO meeting_notes (chatwoot_account_id, chatwoot_message_id, payload, processing_status, "
            "error_details) VALUES (1, '1', '{}', 'stored', NULL), (1, '2', '{}', 'error', 'gcs: timeout')"
        )
    psql = str(Path(__import__("devstack").pg_bindir()) / "psql")
    result = subprocess.run(
        [psql, services.env["DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "row" in result.stdout
