"""Helpers every test folder uses: the Chatwoot fixtures, signing a delivery, the environment."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "chatwoot"
WEBHOOK_SECRET = "test-webhook-secret"
BUCKET_HASH_SECRET = "test-bucket-hash-secret"
CHATWOOT_BASE_URL = "https://chat.example.com"
CHATWOOT_TOKEN = "test-chatwoot-api-token"
"""A Chatwoot user's access token: the stand-in Chatwoot lets it read and write."""
CHATWOOT_BOT_TOKEN = "test-chatwoot-agent-bot-token"
"""An agent bot's access token: the stand-in Chatwoot refuses it on list endpoints, as Chatwoot does."""


def base_environ(services: Any, tmp_path: Path) -> dict[str, str]:
    return {
        **services.env,
        "APP_ENV": "development",
        "LOG_LEVEL": "INFO",
        "CHATWOOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CHATWOOT_BASE_URL": CHATWOOT_BASE_URL,
        "CHATWOOT_API_ACCESS_TOKEN": CHATWOOT_TOKEN,
        "CHATWOOT_ACCOUNT_ID": "1",
        "BUCKET_HASH_SECRET": BUCKET_HASH_SECRET,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "TRANSCRIPTION_PROVIDER": "none",
        "API_TOKEN": "test-api-token",
        "ADMIN_API_TOKEN": "test-admin-token",
    }


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": ts,
        "X-Chatwoot-Signature": f"sha256={digest}",
        "X-Chatwoot-Delivery": hashlib.sha1(body + ts.encode()).hexdigest(),  # noqa: S324
    }


# ---------------------------------------------------------------------------------------------
# rows: what the tests start from, written through the service's own paths

NOTE_STATE_COLUMNS = frozenset(
    {
        "user_id",
        "processing_status",
        "transcription_status",
        "classification_status",
        "message_kind",
        "transcript",
        "gcs_storage_path",
        "error_details",
        "stored_at",
        "created_at",
        "updated_at",
        "message_created_at",
        "source_type",
        "chatwoot_inbox_id",
    }
)
"""Columns a test may set on a row after ingestion (the state a later stage left it in)."""


def add_note_row(payload: dict[str, Any], enqueue: bool = False, **state: Any) -> int:
    """A meeting_notes row written by ingestion itself (app.ingest.pipeline), then given the
    state a later stage would have left it in (`processing_status="stored"`, `user_id=...`)."""
    from app import context
    from app.ingest.pipeline import ingest

    unknown = set(state) - NOTE_STATE_COLUMNS
    assert not unknown, f"not a state column: {sorted(unknown)}"
    result = ingest(json.loads(json.dumps(payload)), enqueue_jobs=enqueue)
    assert result.note_id is not None, result
    if state:
        assignments = ", ".join(f"{name} = %({name})s" for name in sorted(state))
        with context.db().transaction() as cur:
            cur.execute(
                f"UPDATE meeting_notes SET {assignments} WHERE id = %(id)s",  # noqa: S608 (column names checked above)
                {**state, "id": result.note_id},
            )
    return int(result.note_id)


def note(note_id: int) -> dict[str, Any]:
    """The meeting_notes row."""
    from app import context

    row = context.db().fetch_one("orders.note_get", {"id": note_id})
    assert row is not None, f"no meeting_notes row {note_id}"
    return row


def add_user(
    user_id: str,
    *,
    notify: bool = False,
    language: str | None = None,
    contact_id: int | None = None,
    account_id: int = 1,
) -> dict[str, Any]:
    """A user created the service's one way (app.users.service), optionally linked to a contact."""
    from app import context
    from app.users import service

    row = service.ensure_user(user_id, language=language)
    with context.db().transaction() as cur:
        cur.execute(
            "UPDATE user_bucket_mapping SET notify_on_ready = %s WHERE user_id = %s", (notify, user_id)
        )
    if contact_id is not None:
        service.link_contact(account_id, user_id, contact_id=contact_id)
    return row
