"""Erasure that holds: nothing of an erased user comes back through the backfill, the webhook,
the spool replay or a job already running; a user who keeps writing is erased all the same;
soft-deleted objects go too; the user's re-consent lifts it."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

from app import context
from app.archive import batch, storage
from app.ingest import pipeline, spool
from app.users import erase, service
from tests.helpers.admin import AUTH, count, sql
from tests.helpers.archive import (
    data_url,
    ingest,
    objects,
    run_archive,
    storage_url,
    text_message,
    voice_note,
)
from tests.helpers.common import CHATWOOT_BASE_URL, load_fixture

pytestmark = pytest.mark.usefixtures("archive_env")

USER = "maria"
PHONE = "+5491155550123"
OGG = b"OggS\x00\x02" + b"\x07" * 3000
CONVERSATIONS_URL = f"{CHATWOOT_BASE_URL}/api/v1/accounts/1/conversations"
MESSAGES_URL = f"{CHATWOOT_BASE_URL}/api/v1/accounts/1/conversations/42/messages"
CONTACT = {"id": 287, "name": "María López", "phone_number": PHONE, "identifier": None, "type": "contact"}


def _archived_user(run_jobs: Any, *message_ids: int) -> str:
    """María (contact 287, linked by contact id and phone) with some messages archived."""
    service.link_contact(1, USER, contact_id=287, phone=PHONE)
    for message_id in message_ids:
        ingest(text_message(message_id, contact_id=287, content=f"my note {message_id}"))
    run_archive(run_jobs)
    bucket = storage.bucket_name(USER)
    assert len(objects(bucket)) == len(message_ids)
    return bucket


def _everything_of_maria() -> dict[str, int]:
    """What is left of María: rows of contact 287 or of the user, and buckets and objects."""
    left = {
        "rows": count("meeting_notes", "chatwoot_contact_id = 287 OR user_id = %s", (USER,)),
        "user": count("user_bucket_mapping", "user_id = %s", (USER,)),
        "links": count("contact_links", "user_id = %s", (USER,)),
    }
    client = context.gcs()
    left["user bucket"] = int(client.lookup_bucket(storage.bucket_name(USER)) is not None)
    texts = [
        blob.download_as_bytes()
        for bucket in client.list_buckets()
        for blob in client.list_blobs(bucket.name)
        if blob.name.endswith(".json")
    ]
    left["objects"] = sum(1 for t in texts if b"my note" in t or PHONE.encode() in t)
    return left


NOTHING = {"rows": 0, "user": 0, "links": 0, "user bucket": 0, "objects": 0}


def listed(message_id: int, message_type: int = 0, age: int = 60) -> dict[str, Any]:
    """A message as Chatwoot's message list returns it."""
    return {
        "id": message_id,
        "content": f"my note {message_id}",
        "inbox_id": 4,
        "conversation_id": 42,
        "message_type": message_type,
        "content_type": "text",
        "content_attributes": {},
        "created_at": int(time.time()) - age,
        "private": False,
        "source_id": f"wamid.{message_id}",
        "sender": CONTACT if message_type == 0 else {"id": 3, "name": "Ana", "type": "user"},
    }


# ------------------------------------------------------------------------------------------
# the backfill, the webhook, the spool


def test_the_backfill_does_not_bring_an_erased_user_back(
    http: responses.RequestsMock, run_jobs: Any, use_settings: Any
) -> None:
    """Chatwoot still lists the erased user's messages: the next backfill stores none of them."""
    from app.ingest.backfill import backfill

    _archived_user(run_jobs, 9001, 9002)
    erase.erase_user(USER)
    assert _everything_of_maria() == NOTHING

    messages = [listed(9001), listed(9002), listed(9003, message_type=1), listed(9004)]
    http.get(MESSAGES_URL, json={"meta": {"contact": CONTACT}, "payload": messages})
    # The conversation as Chatwoot's list shows it, and once more known by its id only.
    http.get(
        CONVERSATIONS_URL,
        json={"data": {"payload": [{"id": 42, "inbox_id": 4, "meta": {"sender": CONTACT}}]}},
    )
    result = backfill(6 * 3600)
    assert result.errors == [] and result.accepted == 0
    assert result.erased_conversations == 1
    by_id = backfill(6 * 3600, account_ids=[1], conversation_ids=[42])
    assert by_id.accepted == 0 and by_id.erased_conversations == 1
    run_archive(run_jobs)
    assert _everything_of_maria() == NOTHING


def test_the_ingest_statement_refuses_every_key_of_an_erased_contact(run_jobs: Any) -> None:
    """By contact id, by phone (another contact id, the same number) and by identifier; another
    contact of the account is stored as before."""
    service.link_contact(1, USER, contact_id=287, identifier="crm-7")
    service.link_contact(1, USER, phone=PHONE)
    erase.erase_user(USER)

    refused = [
        text_message(9101, contact_id=287, phone=None),
        text_message(9102, contact_id=555, phone="+54 9 11 5555-0123"),
        text_message(9103, contact_id=556, phone=None, identifier="crm-7"),
    ]
    for payload in refused:
        result = pipeline.ingest(payload)
        assert (result.status, result.reason, result.note_id) == ("ignored", "contact erased", None)
    # The same contact id in another account is another contact.
    assert pipeline.ingest(text_message(9104, contact_id=287, account_id=2)).status == "accepted"
    assert pipeline.ingest(text_message(9105, contact_id=300, phone="+5511988887777")).status == "accepted"
    assert count("meeting_notes") == 2


def test_a_delivery_from_an_erased_contact_is_ignored_in_one_round_trip(
    deliver: Any, run_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2.extensions
    import psycopg2.extras

    from app import metrics

    _archived_user(run_jobs, 9201)
    erase.erase_user(USER)
    deliver("message_created__outgoing_agent")  # the account's settings are read (and cached) once
    before = metrics.WEBHOOKS.labels("erased")._value.get()
    statements: list[str] = []

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            statements.append(str(query)[:40])
            return super().execute(query, vars)

    class CountingDict(psycopg2.extras.RealDictCursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            statements.append(str(query)[:40])
            return super().execute(query, vars)

    monkeypatch.setattr(context.db()._connection(), "cursor_factory", Counting)
    monkeypatch.setattr(psycopg2.extras, "RealDictCursor", CountingDict)  # any other statement
    response = deliver("message_created__incoming_text")
    monkeypatch.undo()
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "reason": "contact erased"}
    assert len(statements) == 1 and statements[0].startswith("EXECUTE ingest_record")
    assert metrics.WEBHOOKS.labels("erased")._value.get() == before + 1
    run_archive(run_jobs)
    assert _everything_of_maria() == NOTHING


def test_a_delivery_spooled_after_the_erasure_is_dropped_at_replay(run_jobs: Any) -> None:
    """PostgreSQL was down when the erased contact wrote again: the replay stores nothing."""
    _archived_user(run_jobs, 9301)
    erase.erase_user(USER)
    spool.append(pipeline.prepare(load_fixture("message_created__incoming_text")))
    replayed = spool.replay()
    assert (replayed.records, replayed.accepted, replayed.ignored) == (1, 0, 1)
    assert _everything_of_maria() == NOTHING


def test_a_message_being_ingested_when_the_tombstones_are_recorded_is_erased_too(
    settings: Any, run_jobs: Any
) -> None:
    """An ingest statement that began before the tombstones (so it did not see them) commits its
    row while the erasure runs: the erasure waits for it, and deletes that row too."""
    import psycopg2

    service.link_contact(1, USER, contact_id=287, phone=PHONE)
    in_flight = psycopg2.connect(settings.database_url)
    try:
        with in_flight.cursor() as cur:
            # What the ingest statement holds until it commits: erased_contacts read, a row inserted.
            cur.execute("SELECT FROM erased_contacts WHERE chatwoot_account_id = 1")
            cur.execute(
                "INSERT INTO meeting_notes (chatwoot_account_id, chatwoot_message_id, chatwoot_contact_id, "
                "contact_phone, source_type, message_type, content_type, content, payload, processing_status) "
                "VALUES (1, '9991', 287, %s, 'whatsapp', 'incoming', 'text', 'my note 9991', '{}', 'received')",
                (PHONE,),
            )
        outcome: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: outcome.update(report=erase.erase_user(USER)))
        worker.start()
        time.sleep(0.5)
        waited = worker.is_alive()
        in_flight.commit()
        worker.join(30)
    finally:
        in_flight.close()
    assert waited, "the erasure did not wait for the ingest statement in flight"
    assert outcome["report"].rows["meeting_notes"] == 1
    assert _everything_of_maria() == NOTHING


def test_tombstones_name_nobody(run_jobs: Any) -> None:
    service.link_contact(1, USER, contact_id=287, phone=PHONE, identifier="maria@example.com")
    report = erase.erase_user(USER).as_dict()
    assert report["contacts_tombstoned"] == 3
    kept = json.dumps(sql("SELECT * FROM erased_users") + sql("SELECT * FROM erased_contacts"), default=str)
    for personal in (USER, PHONE, PHONE.lstrip("+"), "maria@example.com"):
        assert personal not in kept


# ------------------------------------------------------------------------------------------
# re-consent


def test_re_consent_lifts_the_tombstones(client: Any, deliver: Any, run_jobs: Any) -> None:
    _archived_user(run_jobs, 9401)
    erase.erase_user(USER)
    assert deliver("message_created__incoming_text").get_json()["status"] == "ignored"

    unknown = client.post("/admin/users/somebody-else/reconsent", headers=AUTH)
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "not_found"
    assert client.post(f"/admin/users/{USER}/reconsent").status_code == 401
    lifted = client.post(f"/admin/users/{USER}/reconsent", headers=AUTH)
    assert lifted.status_code == 200, lifted.get_json()
    assert lifted.get_json()["contacts_released"] == 2 and lifted.get_json()["user_id"] == USER
    assert client.post(f"/admin/users/{USER}/reconsent", headers=AUTH).status_code == 404

    # Nothing erased came back; what the contact sends from now on is archived (unlinked, in
    # the account's fallback bucket, until an admin links the contact again).
    assert _everything_of_maria() == NOTHING
    accepted = deliver("message_created__incoming_text").get_json()
    assert accepted["status"] == "accepted"
    run_archive(run_jobs)
    assert count("meeting_notes", "chatwoot_contact_id = 287") == 1


def test_re_consent_from_the_command_line(runner: Any, run_jobs: Any) -> None:
    _archived_user(run_jobs, 9501)
    erased = runner.invoke(args=["users", "erase", USER, "--yes"])
    assert erased.exit_code == 0, erased.output
    assert "tombstoned: 2 contact key(s)" in erased.output
    assert "nothing this erasure deleted is kept by soft delete" in erased.output
    assert pipeline.ingest(text_message(9502)).status == "ignored"

    refused = runner.invoke(args=["users", "reconsent", USER], input="n\n")
    assert refused.exit_code == 1
    assert pipeline.ingest(text_message(9503)).status == "ignored"
    done = runner.invoke(args=["users", "reconsent", USER, "--yes"])
    assert done.exit_code == 0 and "2 contact key(s) released" in done.output, done.output
    assert pipeline.ingest(text_message(9504)).status == "accepted"
    again = runner.invoke(args=["users", "reconsent", USER, "--yes"])
    assert again.exit_code != 0 and "no erasure holds" in again.output
    assert "Traceback" not in again.output


# ------------------------------------------------------------------------------------------
# a job already running


def test_a_job_that_was_already_running_does_not_re_create_the_bucket(
    http: responses.RequestsMock, public_resolver: Any, run_jobs: Any
) -> None:
    """The erasure happens while the archive job downloads a voice note (its JSON is written):
    the job then writes nothing, and the bucket stays gone."""
    bucket = _archived_user(run_jobs, 9601)
    note_id = ingest(voice_note(9602, attachment_id=7001), enqueue=False)
    outcome: dict[str, Any] = {}

    def erase_during_download(request: Any) -> tuple[int, dict[str, str], bytes]:
        outcome["erasure"] = erase.erase_user(USER).as_dict()
        return 200, {"Content-Type": "audio/ogg"}, OGG

    http.add(
        responses.GET,
        data_url(7001, "audioclip.ogg"),
        status=302,
        headers={"Location": storage_url(7001, "audioclip.ogg")},
    )
    http.add_callback(responses.GET, storage_url(7001, "audioclip.ogg"), callback=erase_during_download)

    result = batch.archive_message(note_id)
    assert outcome["erasure"]["rows_deleted"]["meeting_notes"] == 2
    assert context.gcs().lookup_bucket(bucket) is None, f"the job re-created the bucket ({result})"
    assert _everything_of_maria() == NOTHING


def test_no_bucket_is_created_for_an_erased_user(run_jobs: Any) -> None:
    """A row that points at the erased user (an admin re-created the user without its consent)
    is not archived, and its bucket is not created."""
    from tests.helpers.admin import add_note

    bucket = _archived_user(run_jobs, 9701)
    erase.erase_user(USER)
    service.create_user(USER)  # re-created by hand, without the user's re-consent
    note_id = add_note(user_id=USER, status="received", contact_id=555, phone=None)  # another contact
    assert batch.archive_message(note_id) == "owner erased"
    with pytest.raises(storage.OwnerErased):
        storage.ensure_bucket(bucket)
    assert context.gcs().lookup_bucket(bucket) is None
    assert sql("SELECT processing_status FROM meeting_notes WHERE id = %s", (note_id,))[0] == {
        "processing_status": "received"
    }


# ------------------------------------------------------------------------------------------
# a user who keeps writing


def test_a_user_who_keeps_writing_is_erased(run_jobs: Any) -> None:
    """María writes without pause (each message ingested and archived at once) while she is
    erased: the erasure succeeds the first time and leaves nothing."""
    _archived_user(run_jobs, *range(9800, 9830))
    stop = threading.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []

    def write() -> None:
        message_id = 20_000
        try:
            while not stop.is_set():
                message_id += 1
                result = pipeline.ingest(text_message(message_id, content=f"my note {message_id}"))
                seen[result.status] += 1
                if result.status == "accepted" and result.note_id:
                    seen[batch.archive_message(result.note_id)] += 1
        except Exception as exc:  # reported below: the writer must never be the one that fails
            failures.append(repr(exc))
        finally:
            context.db().close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while seen["stored"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        report = erase.erase_user(USER)
        after = seen["ignored"]
        time.sleep(0.5)  # she keeps writing
    finally:
        stop.set()
        writer.join()
    assert failures == []
    assert report.rows["meeting_notes"] >= 50
    assert seen["ignored"] > after, "the writer was still writing after the erasure"
    assert _everything_of_maria() == NOTHING


# ------------------------------------------------------------------------------------------
# soft delete: GCS keeps deleted objects 7 days by default, and deletes none of them sooner.
# gcp-storage-emulator keeps soft-deleted objects as GCS does (7 days unless the bucket's policy
# says otherwise); fake-gcs-server, the suite's emulator, keeps none.


@pytest.fixture
def soft_delete_gcs(use_settings: Any) -> Iterator[Any]:
    """gcp-storage-emulator (in memory) instead of the suite's emulator, for this test."""
    from gcp_storage_emulator.server import create_server

    from tests.helpers.admin import dead_port

    port = dead_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        # Buckets made with soft delete on (an older version, or the operator's choice).
        yield use_settings(
            storage_emulator_host=f"http://127.0.0.1:{port}", soft_delete_retention_seconds=7 * 86400
        )
    finally:
        context.gcs()._http.close()  # its keep-alive connections would hold the server's shutdown
        server.stop()


def _soft_deleted_names(bucket: str, prefix: str = "") -> list[str]:
    listing = context.gcs().list_blobs(bucket, prefix=prefix or None, soft_deleted=True)
    return sorted(blob.name for blob in listing if blob.soft_delete_time is not None)


def test_nothing_the_erasure_deletes_is_kept_by_soft_delete(
    soft_delete_gcs: Any, run_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's bucket keeps deleted objects 7 days (the emulator's default, as on GCS): the
    erasure sets that to 0 before deleting, so when the bucket goes, the only soft-deleted object
    left in it is the one deleted before the erasure, and the report says until when GCS keeps it."""
    from google.cloud.storage import Bucket

    bucket = _archived_user(run_jobs, 9901, 9902)
    earlier = "whatsapp-messages/2026-11-01/9900.json"
    storage.put_json(context.gcs().bucket(bucket), earlier, {"content": "my note 9900"})
    context.gcs().bucket(bucket).blob(earlier).delete()
    assert _soft_deleted_names(bucket) == [earlier]
    seen: dict[str, list[str]] = {}
    delete = Bucket.delete

    def look_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.setdefault(
            self.name, _soft_deleted_names(self.name)
        )  # the emulator forgets them with the bucket
        return delete(self, *args, **kwargs)

    monkeypatch.setattr(Bucket, "delete", look_first)
    report = erase.erase_user(USER).as_dict()
    assert seen[bucket] == [earlier]
    assert report["soft_delete_turned_off"] is True and report["soft_deleted_objects_kept"] == 1
    kept_until = datetime.fromisoformat(report["soft_deleted_kept_until"])
    assert timedelta(days=6) < kept_until - datetime.now(UTC) <= timedelta(days=7)
    assert "1 object(s) deleted earlier are kept by GCS until" in report["soft_delete"]
    assert context.gcs().lookup_bucket(bucket) is None


def _moved_to_maria(run_jobs: Any) -> tuple[str, str]:
    """Contact 287 wrote before it was linked (archived in the account's fallback bucket), then
    was linked to María and its archive moved into her bucket. Returns (fallback bucket, object)."""
    from app.users import rehome

    ingest(text_message(9961, contact_id=287, content="my note 9961"))
    run_archive(run_jobs)
    fallback = storage.bucket_name("account_1")
    (name,) = objects(fallback)
    service.link_contact(1, USER, contact_id=287, phone=PHONE)
    assert rehome.rehome_messages(1, USER).messages == 1
    assert objects(fallback) == {} and name in objects(storage.bucket_name(USER))
    return fallback, name


def test_copies_left_in_the_fallback_bucket_by_a_move_are_erased(run_jobs: Any) -> None:
    """A move whose old copies were not deleted yet (it stopped half-way)."""
    fallback, name = _moved_to_maria(run_jobs)
    storage.put_json(context.gcs().bucket(fallback), name, {"content": "my note 9961"})
    sql("UPDATE meeting_notes SET rehome_from_bucket = %s", (fallback,))
    report = erase.erase_user(USER).as_dict()
    assert report["fallback_objects_deleted"] == 1 and report["bucket_objects_deleted"] == 1
    assert objects(fallback) == {}
    assert _everything_of_maria() == NOTHING


def test_soft_delete_in_a_fallback_bucket(soft_delete_gcs: Any, run_jobs: Any) -> None:
    """The account's fallback bucket keeps deleted objects 7 days. Its copy of María's message
    that the move did not delete yet is deleted for good (soft delete is 0 for that moment, and 7
    days again after, read back from the server); the copy the move deleted earlier is reported."""
    fallback, name = _moved_to_maria(run_jobs)
    week = 7 * 24 * 3600
    fallback_bucket = context.gcs().get_bucket(fallback)
    fallback_bucket.soft_delete_policy.retention_duration_seconds = week
    fallback_bucket.patch()
    assert _soft_deleted_names(fallback) == [name]  # deleted by the move
    storage.put_json(context.gcs().bucket(fallback), name, {"content": "my note 9961"})
    sql("UPDATE meeting_notes SET rehome_from_bucket = %s", (fallback,))
    other = "whatsapp-messages/2026-11-20/7777.json"
    storage.put_json(context.gcs().bucket(fallback), other, {"content": "someone else"})
    context.gcs().bucket(fallback).blob(other).delete()

    report = erase.erase_user(USER).as_dict()
    assert report["fallback_objects_deleted"] == 1 and objects(fallback) == {}
    assert _soft_deleted_names(fallback) == sorted([name, other])  # one copy of María's: the move's
    generations = [
        b.generation for b in context.gcs().list_blobs(fallback, soft_deleted=True) if b.name == name
    ]
    assert len(generations) == 1
    assert report["soft_deleted_objects_kept"] == 1
    assert context.gcs().get_bucket(fallback).soft_delete_policy.retention_duration_seconds == week
    assert _everything_of_maria() == NOTHING
