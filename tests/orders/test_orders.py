"""Notes and orders: rules, the questions an order needs, answers, timeouts, conversation order.

Messages are written as ingestion and the archive leave them (test_orders_support.add_note) and
classified by the real RQ worker; Chatwoot's API is mocked with `responses`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.config import Settings
from app.orders import clarify, rules
from tests.helpers.orders import (
    ChatwootAPI,
    add_note,
    add_user,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    conversation,
    message,
    note,
    orders,
    outbox_rows,
)

RULES_ONLY = Settings(learned_classifier=False)
"""No OpenAI key: the rules alone decide."""

PLATFORM_QUESTION = (
    "Which platform would you like content for?\n\n1. LinkedIn\n2. Instagram\n3. Twitter\n4. Blog\n\n"
    "Reply with a number or tap an option."
)
TOPIC_QUESTION = (
    "Which category fits this post best?\n\n1. Trends\n2. News\n3. Tips\n4. Product\n\n"
    "Reply with a number or tap an option."
)
PLATFORM_ITEMS = [
    {"title": "LinkedIn", "value": "linkedin"},
    {"title": "Instagram", "value": "instagram"},
    {"title": "Twitter", "value": "twitter"},
    {"title": "Blog", "value": "blog"},
]
TOPIC_ITEMS = [
    {"title": "Trends", "value": "trends"},
    {"title": "News", "value": "news"},
    {"title": "Tips", "value": "tips"},
    {"title": "Product", "value": "product"},
]


def question(content: str, items: list[dict[str, str]], key: str) -> dict[str, Any]:
    return {
        "content": content,
        "message_type": "outgoing",
        "private": False,
        "content_type": "input_select",
        "content_attributes": {"items": items, "outbox_key": key},
    }


# ------------------------------------------------------------------------------------------
# Rules


@pytest.mark.parametrize(
    "text",
    [
        "Can you write a post about our onboarding results? Keep it short and professional.",
        "write a linkedin post on hiring",
        "Please draft me a short article about remote work",
        "I need a LinkedIn post about the conference",
        "Escreva um post sobre nossos resultados de onboarding",
        "Você pode escrever um artigo curto sobre contratação?",
        "preciso de um post para o instagram sobre o lançamento",
        "Escribe un post sobre nuestros resultados",
        "¿Puedes redactar un artículo largo sobre tendencias?",
        "necesito un tweet sobre la noticia de hoy",
        "post for linkedin about our new feature",
    ],
)
def test_explicit_order_phrases_in_three_languages(text: str) -> None:
    assert rules.looks_like_order(text)
    assert rules.classify_text(text, RULES_ONLY).kind == "order"


@pytest.mark.parametrize(
    "text",
    [
        "Idea for next week: our customers keep asking how we cut onboarding from 3 weeks to 4 days.",
        "Whiteboard from today's planning",
        "Saw a great LinkedIn thread from Ana about pricing",
        "Make sure the post from yesterday gets shared",
        "Reunião com o time amanhã às 10h",
        "Recordatorio: llamar a Pedro sobre el contrato",
        "LinkedIn",
        "1",
    ],
)
def test_everything_else_is_a_note(text: str) -> None:
    assert rules.classify_text(text, RULES_ONLY).kind == "note"


@pytest.mark.parametrize(
    ("text", "fields", "subject"),
    [
        (
            "Can you write a post about our onboarding results? Keep it short and professional.",
            {"length": "Short", "tone": "Professional"},
            "our onboarding results",
        ),
        (
            "Write a long, friendly LinkedIn post with tips about hiring juniors",
            {"platform": "LinkedIn", "length": "Long", "tone": "Friendly", "topic": "Tips"},
            "hiring juniors",
        ),
        (
            "Escreva um post curto e descontraído para o Instagram sobre as tendências do setor",
            {"platform": "Instagram", "length": "Short", "tone": "Casual", "topic": "Trends"},
            "as tendências do setor",
        ),
        (
            "Escribe un artículo largo y profesional sobre las noticias del producto",
            {"platform": "Blog", "length": "Long", "tone": "Professional", "topic": "News"},
            "las noticias del producto",
        ),
        ("Write a post about how long onboarding takes", {}, "how long onboarding takes"),
        ("Write a post about our long-term social media plan", {}, "our long-term social media plan"),
        (
            "Escreva um post médio e amigável sobre dicas de produtividade para o LinkedIn",
            {"platform": "LinkedIn", "length": "Medium", "tone": "Friendly", "topic": "Tips"},
            "dicas de produtividade",
        ),
    ],
)
def test_fields_and_subject_are_taken_from_the_message(
    text: str, fields: dict[str, str], subject: str
) -> None:
    found = rules.classify_text(text, RULES_ONLY)
    assert found.kind == "order"
    assert found.fields == fields
    assert found.subject == subject


def test_question_titles_fit_whatsapp_and_are_unique_in_every_language() -> None:
    from app.chatwoot import client as chatwoot

    for name in rules.CHOICES:
        for language in ("en", "pt", "es"):
            body = clarify.question_body(name, language)
            chatwoot.validate_body(body)  # raises on a limit
            titles = [i["title"] for i in body["content_attributes"]["items"]]
            assert all(len(t) <= 20 for t in titles)
            assert len({t.casefold() for t in titles}) == len(titles)
            assert len(body["content"]) <= 1024
            for n, title in enumerate(titles, 1):
                assert f"{n}. {title}" in body["content"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("platform", "LinkedIn", "LinkedIn"),
        ("platform", " linkedin ", "LinkedIn"),
        ("platform", "2", "Instagram"),
        ("platform", "4.", "Blog"),
        ("platform", "twitter", "Twitter"),
        ("platform", "5", None),
        ("platform", "Facebook", None),
        ("topic", "Tendências", "Trends"),
        ("topic", "consejos", "Tips"),
        ("length", "Curto", "Short"),
        ("tone", "Professional 👍", "Professional"),
    ],
)
def test_answers_by_title_number_or_value(name: str, text: str, expected: str | None) -> None:
    items = clarify.question_items(name, "en")
    assert clarify.match_choice(name, items, text) == expected


# ------------------------------------------------------------------------------------------
# The clarification flow, through the classify and send jobs


def test_the_fixture_order_gets_exactly_its_two_questions_one_at_a_time(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    order_note = add_note(db, message("message_created__incoming_order"))
    run_jobs()
    assert chatwoot_api.posted == [question(PLATFORM_QUESTION, PLATFORM_ITEMS, "order:1:ask:platform:0")]
    assert note(db, order_note)["message_kind"] == "order"
    assert note(db, order_note)["classification_status"] == "done"
    [order] = orders(db)
    assert order["status"] == "clarifying"
    assert (order["platform"], order["length"], order["tone"], order["topic"]) == (
        None,
        "Short",
        "Professional",
        None,
    )
    assert order["subject"] == "our onboarding results"
    assert order["chatwoot_contact_id"] == 287 and order["source_meeting_note_id"] == order_note
    clarification = conversation(db)["context_json"]["clarification"]
    assert clarification["field"] == "platform"
    assert clarification["fields"] == {"length": "Short", "tone": "Professional"}
    assert clarification["order_id"] == order["id"]

    # The tapped title comes back with in_reply_to = our question's Chatwoot id (9882).
    answer = add_note(db, message("message_created__incoming_quick_reply_answer"))
    run_jobs()
    assert note(db, answer)["message_kind"] == "answer"
    assert chatwoot_api.posted[1:] == [question(TOPIC_QUESTION, TOPIC_ITEMS, "order:1:ask:topic:0")]
    assert orders(db)[0]["platform"] == "LinkedIn"
    assert conversation(db)["context_json"]["clarification"]["fields"] == {
        "platform": "LinkedIn",
        "length": "Short",
        "tone": "Professional",
    }

    # Answered by number: the order is complete and queued; nothing more is sent.
    by_number = add_note(db, message(content="3"))
    run_jobs()
    assert note(db, by_number)["message_kind"] == "answer"
    assert len(chatwoot_api.posted) == 2
    [order] = orders(db)
    assert order["status"] == "queued" and order["topic"] == "Tips"
    assert "clarification" not in conversation(db)["context_json"]
    assert [r["status"] for r in outbox_rows(db)] == ["sent", "sent"]
    assert [r["chatwoot_message_id"] for r in outbox_rows(db)] == ["9882", "9883"]


def test_a_complete_order_is_queued_without_a_question(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_note(db, message(content="Write a long, friendly LinkedIn post with tips about hiring juniors"))
    run_jobs()
    assert chatwoot_api.posted == []
    [order] = orders(db)
    assert order["status"] == "queued"
    assert (order["platform"], order["length"], order["tone"], order["topic"]) == (
        "LinkedIn",
        "Long",
        "Friendly",
        "Tips",
    )


def test_notes_never_cause_a_request(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    ids = [
        add_note(db, message("message_created__incoming_text")),
        add_note(db, message("message_created__incoming_image_with_caption")),
        add_note(
            db, message("message_created__incoming_voice_note"), transcript="Remember to call the bank."
        ),
        add_note(db, message(content="Anotação: revisar o contrato amanhã")),
    ]
    run_jobs()
    assert len(chatwoot_api.rsps.calls) == 0
    assert outbox_rows(db) == []
    for note_id in ids:
        assert (note(db, note_id)["message_kind"], note(db, note_id)["classification_status"]) == (
            "note",
            "done",
        )


def test_a_voice_note_order_is_read_from_its_transcript(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_note(
        db,
        message("message_created__incoming_voice_note"),
        transcript="Please write a short professional LinkedIn post about our onboarding results.",
    )
    run_jobs()
    [order] = orders(db)
    assert (order["platform"], order["length"], order["tone"]) == ("LinkedIn", "Short", "Professional")
    assert chatwoot_api.posted == [question(TOPIC_QUESTION, TOPIC_ITEMS, "order:1:ask:topic:0")]


def test_our_own_messages_are_never_processed(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    from app.orders.classify import classify_message

    ids = [
        add_note(db, message("message_created__outgoing_bot_quick_reply")),
        add_note(db, message("message_created__outgoing_agent")),
        add_note(db, message("message_created__private_note")),
    ]
    run_jobs()
    for note_id in ids:
        row = note(db, note_id)
        assert row["classification_status"] == "not_needed" and row["message_kind"] is None
        assert classify_message(note_id) in ("not_needed", "None")
    # Even one that slipped through as "incoming" is recognised by our key.
    echoed = message(content="Which platform would you like content for?")
    echoed["content_attributes"] = {"outbox_key": "order:1:ask:platform:0"}
    slipped = add_note(db, echoed)
    run_jobs()
    assert note(db, slipped)["classification_status"] == "not_needed"
    assert len(chatwoot_api.rsps.calls) == 0


def test_running_the_job_twice_asks_once(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    from app.jobs import CLASSIFY_MESSAGE, enqueue
    from app.orders.classify import classify_message

    note_id = add_note(db, message("message_created__incoming_order"))
    run_jobs()
    assert classify_message(note_id) == "order"
    enqueue(CLASSIFY_MESSAGE, note_id)
    run_jobs()
    assert len(chatwoot_api.posted) == 1
    assert len(orders(db)) == 1 and len(outbox_rows(db)) == 1


def test_a_quick_answer_never_overtakes_the_order_it_answers(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    now = datetime.now(UTC)
    # The order is a voice note still being transcribed when the typed answer is ready.
    order_note = add_note(
        db,
        message("message_created__incoming_voice_note", created_at=now - timedelta(seconds=20)),
        transcription_status="pending",
    )
    answer = add_note(db, message(content="LinkedIn", created_at=now - timedelta(seconds=5)))
    run_jobs()
    assert note(db, answer)["classification_status"] == "pending"
    assert orders(db) == [] and chatwoot_api.posted == []

    with db.transaction() as cur:
        cur.execute(
            "UPDATE meeting_notes SET transcript = %s, transcription_status = 'done' WHERE id = %s",
            ("Can you write a short professional post about our onboarding results?", order_note),
        )
    from app.jobs import CLASSIFY_MESSAGE, enqueue

    enqueue(CLASSIFY_MESSAGE, order_note)
    run_jobs()
    assert [note(db, i)["message_kind"] for i in (order_note, answer)] == ["order", "answer"]
    assert orders(db)[0]["platform"] == "LinkedIn"
    assert [b["content_attributes"]["outbox_key"] for b in chatwoot_api.posted] == [
        "order:1:ask:platform:0",
        "order:1:ask:topic:0",
    ]


def test_another_message_while_a_question_is_pending_is_what_it_is(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    pending = conversation(db)["context_json"]["clarification"]

    a_note = add_note(db, message(content="Remember to send Ana the slides"))
    run_jobs()
    assert note(db, a_note)["message_kind"] == "note"
    assert len(chatwoot_api.posted) == 1
    assert conversation(db)["context_json"]["clarification"]["field"] == pending["field"]

    # A second, incomplete order waits for the first one's questions.
    second = add_note(db, message(content="Also write a casual Instagram post"))
    run_jobs()
    assert note(db, second)["message_kind"] == "order"
    assert len(chatwoot_api.posted) == 1
    assert conversation(db)["context_json"]["waiting_orders"] == [2]

    add_note(db, message(content="Blog"))  # answers the platform question of order 1
    add_note(db, message(content="2"))  # answers its topic question: News
    run_jobs()
    first, waiting = orders(db)
    assert (first["status"], first["platform"], first["topic"]) == ("queued", "Blog", "News")
    assert waiting["status"] == "clarifying"
    # Then order 2's first missing field: the topic (platform and tone were given), then the length.
    keys = [b["content_attributes"]["outbox_key"] for b in chatwoot_api.posted]
    assert keys == ["order:1:ask:platform:0", "order:1:ask:topic:0", "order:2:ask:topic:0"]
    assert conversation(db)["context_json"]["clarification"]["order_id"] == 2
    assert "waiting_orders" not in conversation(db)["context_json"]


def test_an_unknown_choice_in_reply_to_our_question_is_asked_again_once_then_cancelled(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    first_try = add_note(db, message(content="Facebook", in_reply_to=9882))
    run_jobs()
    assert note(db, first_try)["message_kind"] == "answer"
    assert chatwoot_api.posted[1] == question(
        "Sorry, I didn't get that.\n" + PLATFORM_QUESTION, PLATFORM_ITEMS, "order:1:ask:platform:1"
    )
    add_note(db, message(content="Pinterest", in_reply_to=9883))
    run_jobs()
    assert chatwoot_api.posted[2] == {
        "content": "I couldn't match your answer, so I cancelled order #1. Send your request again whenever you like.",
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "content_attributes": {"outbox_key": "order:1:cancelled"},
    }
    assert len(chatwoot_api.posted) == 3
    assert orders(db)[0]["status"] == "cancelled"
    assert conversation(db)["context_json"] == {}
    # The old question is no longer pending: a later "LinkedIn" is a note.
    later = add_note(db, message(content="LinkedIn"))
    run_jobs()
    assert note(db, later)["message_kind"] == "note"
    assert len(chatwoot_api.posted) == 3


def test_questions_speak_the_users_language(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    add_note(db, message(content="Escreva um post curto e profissional sobre nossos resultados"))
    run_jobs()
    assert chatwoot_api.posted[0]["content"].startswith(
        "Para qual plataforma você quer o conteúdo?\n\n1. LinkedIn"
    )
    assert chatwoot_api.posted[0]["content"].endswith("Responda com um número ou toque em uma opção.")
    add_note(db, message(content="Instagram", in_reply_to=9882))
    run_jobs()
    assert chatwoot_api.posted[1]["content_attributes"]["items"][0] == {
        "title": "Tendências",
        "value": "trends",
    }
    add_note(db, message(content="Dicas"))
    run_jobs()
    assert orders(db)[0]["topic"] == "Tips" and orders(db)[0]["language"] == "pt"


def test_the_users_own_language_setting_wins(db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI) -> None:
    add_user(db, language="es")
    add_note(db, message("message_created__incoming_order"), user_id="user-maria")
    run_jobs()
    assert chatwoot_api.posted[0]["content"].startswith("¿Para qué plataforma quieres el contenido?")


def test_an_unanswered_question_is_cancelled_after_the_timeout(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_settings(clarification_timeout=3600)
    add_note(db, message("message_created__incoming_order"))
    run_jobs()
    assert clarify.expire_clarifications() == 0
    assert clarify.expire_clarifications(now=datetime.now(UTC) + timedelta(minutes=59)) == 0
    assert clarify.expire_clarifications(now=datetime.now(UTC) + timedelta(minutes=61)) == 1
    assert orders(db)[0]["status"] == "cancelled"
    assert orders(db)[0]["cancelled_reason"] == "clarification timed out"
    assert conversation(db)["context_json"] == {}
    run_jobs()
    assert len(chatwoot_api.posted) == 1  # nothing is sent for an expired question
    assert clarify.expire_clarifications(now=datetime.now(UTC) + timedelta(hours=5)) == 0


def test_an_unmapped_contacts_order_is_clarified_and_stored(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    add_note(db, message("message_created__incoming_order", contact_id=999, conversation_id=77))
    run_jobs()
    [order] = orders(db)
    assert order["user_id"] is None and order["chatwoot_contact_id"] == 999
    assert order["chatwoot_conversation_id"] == 77 and order["status"] == "clarifying"
    assert len(chatwoot_api.posted) == 1


def test_a_message_stuck_before_classification_holds_the_conversation_only_for_a_while(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    stuck = add_note(db, message(content="first"), stored=False, enqueue=False)
    later = add_note(db, message(content="second note"))
    run_jobs()
    assert note(db, later)["classification_status"] == "pending"
    with db.transaction() as cur:
        cur.execute("UPDATE meeting_notes SET created_at = now() - interval '1 hour' WHERE id = %s", (stuck,))
    from app.jobs import CLASSIFY_MESSAGE, enqueue

    enqueue(CLASSIFY_MESSAGE, later)
    run_jobs()
    assert note(db, later)["message_kind"] == "note"
    assert note(db, stuck)["classification_status"] == "pending"
