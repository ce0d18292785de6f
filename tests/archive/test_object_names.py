"""Object names that cannot collide across accounts, and a 412 that is success only for the same message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.users import service
from tests.helpers.archive import ingest, note, objects, read_json, run_archive, text_message

pytestmark = pytest.mark.usefixtures("archive_env")

CREATED = datetime(2026, 11, 20, 14, 21, 40, tzinfo=UTC)


def test_the_naming_rule(use_settings: Any) -> None:
    from app.archive import storage

    # CHATWOOT_ACCOUNT_ID=1 in the tests: the default account keeps the seed guide's names.
    assert storage.message_prefix(CREATED, 9877, 1) == "whatsapp-messages/2026-11-20/9877"
    assert storage.message_prefix(CREATED, 9877, 7) == "whatsapp-messages/accounts/7/2026-11-20/9877"
    assert (
        storage.message_prefix(CREATED, 9877, 1, qualified=True)
        == "whatsapp-messages/accounts/1/2026-11-20/9877"
    )
    # Hand-made ids cannot make one name look like another: they are one encoded segment.
    assert storage.message_prefix(CREATED, "accounts/7", 1) == "whatsapp-messages/2026-11-20/accounts%2F7"
    use_settings(chatwoot_account_id=None)  # no default account: every name says its account
    assert storage.message_prefix(CREATED, 9877, 1) == "whatsapp-messages/accounts/1/2026-11-20/9877"


def test_note_prefix_is_where_the_row_says_its_message_is() -> None:
    from app.archive import storage

    row = {
        "gcs_storage_path": "gs://b/whatsapp-messages/2026-11-20/5.json",
        "chatwoot_account_id": 7,
        "chatwoot_message_id": "5",
        "message_created_at": CREATED,
        "created_at": CREATED,
    }
    assert storage.note_prefix(row) == "whatsapp-messages/2026-11-20/5"  # an object named by an older rule
    assert (
        storage.note_prefix({**row, "gcs_storage_path": None}) == "whatsapp-messages/accounts/7/2026-11-20/5"
    )


def test_one_message_id_in_two_accounts_keeps_both_messages(run_jobs: Any) -> None:
    """One user linked in two accounts; each account sends message 5555 on the same day."""
    from app.archive import storage

    service.link_contact(1, "user-both", contact_id=287)
    service.link_contact(7, "user-both", contact_id=901)
    first = ingest(text_message(5555, account_id=1, contact_id=287, content="from account one"))
    second = ingest(text_message(5555, account_id=7, contact_id=901, content="from account seven"))
    run_archive(run_jobs)
    bucket = storage.bucket_name("user-both")
    rows = [note(first), note(second)]
    assert [r["processing_status"] for r in rows] == ["stored", "stored"]
    assert [r["gcs_storage_path"] for r in rows] == [
        f"gs://{bucket}/whatsapp-messages/2026-11-20/5555.json",
        f"gs://{bucket}/whatsapp-messages/accounts/7/2026-11-20/5555.json",
    ]
    assert read_json(bucket, "whatsapp-messages/2026-11-20/5555.json")["content"] == "from account one"
    assert (
        read_json(bucket, "whatsapp-messages/accounts/7/2026-11-20/5555.json")["content"]
        == "from account seven"
    )


def test_a_name_taken_by_another_message_is_never_counted_as_archived(gcs: Any, use_settings: Any) -> None:
    """The short name of a default-account message holds another account's message (written when
    that account was the default): the message goes to its account-qualified name."""
    from app.archive import storage
    from app.archive.batch import archive_message

    service.link_contact(1, "user-moved", contact_id=287)
    bucket = storage.ensure_bucket(storage.bucket_name("user-moved"))
    theirs = text_message(6001, account_id=3, content="written under the old default account")
    storage.write_json(bucket, "whatsapp-messages/2026-11-20/6001.json", theirs)
    note_id = ingest(text_message(6001, account_id=1, contact_id=287, content="mine"), enqueue=False)
    assert archive_message(note_id) == "stored"
    assert note(note_id)["gcs_storage_path"] == (
        f"gs://{bucket.name}/whatsapp-messages/accounts/1/2026-11-20/6001.json"
    )
    assert read_json(bucket.name, "whatsapp-messages/2026-11-20/6001.json")["content"] == theirs["content"]
    assert read_json(bucket.name, "whatsapp-messages/accounts/1/2026-11-20/6001.json")["content"] == "mine"
    assert set(objects(bucket.name)) == {
        "whatsapp-messages/2026-11-20/6001.json",
        "whatsapp-messages/accounts/1/2026-11-20/6001.json",
    }
