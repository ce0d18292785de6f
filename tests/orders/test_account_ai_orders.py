"""Orders with each account's own AI: the classifier, the drafting provider and the language of
replies an account sets, beside accounts that keep the environment's."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet

from app.chatwoot import account_ai
from app.orders import generation, i18n
from tests.helpers.admin import sql
from tests.helpers.orders import (
    ChatModelStub,
    ChatwootAPI,
    add_note,
    chat_model_fixture,  # noqa: F401 (the chat_model fixture)
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    message,
    note,
    orders,
)

ORDER = "Write a short professional LinkedIn post with tips about onboarding"


@pytest.fixture(autouse=True)
def _keyed(db: Any, use_settings: Any) -> None:
    use_settings(secrets_encryption_key=Fernet.generate_key().decode())


def of_account(account_id: int, content: str, conversation_id: int) -> dict[str, Any]:
    payload = message(content=content, conversation_id=conversation_id)
    payload["account"] = {"id": account_id, "name": f"Account {account_id}"}
    return payload


def test_the_accounts_default_language_answers_when_the_users_is_unknown(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI
) -> None:
    chatwoot_api.accounts.update({1, 2})
    account_ai.save(2, {"reply_language": "pt"})
    add_note(db, of_account(2, "LinkedIn post: onboarding", 42))
    add_note(db, of_account(1, "LinkedIn post: onboarding", 43))
    run_jobs()
    portuguese, english = chatwoot_api.posted
    assert portuguese["content"].startswith(i18n.t("question.topic", "pt"))
    assert english["content"].startswith(i18n.t("question.topic", "en"))
    # A message whose language is clear is answered in it, whatever the account's default.
    add_note(db, of_account(2, "Please write me a blog article about the news of the week", 44))
    run_jobs()
    assert chatwoot_api.posted[-1]["content"].startswith(i18n.t("question.length", "en"))


def test_an_account_can_keep_to_the_rules_while_the_environment_has_a_model(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, chat_model: ChatModelStub
) -> None:
    chatwoot_api.accounts.update({1, 2})
    account_ai.save(2, {"classification_provider": "rules"})
    chat_model.reply(
        {"kind": "order", "platform": "Blog", "length": None, "tone": None, "topic": None, "subject": None}
    )
    # The rules read this as a note; the environment's model (stubbed) as an order.
    add_note(db, of_account(2, "Big news today: the merger closed.", 42))
    model_read = add_note(db, of_account(1, "Big news today: the merger closed.", 43))
    run_jobs()
    assert len(chat_model.requests) == 1  # account 1's message only
    assert note(db, model_read)["message_kind"] == "order"
    assert [o["chatwoot_account_id"] for o in orders(db)] == [1]


def test_each_account_drafts_with_its_own_provider(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    """The environment leaves drafting to the main app (external); account 2 drafts itself."""
    chatwoot_api.accounts.update({1, 2})
    writer = ChatModelStub()
    try:
        account_ai.save(
            2,
            {
                "generation_provider": "openai",
                "generation_base_url": writer.base_url,
                "generation_api_key": "sk-account-two-writer",
                "generation_model": "writer-two",
            },
        )
        writer.reply("A draft from account two's model.")
        add_note(db, of_account(1, ORDER, 42))
        add_note(db, of_account(2, ORDER, 43))
        run_jobs()
        by_account = {o["chatwoot_account_id"]: o for o in orders(db)}
        assert (by_account[1]["status"], by_account[1]["content"]) == ("queued", None)
        assert (by_account[2]["status"], by_account[2]["content"]) == (
            "ready",
            "A draft from account two's model.",
        )
        [request] = writer.requests
        assert (request["auth"], request["body"]["model"]) == ("Bearer sk-account-two-writer", "writer-two")
        # The reconciler's sweep restarts drafting only where the account drafts itself.
        sql("UPDATE orders SET status = 'queued', updated_at = now() - interval '1 hour'")
        assert generation.requeue_stalled(older_than=60) == 1
        # An account that goes back to the main app: its queued order waits for it.
        account_ai.save(2, {"generation_provider": "external"})
        from app.orders.jobs import generate_order

        assert generate_order(by_account[2]["id"]) == "external"
        assert orders(db)[1]["status"] == "queued" and len(writer.requests) == 1
    finally:
        writer.close()
