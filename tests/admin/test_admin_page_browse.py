"""The admin page beyond the numbers: searching messages (by contact, user, text or transcript,
with paging), and a user's page (buckets, counts, links, latest messages with their statuses)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.admin import add_link, add_note, add_user, sign_in, sql

pytestmark = pytest.mark.usefixtures("admin_env")


def write(note_id: int, **columns: Any) -> None:
    """Set some columns of a message row (content, transcript, contact_phone...)."""
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    sql(f"UPDATE meeting_notes SET {assignments} WHERE id = %(id)s", {**columns, "id": note_id})  # noqa: S608


def found(html: str) -> list[int]:
    """The message ids of the result rows, in the order shown."""
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)]


def search(client: Any, by: str, q: str, page: int | None = None) -> Any:
    query = f"/admin/messages?by={by}&q={quote(q)}" + (f"&page={page}" if page else "")
    return client.get(query)


@pytest.fixture
def signed_in(client: Any) -> Any:
    sign_in(client)
    return client


def test_search_by_text_and_transcript_ignores_case_and_takes_wildcards_literally(signed_in: Any) -> None:
    invoice = add_note(user_id=None)
    write(invoice, content="Please send the INVOICE for March")
    percent = add_note()
    write(percent, content="We grew 100% this year")
    voice = add_note(transcription_status="done")
    write(voice, content=None, transcript="remind me to call the dentist tomorrow")
    other = add_note()
    write(other, content="nothing to see: 1000 apples")

    html = search(signed_in, "text", "invoice").get_data(as_text=True)
    assert found(html) == [invoice]
    assert "Please send the INVOICE for March" in html
    assert found(search(signed_in, "text", "100%").get_data(as_text=True)) == [percent]
    assert found(search(signed_in, "text", "10_").get_data(as_text=True)) == []
    assert found(search(signed_in, "transcript", "Dentist").get_data(as_text=True)) == [voice]
    assert found(search(signed_in, "text", "dentist").get_data(as_text=True)) == []
    empty = search(signed_in, "text", "no such words").get_data(as_text=True)
    assert 'id="no-results"' in empty


def test_search_by_contact_id_phone_and_user(signed_in: Any) -> None:
    add_user("u1")
    mine = [add_note(user_id="u1", contact_id=287) for _ in range(2)]
    stranger = add_note(contact_id=970)
    write(stranger, contact_phone="+5511900000001")
    add_note(contact_id=971)

    assert found(search(signed_in, "contact", "287").get_data(as_text=True)) == mine[::-1]
    assert found(search(signed_in, "contact", "+55 11 90000-0001").get_data(as_text=True)) == [stranger]
    by_user = search(signed_in, "user", "u1").get_data(as_text=True)
    assert found(by_user) == mine[::-1]
    assert 'href="/admin/user/u1"' in by_user


def test_results_come_a_page_at_a_time_newest_first(signed_in: Any) -> None:
    ids = [add_note(contact_id=555) for _ in range(30)]
    newest_first = ids[::-1]
    first = search(signed_in, "contact", "555").get_data(as_text=True)
    assert found(first) == newest_first[:25]
    assert 'id="older"' in first and 'id="newer"' not in first
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older
    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert found(second) == newest_first[25:]
    assert 'id="newer"' in second and 'id="older"' not in second


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("by=text&q=ab", "at least 3 characters"),
        ("by=everything&q=abc", "search by one of"),
        ("by=contact&q=not-a-phone", "phone number with its country code"),
        ("by=text&q=", "type what to look for"),
        ("by=text&q=" + "x" * 201, "at most 200 characters"),
        ("by=text&q=abc&page=0", "pages go from 1"),
        ("by=text&q=abc&page=99999", "pages go from 1"),
        ("by=text&q=abc&page=two", "the page is a number"),
    ],
)
def test_a_search_it_cannot_run_is_a_400_that_says_why(signed_in: Any, query: str, says: str) -> None:
    response = signed_in.get("/admin/messages?" + query)
    assert response.status_code == 400
    assert says in response.get_data(as_text=True)


def test_search_and_user_pages_need_the_sign_in(client: Any) -> None:
    add_user("u1")
    for path in ("/admin/messages?by=text&q=abc", "/admin/user/u1"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")


def test_text_is_escaped(signed_in: Any) -> None:
    note = add_note()
    write(note, content="<script>alert(1)</script> hello")
    html = search(signed_in, "text", "hello").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_a_users_page(signed_in: Any) -> None:
    bucket = add_user("maría lópez", notify=True)
    add_link("maría lópez", "contact_id", "287")
    add_link("maría lópez", "phone", "+5491155550123")
    stored = [add_note(user_id="maría lópez", bucket=bucket) for _ in range(3)]
    failed = add_note(user_id="maría lópez", status="error", error="gcs unavailable: 503")
    voice = add_note(user_id="maría lópez", transcription_status="failed", bucket=bucket)
    sql("UPDATE meeting_notes SET rehome_from_bucket = 'fallback-bucket' WHERE id = %s", (stored[0],))
    sql(
        "INSERT INTO message_attachments (meeting_note_id, chatwoot_attachment_id, size_bytes, bucket_name, status) "
        "VALUES (%s, 1, 2097152, %s, 'stored')",
        (stored[1], bucket),
    )
    sql(
        "INSERT INTO orders (chatwoot_account_id, chatwoot_conversation_id, user_id, status) "
        "VALUES (1, 42, 'maría lópez', 'ready'), (1, 42, 'maría lópez', 'ready'), (1, 43, 'maría lópez', 'failed')"
    )
    add_note(user_id=None)  # someone else's

    response = signed_in.get("/admin/user/" + quote("maría lópez"))
    assert response.status_code == 200
    html = response.get_data(as_text=True)

    def shown(element_id: str) -> str:
        value = re.search(rf'id="{element_id}">([^<]*)<', html)
        assert value, element_id
        return value.group(1)

    assert (shown("count-messages"), shown("count-stored"), shown("count-errors")) == ("5", "4", "1")
    assert shown("notify") == "on"
    assert f'data-bucket="{bucket}"' in html and "<td>own</td>" in html
    assert re.search(r'data-bucket="fallback-bucket">.*?<td class="num">1</td></tr>', html, re.S)
    assert re.search(
        rf'data-bucket="{bucket}">.*?<td class="num">1</td>\s*<td class="num">2.0</td>', html, re.S
    )
    assert 'data-link="1:contact_id:287"' in html and 'data-link="1:phone:+5491155550123"' in html
    assert re.search(r'status-ready">ready</span> 2', html) and re.search(
        r'status-failed">failed</span> 1', html
    )
    # The latest messages, newest first, with each stage's status and a retry where one failed.
    assert found(html) == [voice, failed, *stored[::-1]]
    row = html.split(f'<tr data-id="{failed}">')[1].split("</tr>")[0]
    assert 'status-error">error</span>' in row and "gcs unavailable: 503" in row
    assert 'data-stage="archive"' in row
    voice_row = html.split(f'<tr data-id="{voice}">')[1].split("</tr>")[0]
    assert 'status-failed">failed</span>' in voice_row and 'data-stage="transcription"' in voice_row
    assert "retry" not in html.split(f'<tr data-id="{stored[2]}">')[1].split("</tr>")[0]


def test_an_unknown_user_is_a_404(signed_in: Any) -> None:
    response = signed_in.get("/admin/user/nobody")
    assert response.status_code == 404
    assert "There is no user &#39;nobody&#39;." in response.get_data(as_text=True)


def test_the_colours_are_on_the_chart_and_legend_only(signed_in: Any) -> None:
    add_note(status="error", error="x")
    html = signed_in.get("/admin/").get_data(as_text=True)
    css = html.split("<style", 1)[1].split("</style>", 1)[0]
    # No rule paints a bare .stored / .errors / .waiting: those classes name table cells too.
    assert not re.search(r"(^|[\s,}])\.(stored|errors|waiting)\s*[{,]", css, re.M)
    assert '<td class="num errors">1</td>' in html
    assert 'class="bar-errors"' in html and 'class="swatch errors"' in html
    assert '<option value="contact" selected>' in html  # the dashboard's search looks for a contact


def test_a_search_that_takes_too_long_is_stopped_and_says_so(
    signed_in: Any, services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2

    from app.admin import browse

    note = add_note()
    write(note, content="quarterly planning")
    monkeypatch.setattr(browse, "SEARCH_TIMEOUT_MS", 300)
    blocker = psycopg2.connect(services.env["DATABASE_URL"])
    try:
        with blocker.cursor() as cur:  # a table the search must wait for: its statement times out
            cur.execute("LOCK TABLE meeting_notes IN ACCESS EXCLUSIVE MODE")
            response = search(signed_in, "text", "planning")
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status_code == 200
    assert 'id="too-slow"' in response.get_data(as_text=True)
    # The same connection answers the next search at once.
    assert found(search(signed_in, "text", "planning").get_data(as_text=True)) == [note]


def test_the_dead_letter_list_is_the_views_newest_rows() -> None:
    """admin.dead_letters_newest reads the stages' own indexes; it must list what the view lists."""
    from app.admin.requeue import dead_letters

    for age in range(4):
        failed = add_note(status="error", error=f"archive {age}")
        voice = add_note(transcription_status="failed")
        classified = add_note(classification_status="failed")
        for row, minutes in ((failed, age * 3), (voice, age * 3 + 1), (classified, age * 3 + 2)):
            sql(
                "UPDATE meeting_notes SET updated_at = now() - make_interval(mins => %s) WHERE id = %s",
                (minutes, row),
            )
        sql(
            "INSERT INTO message_updates (meeting_note_id, fingerprint, payload, processing_status, updated_at) "
            "VALUES (%s, %s, '{}', 'error', now() - make_interval(mins => %s))",
            (voice, f"f{age}", age * 3 + 1),
        )
        sql(
            "INSERT INTO outbox (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, body, status, "
            "updated_at) VALUES (%s, 1, 42, 'ready', '{}', 'failed', now() - make_interval(mins => %s))",
            (f"k{age}", age * 3 + 2),
        )
    add_note()  # not in the dead letter
    for limit in (1, 5, 20):
        view = sql(
            "SELECT stage, id, chatwoot_account_id, chatwoot_conversation_id, attempts, error_details, "
            "updated_at FROM dead_letters ORDER BY updated_at DESC, stage, id LIMIT %s",
            (limit,),
        )
        assert dead_letters(limit) == view
    assert len(dead_letters(20)) == 20


def test_postgresql_down_is_a_503_page_not_a_stack_trace(signed_in: Any, use_settings: Any) -> None:
    from tests.helpers.admin import unreachable

    with unreachable(use_settings, database_url="postgresql://postgres@127.0.0.1:{port}/none"):
        for path in ("/admin/", "/admin/messages?by=text&q=invoice", "/admin/user/u1"):
            response = signed_in.get(path)
            assert response.status_code == 503, path
            html = response.get_data(as_text=True)
            assert "PostgreSQL is not answering" in html and "Traceback" not in html
