"""Bucket settings read back from a server, and `flask storage audit` repairing drifted buckets.

fake-gcs-server (the suite's emulator) drops lifecycle, access, label and soft-delete settings;
gcp-storage-emulator keeps them, so these tests run against one of their own. What no emulator
can show (that GCS enforces the settings) is left to GCS; what the code sends is checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.archive import metadata_emulator as own_emulator

pytestmark = pytest.mark.usefixtures("archive_env")

OUR_TRANSITIONS = [
    (30, "SetStorageClass", "NEARLINE"),
    (90, "SetStorageClass", "COLDLINE"),
    (365, "SetStorageClass", "ARCHIVE"),
]


@pytest.fixture
def metadata_emulator(app: Any, use_settings: Any) -> Iterator[str]:
    """A gcp-storage-emulator of this test's own (in memory), as the service's GCS."""
    with own_emulator() as url:
        use_settings(storage_emulator_host=url)
        yield url


def transitions(bucket: Any) -> list[tuple[int, str, str]]:
    return sorted(
        (r["condition"]["age"], r["action"]["type"], r["action"].get("storageClass", ""))
        for r in bucket.lifecycle_rules
    )


def read_back(name: str) -> Any:
    from app import context

    return context.gcs().get_bucket(name)


def test_a_new_bucket_has_our_settings_read_back_from_the_server(metadata_emulator: str, db: Any) -> None:
    from app.archive import storage

    name = storage.bucket_name("user-settings")
    storage.ensure_bucket(name)
    bucket = read_back(name)
    assert transitions(bucket) == OUR_TRANSITIONS
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled is True
    assert bucket.iam_configuration.public_access_prevention == "enforced"
    assert bucket.labels["service"] == "meeting-notes"
    # Soft delete off: an erased user's objects are not kept for 7 days (GCS's default).
    assert int(bucket.soft_delete_policy.retention_duration_seconds or 0) == 0
    assert storage.bucket_differences(bucket) == []


def test_soft_delete_retention_is_the_operators_choice(
    metadata_emulator: str, db: Any, use_settings: Any
) -> None:
    from app.archive import storage

    use_settings(soft_delete_retention_seconds=7 * 86400)
    name = storage.bucket_name("user-keeps-deleted")
    storage.ensure_bucket(name)
    assert int(read_back(name).soft_delete_policy.retention_duration_seconds) == 7 * 86400


def test_audit_finds_and_fixes_a_bucket_whose_lifecycle_was_removed(
    metadata_emulator: str, runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import context
    from app.archive import storage

    good, broken, by_hand = (storage.bucket_name(k) for k in ("user-good", "user-broken", "user-by-hand"))
    storage.ensure_bucket(good)
    storage.ensure_bucket(broken)
    bucket = read_back(broken)
    bucket.lifecycle_rules = [{"action": {"type": "Delete"}, "condition": {"age": 3650}}]
    bucket.patch()  # an admin replaced our transitions with a rule of their own
    context.gcs().create_bucket(by_hand)  # made outside the service, with the server's defaults
    slots: list[str] = []
    wait_for_slot = storage.wait_for_update_slot

    def counted(name: str, patience: float = 600.0) -> None:
        slots.append(name)
        wait_for_slot(name, patience)

    monkeypatch.setattr(storage, "wait_for_update_slot", counted)

    listed = runner.invoke(args=["storage", "audit"])
    assert listed.exit_code == 1, listed.output
    assert f"{broken}: differs" in listed.output and "lifecycle transitions none" in listed.output
    assert f"{by_hand}: differs" in listed.output and "soft delete 604800 s (want 0 s)" in listed.output
    assert good not in listed.output
    assert slots == []  # looking changes nothing

    fixed = runner.invoke(args=["storage", "audit", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert f"{broken}: fixed" in fixed.output and f"{by_hand}: fixed" in fixed.output
    assert sorted(slots) == sorted([broken, by_hand])  # one rate-limited change per bucket
    repaired = read_back(broken)
    assert transitions(repaired) == sorted([*OUR_TRANSITIONS, (3650, "Delete", "")])  # theirs kept
    for name in (broken, by_hand):
        assert storage.bucket_differences(read_back(name)) == []

    again = runner.invoke(args=["storage", "audit", "--fix"])
    assert again.exit_code == 0 and "every bucket has the required settings" in again.output
    assert len(slots) == 2  # a second run changes nothing


def test_what_the_create_call_sends(settings: Any, db: Any) -> None:
    """Where an emulator cannot show a setting, the request says it (fake-gcs-server keeps none)."""
    import json
    import re

    import responses

    from app.archive import storage

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.PassthroughResponse(responses.POST, re.compile(r".*/storage/v1/b\?.*")))
        rsps.add_passthru(settings.storage_emulator_host)
        storage.ensure_bucket(storage.bucket_name("user-body"))
        [create] = [c for c in rsps.calls if c.request.method == "POST" and "/upload/" not in c.request.url]
    sent = json.loads(create.request.body)
    assert int(sent["softDeletePolicy"]["retentionDurationSeconds"]) == 0
    assert sent["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert sent["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert sent["labels"] == {"service": "meeting-notes", "component": "archive"}
    assert len(sent["lifecycle"]["rule"]) == 3
