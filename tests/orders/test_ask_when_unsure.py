"""When unsure, ask: one yes/no question about a message that may be a request for content.

Messages go through the real classify and send jobs; Chatwoot's API is mocked with `responses`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.orders import confirm
from tests.helpers.orders import (
    ChatwootAPI,
    add_note,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    conversation,
    message,
    note,
    orders,
    outbox_rows,
)

UNSURE = "should we do a post about the merger?"
QUESTION = {
    "content": "Want me to turn this into a post?\n\n1. Yes\n2. No\n\nReply yes or no.",
    "message_type": "outgoing",
    "private": False,
    "content_type": "input_select",
    "content_attributes": {
        "items": [{"title": "Yes", "value": "yes"}, {"title": "No", "value": "no"}],
        "outbox_key": "note:1:confirm",
    },
}


def test_an_unsure_message_is_asked_about_once(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    from app.jobs import CLASSIFY_MESSAGE, enqueue
    from app.orders.classify import classify_message

    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    assert chatwoot_api.posted == [QUESTION]
    row = note(db, asked)
    assert (row["classification_status"], row["message_kind"]) == ("done", None)  # undecided
    pending = conversation(db)["context_json"]["confirmation"]
    assert (pending["note_id"], pending["subject"], pending["language"]) == (asked, "the merger", "en")
    assert [r["kind"] for r in outbox_rows(db)] == ["question"]

    # Run twice, or classified again: never a second question.
    enqueue(CLASSIFY_MESSAGE, asked)
    run_jobs()
    assert classify_message(asked) == "done"
    assert len(chatwoot_api.posted) == 1 and len(outbox_rows(db)) == 1
    assert orders(db) == []


def test_yes_creates_the_order_from_the_message_asked_about(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    # The tapped title comes back in reply to our question (Chatwoot id 9882).
    yes = add_note(db, message(content="Yes", in_reply_to=9882))
    run_jobs()
    assert note(db, yes)["message_kind"] == "answer"
    assert note(db, asked)["message_kind"] == "order"
    [order] = orders(db)
    assert order["source_meeting_note_id"] == asked
    assert (order["status"], order["subject"], order["language"]) == ("clarifying", "the merger", "en")
    assert "confirmation" not in conversation(db)["context_json"]
    # Then the order's own first question, as for any order.
    assert [b["content_attributes"]["outbox_key"] for b in chatwoot_api.posted] == [
        "note:1:confirm",
        f"order:{order['id']}:ask:platform:0",
    ]


def test_a_yes_that_says_more_completes_the_order(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    asked = add_note(db, message(content="maybe a LinkedIn post about the merger?"))
    run_jobs()
    assert len(chatwoot_api.posted) == 1
    add_note(db, message(content="yes please, short and casual, tips"))
    run_jobs()
    [order] = orders(db)
    assert order["source_meeting_note_id"] == asked
    assert (order["platform"], order["length"], order["tone"], order["topic"]) == (
        "LinkedIn",
        "Short",
        "Casual",
        "Tips",
    )
    assert order["status"] == "queued"
    assert len(chatwoot_api.posted) == 1  # complete: nothing more to ask


def test_no_files_the_note(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    no = add_note(db, message(content="No", in_reply_to=9882))
    run_jobs()
    assert note(db, asked)["message_kind"] == "note"
    assert note(db, no)["message_kind"] == "answer"
    assert orders(db) == []
    assert conversation(db)["context_json"] == {}
    assert len(chatwoot_api.posted) == 1  # a note gets no reply


def test_silence_files_the_note_after_the_clarification_timeout(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(clarification_timeout=3600)
    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    assert confirm.expire_confirmations() == 0
    assert confirm.expire_confirmations(now=datetime.now(UTC) + timedelta(minutes=59)) == 0
    assert note(db, asked)["message_kind"] is None
    assert confirm.expire_confirmations(now=datetime.now(UTC) + timedelta(minutes=61)) == 1
    assert note(db, asked)["message_kind"] == "note"
    assert conversation(db)["context_json"] == {}
    assert confirm.expire_confirmations(now=datetime.now(UTC) + timedelta(hours=5)) == 0
    # A late "yes" is only a message now: no order, no second question.
    late = add_note(db, message(content="yes"))
    run_jobs()
    assert note(db, late)["message_kind"] == "note"
    assert orders(db) == [] and len(chatwoot_api.posted) == 1


def test_the_reconciler_runs_the_timeout(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    from app import reconcile

    use_settings(clarification_timeout=0)
    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    assert reconcile.expire_confirmations() == "1 filed as notes"
    assert note(db, asked)["message_kind"] == "note"


def test_never_for_commands_or_our_own_messages(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    ours = message("message_created__outgoing_agent", content=UNSURE)
    command = add_note(db, message(content="/status"))
    outgoing = add_note(db, ours)
    run_jobs()
    assert note(db, command)["message_kind"] == "command"
    assert note(db, outgoing)["classification_status"] == "not_needed"
    assert [b["content_attributes"]["outbox_key"] for b in chatwoot_api.posted] == [f"note:{command}:reply"]


def test_not_asked_while_another_question_waits(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    assert len(chatwoot_api.posted) == 1  # the order's platform question
    later = add_note(db, message(content=UNSURE))
    run_jobs()
    assert note(db, later)["message_kind"] == "note"
    assert len(chatwoot_api.posted) == 1


def test_asking_can_be_turned_off(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(ask_when_unsure=False)
    asked = add_note(db, message(content=UNSURE))
    run_jobs()
    assert note(db, asked)["message_kind"] == "note"
    assert chatwoot_api.posted == [] and outbox_rows(db) == []


def test_the_question_speaks_the_users_language(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    asked = add_note(db, message(content="devíamos fazer um post sobre a fusão?"))
    run_jobs()
    assert chatwoot_api.posted[0]["content"] == (
        "Quer que eu transforme isso em um post?\n\n1. Sim\n2. Não\n\nResponda sim ou não."
    )
    add_note(db, message(content="Sim", in_reply_to=9882))
    run_jobs()
    assert note(db, asked)["message_kind"] == "order"
    assert orders(db)[0]["language"] == "pt"
    assert chatwoot_api.posted[1]["content"].startswith("Para qual plataforma você quer o conteúdo?")


def test_yes_and_no_as_users_write_them() -> None:
    for text in ("yes", "Yes!", "yep, go ahead", "sure", "sim", "pode ser", "sí", "dale", "1", "👍", "ok"):
        assert confirm._yes_or_no(text) is True, text
    for text in ("no", "No thanks", "nope", "não", "agora não", "no gracias", "2", "👎", "just a note"):
        assert confirm._yes_or_no(text) is False, text
    for text in ("LinkedIn", "what do you mean?", "write a post about the fair", ""):
        assert confirm._yes_or_no(text) is None, text
