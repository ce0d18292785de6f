"""PostgreSQL down: verified deliveries go to the local spool, and come back once on replay."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from rq import Queue

from app import context
from app.chatwoot import accounts
from app.ingest import pipeline as ingest
from app.ingest import spool
from app.jobs import ARCHIVE_MESSAGE, ARCHIVE_QUEUE, job_id
from tests.helpers.common import load_fixture

PUBSUB_TOKEN = "nP7x3bQ6yXh9sKpLm2Vd4TfZ"


@pytest.fixture(autouse=True)
def _fresh_account_cache() -> Iterator[None]:
    accounts.forget_cached()
    yield
    accounts.forget_cached()


@pytest.fixture
def postgres_outage(services: Any, db: Any) -> Iterator[Any]:
    """Call it to stop PostgreSQL; it is started again (and this process reconnects) afterwards."""
    state = {"down": False}

    def stop() -> None:
        services.stop_postgres()
        state["down"] = True

    def start() -> None:
        if state["down"]:
            services.start_postgres()
            state["down"] = False
        context.db().close()  # the old connection died with the server

    stop.start = start  # type: ignore[attr-defined]
    try:
        yield stop
    finally:
        start()


def count(db: Any, account_id: int | None = None, message_id: str | None = None) -> int:
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS n FROM meeting_notes WHERE (%(a)s::int IS NULL OR chatwoot_account_id = %(a)s)"
            " AND (%(m)s::text IS NULL OR chatwoot_message_id = %(m)s)",
            {"a": account_id, "m": message_id},
        )
        return int(cur.fetchone()["n"])


def spool_files(settings: Any) -> list[Path]:
    folder = Path(settings.spool_dir)
    return sorted(folder.glob("*.jsonl")) if folder.exists() else []


def test_postgres_down_spools_and_replay_stores_once(
    postgres_outage: Any, deliver: Any, db: Any, redis_conn: Any, settings: Any
) -> None:
    assert deliver("message_created__incoming_text").get_json()["status"] == "accepted"

    postgres_outage()
    first = deliver("message_created__incoming_voice_note")
    second = deliver("message_created__incoming_voice_note")  # Chatwoot's duplicate, while down
    ignored = deliver("conversation_typing_on")
    postgres_outage.start()

    for response in (first, second):
        assert response.status_code == 200
        assert response.get_json() == {"status": "accepted", "id": None, "spooled": True}
    assert ignored.get_json()["status"] == "ignored"
    files = spool_files(settings)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(settings.spool_dir).stat().st_mode) == 0o700
    text = files[0].read_text()
    assert PUBSUB_TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2
    assert lines[0]["payload"]["id"] == 9877 and lines[0]["delivery_id"]
    assert count(db) == 1

    result = spool.replay()

    assert (result.records, result.accepted, result.duplicates, result.rejected) == (2, 1, 1, 0)
    assert result.error == "" and result.remaining_files == 0
    assert count(db) == 2
    assert count(db, message_id="9877") == 1
    note_id = result.note_ids[0]
    assert job_id(ARCHIVE_MESSAGE, note_id) in Queue(ARCHIVE_QUEUE, connection=redis_conn).job_ids
    assert spool_files(settings) == [] and spool.pending_files() == []

    again = spool.replay()
    assert again.records == 0 and count(db) == 2
    # And the webhook sees it as the duplicate it is.
    assert deliver("message_created__incoming_voice_note").get_json() == {
        "status": "duplicate",
        "id": note_id,
    }


def test_postgres_down_on_a_cold_process_spools_unverified_and_verifies_at_replay(
    postgres_outage: Any, deliver: Any, db: Any, settings: Any
) -> None:
    postgres_outage()
    response = deliver("seed_guide_test_message")
    wrong = deliver("message_created__incoming_order", secret="not-the-secret")
    postgres_outage.start()
    # This process cannot read the accounts' settings: both are kept, neither answered 503.
    assert response.get_json()["spooled"] is True
    assert wrong.status_code == 200 and wrong.get_json()["spooled"] is True
    replayed = spool.replay()
    assert (replayed.accepted, replayed.forged) == (1, 1)
    assert count(db, account_id=789) == 1
    assert count(db) == 1


def test_account_with_its_own_secret_is_verified_while_postgres_is_down(
    app: Any, use_settings: Any, postgres_outage: Any, deliver: Any, db: Any
) -> None:
    use_settings(secrets_encryption_key=Fernet.generate_key().decode())
    accounts.upsert(7, webhook_secret="account-seven-secret")
    message = load_fixture("message_created__incoming_text") | {"account": {"id": 7}}
    assert deliver(message, secret="account-seven-secret").status_code == 200  # the process knows it now
    postgres_outage()
    spooled = deliver(message | {"id": 70001}, secret="account-seven-secret")
    forged = deliver(message | {"id": 70002})  # the environment's secret is not account 7's
    postgres_outage.start()
    assert spooled.get_json()["spooled"] is True
    assert forged.status_code == 401
    assert spool.replay().accepted == 1
    assert count(db, account_id=7) == 2


def test_503_only_when_the_spool_cannot_be_written_either(
    postgres_outage: Any, deliver: Any, db: Any, use_settings: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    use_settings(spool_dir=str(blocker / "spool"))
    deliver("message_created__incoming_text")  # the process knows the account
    postgres_outage()
    response = deliver("message_created__incoming_order")
    postgres_outage.start()
    assert response.status_code == 503
    answer = response.get_json()
    assert answer["error"] == "unavailable" and "spool" in answer["detail"]
    assert count(db, message_id="9878") == 0


def test_flask_spool_commands(postgres_outage: Any, deliver: Any, runner: Any, db: Any) -> None:
    deliver("message_created__incoming_text")
    postgres_outage()
    deliver("message_created__incoming_order")
    deliver("message_created__incoming_image_with_caption")
    stopped = runner.invoke(args=["spool", "replay"])
    postgres_outage.start()
    assert stopped.exit_code == 1 and "unavailable" in stopped.output  # nothing lost: still spooled
    status = json.loads(runner.invoke(args=["spool", "status"]).output)
    assert status["records"] == 2 and status["files"] == 1

    result = runner.invoke(args=["spool", "replay"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accepted"] == 2
    assert count(db) == 3
    assert json.loads(runner.invoke(args=["spool", "status"]).output)["records"] == 0


def _prepared(message_id: int) -> ingest.Prepared:
    payload = load_fixture("message_created__incoming_text") | {"id": message_id}
    prepared = ingest.prepare(payload)
    assert isinstance(prepared, ingest.Prepared)
    return prepared


def test_replay_stops_when_postgres_is_down_again_and_keeps_the_rest(
    postgres_outage: Any, db: Any, settings: Any, redis_conn: Any
) -> None:
    for message_id in (101, 102, 103):
        spool.append(_prepared(message_id))
    postgres_outage()
    stopped = spool.replay()
    postgres_outage.start()
    assert stopped.error and stopped.accepted == 0 and stopped.remaining_files == 1
    assert spool.status()["records"] == 3
    done = spool.replay()
    assert done.accepted == 3 and done.remaining_files == 0
    assert count(db) == 3


def test_a_torn_or_unreadable_line_is_set_aside_not_lost(db: Any, settings: Any) -> None:
    spool.append(_prepared(201))
    path = spool_files(settings)[0]
    with open(path, "ab") as handle:
        handle.write(b'{"v":1,"payload":{"event":"message_created"}}\n')  # fails the schema
        handle.write(b'{"v":1,"payload":{"event":"mess')  # the process died mid-write
    result = spool.replay()
    assert (result.accepted, result.rejected) == (1, 2)
    rejected = Path(settings.spool_dir) / spool.REJECTED_FILE
    assert stat.S_IMODE(rejected.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert [e["reason"] for e in entries] == ["InvalidPayload", "ValueError"]
    assert entries[1]["line"].startswith('{"v":1,"payload":{"event":"mess')
    assert count(db) == 1


def test_writers_and_replays_at_the_same_time_lose_nothing(db: Any, settings: Any) -> None:
    total = 60
    prepared = [_prepared(1000 + i) for i in range(total)]
    done = threading.Event()

    def write(chunk: list[ingest.Prepared]) -> None:
        for item in chunk:
            spool.append(item)

    def replay_loop() -> None:
        while not done.is_set():
            spool.replay()
        context.db().close()

    replayer = threading.Thread(target=replay_loop)
    replayer.start()
    writers = [threading.Thread(target=write, args=(prepared[i::4],)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    replayer.join()
    spool.replay()
    assert count(db) == total
    assert spool.pending_files() == []


def test_spool_line_is_the_prepared_payload(settings: Any) -> None:
    item = _prepared(301)
    path = spool.append(item, request_id="r-1", delivery_id="d-1")
    assert path.name == f"{os.getpid()}.jsonl"
    entry = json.loads(path.read_text())
    assert entry["payload"] == item.payload
    assert (entry["request_id"], entry["delivery_id"], entry["v"]) == ("r-1", "d-1", 1)


def test_a_delivery_stored_as_received_is_spooled_without_its_secret(
    postgres_outage: Any, client: Any, db: Any, settings: Any
) -> None:
    from tests.helpers.common import FIXTURES, sign

    client.post("/webhooks/chatwoot", data=b"{}", headers=sign(b"{}"))  # the process knows the account
    body = (FIXTURES / "message_created__incoming_order.json").read_bytes()  # UTF-8, as Chatwoot sends
    postgres_outage()
    response = client.post("/webhooks/chatwoot", data=body, headers=sign(body))
    postgres_outage.start()
    assert response.get_json()["spooled"] is True
    text = spool_files(settings)[0].read_text()
    assert PUBSUB_TOKEN not in text and "María" in text
    assert spool.replay().accepted == 1
    with db.transaction() as cur:
        cur.execute("SELECT payload FROM meeting_notes")
        stored = cur.fetchone()["payload"]
    assert "pubsub_token" not in stored["conversation"]["contact_inbox"]
