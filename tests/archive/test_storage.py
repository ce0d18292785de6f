"""Bucket names, bucket creation (settings, 409, rate), object paths and append-only writes."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import responses

from app.config import ConfigError, load_settings
from app.users import service
from tests.helpers.archive import objects

pytestmark = pytest.mark.usefixtures("archive_env")


# ------------------------------------------------------------------------------------------
# names and paths


def test_bucket_names_are_valid_stable_and_distinct(use_settings: Any) -> None:
    from app.archive import storage

    keys = ["account_1", "account_789", "user-42", "user-43", "ü-ñ 😀", "x" * 200]
    names = [storage.bucket_name(k) for k in keys]
    for name in names:
        assert storage.valid_bucket_name(name), name
        assert re.fullmatch(r"pacelane-whatsapp-[0-9a-f]{32}", name)
        assert 3 <= len(name) <= 63
    assert len(set(names)) == len(keys)
    assert [storage.bucket_name(k) for k in keys] == names  # stable
    # Another secret gives other names for the same users.
    assert storage.bucket_name("user-42", secret="another-secret-value") != storage.bucket_name("user-42")
    use_settings(bucket_hash_secret="rotated-secret-value")
    assert storage.bucket_name("user-42") != names[2]
    # The longest allowed prefix still gives a valid name.
    longest = "a" * 30
    assert storage.valid_bucket_name(storage.bucket_name("user-42", prefix=longest))
    assert len(storage.bucket_name("user-42", prefix=longest)) == 63


def test_bucket_name_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    from app.archive import storage

    digest = hmac.new(b"test-bucket-hash-secret", b"account_789", hashlib.sha256).hexdigest()
    assert storage.bucket_name("account_789") == f"pacelane-whatsapp-{digest[:32]}"


@pytest.mark.parametrize(
    "prefix",
    [
        "Upper",
        "has_underscore",
        "-leading",
        "trailing-",
        "goog-archive",
        "my-google-x",
        "a" * 31,
        "ab",
        "a--b",
    ],
)
def test_bad_bucket_prefixes_stop_the_start(environ: dict[str, str], prefix: str) -> None:
    with pytest.raises(ConfigError, match="GCS_BUCKET_PREFIX"):
        load_settings({**environ, "GCS_BUCKET_PREFIX": prefix})


def test_bucket_rate_setting_is_validated(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="GCS_BUCKET_CREATE_RATE"):
        load_settings({**environ, "GCS_BUCKET_CREATE_RATE": "fast please"})
    assert load_settings({**environ, "GCS_BUCKET_CREATE_RATE": "1/2seconds"}).gcs_bucket_create_rate


def test_object_paths() -> None:
    from app.archive import storage

    created = datetime(2026, 11, 20, 14, 21, 40, tzinfo=UTC)
    prefix = storage.message_prefix(created, 9877)
    assert prefix == "whatsapp-messages/2026-11-20/9877"
    assert storage.message_object(prefix) == "whatsapp-messages/2026-11-20/9877.json"
    assert storage.attachment_object(prefix, 5521, ".ogg") == "whatsapp-messages/2026-11-20/9877/5521.ogg"
    assert storage.transcript_object(prefix) == "whatsapp-messages/2026-11-20/9877/transcript.json"
    assert (
        storage.update_object(prefix, "ab" * 32)
        == f"whatsapp-messages/2026-11-20/9877/updates/{'ab' * 32}.json"
    )
    # The UTC day, whatever the timezone of the timestamp.
    late_evening = datetime(2026, 11, 20, 22, 30, tzinfo=timezone(timedelta(hours=-3)))
    assert storage.message_prefix(late_evening, 1) == "whatsapp-messages/2026-11-21/1"
    # Hand-made ids keep their name; anything that would change the path is encoded.
    assert storage.message_prefix(created, "test-message-123").endswith("/test-message-123")
    assert storage.message_prefix(created, "../x/y").endswith("/..%2Fx%2Fy")
    assert storage.message_prefix(created, "..").endswith("/%2E%2E")


# ------------------------------------------------------------------------------------------
# buckets


def _create_calls(rsps: responses.RequestsMock) -> list[Any]:
    return [
        c for c in rsps.calls if c.request.method == "POST" and c.request.url.split("?")[0].endswith("/b")
    ]


def test_bucket_is_created_once_with_lifecycle_and_access_settings(
    settings: Any, use_settings: Any, db: Any
) -> None:
    """fake-gcs-server drops lifecycle and access settings, so the test reads what the code sends."""
    from app import context
    from app.archive import storage

    use_settings(gcs_location="EU")
    name = storage.bucket_name("account_1")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.PassthroughResponse(responses.POST, re.compile(r".*/storage/v1/b\?.*")))
        rsps.add_passthru(settings.storage_emulator_host)
        bucket = storage.ensure_bucket(name)
        assert storage.ensure_bucket(name).name == name  # remembered: no second call
        calls = _create_calls(rsps)
    assert len(calls) == 1
    sent = json.loads(calls[0].request.body)
    assert sent["name"] == name
    assert sent["location"] == "EU"
    assert sorted(
        (r["condition"]["age"], r["action"]["type"], r["action"]["storageClass"])
        for r in sent["lifecycle"]["rule"]
    ) == [
        (30, "SetStorageClass", "NEARLINE"),
        (90, "SetStorageClass", "COLDLINE"),
        (365, "SetStorageClass", "ARCHIVE"),
    ]
    assert sent["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert sent["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert sent["labels"]["service"] == "meeting-notes"
    assert "project=local-project" in calls[0].request.url
    assert bucket.name in {b.name for b in context.gcs().list_buckets()}
    row = db.fetch_one("archive.bucket_get", {"bucket_name": name})
    assert row["state"] == "ready" and row["how"] == "created"


def test_known_buckets_survive_a_new_process(settings: Any, db: Any) -> None:
    """A process that starts later learns the bucket from the database, without a create call."""
    from app import context
    from app.archive import storage

    name = storage.bucket_name("account_2")
    storage.ensure_bucket(name)
    context.use_settings(settings)  # a fresh client: this process's memory is gone
    assert not storage.is_known(name)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(settings.storage_emulator_host)
        storage.ensure_bucket(name)
        assert len(rsps.calls) == 0
    assert storage.is_known(name)


def test_user_mapping_records_when_its_bucket_was_created(db: Any) -> None:
    from app.archive import storage
    from app.users import contacts as users

    service.ensure_user("user-7")
    assert db.fetch_one("users.user_get", {"user_id": "user-7"})["bucket_created_at"] is None
    storage.ensure_bucket(users.user_bucket("user-7"))
    assert db.fetch_one("users.user_get", {"user_id": "user-7"})["bucket_created_at"] is not None


def test_an_existing_bucket_of_our_project_is_adopted(gcs: Any, db: Any, use_settings: Any) -> None:
    from app.archive import storage

    use_settings(gcs_project_number="0")  # the emulator's project number
    name = storage.bucket_name("account_3")
    gcs.create_bucket(name)  # made earlier, e.g. by a previous installation, without our settings
    bucket = storage.ensure_bucket(name)
    storage.put_json(bucket, "probe.json", {"ok": True})
    row = db.fetch_one("archive.bucket_get", {"bucket_name": name})
    assert row["state"] == "ready" and row["how"] == "adopted"


def test_a_bucket_of_another_project_gets_no_data(
    gcs: Any, db: Any, use_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from app.archive import storage

    use_settings(gcs_project_number="123456789")  # the emulator's buckets say project number 0
    name = storage.bucket_name("account_4")
    gcs.create_bucket(name)
    with caplog.at_level(logging.ERROR), pytest.raises(storage.ForeignBucket):
        storage.ensure_bucket(name)
    assert any("ANOTHER PROJECT" in r.getMessage() for r in caplog.records)
    row = db.fetch_one("archive.bucket_get", {"bucket_name": name})
    assert row["state"] == "foreign"
    # Remembered: refused again without asking GCS.
    with pytest.raises(storage.ForeignBucket):
        storage.ensure_bucket(name)
    assert objects(name) == {}


def test_our_project_number_is_learned_from_a_bucket_we_created(gcs: Any, db: Any) -> None:
    from app.archive import storage

    storage.ensure_bucket(storage.bucket_name("account_5"))
    assert storage.our_project_number() == "0"  # what the emulator put on the bucket we created


def test_a_vanished_bucket_is_created_again_on_write(gcs: Any, db: Any) -> None:
    from app.archive import storage

    name = storage.bucket_name("account_6")
    bucket = storage.ensure_bucket(name)
    gcs.bucket(name).delete()  # deleted behind the service's back
    assert storage.put_json(bucket, "a.json", {"a": 1}) == f"gs://{name}/a.json"
    assert set(objects(name)) == {"a.json"}


def test_creation_rate_is_shared_and_throttles(use_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.archive import storage

    use_settings(gcs_bucket_create_rate="1 per 2 seconds")
    monkeypatch.setattr(storage, "INLINE_WAIT_SECONDS", 0.0)
    storage.ensure_bucket(storage.bucket_name("account_10"))
    with pytest.raises(storage.BucketCreationThrottled) as first:
        storage.ensure_bucket(storage.bucket_name("account_11"))
    with pytest.raises(storage.BucketCreationThrottled) as second:
        storage.ensure_bucket(storage.bucket_name("account_12"))
    assert 0 < first.value.retry_after <= 2.0
    # Waiting names queue: the second waits one more slot.
    assert second.value.retry_after == pytest.approx(first.value.retry_after + 2.0, abs=0.3)
    # A short wait is taken inline.
    monkeypatch.setattr(storage, "INLINE_WAIT_SECONDS", 3.0)
    started = time.monotonic()
    storage.ensure_bucket(storage.bucket_name("account_11"))
    assert time.monotonic() - started >= 0.5


# ------------------------------------------------------------------------------------------
# objects


def test_writes_are_append_only(gcs: Any) -> None:
    from app.archive import storage

    bucket = storage.ensure_bucket(storage.bucket_name("account_20"))
    first = storage.write_json(bucket, "whatsapp-messages/2026-11-20/1.json", {"v": 1})
    generation = gcs.bucket(bucket.name).get_blob("whatsapp-messages/2026-11-20/1.json").generation
    second = storage.write_json(bucket, "whatsapp-messages/2026-11-20/1.json", {"v": 2})
    assert first.created and not second.created
    assert first.uri == second.uri == f"gs://{bucket.name}/whatsapp-messages/2026-11-20/1.json"
    blob = gcs.bucket(bucket.name).get_blob("whatsapp-messages/2026-11-20/1.json")
    assert blob.generation == generation
    assert json.loads(blob.download_as_bytes()) == {"v": 1}
    assert blob.content_type.startswith("application/json")
    assert (
        storage.put_bytes(bucket, "x.bin", b"\x00\x01", "application/octet-stream")
        == f"gs://{bucket.name}/x.bin"
    )


def test_copy_and_delete_objects(gcs: Any) -> None:
    from app.archive import storage

    source = storage.ensure_bucket(storage.bucket_name("account_21"))
    target = storage.ensure_bucket(storage.bucket_name("user-21"))
    storage.put_bytes(source, "a/b.ogg", b"OggS" + b"\x00" * 100, "audio/ogg")
    assert storage.copy_object(source.name, "a/b.ogg", target).created
    assert not storage.copy_object(source.name, "a/b.ogg", target).created
    copied = gcs.bucket(target.name).get_blob("a/b.ogg")
    assert copied.content_type == "audio/ogg" and copied.size == 104
    assert storage.delete_object(source.name, "a/b.ogg")
    assert not storage.delete_object(source.name, "a/b.ogg")


def test_delete_bucket_removes_objects_then_the_bucket(gcs: Any, db: Any) -> None:
    from app.archive import storage

    name = storage.bucket_name("user-30")
    bucket = storage.ensure_bucket(name)
    for i in range(3):
        storage.put_json(bucket, f"whatsapp-messages/2026-11-20/{i}.json", {"i": i})
    assert storage.delete_bucket(name) == 3
    assert name not in {b.name for b in gcs.list_buckets()}
    assert db.fetch_one("archive.bucket_get", {"bucket_name": name}) is None
    assert not storage.is_known(name)
    assert storage.delete_bucket(name) == 0  # a missing bucket
