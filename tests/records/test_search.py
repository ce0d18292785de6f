"""Search: full-text over content and transcripts, filters, the admin API, the user's /search
command, bad input, and an erased user's messages never found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses

from app import context
from app.records import search
from app.users.erase import erase_user
from app.users.service import NotFound
from tests.helpers.archive import ingest, text_message
from tests.helpers.common import load_fixture
from tests.helpers.orders import ChatwootAPI
from tests.records.conftest import BASE_TIME, archive_user

pytestmark = pytest.mark.usefixtures("records_env")

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _find(words: str, **filters: Any) -> list[dict[str, Any]]:
    return search.search(search.Query(words, **filters))


def test_content_and_transcripts_are_found_newest_first(http: responses.RequestsMock) -> None:
    ana = archive_user(http, "ana", 901, texts=3, voice_notes=2)
    found = _find("quarterly plan")
    assert [r["id"] for r in found] == list(reversed(ana.note_ids[:3]))
    assert "«quarterly» «plan»" in found[0]["excerpt"]
    spoken = _find("budget approved")
    assert [r["id"] for r in spoken] == list(reversed(ana.voice_ids))
    assert "«budget»" in spoken[0]["excerpt"]
    assert _find("nothing like this") == []


def test_the_users_language_stems_the_words(http: responses.RequestsMock) -> None:
    archive_user(
        http, "en-user", 902, texts=1, language="en", content=lambda i: "We were running the numbers"
    )
    archive_user(
        http, "pt-user", 903, texts=1, language="pt", content=lambda i: "Estamos trabalhando no projeto"
    )
    archive_user(http, "someone", 904, texts=1, content=lambda i: "running late again")
    # English stems for the English user: "run" finds "running"; as written, only the same word.
    assert [r["user_id"] for r in _find("run", user_id="en-user")] == ["en-user"]
    assert [r["user_id"] for r in _find("run", user_id="someone")] == []
    assert [r["user_id"] for r in _find("running", user_id="someone")] == ["someone"]
    assert [r["user_id"] for r in _find("trabalhar", user_id="pt-user")] == ["pt-user"]
    # Across users: the words as written, and the stems of every language.
    assert sorted(r["user_id"] for r in _find("run")) == ["en-user"]
    assert sorted(r["user_id"] for r in _find("running")) == ["en-user", "someone"]


def test_filters_user_contact_channel_and_dates(http: responses.RequestsMock) -> None:
    ana = archive_user(http, "ana", 905, texts=4)
    bea = archive_user(http, "bea", 906, texts=2, account_id=2)
    with context.db().transaction() as cur:
        cur.execute("UPDATE meeting_notes SET source_type = 'api' WHERE id = %s", (ana.note_ids[0],))
        cur.execute(
            "UPDATE meeting_notes SET created_at = %s WHERE id = ANY(%s)",
            (BASE_TIME - timedelta(days=10), ana.note_ids[:2]),
        )
    assert len(_find("quarterly")) == 6
    assert {r["user_id"] for r in _find("quarterly", user_id="bea")} == {"bea"}
    assert [r["id"] for r in _find("quarterly", contact_id=905, account_id=1)][-1] == ana.note_ids[0]
    assert [r["id"] for r in _find("quarterly", account_id=2)] == list(reversed(bea.note_ids))
    assert [r["id"] for r in _find("quarterly", channel="api")] == [ana.note_ids[0]]
    older = _find("quarterly", until=BASE_TIME - timedelta(days=1))
    assert sorted(r["id"] for r in older) == sorted(ana.note_ids[:2])
    newer = _find("quarterly", user_id="ana", since=BASE_TIME - timedelta(days=1))
    assert sorted(r["id"] for r in newer) == sorted(ana.note_ids[2:])


def test_messages_not_archived_yet_are_not_found(http: responses.RequestsMock) -> None:
    archive_user(http, "ana", 907, texts=1)
    ingest(text_message(907_555, contact_id=907, content="quarterly waiting", phone=None), enqueue=False)
    assert len(_find("quarterly")) == 1


def test_the_admin_api_pages_through_results(http: responses.RequestsMock, client: Any) -> None:
    ana = archive_user(http, "ana", 908, texts=5)
    first = client.get("/admin/search?q=quarterly&user=ana&limit=2", headers=ADMIN).get_json()
    assert [r["id"] for r in first["results"]] == list(reversed(ana.note_ids))[:2]
    assert first["next"].endswith(f"Z,{ana.note_ids[-2]}")
    second = client.get(f"/admin/search?q=quarterly&user=ana&limit=2&before={first['next']}", headers=ADMIN)
    assert [r["id"] for r in second.get_json()["results"]] == list(reversed(ana.note_ids))[2:4]
    unknown = client.get("/admin/search?q=quarterly&user=nobody", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.get_json()["detail"] == "no user 'nobody'"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("q=", "give the words to search for"),
        ("q=%20%20%20", "give the words to search for"),
        ("", "give the words to search for"),
        ("q=" + "a" * 10_000, "a search is at most 200 characters, got 10000"),
        ("q=%21%21%3F", "nothing in these words can be searched (only punctuation or symbols)"),
        (
            "q=x&since=2026-02-01&until=2026-01-01",
            "the date range is empty: 'since' must come before 'until'",
        ),
    ],
)
def test_bad_searches_get_a_clear_error(client: Any, query: str, detail: str) -> None:
    answer = client.get(f"/admin/search?{query}", headers=ADMIN)
    assert answer.status_code == 422
    assert answer.get_json() == {"error": "invalid", "detail": detail}


@pytest.mark.parametrize(
    "query", ["q=x&limit=0", "q=x&limit=51", "q=x&since=yesterday", "q=x&contact=-1", "q=x&what=1"]
)
def test_bad_search_filters(client: Any, query: str) -> None:
    answer = client.get(f"/admin/search?{query}", headers=ADMIN)
    assert answer.status_code == 422 and answer.get_json()["error"] == "invalid"


def test_the_cli_searches(http: responses.RequestsMock, runner: Any) -> None:
    archive_user(http, "ana", 909, texts=2)
    result = runner.invoke(args=["search", "quarterly", "plan", "--user", "ana"])
    assert result.exit_code == 0, result.output
    assert result.output.count("«quarterly» «plan»") == 2
    too_long = runner.invoke(args=["search", "x" * 10_000])
    assert too_long.exit_code == 1 and "at most 200 characters" in too_long.output


def test_an_erased_users_messages_are_never_found(http: responses.RequestsMock) -> None:
    archive_user(http, "ana", 910, texts=3, voice_notes=1)
    archive_user(http, "bea", 911, texts=1)
    assert len(_find("quarterly")) == 4 and len(_find("budget")) == 1
    erase_user("ana")
    assert [r["user_id"] for r in _find("quarterly")] == ["bea"]
    assert _find("budget") == []
    with pytest.raises(NotFound, match="no user 'ana'"):
        _find("quarterly", user_id="ana")


def test_old_rows_get_their_search_words_from_the_cron_pass(http: responses.RequestsMock) -> None:
    ana = archive_user(http, "ana", 912, texts=2)
    with context.db().transaction() as cur:
        cur.execute("UPDATE meeting_notes SET search_vector = NULL")
        cur.execute("UPDATE search_backfill SET after_id = 0, finished_at = NULL")
    assert _find("quarterly") == []
    assert search.backfill() == {"filled": 2, "finished": True}
    assert search.backfill() == {"filled": 0, "finished": True}
    assert sorted(r["id"] for r in _find("quarterly")) == sorted(ana.note_ids)


# ------------------------------------------------------------------------------------------
# the user's command


def _say(run_jobs: Any, text: str, contact_id: int, message_id: int, minutes: int = 0) -> int:
    """A message from the contact now (WhatsApp's reply window is open), through ingestion and
    every job (archive, classify, send)."""
    at = (datetime.now(UTC) - timedelta(minutes=5) + timedelta(seconds=minutes)).isoformat()
    note_id = ingest(text_message(message_id, contact_id=contact_id, content=text, created_at=at, phone=None))
    run_jobs()
    return note_id


def test_slash_search_answers_with_the_five_most_recent_of_the_users_own_notes(
    http: responses.RequestsMock, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    archive_user(http, "ana", 913, texts=7, content=lambda i: f"idea {i}: a podcast about gardening")
    archive_user(http, "bea", 914, texts=2, content=lambda i: f"bea's podcast notes {i}")
    _say(run_jobs, "/search podcast", 913, 913_900)
    [reply] = chatwoot_api.contents
    lines = reply.splitlines()
    assert lines[0] == "Your 5 most recent notes with “podcast”:"
    assert len(lines) == 6
    assert lines[1].startswith("2026-01-05: idea 6: a *podcast* about gardening")
    assert all("bea" not in line and "/search" not in line for line in lines)
    # Recorded in the outbox before it was sent.
    with context.db().transaction() as cur:
        cur.execute("SELECT kind, status FROM outbox")
        assert [dict(r) for r in cur.fetchall()] == [{"kind": "command_reply", "status": "sent"}]


def test_slash_search_finds_nothing_for_words_not_there_and_explains_usage(
    http: responses.RequestsMock, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    archive_user(http, "ana", 915, texts=1)
    _say(run_jobs, "/search gardening", 915, 915_900)
    _say(run_jobs, "/search", 915, 915_901, minutes=601)
    _say(run_jobs, "/search " + "x" * 300, 915, 915_902, minutes=602)
    assert chatwoot_api.contents == [
        "No note of yours has “gardening”.",
        "Send /search followed by the words to look for, e.g. /search invoice march",
        "That search is too long: use at most 200 characters.",
    ]


def test_slash_search_needs_a_linked_number(run_jobs: Any, chatwoot_api: ChatwootAPI, db: Any) -> None:
    _say(run_jobs, "a note about gardening", 916, 916_001)
    _say(run_jobs, "/search gardening", 916, 916_002, minutes=601)
    assert chatwoot_api.contents == [
        "Search works once your number is linked to your account: send LINK and the code from the app."
    ]


def test_slash_search_never_finds_our_own_messages(
    http: responses.RequestsMock, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    from app.archive.batch import archive_message

    ana = archive_user(http, "ana", 917, texts=1, content=lambda i: "compost bins")
    ours = load_fixture("message_created__outgoing_agent")
    ours.update(id=917_800, content="About your compost: noted.", created_at=BASE_TIME.isoformat())
    ours["conversation"]["meta"]["sender"].update(id=917, phone_number=None, identifier=None)
    ours["conversation"]["contact_inbox"]["contact_id"] = 917
    ours["conversation"]["messages"] = []
    outgoing = ingest(ours, enqueue=False)
    archive_message(outgoing)
    assert context.db().fetch_one("orders.note_get", {"id": outgoing})["user_id"] == "ana"
    assert len(_find("compost", user_id="ana")) == 2  # an admin finds both
    _say(run_jobs, "/search compost", 917, 917_900)
    _say(run_jobs, "/search compost", 917, 917_901, minutes=601)
    first, second = chatwoot_api.contents
    assert first == second == "Your 1 most recent notes with “compost”:\n2026-01-05: *compost* bins"
    assert ana.note_ids


def test_a_search_inside_a_transaction_leaves_its_settings_as_they_were(http: responses.RequestsMock) -> None:
    archive_user(http, "ana", 918, texts=1)
    with context.db().transaction() as cur:
        found = search.run(cur, search.Query("quarterly", user_id="ana"))
        cur.execute("SELECT current_setting('enable_seqscan') AS now")
        assert cur.fetchone()["now"] == "on" and len(found) == 1
