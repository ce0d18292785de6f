"""The admin page's two actions: retry work of the dead letter, and link an unmapped contact to a
user. Both need the session and the form's CSRF token, go through the same code as the CLI
(`flask requeue`, the users service) and are written to the log with the client's address."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rq import Queue

from app.jobs import ARCHIVE_MESSAGE, REHOME, TRANSCRIBE_MESSAGE, job_id
from tests.helpers.admin import add_link, add_note, add_user, count, csrf_of, sign_in, sql

pytestmark = pytest.mark.usefixtures("admin_env")


@pytest.fixture
def signed_in(client: Any) -> Any:
    sign_in(client)
    return client


def csrf(client: Any) -> str:
    return csrf_of(client.get("/admin/").get_data(as_text=True))


def notices(client: Any, path: str = "/admin/") -> str:
    return client.get(path).get_data(as_text=True).split("<main>", 1)[1].split("<section", 1)[0]


def audited(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.admin.audit" and getattr(r, "action", None) == action]


def status(note_id: int) -> dict[str, Any]:
    return sql(
        "SELECT processing_status, transcription_status, attempts FROM meeting_notes WHERE id = %s",
        (note_id,),
    )[0]


# ----------------------------------------------------------------------------------------------
# retry


def test_the_dead_letter_is_listed_with_a_retry_button(signed_in: Any) -> None:
    dead = add_note(status="error", error="gave up after 6 attempts: gcs unavailable")
    add_note()
    html = signed_in.get("/admin/").get_data(as_text=True)
    row = html.split(f'data-dead="archive:{dead}"')[1].split("</tr>")[0]
    assert "gave up after 6 attempts: gcs unavailable" in row
    assert f'name="id" value="{dead}"' in row and 'name="stage" value="archive"' in row


def test_retry_revives_an_archive_error_and_queues_its_job(
    signed_in: Any, redis_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = add_note(status="error", error="gcs unavailable")
    caplog.set_level(logging.INFO, logger="app.admin.audit")
    response = signed_in.post(
        "/admin/retry",
        data={
            "csrf_token": csrf(signed_in),
            "stage": "archive",
            "id": str(dead),
            "next": "/admin/messages?q=x",
        },
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/messages?q=x")
    assert status(dead)["processing_status"] == "received"
    assert Queue("archive", connection=redis_conn).job_ids == [job_id(ARCHIVE_MESSAGE, dead)]
    assert f"archive {dead}: queued again." in notices(signed_in)
    [line] = audited(caplog, "retry")
    assert (line.stage, line.row_id, line.outcome, line.client) == (
        "archive",
        dead,
        ["enqueued"],
        "127.0.0.1",
    )


def test_retry_of_a_failed_transcription(signed_in: Any, redis_conn: Any) -> None:
    voice = add_note(transcription_status="failed")
    response = signed_in.post(
        "/admin/retry", data={"csrf_token": csrf(signed_in), "stage": "transcription", "id": str(voice)}
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/")
    assert status(voice)["transcription_status"] == "pending"
    assert Queue("transcribe", connection=redis_conn).job_ids == [job_id(TRANSCRIBE_MESSAGE, voice)]


def test_nothing_to_retry_says_so(signed_in: Any, redis_conn: Any) -> None:
    done = add_note()
    response = signed_in.post(
        "/admin/retry", data={"csrf_token": csrf(signed_in), "stage": "archive", "id": str(done)}
    )
    assert response.status_code == 303
    assert f"archive {done}: nothing to retry" in notices(signed_in)
    assert status(done)["processing_status"] == "stored"
    assert Queue("archive", connection=redis_conn).job_ids == []


def test_retry_needs_the_csrf_token_and_the_session(signed_in: Any, client: Any, app: Any) -> None:
    dead = add_note(status="error", error="x")
    assert signed_in.post("/admin/retry", data={"stage": "archive", "id": str(dead)}).status_code == 400
    forged = {"csrf_token": "forged", "stage": "archive", "id": str(dead)}
    assert signed_in.post("/admin/retry", data=forged).status_code == 400
    stranger = app.test_client()
    response = stranger.post("/admin/retry", data=forged)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/login")
    assert status(dead)["processing_status"] == "error"


@pytest.mark.parametrize(
    "form",
    [{"stage": "everything", "id": "1"}, {"stage": "archive", "id": "x"}, {"stage": "archive", "id": "-4"}],
)
def test_retry_of_nothing_is_a_400(signed_in: Any, form: dict[str, str]) -> None:
    assert signed_in.post("/admin/retry", data={"csrf_token": csrf(signed_in), **form}).status_code == 400


def test_a_redirect_goes_only_to_our_own_pages(signed_in: Any) -> None:
    dead = add_note(status="error", error="x")
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin/\\evil"):
        response = signed_in.post(
            "/admin/retry",
            data={"csrf_token": csrf(signed_in), "stage": "archive", "id": str(dead), "next": target},
        )
        assert response.headers["Location"].endswith("/admin/"), target


# ----------------------------------------------------------------------------------------------
# link a contact


def test_link_an_unmapped_contact_to_a_user(
    signed_in: Any, redis_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_user("u1")
    for _ in range(2):
        add_note(contact_id=970, name="Stranger", phone="+5511900000001")
    html = signed_in.get("/admin/").get_data(as_text=True)
    form = html.split('data-contact="1:970"')[1].split("</tr>")[0]
    assert 'action="/admin/contacts/link"' in form and 'list="user-ids"' in form
    assert '<option value="u1">' in html  # the existing users are offered
    caplog.set_level(logging.INFO, logger="app.admin.audit")

    response = signed_in.post(
        "/admin/contacts/link",
        data={"csrf_token": csrf_of(html), "account_id": "1", "contact_id": "970", "user_id": "u1"},
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/user/u1")
    assert sql("SELECT user_id, link_type, link_value FROM contact_links") == [
        {"user_id": "u1", "link_type": "contact_id", "link_value": "970"}
    ]
    assert count("rehome_requests") == 1
    assert any(j.startswith(REHOME.id_prefix) for j in Queue(REHOME.queue, connection=redis_conn).job_ids)
    page = signed_in.get("/admin/user/u1").get_data(as_text=True)
    assert "contact 970 of account 1 is linked to user u1." in page
    assert 'data-link="1:contact_id:970"' in page
    assert 'data-contact="1:970"' not in signed_in.get("/admin/").get_data(as_text=True)
    [line] = audited(caplog, "link")
    assert (line.user_id, line.account_id, line.contact_id, line.client) == ("u1", 1, 970, "127.0.0.1")


def test_link_to_a_new_user_only_when_asked(signed_in: Any) -> None:
    add_note(contact_id=970)
    form = {"csrf_token": csrf(signed_in), "account_id": "1", "contact_id": "970", "user_id": "new-user"}
    response = signed_in.post("/admin/contacts/link", data=form)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/#unmapped")
    assert "there is no user &#39;new-user&#39;" in notices(signed_in)
    assert count("contact_links") == 0 and count("user_bucket_mapping") == 0

    response = signed_in.post("/admin/contacts/link", data={**form, "create": "yes"})
    assert response.headers["Location"].endswith("/admin/user/new-user")
    assert count("user_bucket_mapping", "user_id = 'new-user'") == 1
    assert count("contact_links", "user_id = 'new-user'") == 1


def test_link_refusals_say_why_and_change_nothing(signed_in: Any) -> None:
    add_user("u1")
    add_user("u2")
    add_link("u2", "contact_id", "970")
    add_note(contact_id=970)
    token = csrf(signed_in)
    taken = {"csrf_token": token, "account_id": "1", "contact_id": "970", "user_id": "u1"}
    assert signed_in.post("/admin/contacts/link", data=taken).status_code == 303
    assert "already linked to user u2" in notices(signed_in)
    bad_id = {**taken, "contact_id": "971", "user_id": "a/b", "create": "yes"}
    signed_in.post("/admin/contacts/link", data=bad_id)
    assert "no slash" in notices(signed_in)
    assert sql("SELECT user_id, link_value FROM contact_links ORDER BY id") == [
        {"user_id": "u2", "link_value": "970"}
    ]
    assert signed_in.post("/admin/contacts/link", data={**taken, "csrf_token": ""}).status_code == 400
    assert signed_in.post("/admin/contacts/link", data={**taken, "contact_id": "x"}).status_code == 400
