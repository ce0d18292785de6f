"""Ready notices after WhatsApp's 24-hour window: an approved template, or `no_template`.

Outside the window WhatsApp delivers only approved templates, and Chatwoot takes one on its
create-message call as `template_params` (`name`, `category`, `language`, `processed_params`:
`Messages::MessageBuilder#template_params` keeps it in `additional_attributes`,
`Whatsapp::SendOnWhatsappService#send_template_message` and `Whatsapp::TemplateProcessorService`
turn it into WhatsApp's template; without one, a message where `can_reply` is false fails with
"Template not found or invalid template name"). The stand-in Chatwoot keeps `template_params`
as Chatwoot does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.chatwoot import accounts, outbox
from app.chatwoot import client as chatwoot
from app.config import ConfigError, load_settings
from app.metrics import NOTICES
from tests.helpers.common import base_environ
from tests.helpers.orders import (  # noqa: F401 (the chatwoot_api fixture)
    ChatwootAPI,
    add_user,
    chatwoot_api_fixture,
    orders,
    outbox_rows,
)

NOTICE = chatwoot.text_body("Seu post do LinkedIn está pronto — abra o app para revisá-lo. Pedido #12")
VALUES = {"what": "post do LinkedIn", "order_id": "12", "language": "pt"}


@pytest.fixture(autouse=True)
def _fresh_accounts() -> None:
    accounts.forget_cached()


def conversation(db: Any, hours_since_contact: float, can_reply: bool | None = None) -> None:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO conversations (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, "
            "can_reply, source_type, last_incoming_at, language) VALUES (1, 42, 287, %s, 'whatsapp', %s, 'pt')",
            (can_reply, datetime.now(UTC) - timedelta(hours=hours_since_contact)),
        )


def use_template(use_settings: Any, **changes: Any) -> None:
    use_settings(
        whatsapp_ready_template_name="content_ready",
        whatsapp_ready_template_language="en:en_US,pt:pt_BR,es:es",
        **changes,
    )
    accounts.forget_cached()


def test_without_a_template_the_notice_says_so_and_nothing_is_sent(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, runner: Any, app: Any
) -> None:
    conversation(db, hours_since_contact=25)
    before = NOTICES.labels(kind="order_ready", result="no_template")._value.get()
    outbox.record_and_enqueue(1, 42, "order_ready", "order:12:ready", NOTICE, template_values=VALUES)
    run_jobs()
    assert chatwoot_api.create_calls() == 0
    [row] = outbox_rows(db)
    assert row["status"] == "no_template"
    assert row["error_details"].startswith("WhatsApp 24-hour window closed")
    assert "no WhatsApp template is configured" in row["error_details"]
    assert "WHATSAPP_READY_TEMPLATE_NAME" in row["error_details"]
    assert NOTICES.labels(kind="order_ready", result="no_template")._value.get() == before + 1
    shown = runner.invoke(args=["monitor", "--only", "18_notices_without_template"])
    assert shown.exit_code == 0 and "order_ready" in shown.output
    notices = runner.invoke(args=["monitor", "--only", "13_notices_sent_and_failed"])
    assert "no_template" in notices.output


def test_after_the_window_the_ready_notice_goes_as_the_configured_template(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_template(use_settings)
    conversation(db, hours_since_contact=30)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:12:ready", NOTICE, template_values=VALUES)
    run_jobs()
    expected = {
        "content": NOTICE["content"],
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "content_attributes": {"outbox_key": "order:12:ready"},
        "template_params": {
            "name": "content_ready",
            "category": "UTILITY",
            "language": "pt_BR",
            "processed_params": {"body": {"1": "post do LinkedIn", "2": "12"}},
        },
    }
    assert chatwoot_api.posted == [expected]
    [row] = outbox_rows(db)
    assert row["status"] == "sent" and row["body"] == expected  # recorded before it was sent
    kept = chatwoot_api.message(9882)
    assert kept["additional_attributes"]["template_params"]["name"] == "content_ready"


def test_an_account_template_wins_over_the_global_one(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    from cryptography.fernet import Fernet

    use_template(use_settings, secrets_encryption_key=Fernet.generate_key().decode())
    body = accounts.AccountBody().load(
        {
            "ready_template_name": "pedido_listo",
            "ready_template_language": "es_MX",
            "ready_template_category": "utility",
            "ready_template_params": ["order_id"],
        }
    )
    view = accounts.upsert(1, **body)
    assert view["ready_template"] == "pedido_listo es_MX UTILITY (order_id)"
    conversation(db, hours_since_contact=0, can_reply=False)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:12:ready", NOTICE, template_values=VALUES)
    run_jobs()
    assert chatwoot_api.posted[0]["template_params"] == {
        "name": "pedido_listo",
        "category": "UTILITY",
        "language": "es_MX",
        "processed_params": {"body": {"1": "12"}},
    }


def test_inside_the_window_the_notice_stays_free_text(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_template(use_settings)
    conversation(db, hours_since_contact=1, can_reply=True)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:12:ready", NOTICE, template_values=VALUES)
    run_jobs()
    assert "template_params" not in chatwoot_api.posted[0]


def test_a_question_outside_the_window_is_still_not_sent(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    use_template(use_settings)
    conversation(db, hours_since_contact=30)
    outbox.record_and_enqueue(1, 42, "question", "order:12:ask:platform:0", chatwoot.text_body("Which?"))
    run_jobs()
    assert chatwoot_api.create_calls() == 0
    assert outbox_rows(db)[0]["status"] == "not_sent"


def test_a_free_text_notice_refused_for_the_window_goes_again_as_the_template(  # noqa: PLR0917 (fixtures)
    db: Any, run_jobs: Any, deliver: Any, gcs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    """Our estimate of the window said open; WhatsApp said 131047. The template follows."""
    use_template(use_settings)
    conversation(db, hours_since_contact=23.9)
    outbox.record_and_enqueue(1, 42, "order_ready", "order:12:ready", NOTICE, template_values=VALUES)
    run_jobs()
    assert "template_params" not in chatwoot_api.posted[0]
    deliver(chatwoot_api.webhook(9882))
    deliver(chatwoot_api.whatsapp_refuse(9882))
    run_jobs()
    rows = outbox_rows(db)
    assert [(r["dedupe_key"], r["status"]) for r in rows] == [
        ("order:12:ready", "failed"),
        ("order:12:ready:template", "sent"),
    ]
    assert chatwoot_api.posted[1]["template_params"]["name"] == "content_ready"
    assert chatwoot_api.posted[1]["content_attributes"] == {"outbox_key": "order:12:ready:template"}
    # A refusal of another kind (undeliverable) is not retried as a template.
    deliver(chatwoot_api.webhook(9883))
    deliver(chatwoot_api.whatsapp_refuse(9883, 131026, "Message undeliverable"))
    run_jobs()
    assert len(chatwoot_api.posted) == 2


def test_the_ready_notice_is_recorded_with_its_template_values(
    db: Any, run_jobs: Any, gcs: Any, chatwoot_api: ChatwootAPI, use_settings: Any
) -> None:
    from app.orders import generation

    use_template(use_settings)
    add_user(db, notify=True, language="pt")
    conversation(db, hours_since_contact=48)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO orders (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, "
            "user_id, status, platform, language, content, ready_at) "
            "VALUES (1, 42, 287, 'user-maria', 'ready', 'LinkedIn', 'pt', 'Draft', now()) RETURNING id"
        )
        order_id = cur.fetchone()["id"]
    generation.deliver(order_id)
    run_jobs()
    [row] = outbox_rows(db)
    assert row["template_values"] == {
        "what": "post para LinkedIn",
        "order_id": str(order_id),
        "language": "pt",
    }
    assert chatwoot_api.posted[0]["template_params"]["processed_params"]["body"] == {
        "1": "post para LinkedIn",
        "2": str(order_id),
    }
    assert orders(db)[0]["delivered_at"] is not None


# ------------------------------------------------------------------------------------------------
# settings and bodies


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WHATSAPP_READY_TEMPLATE_NAME", "Content Ready", "lowercase letters"),
        ("WHATSAPP_READY_TEMPLATE_LANGUAGE", "portuguese", "WhatsApp language code"),
        ("WHATSAPP_READY_TEMPLATE_LANGUAGE", "fr:fr_FR", "user language:WhatsApp code"),
        ("WHATSAPP_READY_TEMPLATE_CATEGORY", "PROMO", "UTILITY"),
        ("WHATSAPP_READY_TEMPLATE_PARAMS", "what,name", r"unknown template value\(s\) name"),
    ],
)
def test_a_bad_template_setting_stops_the_start_naming_it(
    services: Any, tmp_path: Any, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings({**base_environ(services, tmp_path), name: value})
    assert str(refused.value).startswith(f"{name}: ")


def test_template_settings_are_read(services: Any, tmp_path: Any) -> None:
    settings = load_settings(
        {
            **base_environ(services, tmp_path),
            "WHATSAPP_READY_TEMPLATE_NAME": "content_ready",
            "WHATSAPP_READY_TEMPLATE_LANGUAGE": "en_US",
            "WHATSAPP_READY_TEMPLATE_CATEGORY": "utility",
            "WHATSAPP_READY_TEMPLATE_PARAMS": "none",
        }
    )
    template = accounts.env_template(settings)
    assert template is not None
    assert template.params == () and template.category == "UTILITY"
    assert template.params_for(VALUES) == {
        "name": "content_ready",
        "category": "UTILITY",
        "language": "en_US",
        "processed_params": {},
    }
    assert accounts.env_template(load_settings(base_environ(services, tmp_path))) is None


@pytest.mark.parametrize(
    "params",
    [
        {"name": "content_ready", "category": "UTILITY"},
        {"name": "", "category": "UTILITY", "language": "en"},
        {"name": "x", "category": "UTILITY", "language": "en", "processed_params": {"body": {"1": " "}}},
        {"name": "x", "category": "UTILITY", "language": "en", "processed_params": []},
    ],
)
def test_a_broken_template_body_is_refused_before_it_is_recorded(params: dict[str, Any]) -> None:
    with pytest.raises(chatwoot.InvalidMessage, match="template_params"):
        chatwoot.validate_body(chatwoot.template_body("Your post is ready", params))


def test_a_template_goes_only_with_public_text() -> None:
    body = chatwoot.template_body("x", {"name": "x", "category": "UTILITY", "language": "en"})
    with pytest.raises(chatwoot.InvalidMessage, match="public text"):
        chatwoot.validate_body({**body, "private": True})
