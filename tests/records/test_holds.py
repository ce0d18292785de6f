"""Legal holds: what a hold refuses, what it sends to GCS, and bad input.

Neither emulator keeps object holds (fake-gcs-server and gcp-storage-emulator drop
`temporaryHold` and `defaultEventBasedHold`), so the GCS side is checked on the requests the
service sends; that GCS then refuses to delete a held object is GCS's to show."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
import responses

from app import context
from app.records import holds
from app.users.erase import erase_user
from tests.helpers.common import add_user
from tests.records.conftest import GcsRequests, archive_user

pytestmark = pytest.mark.usefixtures("records_env")

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _count(table: str, user_id: str) -> int:
    with context.db().transaction() as cur:
        cur.execute(f"SELECT count(*) AS n FROM {table} WHERE user_id = %s", (user_id,))  # noqa: S608
        return int(cur.fetchone()["n"])


def test_a_hold_refuses_erasure_and_names_the_hold(
    http: responses.RequestsMock, client: Any, runner: Any
) -> None:
    made = archive_user(http, "ana", 701, texts=3)
    answer = client.post(
        "/admin/users/ana/holds", headers=ADMIN, json={"reason": "case 2026-17", "by": "Lee"}
    )
    assert answer.status_code == 201
    hold = answer.get_json()
    assert hold["reason"] == "case 2026-17" and hold["placed_by"].startswith("Lee (admin API")

    refused = client.delete("/admin/users/ana", headers=ADMIN)
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["error"] == "on_legal_hold"
    assert body["detail"].startswith(
        f"erasure refused: user ana is on legal hold #{hold['id']} (case 2026-17;"
    )
    result = runner.invoke(args=["users", "erase", "ana", "--yes"])
    assert result.exit_code == 1
    assert f"on legal hold #{hold['id']}" in result.output
    # Nothing was deleted: rows and objects are all there.
    assert _count("meeting_notes", "ana") == len(made.note_ids)
    bucket = context.db().fetch_one("users.user_get", {"user_id": "ana"})["bucket_name"]
    assert len(list(context.gcs().list_blobs(bucket))) == 3

    lifted = client.delete(f"/admin/users/ana/holds/{hold['id']}", headers=ADMIN, json={"reason": "settled"})
    assert lifted.status_code == 200 and lifted.get_json()["holds_left"] == 0
    assert client.delete("/admin/users/ana", headers=ADMIN).status_code == 200
    assert _count("meeting_notes", "ana") == 0


def test_the_database_refuses_to_delete_a_user_on_hold(db: Any) -> None:
    add_user("ana")
    hold = holds.place("ana", "dispute", "legal team")
    with pytest.raises(psycopg2.errors.RestrictViolation, match=f"on legal hold #{hold['id']} \\(dispute"):
        conn = psycopg2.connect(context.settings().database_url)
        try:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM user_bucket_mapping WHERE user_id = 'ana'")
        finally:
            conn.close()


def test_holds_are_recorded_and_lifting_one_keeps_the_others(db: Any, runner: Any) -> None:
    add_user("ana")
    first = runner.invoke(args=["users", "hold", "ana", "--reason", "case A", "--by", "Lee"])
    second = runner.invoke(args=["users", "hold", "ana", "--reason", "case B", "--by", "Kim"])
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert "legal hold #1 placed on ana (case A)" in first.output
    result = runner.invoke(args=["users", "unhold", "ana", "1", "--by", "Lee", "--reason", "closed"])
    assert result.exit_code == 0 and "1 hold(s) still on" in result.output
    with pytest.raises(holds.OnLegalHold, match="legal hold #2 \\(case B; placed by Kim"):
        erase_user("ana")
    shown = runner.invoke(args=["users", "holds", "ana"])
    assert "ON LEGAL HOLD" in shown.output and "closed" in shown.output and "case B" in shown.output
    again = runner.invoke(args=["users", "unhold", "ana", "1"])
    assert again.exit_code == 1 and "already lifted" in again.output


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 422, "invalid"),
        ({"reason": ""}, 422, "invalid"),
        ({"reason": "x" * 501}, 422, "invalid"),
        ({"reason": "   "}, 422, "invalid"),
        ({"reason": "ok", "extra": 1}, 422, "invalid"),
    ],
)
def test_bad_hold_requests(client: Any, body: dict[str, Any], status: int, error: str) -> None:
    add_user("ana")
    answer = client.post("/admin/users/ana/holds", headers=ADMIN, json=body)
    assert answer.status_code == status
    assert answer.get_json()["error"] == error


def test_a_hold_on_an_unknown_or_erased_user_is_refused(http: responses.RequestsMock, client: Any) -> None:
    answer = client.post("/admin/users/nobody/holds", headers=ADMIN, json={"reason": "case"})
    assert answer.status_code == 404 and answer.get_json()["detail"] == "no user 'nobody'"
    archive_user(http, "ana", 702, texts=1)
    erase_user("ana")
    answer = client.post("/admin/users/ana/holds", headers=ADMIN, json={"reason": "case"})
    assert answer.status_code == 409
    assert answer.get_json() == {
        "error": "erased",
        "detail": "user ana was erased: nothing of theirs is kept to hold",
    }
    assert context.db().fetch_one("holds.holds_active", {"user_id": "ana"}) is None


def test_a_hold_is_refused_for_a_user_the_tombstones_say_was_erased(db: Any, client: Any) -> None:
    """The erasure's tombstones tell an erased user from an unknown one (and a re-consent makes
    the user unknown again)."""
    from app.archive import storage

    with context.db().transaction() as cur:
        cur.execute(
            "INSERT INTO erased_users (user_hash, bucket_name) VALUES ('h', %s)",
            (storage.bucket_name("gone"),),
        )
    answer = client.post("/admin/users/gone/holds", headers=ADMIN, json={"reason": "case"})
    assert answer.status_code == 409
    assert answer.get_json() == {
        "error": "erased",
        "detail": "user gone was erased: nothing of theirs is kept to hold",
    }
    with context.db().transaction() as cur:
        cur.execute("UPDATE erased_users SET restored_at = now()")
    answer = client.post("/admin/users/gone/holds", headers=ADMIN, json={"reason": "case"})
    assert answer.status_code == 404 and answer.get_json()["detail"] == "no user 'gone'"


# ------------------------------------------------------------------------------------------
# GCS


def test_gcs_holds_are_set_on_every_object_and_new_ones_by_default_then_released(
    http: responses.RequestsMock, gcs_requests: GcsRequests, run_jobs: Any
) -> None:
    archive_user(http, "ana", 703, texts=3, voice_notes=1)
    bucket = context.db().fetch_one("users.user_get", {"user_id": "ana"})["bucket_name"]
    names = sorted(b.name for b in context.gcs().list_blobs(bucket))
    assert len(names) == 6  # 4 messages, the audio and its transcript
    hold = holds.place("ana", "case", "legal team")
    assert hold["storage"] == "queued"
    gcs_requests.calls.clear()
    run_jobs(queues=("maintenance",))
    bucket_patch = [body for url, body in gcs_requests.patches(f"/b/{bucket}?")]
    assert bucket_patch == [{"defaultEventBasedHold": True}]
    object_patches = {url.split("/o/")[1].split("?")[0]: body for url, body in gcs_requests.patches("/o/")}
    assert len(object_patches) == len(names)
    assert all(body == {"temporaryHold": True} for body in object_patches.values())
    state = context.db().fetch_one("holds.hold_storage_get", {"user_id": "ana"})
    assert state["state"] == "held"
    # The bucket was patched first: an object written after it gets GCS's default hold.
    first_object = next(i for i, c in enumerate(gcs_requests.calls) if c[0] == "PATCH" and "/o/" in c[1])
    first_bucket = next(i for i, c in enumerate(gcs_requests.calls) if c[0] == "PATCH" and "/o/" not in c[1])
    assert first_bucket < first_object

    gcs_requests.calls.clear()
    holds.lift("ana", hold["id"], "legal team")
    run_jobs(queues=("maintenance",))
    assert [body for url, body in gcs_requests.patches(f"/b/{bucket}?")] == [{"defaultEventBasedHold": False}]
    released = [body for url, body in gcs_requests.patches("/o/")]
    assert len(released) == len(names)
    assert all(body == {"temporaryHold": False, "eventBasedHold": False} for body in released)
    assert context.db().fetch_one("holds.hold_storage_get", {"user_id": "ana"})["state"] == "released"


def test_a_hold_on_a_user_without_a_bucket_is_set_once_the_bucket_exists(
    http: responses.RequestsMock, gcs_requests: GcsRequests
) -> None:
    add_user("ana", contact_id=704)
    hold = holds.place("ana", "case", "legal team")
    assert holds.apply_for_hold(hold["id"]).state == "no_bucket"  # type: ignore[union-attr]
    archive_user(http, "ana", 704, texts=1)
    assert holds.sweep() == {"held": 1}
    assert holds.sweep() == {}
