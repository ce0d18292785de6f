"""Helpers of the admin tests: the token header, rows made directly, secrets to look for."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import devstack  # scripts/, on the path from tests/conftest.py
import pytest

from tests.helpers.common import add_note_row
from tests.helpers.common import add_user as common_add_user

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def admin_env(db: Any, redis_conn: Any, gcs: Any, settings: Any) -> Iterator[Any]:
    """Empty tables, Redis and emulator; fast retries of GCS calls."""
    from app.archive import storage
    from app.chatwoot import accounts

    accounts.forget_cached()
    previous = storage.CALL_RETRY_SECONDS
    storage.CALL_RETRY_SECONDS = 1.0
    yield settings
    storage.CALL_RETRY_SECONDS = previous
    accounts.forget_cached()


def dead_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def unreachable(use_settings: Any, **urls: str) -> Iterator[None]:
    """Point some service URLs (`storage_emulator_host=...`) at a dead port for the block."""
    from app import context

    before = context.settings()
    use_settings(**{name: url.format(port=dead_port()) for name, url in urls.items()})
    try:
        yield
    finally:
        context.use_settings(before)


def sql(statement: str, params: Any = None) -> list[dict[str, Any]]:
    """Run SQL in the test database; the rows it returns, if any."""
    from app import context

    with context.db().transaction() as cur:
        cur.execute(statement, params)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def count(table: str, where: str = "true", params: Any = None) -> int:
    return int(sql(f"SELECT count(*) AS n FROM {table} WHERE {where}", params)[0]["n"])  # noqa: S608


_next_id = [1000]


def recent() -> datetime:
    """A minute ago, but today (UTC) even just after midnight, so per-day counts are stable."""
    now = datetime.now(UTC)
    return max(now - timedelta(minutes=1), now.replace(hour=0, minute=0, second=0, microsecond=0))


def add_note(
    *,
    user_id: str | None = None,
    account_id: int = 1,
    contact_id: int | None = 287,
    conversation_id: int = 42,
    status: str = "stored",
    created_at: datetime | None = None,
    stored_after: float = 1.5,
    source_type: str = "whatsapp",
    message_type: str = "incoming",
    error: str | None = None,
    name: str = "María López",
    phone: str | None = "+5491155550123",
    bucket: str | None = None,
    transcription_status: str = "not_needed",
    classification_status: str = "not_needed",
) -> int:
    """A meeting_notes row as the archive leaves it (without objects in GCS)."""
    _next_id[0] += 1
    message_id = _next_id[0]
    created = created_at or recent()
    stored_at = created + timedelta(seconds=stored_after) if status == "stored" else None
    payload = {
        "event": "message_created",
        "id": message_id,
        "message_type": message_type,
        "content": f"note {message_id}",
        "sender": {"id": contact_id, "name": name, "phone_number": phone, "identifier": None}
        if message_type == "incoming"
        else {"id": 9, "name": "Bot", "type": "agent_bot"},
        "conversation": {
            "id": conversation_id,
            "channel": "Channel::" + "".join(part.title() for part in source_type.split("_")),
            "meta": {"sender": {"id": contact_id, "phone_number": phone}},
        },
        "account": {"id": account_id},
        "inbox": {"id": 4},
    }
    path = None
    if status == "stored":
        path = f"gs://{bucket or 'fallback-bucket'}/whatsapp-messages/{created:%Y-%m-%d}/{message_id}.json"
    return add_note_row(
        payload,
        user_id=user_id,
        source_type=source_type,
        chatwoot_inbox_id=4,
        message_created_at=created,
        processing_status=status,
        transcription_status=transcription_status,
        classification_status=classification_status,
        gcs_storage_path=path,
        error_details=error if status == "error" else None,
        stored_at=stored_at,
        created_at=created,
        updated_at=stored_at or created,
    )


def add_user(user_id: str, notify: bool = False) -> str:
    """A user (made the service's one way); returns its bucket name."""
    return str(common_add_user(user_id, notify=notify)["bucket_name"])


def add_link(user_id: str, link_type: str, value: str, account_id: int = 1) -> None:
    sql(
        "INSERT INTO contact_links (user_id, chatwoot_account_id, link_type, link_value) VALUES (%s, %s, %s, %s)",
        (user_id, account_id, link_type, value),
    )


def assert_absent(body: bytes | str, *secrets: str) -> None:
    text = body.decode() if isinstance(body, bytes) else body
    for secret in secrets:
        assert secret and secret not in text, "a secret appears in a response"


class Server:
    """The web app under gunicorn on a loopback port, as the local stack runs it."""

    def __init__(self, environ: dict[str, str], workers: int = 2, extra: dict[str, str] | None = None):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **environ, **(extra or {})}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        import urllib.request

        self.proc = subprocess.Popen(
            devstack.gunicorn_command(self.port, self.workers),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "gunicorn exited: "
                    + (self.proc.stderr.read() if self.proc.stderr else b"").decode()[-800:]
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("gunicorn did not answer /healthz within 30 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the form carries a CSRF token"
    return found.group(1)


def sign_in(client: Any, token: str = ADMIN_TOKEN) -> Any:
    """Sign in to the admin page with a Flask test client, as the sign-in form does."""
    form = client.get("/admin/login")
    return client.post(
        "/admin/login", data={"csrf_token": csrf_of(form.get_data(as_text=True)), "token": token}
    )
