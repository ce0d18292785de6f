"""User commands: each one gets its answer through the outbox and is never kept as a note."""

from __future__ import annotations

from typing import Any

import pytest

from app.chatwoot.payloads import Contact
from app.orders import commands, i18n
from app.users import service
from tests.helpers.orders import (
    ChatwootAPI,
    add_note,
    add_user,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    conversation,
    message,
    note,
    orders,
)

HELP_EN = i18n.t("help", "en")


def reply(content: str, key: str) -> dict[str, Any]:
    return {
        "content": content,
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "content_attributes": {"outbox_key": key},
    }


def send(db: Any, run_jobs: Any, text: str, **kwargs: Any) -> int:
    note_id = add_note(db, message(content=text), **kwargs)
    run_jobs()
    return note_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/notify on", commands.Command("notify_on")),
        ("/NOTIFY   ON", commands.Command("notify_on")),
        ("/notify off", commands.Command("notify_off")),
        ("/notify", commands.Command("unknown")),
        ("/status", commands.Command("status")),
        ("/estado", commands.Command("status")),
        ("/cancel", commands.Command("cancel")),
        ("/cancelar", commands.Command("cancel")),
        ("/help", commands.Command("help")),
        ("/ajuda", commands.Command("help")),
        ("/ayuda", commands.Command("help")),
        ("/frobnicate", commands.Command("unknown", "frobnicate")),
        ("/", commands.Command("unknown")),
        ("LINK 123456", commands.Command("link", "123456")),
        ("link 123 456", commands.Command("link", "123456")),
        ("/link 123456", commands.Command("link", "123456")),
        ("LINK 12345", commands.Command("link", "12345")),
        ("Link to the article: https://example.com", None),
        ("notify me when ready", None),
        ("hello", None),
        ("", None),
    ],
)
def test_parse(text: str, expected: commands.Command | None) -> None:
    assert commands.parse(text) == expected


def test_help(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    note_id = send(db, run_jobs, "/help")
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.posted == [reply(HELP_EN, f"note:{note_id}:reply")]
    assert HELP_EN.startswith("Commands:\n/status: ")
    assert "LINK <code>" in HELP_EN


def test_an_unknown_command_gets_the_help(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    note_id = send(db, run_jobs, "/frobnicate now")
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.contents == [HELP_EN]


def test_notify_on_and_off_for_a_linked_user(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    add_user(db)

    def notify_on_ready() -> bool:
        with db.transaction() as cur:
            cur.execute("SELECT notify_on_ready FROM user_bucket_mapping WHERE user_id = 'user-maria'")
            return bool(cur.fetchone()["notify_on_ready"])

    send(db, run_jobs, "/notify on")
    assert notify_on_ready() is True
    send(db, run_jobs, "/notify off")
    assert notify_on_ready() is False
    assert chatwoot_api.contents == [
        "Done: I'll let you know when your content is ready.",
        "Done: no more messages when content is ready.",
    ]


def test_notify_for_an_unmapped_contact_explains_how_to_link(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    note_id = send(db, run_jobs, "/notify on")
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.contents == [
        "To get these messages, link your account first: send LINK followed by the 6-digit code "
        "from the app (for example LINK 123456)."
    ]


def test_status_shows_the_pending_order_and_recent_notes(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    send(db, run_jobs, "Idea: a checklist for new hires")
    send(db, run_jobs, "Another idea: pricing page FAQ")
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    send(db, run_jobs, "/status")
    assert chatwoot_api.contents[-1] == (
        "Order #1 (post): waiting for your answer.\n"
        "Which platform would you like content for?\n"
        "Notes kept in the last 7 days: 2."
    )
    # The question is still pending after /status: an answer still counts.
    send(db, run_jobs, "LinkedIn")
    assert orders(db)[0]["platform"] == "LinkedIn"


def test_status_without_an_order(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    send(db, run_jobs, "/status")
    assert chatwoot_api.contents == ["No order in progress.\nNotes kept in the last 7 days: 0."]


def test_cancel_the_order_in_progress(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    note_id = send(db, run_jobs, "/cancel")
    assert note(db, note_id)["message_kind"] == "command"
    assert orders(db)[0]["status"] == "cancelled"
    assert orders(db)[0]["cancelled_reason"] == "cancelled by the user"
    assert conversation(db)["context_json"] == {}
    assert chatwoot_api.contents[-1] == "Order #1 cancelled."
    send(db, run_jobs, "/cancel")
    assert chatwoot_api.contents[-1] == "There is no order to cancel."
    # Nothing pending any more: "LinkedIn" is just a note.
    later = send(db, run_jobs, "LinkedIn")
    assert note(db, later)["message_kind"] == "note"


def test_replies_use_the_conversations_language(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    send(db, run_jobs, "Ideia: escrever sobre o nosso processo de contratação")
    send(db, run_jobs, "/help")
    assert chatwoot_api.contents == [i18n.t("help", "pt")]


def test_a_link_code_is_a_command_never_a_note(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    note_id = send(db, run_jobs, "LINK 12345")  # one digit short: refused without a lookup
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.contents == [i18n.t("link.failed", "en")]


def test_link_with_a_code_from_the_app_then_notify(
    db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    from app.users import contacts as users
    from app.users import link_codes as links

    service.ensure_user("user-maria")
    issued = links.issue_code("user-maria")
    note_id = send(db, run_jobs, f"LINK {issued.code}")
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.posted == [reply(i18n.t("link.ok", "en"), f"note:{note_id}:reply")]
    assert users.find_user(1, Contact(287)) == ("user-maria", users.user_bucket("user-maria"))
    # Linked: ready notices can be turned on now.
    send(db, run_jobs, "/notify on")
    assert chatwoot_api.contents[-1] == "Done: I'll let you know when your content is ready."
    # The same code again is used up.
    send(db, run_jobs, f"LINK {issued.code}")
    assert chatwoot_api.contents[-1] == i18n.t("link.failed", "en")


def test_a_wrong_link_code(db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    from app.users import contacts as users

    service.ensure_user("user-maria")
    note_id = send(db, run_jobs, "link 000000")
    assert note(db, note_id)["message_kind"] == "command"
    assert chatwoot_api.contents == [i18n.t("link.failed", "en")]
    assert users.find_user(1, Contact(287)) is None
