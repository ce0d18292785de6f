"""Retention per account: what a run deletes (rows, objects, media), what it keeps (recent
messages, other accounts, messages on their way, users on legal hold), the lifecycle rule it
sets on the buckets, how it is recorded, and bad input."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import responses

from app import context
from app.records import holds, maintenance, retention
from tests.helpers.archive import ingest, text_message
from tests.records.conftest import archive_user

pytestmark = pytest.mark.usefixtures("records_env")

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _age(note_ids: list[int], interval: str) -> None:
    """Make messages look received `interval` ago (as if time had passed)."""
    with context.db().transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET created_at = now() - %s::interval WHERE id = ANY(%s)",
            (interval, note_ids),
        )


def _rows(note_ids: list[int]) -> set[int]:
    with context.db().transaction() as cur:
        cur.execute("SELECT id FROM meeting_notes WHERE id = ANY(%s)", (note_ids,))
        return {int(r["id"]) for r in cur.fetchall()}


def _objects(user_id: str) -> set[str]:
    bucket = context.db().fetch_one("users.user_get", {"user_id": user_id})["bucket_name"]
    return {b.name for b in context.gcs().list_blobs(bucket)}


@pytest.mark.parametrize(
    ("days", "detail"),
    [
        (0, "the retention must be at least 1 day, got 0 (to keep messages for ever, turn retention off)"),
        (-7, "the retention must be at least 1 day, got -7 (to keep messages for ever, turn retention off)"),
        (36501, "the retention is at most 36500 days, got 36501"),
    ],
)
def test_a_retention_of_zero_or_negative_days_is_refused(
    client: Any, runner: Any, days: int, detail: str
) -> None:
    answer = client.put("/admin/retention/1", headers=ADMIN, json={"days": days})
    assert answer.status_code == 422
    assert answer.get_json() == {"error": "invalid", "detail": detail}
    result = runner.invoke(args=["retention", "set", "1", "--days", str(days)])
    assert result.exit_code == 1 and detail in result.output
    assert retention.policies() == []


def test_a_retention_that_is_not_a_number_is_refused(client: Any) -> None:
    answer = client.put("/admin/retention/1", headers=ADMIN, json={"days": "30"})
    assert answer.status_code == 422 and "days" in answer.get_json()["detail"]
    assert client.put("/admin/retention/1", headers=ADMIN, json={}).status_code == 422


def test_retention_deletes_old_messages_with_their_objects_and_media_and_keeps_the_rest(
    http: responses.RequestsMock, caplog: pytest.LogCaptureFixture, client: Any
) -> None:
    ana = archive_user(http, "ana", 801, texts=3, voice_notes=1)
    recent = archive_user(http, "ana", 801, texts=0, voice_notes=0)
    bea = archive_user(http, "bea", 802, texts=2, account_id=2)
    old = ana.note_ids[:2] + ana.voice_ids
    kept_young = ana.note_ids[2]
    _age(old, "31 days")
    _age([kept_young], "30 days - 30 minutes")  # inside the margin for clock skew: kept
    _age(bea.note_ids, "400 days")  # another account, without retention
    waiting = ingest(
        text_message(801_999, contact_id=801, content="not archived yet", phone=None), enqueue=False
    )
    _age([waiting], "90 days")
    before = _objects("ana")
    assert len(before) == 6  # four messages, the audio, the transcript
    assert recent.note_ids == []

    answer = client.put("/admin/retention/1", headers=ADMIN, json={"days": 30, "by": "Dana"})
    assert answer.status_code == 200 and answer.get_json()["days"] == 30
    caplog.set_level(logging.INFO)
    results = maintenance.run()
    [run] = results["retention"]
    assert (run["account_id"], run["messages_deleted"], run["objects_deleted"]) == (1, 3, 5)
    assert _rows(old) == set()
    assert _rows([kept_young, waiting, *bea.note_ids]) == {kept_young, waiting, *bea.note_ids}
    left = _objects("ana")
    assert len(left) == 1 and next(iter(left)).endswith(".json")
    with context.db().transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM message_attachments")
        assert cur.fetchone()["n"] == 0
        cur.execute("SELECT count(*) AS n FROM transcriptions")
        assert cur.fetchone()["n"] == 0
    applied = [r for r in caplog.records if r.getMessage() == "retention applied"]
    assert applied and applied[0].messages_deleted == 3  # type: ignore[attr-defined]
    # Idempotent: a second run finds nothing more.
    [again] = retention.apply_all()
    assert (again.messages_deleted, again.objects_deleted) == (0, 0)
    runs = client.get("/admin/retention", headers=ADMIN).get_json()["runs"]
    assert [r["messages_deleted"] for r in runs] == [0, 3]
    assert runs[1]["status"] == "done" and runs[1]["days"] == 30


def test_retention_keeps_the_messages_of_a_user_on_legal_hold_and_says_which_hold(
    http: responses.RequestsMock, caplog: pytest.LogCaptureFixture, runner: Any
) -> None:
    cara = archive_user(http, "cara", 803, texts=2)
    dan = archive_user(http, "dan", 804, texts=2)
    _age(cara.note_ids + dan.note_ids, "60 days")
    hold = holds.place("cara", "case 77", "legal team")
    retention.set_policy(1, 30, "test")
    caplog.set_level(logging.WARNING)
    [run] = retention.apply_all()
    assert run.messages_deleted == 2 and run.kept_on_hold == 2
    assert run.holds == [
        {"user_id": "cara", "messages": 2, "holds": [{"id": hold["id"], "reason": "case 77"}]}
    ]
    assert _rows(cara.note_ids) == set(cara.note_ids) and _rows(dan.note_ids) == set()
    assert len(_objects("cara")) == 2
    said = [r.getMessage() for r in caplog.records if "on legal hold" in r.getMessage()]
    assert said == [f"retention kept 2 message(s) of user cara: on legal hold #{hold['id']} (case 77)"]
    shown = runner.invoke(args=["monitor", "--only", "30_retention"])
    assert shown.exit_code == 0, shown.output
    table = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in shown.output.splitlines()
        if line.startswith("|") and not line.startswith("|-")
    ]
    row = dict(zip(table[0], table[1], strict=True))
    assert {
        k: row[k] for k in ("chatwoot_account_id", "days", "status", "messages_deleted", "kept_on_hold")
    } == {
        "chatwoot_account_id": "1",
        "days": "30",
        "status": "done",
        "messages_deleted": "2",
        "kept_on_hold": "2",
    }


def test_retention_cli(db: Any, runner: Any) -> None:
    assert runner.invoke(args=["retention", "set", "3", "--days", "90", "--by", "ops"]).exit_code == 0
    shown = runner.invoke(args=["retention", "show"])
    assert "90" in shown.output and "ops" in shown.output
    assert runner.invoke(args=["retention", "off", "3"]).exit_code == 0
    off = runner.invoke(args=["retention", "off", "3"])
    assert off.exit_code == 1 and "account 3 has no retention" in off.output
    ran = runner.invoke(args=["retention", "run"])
    assert ran.exit_code == 0, ran.output
    assert "audit_partitions" in ran.output


# ------------------------------------------------------------------------------------------
# GCS lifecycle


def _delete_rules(bucket: str) -> list[tuple[int, list[str]]]:
    found = context.gcs().get_bucket(bucket)
    return sorted(
        (int(r["condition"]["age"]), list(r["condition"].get("matchesPrefix", [])))
        for r in found.lifecycle_rules
        if r["action"]["type"] == "Delete"
    )


def test_the_buckets_get_a_lifecycle_delete_rule_so_gcs_enforces_retention_too(
    metadata_emulator: str, http: responses.RequestsMock
) -> None:
    from app.archive import storage

    archive_user(http, "ana", 805, texts=1)
    archive_user(http, "eve", 806, texts=1)
    # eve also writes from account 2, which keeps messages for ever.
    from app.users import service

    service.link_contact(2, "eve", contact_id=806)
    ana_bucket = storage.bucket_name("ana")
    eve_bucket = storage.bucket_name("eve")
    from app.archive.batch import archive_message

    archive_message(ingest(text_message(9_805_001, contact_id=999, content="unmapped"), enqueue=False))
    fallback = storage.bucket_name("account_1")

    # The service's storage-class transitions (this emulator drops those given at creation).
    existing = context.gcs().get_bucket(ana_bucket)
    storage.configure_new_bucket(existing).patch()
    retention.set_policy(1, 30, "test")
    assert retention.sync_lifecycle() == {"buckets": 3, "patched": 2}
    assert _delete_rules(ana_bucket) == [(31, ["whatsapp-messages/"])]
    assert _delete_rules(fallback) == [(31, ["whatsapp-messages/"])]
    assert _delete_rules(eve_bucket) == []
    # The storage-class transitions every bucket has are kept.
    kept = context.gcs().get_bucket(ana_bucket).lifecycle_rules
    assert sorted(
        r["action"].get("storageClass") for r in kept if r["action"]["type"] == "SetStorageClass"
    ) == [
        "ARCHIVE",
        "COLDLINE",
        "NEARLINE",
    ]
    # Nothing changes: nothing is sent.
    assert retention.sync_lifecycle()["patched"] == 0
    # A longer retention moves the rule; none takes it away.
    retention.set_policy(1, 90, "test")
    retention.set_policy(2, 10, "test")
    assert retention.sync_lifecycle()["patched"] == 3
    assert _delete_rules(ana_bucket) == [(91, ["whatsapp-messages/"])]
    assert _delete_rules(eve_bucket) == [(91, ["whatsapp-messages/"])]  # the longer of 90 and 10
    retention.clear_policy(1, "test")
    retention.clear_policy(2, "test")
    assert retention.sync_lifecycle()["patched"] == 3
    assert _delete_rules(ana_bucket) == _delete_rules(eve_bucket) == _delete_rules(fallback) == []


def test_retention_goes_past_a_held_users_messages_in_batches(
    http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = archive_user(http, "held", 820, texts=5)
    other = archive_user(http, "other", 821, texts=5)
    _age(held.note_ids, "90 days")  # the oldest: every batch would meet them first
    _age(other.note_ids, "60 days")
    holds.place("held", "case", "legal team")
    retention.set_policy(1, 30, "test")
    monkeypatch.setattr(retention, "BATCH", 2)
    [run] = retention.apply_all()
    assert (run.messages_deleted, run.kept_on_hold) == (5, 5)
    assert _rows(other.note_ids) == set() and _rows(held.note_ids) == set(held.note_ids)
