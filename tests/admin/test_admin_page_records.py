"""The admin page's records actions on a user's page: export the user's archive (a download link,
deletion refused while on legal hold), and place and lift legal holds. Each goes through
app/records as the admin API and the CLI do, needs the session and the form's CSRF token, and is
written to the log with the client's address (never the download URL)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from rq import Queue

from app.jobs import APPLY_HOLD, EXPORT_ARCHIVE, job_id
from app.records import exports
from tests.helpers.admin import add_note, add_user, count, csrf_of, sign_in, sql

pytestmark = pytest.mark.usefixtures("admin_env")

ACTOR = "admin (admin page, 127.0.0.1)"


@pytest.fixture
def signed_in(client: Any) -> Any:
    sign_in(client)
    return client


def page(client: Any, user_id: str = "ana") -> str:
    response = client.get(f"/admin/user/{user_id}")
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def post(client: Any, path: str, **form: str) -> Any:
    token = csrf_of(page(client))
    return client.post(path, data={"csrf_token": token, **form})


def notices(html: str) -> str:
    return html.split("<main>", 1)[1].split("<section", 1)[0]


def audited(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.admin.audit" and getattr(r, "action", None) == action]


def built_export(user_id: str = "ana") -> int:
    """An export of the user's archive, requested and built as the worker builds it."""
    export_id = int(exports.request(user_id, "test", queue=False)["id"])
    assert exports.build(export_id).status == "done"
    return export_id


# ----------------------------------------------------------------------------------------------
# exports


def test_the_export_button_queues_an_export_and_the_page_lists_it(
    signed_in: Any, redis_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_user("ana")
    html = page(signed_in)
    assert 'id="no-exports"' in html
    assert 'action="/admin/user/ana/exports"' in html and "Export this user's archive" in html
    caplog.set_level(logging.INFO, logger="app.admin.audit")

    response = post(signed_in, "/admin/user/ana/exports")
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/user/ana")
    [export] = sql("SELECT id, status, requested_by FROM exports WHERE user_id = 'ana'")
    assert (export["status"], export["requested_by"]) == ("pending", ACTOR)
    assert Queue(EXPORT_ARCHIVE.queue, connection=redis_conn).job_ids == [
        job_id(EXPORT_ARCHIVE, export["id"])
    ]
    html = page(signed_in)
    assert f"Export {export['id']} of user ana is requested" in notices(html)
    row = html.split(f'data-export="{export["id"]}"')[1].split("</tr>")[0]
    assert 'status-pending">pending</span>' in row and ACTOR in row
    assert "Download link" not in row  # nothing to download yet
    [line] = audited(caplog, "export")
    assert (line.user_id, line.export_id, line.queued, line.client) == (
        "ana",
        export["id"],
        True,
        "127.0.0.1",
    )


def test_a_download_link_is_recorded_and_shown_never_logged(
    signed_in: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = add_user("ana")
    for _ in range(3):
        add_note(user_id="ana", bucket=bucket)
    export_id = built_export()
    add_note(user_id="ana", status="error", error="gcs unavailable")  # a Retry form on the page
    html = page(signed_in)
    row = html.split(f'data-export="{export_id}"')[1].split("</tr>")[0]
    assert 'status-done">done</span>' in row
    assert re.search(r'<td class="num">3</td>', row)  # the messages in it
    caplog.set_level(logging.INFO)

    response = post(signed_in, f"/admin/user/ana/exports/{export_id}/url")
    assert response.status_code == 200
    shown = response.get_data(as_text=True)
    link = re.search(r'id="export-url">.*?<a href="([^"]+)"', shown, re.S)
    assert link and f"exports%2F{export_id}%2Farchive-1.zip" in link.group(1)
    [event] = sql(
        "SELECT actor, detail FROM export_events WHERE export_id = %s AND event = 'url'", (export_id,)
    )
    assert event["actor"] == ACTOR and event["detail"]["expires_at"]
    [line] = audited(caplog, "export_url")
    assert (line.export_id, line.client) == (export_id, "127.0.0.1")
    # The page's other forms come back to the user's page, not to the POST that showed it.
    assert (
        'name="next" value="/admin/user/ana"' in shown
        and f'/exports/{export_id}/url"' not in shown.split('id="recent"')[1]
    )
    url = link.group(1).replace("&amp;", "&")
    assert all(url not in r.getMessage() and url not in str(vars(r)) for r in caplog.records)


def test_an_unfinished_export_has_no_link_and_another_users_export_is_not_found(signed_in: Any) -> None:
    add_user("ana")
    add_user("bea")
    pending = int(exports.request("ana", "test", queue=False)["id"])
    response = post(signed_in, f"/admin/user/ana/exports/{pending}/url")
    assert response.status_code == 303
    assert f"export {pending} is pending: no file to download yet" in notices(page(signed_in))
    assert post(signed_in, f"/admin/user/bea/exports/{pending}/url").status_code == 404
    assert post(signed_in, f"/admin/user/bea/exports/{pending}/delete").status_code == 404
    assert count("export_events", "event = 'url'") == 0


def test_deleting_an_export_is_refused_on_legal_hold_with_the_hold_named(signed_in: Any) -> None:
    add_user("ana")
    export_id = built_export()
    post(signed_in, "/admin/user/ana/holds", reason="case 2026-17")
    [hold] = sql("SELECT id FROM legal_holds")

    response = post(signed_in, f"/admin/user/ana/exports/{export_id}/delete")
    assert response.status_code == 303
    said = notices(page(signed_in))
    assert (
        f"deletion of export {export_id} refused: user ana is on legal hold #{hold['id']} (case 2026-17"
        in said
    )
    assert sql("SELECT status FROM exports WHERE id = %s", (export_id,)) == [{"status": "done"}]
    assert count("export_events", "event = 'refused'") == 1

    post(signed_in, f"/admin/user/ana/holds/{hold['id']}/lift")
    post(signed_in, f"/admin/user/ana/exports/{export_id}/delete")
    assert f"Export {export_id} is deleted." in notices(page(signed_in))
    assert sql("SELECT status FROM exports WHERE id = %s", (export_id,)) == [{"status": "deleted"}]
    [deleted] = sql("SELECT actor FROM export_events WHERE event = 'deleted'")
    assert deleted["actor"] == ACTOR


# ----------------------------------------------------------------------------------------------
# legal holds


def test_place_and_lift_a_legal_hold(
    signed_in: Any, redis_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_user("ana")
    assert 'id="no-holds"' in page(signed_in)
    caplog.set_level(logging.INFO, logger="app.admin.audit")

    response = post(signed_in, "/admin/user/ana/holds", reason="  case   2026-17 ")
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/user/ana")
    [hold] = sql("SELECT id, reason, placed_by, lifted_at FROM legal_holds")
    assert (hold["reason"], hold["placed_by"], hold["lifted_at"]) == ("case 2026-17", ACTOR, None)
    assert job_id(APPLY_HOLD, hold["id"]) in Queue(APPLY_HOLD.queue, connection=redis_conn).job_ids
    html = page(signed_in)
    assert f"User ana is on legal hold #{hold['id']}" in notices(html)
    row = html.split(f'data-hold="{hold["id"]}"')[1].split("</tr>")[0]
    assert "case 2026-17" in row and ACTOR in row
    assert 'id="hold-storage">pending<' in html

    response = post(signed_in, f"/admin/user/ana/holds/{hold['id']}/lift", reason="case closed")
    assert response.status_code == 303
    [lifted] = sql("SELECT lifted_by, lift_reason FROM legal_holds")
    assert lifted == {"lifted_by": ACTOR, "lift_reason": "case closed"}
    html = page(signed_in)
    assert f"Legal hold #{hold['id']} of user ana is lifted." in notices(html)
    assert 'id="no-holds"' in html and "case closed" in html.split('id="lifted-holds"')[1]
    assert [(r.action, r.hold_id, r.client) for r in audited(caplog, "hold") + audited(caplog, "unhold")] == [
        ("hold", hold["id"], "127.0.0.1"),
        ("unhold", hold["id"], "127.0.0.1"),
    ]
    # Lifted already: said, nothing changes.
    post(signed_in, f"/admin/user/ana/holds/{hold['id']}/lift")
    assert "was already lifted" in notices(page(signed_in))


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_hold_without_a_reason_is_refused_with_a_clear_error(signed_in: Any, reason: str) -> None:
    add_user("ana")
    response = post(signed_in, "/admin/user/ana/holds", reason=reason)
    assert response.status_code == 303
    assert "No hold placed: the reason is required." in notices(page(signed_in))
    assert count("legal_holds") == 0


@pytest.mark.parametrize(
    "path",
    [
        "/admin/user/ana/holds",
        "/admin/user/ana/holds/1/lift",
        "/admin/user/ana/exports",
        "/admin/user/ana/exports/1/url",
        "/admin/user/ana/exports/1/delete",
    ],
)
def test_the_records_forms_need_the_csrf_token_and_the_session(signed_in: Any, app: Any, path: str) -> None:
    add_user("ana")
    form = {"reason": "case 1"}
    assert signed_in.post(path, data=form).status_code == 400
    assert signed_in.post(path, data={**form, "csrf_token": "forged"}).status_code == 400
    response = app.test_client().post(path, data={**form, "csrf_token": "forged"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/login")
    assert count("legal_holds") == 0 and count("exports") == 0


def test_records_forms_for_an_unknown_user(signed_in: Any) -> None:
    add_user("ana")
    assert post(signed_in, "/admin/user/nobody/exports").status_code == 404
    assert post(signed_in, "/admin/user/nobody/holds", reason="case 1").status_code == 404
    assert count("legal_holds") == 0 and count("exports") == 0
