"""Answers and refusals that reach us only as updates of our own messages, end to end.

Chatwoot creates no incoming message for a web-widget visitor's choice: the widget PATCHes our own
`input_select` message with `content_attributes.submitted_values` (`AgentMessageBubble.vue`
`onOptionSelect`, `Api::V1::Widget::MessagesController#update`) and a `message_updated` of our
outgoing message follows. WhatsApp's refusal of one of our messages (131047 outside the 24-hour
window, 131026 undeliverable) also comes only as a `message_updated` of it, with
`content_attributes.external_error` (`Whatsapp::IncomingMessageBaseService
#update_message_with_status`, `Whatsapp::Providers::BaseService#handle_error`). The payloads
are built like `Message#webhook_data` by the stand-in Chatwoot (tests/helpers/orders.py) and the
fixtures `message_updated__web_widget_submitted_values` and
`message_updated__whatsapp_external_error`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.metrics import NOTICES
from tests.helpers.common import load_fixture
from tests.helpers.orders import (
    FIRST_MESSAGE_ID,
    ChatwootAPI,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    conversation,
    message,
    orders,
    outbox_rows,
)

WIDGET = 43
"""The web-widget conversation of the fixtures (inbox 5, visitor 288)."""
PLATFORM_QUESTION = "Which platform would you like content for?"
TOPIC_QUESTION = "Which category fits this post best?"


def widget_message(content: str, **changes: Any) -> dict[str, Any]:
    """A visitor's message in the web widget, shaped as Chatwoot sends it (no phone, no source_id)."""
    payload = message("message_created__incoming_order", content=content, conversation_id=WIDGET, **changes)
    shape = load_fixture("message_updated__web_widget_submitted_values")
    payload["conversation"] = {
        **copy.deepcopy(shape["conversation"]),
        "id": WIDGET,
        "messages": [],
    }
    visitor = shape["conversation"]["meta"]["sender"]
    payload["sender"] = {k: v for k, v in visitor.items() if k != "type"}
    payload["inbox"] = shape["inbox"]
    payload["source_id"] = None
    return payload


def first_line(body: dict[str, Any]) -> str:
    return str(body["content"]).splitlines()[0]


def update_rows(db: Any) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM message_updates ORDER BY id")
        return [dict(r) for r in cur.fetchall()]


def refused(kind: str) -> float:
    return NOTICES.labels(kind=kind, result="refused")._value.get()


# ------------------------------------------------------------------------------------------------
# the web widget's quick-reply answer


def ask_in_widget(deliver: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> int:
    """A visitor asks for a post in the widget; our platform question goes out and comes back."""
    chatwoot_api.channels[WIDGET] = "web_widget"
    assert deliver(widget_message("Can you write a short professional post about our onboarding results?"))
    run_jobs()
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION]
    question_id = FIRST_MESSAGE_ID
    assert deliver(chatwoot_api.webhook(question_id)).get_json()["status"] == "accepted"
    run_jobs()
    return question_id


def test_a_widget_choice_answers_the_question_once(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    question_id = ask_in_widget(deliver, run_jobs, chatwoot_api)

    picked = chatwoot_api.widget_select(question_id, "LinkedIn")
    assert picked["message_type"] == "outgoing" and picked["event"] == "message_updated"
    assert deliver(picked).get_json()["status"] == "accepted"
    run_jobs()

    [order] = orders(db)
    assert order["platform"] == "LinkedIn" and order["status"] == "clarifying"
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION, TOPIC_QUESTION]
    [update] = update_rows(db)
    assert (update["processing_status"], update["classification_status"]) == ("stored", "done")

    # Chatwoot sends some deliveries twice; a second PATCH (another option) comes too late.
    assert deliver(picked).get_json()["status"] == "duplicate"
    assert deliver(chatwoot_api.widget_select(question_id, "Blog")).get_json()["status"] == "accepted"
    # Typing the same answer after the tap answers nothing either: the topic question waits.
    assert deliver(widget_message("LinkedIn")).get_json()["status"] == "accepted"
    run_jobs()
    assert orders(db)[0]["platform"] == "LinkedIn"
    assert len(chatwoot_api.posted) == 2
    assert conversation(db, 1, WIDGET)["context_json"]["clarification"]["field"] == "topic"


def test_a_widget_choice_that_arrives_before_its_question_still_answers_it(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    chatwoot_api.channels[WIDGET] = "web_widget"
    deliver(widget_message("Can you write a short professional post about our onboarding results?"))
    run_jobs()
    # The create of our question was lost; its answered version creates the message.
    assert deliver(chatwoot_api.widget_select(FIRST_MESSAGE_ID, "Twitter")).get_json()["status"] == "accepted"
    run_jobs()
    assert orders(db)[0]["platform"] == "Twitter"
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION, TOPIC_QUESTION]
    # Then the create arrives: an older version, nothing more happens.
    deliver(chatwoot_api.webhook(FIRST_MESSAGE_ID))
    run_jobs()
    assert len(chatwoot_api.posted) == 2


def test_a_typed_answer_first_makes_the_widget_choice_a_no_op(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    question_id = ask_in_widget(deliver, run_jobs, chatwoot_api)
    deliver(widget_message("2"))
    run_jobs()
    assert orders(db)[0]["platform"] == "Instagram"
    deliver(chatwoot_api.widget_select(question_id, "LinkedIn"))
    run_jobs()
    assert orders(db)[0]["platform"] == "Instagram"
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION, TOPIC_QUESTION]


# ------------------------------------------------------------------------------------------------
# WhatsApp refuses one of our messages


def ask_on_whatsapp(deliver: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> int:
    deliver(message("message_created__incoming_order"))
    run_jobs()
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION]
    deliver(chatwoot_api.webhook(FIRST_MESSAGE_ID))
    run_jobs()
    return FIRST_MESSAGE_ID


@pytest.mark.parametrize(
    ("code", "title"), [(131047, "Re-engagement message"), (131026, "Message undeliverable")]
)
def test_a_refused_question_is_failed_and_its_order_waits_for_the_contact(  # noqa: PLR0917 (fixtures)
    code: int, title: str, deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    question_id = ask_on_whatsapp(deliver, run_jobs, chatwoot_api)
    before = refused("question")

    failure = chatwoot_api.whatsapp_refuse(question_id, code, title)
    assert "status" not in failure  # the webhook never says it; external_error does
    assert deliver(failure).get_json()["status"] == "accepted"
    run_jobs()

    [row] = outbox_rows(db)
    assert row["status"] == "failed" and row["refused_at"] is not None
    assert row["error_details"] == f"refused by the channel: {code}: {title}"
    assert row["chatwoot_message_id"] == str(question_id)
    assert refused("question") == before + 1
    [order] = orders(db)
    assert order["status"] == "waiting_for_contact"
    assert f"{code}: {title}" in order["error_details"]
    context = conversation(db)["context_json"]
    assert "clarification" not in context  # nobody waits for an answer to it
    assert context["on_hold"] == [{"order_id": order["id"], "outbox_id": row["id"]}]

    # The same refusal again changes nothing.
    deliver(failure)
    run_jobs()
    assert refused("question") == before + 1 and len(outbox_rows(db)) == 1

    # The contact writes again: "1" is not an answer to a question never seen; it is asked again.
    deliver(message("message_created__incoming_text", content="1"))
    run_jobs()
    [order] = orders(db)
    assert order["status"] == "clarifying" and order["platform"] is None
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION, PLATFORM_QUESTION]
    assert [r["dedupe_key"] for r in outbox_rows(db)] == [
        f"order:{order['id']}:ask:platform:0",
        f"order:{order['id']}:ask:platform:0:again1",
    ]
    assert outbox_rows(db)[1]["status"] == "sent"
    # ...and this time the answer counts.
    deliver(message("message_created__incoming_text", content="LinkedIn"))
    run_jobs()
    assert orders(db)[0]["platform"] == "LinkedIn"
    assert first_line(chatwoot_api.posted[-1]) == TOPIC_QUESTION


def test_the_fixture_refusal_marks_the_outbox_row_it_names(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    ask_on_whatsapp(deliver, run_jobs, chatwoot_api)
    [row] = outbox_rows(db)
    failure = load_fixture("message_updated__whatsapp_external_error")
    failure["content_attributes"]["outbox_key"] = row["dedupe_key"]
    failure["id"] = FIRST_MESSAGE_ID
    deliver(failure)
    run_jobs()
    assert outbox_rows(db)[0]["status"] == "failed"
    assert orders(db)[0]["status"] == "waiting_for_contact"


def test_a_refusal_of_a_message_we_did_not_record_changes_nothing(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    ask_on_whatsapp(deliver, run_jobs, chatwoot_api)
    stranger = load_fixture("message_updated__whatsapp_external_error")  # key order:8:..., not ours
    assert deliver(stranger).get_json()["status"] == "accepted"
    run_jobs()
    assert outbox_rows(db)[0]["status"] == "sent"
    assert orders(db)[0]["status"] == "clarifying"


def test_a_question_that_could_not_be_sent_is_asked_again_when_the_contact_writes(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    deliver(message("message_created__incoming_order", can_reply=False))
    run_jobs()
    assert outbox_rows(db)[0]["status"] == "not_sent"
    deliver(message("message_created__incoming_text", content="2", can_reply=True))
    run_jobs()
    [order] = orders(db)
    assert order["platform"] is None and order["status"] == "clarifying"
    assert [first_line(b) for b in chatwoot_api.posted] == [PLATFORM_QUESTION]
    assert outbox_rows(db)[1]["status"] == "sent"


def test_an_unseen_question_is_held_not_timed_out(  # noqa: PLR0917 (fixtures)
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    from app.orders import clarify

    deliver(message("message_created__incoming_order", can_reply=False))
    run_jobs()
    use_settings(clarification_timeout=0)
    assert clarify.expire_clarifications() == 0
    [order] = orders(db)
    assert order["status"] == "waiting_for_contact"
    assert "not_sent" in order["error_details"]


def test_cancel_reaches_an_order_on_hold(
    deliver: Any, run_jobs: Any, db: Any, gcs: Any, chatwoot_api: ChatwootAPI
) -> None:
    question_id = ask_on_whatsapp(deliver, run_jobs, chatwoot_api)
    deliver(chatwoot_api.whatsapp_refuse(question_id))
    run_jobs()
    deliver(message("message_created__incoming_text", content="/cancel"))
    run_jobs()
    assert orders(db)[0]["status"] == "cancelled"
    assert first_line(chatwoot_api.posted[-1]).startswith(f"Order #{orders(db)[0]['id']} cancelled")
    assert len(chatwoot_api.posted) == 2  # the question once, the reply; never the question again
