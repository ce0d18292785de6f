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
