"""One-time link codes: issued hashed, redeemed once, expiring, attempts limited."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.helpers.admin import add_link, add_user, count, sql, unreachable

pytestmark = pytest.mark.usefixtures("admin_env")

PHONE = "+5491155550123"


def redeem(code: str, contact_id: int | None = 287, phone: str | None = PHONE, account_id: int = 1) -> Any:
    from app.users.link_codes import redeem_link_code

    return redeem_link_code(account_id, contact_id, phone, code)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_code_links_the_contact_that_sends_it(redis_conn: Any) -> None:
    from rq import Queue

    from app.users import link_codes as links

    add_user("u1")
    issued = links.issue_code("u1")
    assert len(issued.code) == 6 and issued.code.isdigit()
    result = redeem(issued.code)
    assert (result.ok, result.reason, result.user_id) == (True, "linked", "u1")
    assert {(r["link_type"], r["link_value"]) for r in sql("SELECT * FROM contact_links")} == {
        ("contact_id", "287"),
        ("phone", PHONE),
    }
    used = sql("SELECT used_at, used_by_contact_id, used_by_account_id FROM link_codes")[0]
    assert (
        used["used_at"] is not None and used["used_by_contact_id"] == 287 and used["used_by_account_id"] == 1
    )
    # The move of the contact's archive into the user's bucket is queued.
    [request] = sql("SELECT id, chatwoot_account_id, user_id, status FROM rehome_requests")
    assert (request["chatwoot_account_id"], request["user_id"], request["status"]) == (1, "u1", "pending")
    assert Queue("maintenance", connection=redis_conn).job_ids == [f"rehome_{request['id']}"]


def test_a_used_code_does_not_work_again() -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    assert redeem(code).ok
    again = redeem(code, contact_id=300, phone="+5511988887777")
    assert (again.ok, again.reason, again.user_id) == (False, "used", None)
    assert count("contact_links", "link_value = '300'") == 0


def test_an_expired_code_is_refused() -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    sql("UPDATE link_codes SET expires_at = now() - interval '1 second'")
    result = redeem(code)
    assert (result.ok, result.reason) == (False, "expired")
    assert count("contact_links") == 0


def test_codes_expire_after_ten_minutes() -> None:
    from app.users import link_codes as links

    add_user("u1")
    links.issue_code("u1")
    row = sql("SELECT expires_at - created_at AS ttl FROM link_codes")[0]
    assert row["ttl"].total_seconds() == pytest.approx(600, abs=1)


def test_an_unknown_code_is_refused() -> None:
    result = redeem("123456")
    assert (result.ok, result.reason) == (False, "invalid_code")
    assert redeem("12345").reason == "invalid_code"
    assert redeem("abcdef").reason == "invalid_code"


def test_guessing_from_one_contact_is_stopped() -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    limit = int(links.CONTACT_FAILURE_LIMIT.split()[0])
    for _ in range(limit):
        assert redeem(wrong(code)).reason == "invalid_code"
    # Now even the right code is refused for this contact...
    assert redeem(code).reason == "too_many_attempts"
    assert count("contact_links") == 0
    # ...and a contact identified by its phone only is counted by its phone.
    for _ in range(limit):
        redeem(wrong(code), contact_id=None, phone="+5511988887777")
    assert redeem(code, contact_id=None, phone="+5511988887777").reason == "too_many_attempts"
    # The code itself still works for its owner from another contact.
    assert redeem(code, contact_id=301, phone="+5511977776666").ok


def test_guessing_from_many_contacts_is_alerted_and_blocks_no_one_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    limit = int(links.ACCOUNT_ALERT_LIMIT.split()[0])
    for contact in range(limit + 1):
        assert redeem(wrong(code), contact_id=10_000 + contact, phone=None).reason == "invalid_code"
    assert "many wrong link codes in one account" in caplog.text
    # The account's real users still link (25 wrong codes used to block the whole account).
    assert redeem(code, contact_id=20_000, phone=None).ok


def test_a_code_for_one_account_does_not_work_from_another() -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1", account_id=2).code
    assert redeem(code, account_id=1).reason == "invalid_code"
    result = redeem(code, account_id=2)
    assert result.ok and sql("SELECT chatwoot_account_id FROM contact_links")[0]["chatwoot_account_id"] == 2


def test_a_new_code_replaces_the_users_unused_one() -> None:
    from app.users import link_codes as links

    add_user("u1")
    first = links.issue_code("u1").code
    second = links.issue_code("u1").code
    if first != second:
        assert redeem(first).reason == "invalid_code"
    assert redeem(second).ok
    assert count("link_codes") == 1


def test_a_contact_linked_to_another_user_keeps_its_link_and_the_code_stays_usable() -> None:
    from app.users import link_codes as links

    add_user("u1")
    add_user("u2")
    add_link("u2", "contact_id", "287")
    code = links.issue_code("u1").code
    result = redeem(code)
    assert (result.ok, result.reason) == (False, "linked_to_another_user")
    assert sql("SELECT user_id FROM contact_links")[0]["user_id"] == "u2"
    assert redeem(code, contact_id=300, phone="+5511988887777").ok


def test_a_contact_already_linked_to_the_same_user() -> None:
    from app.users import link_codes as links

    add_user("u1")
    add_link("u1", "contact_id", "287")
    add_link("u1", "phone", PHONE)
    result = redeem(links.issue_code("u1").code)
    assert (result.ok, result.reason, result.user_id) == (True, "already_linked", "u1")


def test_no_contact_to_link() -> None:
    assert redeem("123456", contact_id=None, phone=None).reason == "no_contact"
    assert redeem("123456", contact_id=None, phone="not a phone").reason == "no_contact"


def test_unknown_user_gets_no_code() -> None:
    from app.users import link_codes as links

    with pytest.raises(links.UnknownUser):
        links.issue_code("nobody")


def test_two_contacts_sending_the_same_code_at_once_link_one() -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def attempt(contact: int) -> None:
        barrier.wait()
        results.append(redeem(code, contact_id=contact, phone=None))

    threads = [threading.Thread(target=attempt, args=(400 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.reason for r in results) == ["linked", "used", "used", "used"]
    assert count("contact_links") == 1


def test_redis_down_means_no_redeeming(use_settings: Any) -> None:
    from app.users import link_codes as links

    add_user("u1")
    code = links.issue_code("u1").code
    with unreachable(use_settings, redis_url="redis://127.0.0.1:{port}/0"):
        result = redeem(code)
    assert (result.ok, result.reason) == (False, "unavailable")
    assert count("contact_links") == 0
    assert redeem(code).ok


def test_the_rehome_job_moves_the_archive_and_is_a_no_op_for_an_erased_user(run_jobs: Any) -> None:
    from app import links as old_links
    from app.archive import storage
    from app.users import link_codes as links
    from app.users import rehome
    from tests.helpers.archive import ingest, objects, text_message

    note_id = ingest(text_message(6001, contact_id=287))
    run_jobs(queues=("archive",))
    add_user("u1")
    assert redeem(links.issue_code("u1").code).ok
    run_jobs(queues=("maintenance",))
    row = sql("SELECT user_id, gcs_storage_path FROM meeting_notes WHERE id = %s", (note_id,))[0]
    assert row["user_id"] == "u1"
    assert any(name.endswith("/6001.json") for name in objects(storage.bucket_name("u1")))
    assert rehome.rehome_request(10_000) == {"messages": 0, "objects_copied": 0, "objects_deleted": 0}
    # A move queued by an earlier version under its old name still runs: for an erased user, nothing.
    assert old_links.rehome_job(1, "gone") is False
