"""The admin page beyond the numbers: searching messages (by the words of their text or
transcript through the records search, by contact, by user, with paging), and a user's page
(buckets, counts, links, latest messages with their statuses)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
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


def search(client: Any, by: str, q: str, page: int | None = None, **filters: str) -> Any:
    query = f"/admin/messages?by={by}&q={quote(q)}" + (f"&page={page}" if page else "")
    return client.get(query + "".join(f"&{k}={quote(v)}" for k, v in filters.items()))


@pytest.fixture
def signed_in(client: Any) -> Any:
    sign_in(client)
    return client


def test_a_word_search_finds_the_words_of_the_text_and_the_transcript(signed_in: Any) -> None:
    invoice = add_note(user_id=None)
    write(invoice, content="Please send the INVOICE for March")
    voice = add_note(transcription_status="done")
    write(voice, content=None, transcript="remind me to call the dentist about the invoice")
    other = add_note()
    write(other, content="nothing to see: invoices of 1000 apples")
    waiting = add_note(status="received")  # not archived yet: not searchable
    write(waiting, content="the invoice that is on its way")

    html = search(signed_in, "words", "invoice").get_data(as_text=True)
    assert found(html) == [voice, invoice]  # newest first; whole words ("invoices" is another)
    assert "Please send the «INVOICE» for March" in html  # the excerpt, with the words marked
    assert found(search(signed_in, "words", "dentist invoice").get_data(as_text=True)) == [voice]
    assert found(search(signed_in, "words", '"send the invoice"').get_data(as_text=True)) == [invoice]
    assert found(search(signed_in, "words", "invoice -dentist").get_data(as_text=True)) == [invoice]
    empty = search(signed_in, "words", "no such words").get_data(as_text=True)
    assert 'id="no-results"' in empty


def test_a_word_search_takes_the_filters_of_the_records_search(signed_in: Any) -> None:
    add_user("u1")
    mine = add_note(user_id="u1", contact_id=287)
    write(mine, content="quarterly plan")
    api = add_note(contact_id=970, source_type="api")
    write(api, content="quarterly plan")
    old = add_note(contact_id=971, created_at=datetime(2026, 1, 5, 9, tzinfo=UTC))
    write(old, content="quarterly plan")

    def ids(**filters: str) -> list[int]:
        response = search(signed_in, "words", "quarterly", **filters)
        assert response.status_code == 200
        return found(response.get_data(as_text=True))

    assert sorted(ids()) == sorted([mine, api, old])
    assert ids(user="u1") == [mine]
    assert ids(contact="970") == [api]
    assert ids(channel="api") == [api]
    assert ids(since="2026-01-05", until="2026-01-05") == [old]  # both days are included
    assert ids(until="2026-01-04") == []
    html = search(signed_in, "words", "quarterly", channel="api").get_data(as_text=True)
    assert 'id="filter-channel" value="api"' in html and '<details id="search-filters" open>' in html


def test_a_word_search_pages_through_next(signed_in: Any) -> None:
    ids = []
    for _ in range(30):
        note = add_note(contact_id=555)
        write(note, content="weekly report")
        ids.append(note)
    newest_first = ids[::-1]
    first = search(signed_in, "words", "report", contact="555").get_data(as_text=True)
    assert found(first) == newest_first[:25]
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older and "before=" in older.group(1) and "contact=555" in older.group(1)
    assert 'id="newest"' not in first
    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert found(second) == newest_first[25:]
    assert 'id="older"' not in second and 'id="newest"' in second


def test_an_erased_users_messages_are_never_found(signed_in: Any) -> None:
    from app.users.erase import erase_user

    bucket = add_user("u1")
    gone = add_note(user_id="u1", bucket=bucket)
    write(gone, content="secret plans")
    kept = add_note(contact_id=970)
    write(kept, content="public plans")
    assert sorted(found(search(signed_in, "words", "plans").get_data(as_text=True))) == sorted([gone, kept])
    erase_user("u1")
    assert found(search(signed_in, "words", "plans").get_data(as_text=True)) == [kept]
    assert found(search(signed_in, "words", "secret").get_data(as_text=True)) == []
    unknown = search(signed_in, "words", "plans", user="u1")
    assert unknown.status_code == 400 and "no user &#39;u1&#39;" in unknown.get_data(as_text=True)


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
        ("by=everything&q=abc", "search by one of"),
        ("by=contact&q=not-a-phone", "phone number with its country code"),
        ("by=contact&q=", "type what to look for"),
        ("by=user&q=" + "x" * 201, "at most 200 characters"),
        ("by=user&q=abc&page=0", "pages go from 1"),
        ("by=contact&q=287&page=99999", "pages go from 1"),
        ("by=user&q=abc&page=two", "the page is a number"),
        ("by=words&q=", "give the words to search for"),
        ("q=%20%20", "give the words to search for"),
        ("by=words&q=" + "a" * 10_000, "a search is at most 200 characters, got 10000"),
        ("by=words&q=%21%21%3F", "nothing in these words can be searched"),
        ("by=words&q=abc&since=2026-02-01&until=2026-01-01", "the date range is empty"),
        ("by=words&q=abc&since=yesterday", "&#39;from&#39; is a day, YYYY-MM-DD"),
        ("by=words&q=abc&contact=-1", "the contact filter is a Chatwoot contact id"),
        ("by=words&q=abc&channel=Whats%20App", "the channel is a word of lower-case letters"),
        ("by=words&q=abc&before=yesterday", "not the `next` value of a page"),
        ("by=words&q=abc&before=2026-01-01T00:00:00Z,99999999999999999999", "not the `next` value"),
    ],
)
def test_a_search_it_cannot_run_is_a_400_that_says_why(signed_in: Any, query: str, says: str) -> None:
    response = signed_in.get("/admin/messages?" + query)
    assert response.status_code == 400
    assert says in response.get_data(as_text=True)


def test_search_and_user_pages_need_the_sign_in(client: Any) -> None:
    add_user("u1")
    for path in ("/admin/messages?by=words&q=abc", "/admin/user/u1"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")


def test_text_is_escaped(signed_in: Any) -> None:
    note = add_note(contact_id=970)
    write(note, content="Tom & Jerry say hello <script>alert(1)</script>")
    by_contact = search(signed_in, "contact", "970").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in by_contact and "<script>alert" not in by_contact
    by_words = search(signed_in, "words", "hello").get_data(as_text=True)
    assert "Tom &amp; Jerry say «hello»" in by_words and "<script>alert" not in by_words


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
            response = search(signed_in, "words", "planning")
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status_code == 200
    assert 'id="too-slow"' in response.get_data(as_text=True)
    # The same connection answers the next search at once.
    assert found(search(signed_in, "words", "planning").get_data(as_text=True)) == [note]


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
        for path in ("/admin/", "/admin/messages?by=words&q=invoice", "/admin/user/u1"):
            response = signed_in.get(path)
            assert response.status_code == 503, path
            html = response.get_data(as_text=True)
            assert "PostgreSQL is not answering" in html and "Traceback" not in html
