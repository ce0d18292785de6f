"""The optional chat models: the classifier (rules stay the fallback) and the openai drafting
provider, against a local OpenAI-compatible stub server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.orders import generation, rules
from tests.helpers.orders import (
    ChatModelStub,
    ChatwootAPI,
    add_note,
    add_user,
    chat_model_fixture,  # noqa: F401 (the chat_model fixture)
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    message,
    note,
    orders,
    outbox_rows,
)

MODEL_ORDER = {
    "kind": "order",
    "platform": "Instagram",
    "length": None,
    "tone": None,
    "topic": "News",
    "subject": "our Q3 numbers",
}


def test_the_model_finds_an_order_the_rules_miss_and_its_fields(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, chat_model: ChatModelStub
) -> None:
    chat_model.reply(MODEL_ORDER)
    text = "Instagram-worthy, our Q3 numbers?"
    assert rules.looks_like_order(text) is False
    note_id = add_note(db, message(content=text))
    run_jobs()
    assert note(db, note_id)["message_kind"] == "order"
    [order] = orders(db)
    assert (order["platform"], order["topic"], order["subject"]) == ("Instagram", "News", "our Q3 numbers")
    # Only the length and the tone are missing: the length is asked first.
    assert chatwoot_api.posted[0]["content"].startswith("How long should it be?")
    [request] = chat_model.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test-key"
    assert request["body"]["model"] == "classifier-test"
    schema = request["body"]["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["strict"] is True
    assert schema["json_schema"]["schema"] == rules.CLASSIFIER_SCHEMA
    assert request["body"]["messages"][-1] == {"role": "user", "content": text}


def test_literal_words_win_over_the_models_reading(chat_model: ChatModelStub, settings: Any) -> None:
    from app import context

    chat_model.reply({**MODEL_ORDER, "platform": "Blog", "length": "Long"})
    found = rules.classify_text("Write a short LinkedIn post about our Q3 numbers", context.settings())
    assert found.kind == "order" and found.via == "model"
    assert found.fields == {"platform": "LinkedIn", "length": "Short", "topic": "News"}


def test_an_explicit_order_phrase_stays_an_order_whatever_the_model_says(chat_model: ChatModelStub) -> None:
    from app import context

    chat_model.reply(
        {"kind": "note", "platform": None, "length": None, "tone": None, "topic": None, "subject": None}
    )
    assert rules.classify_text("Escribe un post sobre el evento", context.settings()).kind == "order"


@pytest.mark.parametrize("reply", [(500, "boom"), (200, "not json"), (200, json.dumps({"kind": "poem"}))])
def test_when_the_model_fails_the_rules_decide(chat_model: ChatModelStub, reply: tuple[int, str]) -> None:
    from app import context

    chat_model.default = reply
    settings = context.settings()
    assert rules.classify_text("Idea: a checklist for new hires", settings).kind == "note"
    assert rules.classify_text("Write a LinkedIn post about hiring", settings).fields == {
        "platform": "LinkedIn"
    }
    assert chat_model.requests  # it was asked


def test_without_a_classifier_model_no_call_is_made(chat_model: ChatModelStub, use_settings: Any) -> None:
    from app import context

    use_settings(classifier_model="")
    assert rules.classify_text("Write a LinkedIn post about hiring", context.settings()).kind == "order"
    assert chat_model.requests == []


def test_the_openai_provider_drafts_from_the_order_and_recent_notes(  # noqa: PLR0917 (fixtures)
    db: Any, gcs: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, chat_model: ChatModelStub, use_settings: Any
) -> None:
    from app.users import contacts as users

    use_settings(classifier_model="")  # rules only: every model call here is drafting
    add_user(db, notify=True)
    add_note(db, message(content="We cut onboarding from 3 weeks to 4 days."), user_id="user-maria")
    run_jobs()
    chat_model.reply("Onboarding in 4 days. Here is how we did it.")
    add_note(
        db,
        message(content="Write a short professional LinkedIn post with tips about onboarding"),
        user_id="user-maria",
    )
    run_jobs()

    [order] = orders(db)
    assert (order["status"], order["provider"]) == ("ready", "openai")
    assert order["content"] == "Onboarding in 4 days. Here is how we did it."
    [request] = chat_model.requests
    assert request["body"]["model"] == "writer-test"
    system, user = request["body"]["messages"]
    assert "LinkedIn post in English" in system["content"] and "professional tone" in system["content"]
    assert "- We cut onboarding from 3 weeks to 4 days." in user["content"]
    assert "Subject: onboarding" in user["content"]
    # Kept in the user's bucket, and the user (opted in) is told.
    blob = gcs.bucket(users.user_bucket("user-maria")).blob(f"orders/{order['id']}/draft.json")
    assert json.loads(blob.download_as_bytes())["provider"] == "openai"
    assert chatwoot_api.contents == [
        f"Your LinkedIn post is ready — open the app to review it. Order #{order['id']}"
    ]


def test_an_order_that_fails_for_good_gets_one_short_notice(  # noqa: PLR0917 (fixtures)
    db: Any,
    gcs: Any,
    run_jobs: Any,
    chatwoot_api: ChatwootAPI,
    chat_model: ChatModelStub,
    use_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_settings(classifier_model="")
    monkeypatch.setattr(generation, "GENERATE_RETRY_INTERVALS", (0,))
    chat_model.default = (500, "")
    add_note(db, message(content="Write a short professional LinkedIn post with tips about onboarding"))
    run_jobs()
    [order] = orders(db)
    assert order["status"] == "failed"
    assert order["error_details"] == "drafting failed: InternalServerError"
    assert len(chat_model.requests) == 4  # two runs of the job (RQ retry), each with one client retry
    assert chatwoot_api.contents == [
        f"Sorry, we couldn't prepare your LinkedIn post (order #{order['id']}). "
        "Please send your request again in a few minutes."
    ]
    assert [r["kind"] for r in outbox_rows(db)] == ["order_failed"]
    # Running the job again changes nothing and tells nothing more.
    from app.orders.jobs import generate_order

    assert generate_order(order["id"]) == "failed"
    run_jobs()
    assert len(chatwoot_api.posted) == 1


def test_a_drafting_job_that_cannot_be_enqueued_fails_the_order_once(
    db: Any,
    chatwoot_api: ChatwootAPI,
    chat_model: ChatModelStub,
    use_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app import jobs

    use_settings(classifier_model="")
    from app.orders.classify import classify_message

    note_id = add_note(
        db,
        message(content="Write a short professional LinkedIn post with tips about onboarding"),
        enqueue=False,
    )
    real_enqueue = jobs.enqueue

    def redis_down_for_drafting(spec: Any, *args: Any, **kwargs: Any) -> bool:
        if spec.func == "workers.generate.generate_order":
            raise jobs.QueueUnavailable("ConnectionError")
        return real_enqueue(spec, *args, **kwargs)

    monkeypatch.setattr(generation, "enqueue", redis_down_for_drafting)
    monkeypatch.setattr(generation, "ENQUEUE_ATTEMPTS", 2)
    assert classify_message(note_id) == "order"
    [order] = orders(db)
    assert order["status"] == "failed" and order["error_details"] == "drafting job could not be enqueued"
    assert [r["kind"] for r in outbox_rows(db)] == ["order_failed"]
