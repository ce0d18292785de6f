"""Drafting content for queued orders, and what happens once an order is ready.

Providers: `openai` (a chat model drafts the content from the order and the author's recent
notes, in a job) and `external` (the default without an OpenAI key: the main app lists queued
orders through the API and posts the content back).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from rq import Retry
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from app import context
from app.archive import storage
from app.chatwoot import account_ai, outbox
from app.chatwoot import client as chatwoot
from app.chatwoot.payloads import Contact
from app.config import Settings
from app.db import DatabaseUnavailable
from app.jobs import DELIVER_ORDER, GENERATE_ORDER, QueueUnavailable, enqueue
from app.jobs import DELIVER_RETRY_INTERVALS as _DELIVER_INTERVALS
from app.jobs import GENERATE_RETRY_INTERVALS as _GENERATE_INTERVALS
from app.metrics import ACCOUNT_PROVIDER_CALLS, account_label
from app.orders import i18n
from app.orders.openai_client import chat_client
from app.users import contacts as users

log = logging.getLogger(__name__)

GENERATE_RETRY_INTERVALS: tuple[int, ...] = _GENERATE_INTERVALS
"""Seconds between drafting attempts (model errors, bucket set-up)."""
DELIVER_RETRY_INTERVALS: tuple[int, ...] = _DELIVER_INTERVALS
"""Seconds between attempts to keep the draft in the user's bucket."""
ENQUEUE_ATTEMPTS = 3
"""Tries to enqueue the drafting job before the order is given up."""
NOTES_FOR_DRAFT = 20
"""Recent notes given to the model as material."""
NOTES_DAYS = 30
DRAFT_MAX_TOKENS = 1500

LENGTH_GUIDE = {
    "Short": "about 60 to 120 words",
    "Medium": "about 150 to 300 words",
    "Long": "about 500 to 900 words",
}
LANGUAGE_NAMES = {"en": "English", "pt": "Portuguese", "es": "Spanish"}


class GenerationError(Exception):
    """The provider could not draft the content (worth retrying)."""


def provider_name(account_id: int | None = None) -> str:
    """The drafting provider of an account (its own, else the environment's)."""
    if account_id is None:
        return context.settings().effective_generation_provider
    return account_ai.for_account(account_id).generation_provider


def _retry(intervals: tuple[int, ...]) -> Any:

    return Retry(max=len(intervals), interval=list(intervals))


def schedule(order_id: int) -> None:
    """Start drafting a queued order (openai provider); the external provider waits for the main app."""
    try:
        order = context.db().fetch_one("orders.order_get", {"id": order_id})
        if order is None or provider_name(int(order["chatwoot_account_id"])) != "openai":
            return
    except DatabaseUnavailable:
        pass  # enqueued all the same: the job reads the account's provider again

    @retry(
        retry=retry_if_exception_type(QueueUnavailable),
        stop=stop_after_attempt(ENQUEUE_ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def _enqueue() -> None:
        enqueue(GENERATE_ORDER, int(order_id), retry=_retry(GENERATE_RETRY_INTERVALS))

    try:
        _enqueue()
    except QueueUnavailable:
        fail_order(order_id, "drafting job could not be enqueued")


def enqueue_delivery(order_id: int) -> bool:

    try:
        return enqueue(DELIVER_ORDER, int(order_id), retry=_retry(DELIVER_RETRY_INTERVALS))
    except QueueUnavailable:
        log.warning("delivery job not enqueued; the sweep retries", extra={"order_id": order_id})
        return False


def user_of(order: dict[str, Any]) -> str | None:
    """The order's user, or the user its contact has been linked to since."""
    if order.get("user_id"):
        return str(order["user_id"])
    row = context.db().fetch_one("orders.order_contact", {"order_id": order["id"]})
    if row is None:
        return None
    found = users.find_user(
        int(row["account_id"]), Contact(row["contact_id"], row["phone"], row["identifier"])
    )
    return found[0] if found else None


def bucket_for(order: dict[str, Any]) -> str:
    """The bucket of the order's user (as recorded for the user), or the account's while unmapped."""

    user_id = user_of(order)
    if user_id:
        return users.user_bucket(user_id)
    return storage.bucket_name(users.fallback_key(int(order["chatwoot_account_id"])))


def _language(order: dict[str, Any], mapping: dict[str, Any] | None) -> str:
    return i18n.language_or_default((mapping or {}).get("language") or order.get("language"))


def fail_order(order_id: int, reason: str) -> bool:
    """An order in progress failed for good: mark it and tell the user once, shortly."""
    order = context.db().fetch_one(
        "orders.order_move",
        {"id": order_id, "to": "failed", "from": ["queued", "generating"], "reason": reason[:500]},
    )
    if order is None:
        return False
    log.warning("order failed", extra={"order_id": order_id, "reason": reason})
    user_id = user_of(order)
    mapping = context.db().fetch_one("users.user_get", {"user_id": user_id}) if user_id else None
    language = _language(order, mapping)
    outbox.record_and_enqueue(
        int(order["chatwoot_account_id"]),
        int(order["chatwoot_conversation_id"]),
        "order_failed",
        f"order:{order_id}:failed",
        chatwoot.text_body(
            i18n.t(
                "order.failed", language, what=i18n.what(order.get("platform"), language), order_id=order_id
            )
        ),
        order_id=order_id,
    )
    return True


def complete(
    order_id: int, content: str | None, content_url: str | None, provider: str
) -> dict[str, Any] | None:
    """queued/generating -> ready with the draft; None when the order is not in progress."""
    return context.db().fetch_one(
        "orders.order_mark_ready",
        {"id": order_id, "content": content, "content_url": content_url, "provider": provider},
    )


def deliver(order_id: int) -> dict[str, Any] | None:
    """Ready notice (only with opt-in), then the draft kept in the user's bucket. Safe to repeat.

    The notice is free text; outside WhatsApp's 24-hour window the send job sends the account's
    approved WhatsApp template instead, filled with the values recorded with it."""

    database = context.db()
    order = database.fetch_one("orders.order_get", {"id": order_id})
    if order is None or order["status"] != "ready" or order["delivered_at"] is not None:
        return order
    user_id = user_of(order)
    mapping = database.fetch_one("users.user_get", {"user_id": user_id}) if user_id else None
    if mapping and mapping["notify_on_ready"]:
        language = _language(order, mapping)
        what = i18n.what(order.get("platform"), language)
        outbox.record_and_enqueue(
            int(order["chatwoot_account_id"]),
            int(order["chatwoot_conversation_id"]),
            "order_ready",
            f"order:{order_id}:ready",
            chatwoot.text_body(i18n.t("order.ready", language, what=what, order_id=order_id)),
            order_id=order_id,
            # After WhatsApp's 24-hour window, the account's approved template carries the notice.
            template_values={"what": what, "order_id": str(order_id), "language": language},
        )
    bucket = storage.ensure_bucket(bucket_for(order))
    path = storage.put_json(bucket, draft_object_name(order_id), draft_document(order))
    return database.fetch_one("orders.order_delivered", {"id": order_id, "path": path})


def draft_object_name(order_id: int) -> str:
    return f"orders/{int(order_id)}/draft.json"


def draft_document(order: dict[str, Any]) -> dict[str, Any]:
    ready_at = order.get("ready_at") or datetime.now(UTC)
    return {
        "order_id": order["id"],
        "platform": order.get("platform"),
        "length": order.get("length"),
        "tone": order.get("tone"),
        "topic": order.get("topic"),
        "subject": order.get("subject"),
        "language": order.get("language"),
        "content": order.get("content"),
        "content_url": order.get("content_url"),
        "provider": order.get("provider"),
        "ready_at": ready_at.isoformat(),
    }


def recent_notes(order: dict[str, Any]) -> list[str]:
    rows = context.db().fetch_all(
        "orders.recent_notes",
        {
            "user_id": user_of(order),
            "account_id": order["chatwoot_account_id"],
            "contact_id": order.get("chatwoot_contact_id"),
            "days": NOTES_DAYS,
            "limit": NOTES_FOR_DRAFT,
        },
    )
    return [str(r["text"]) for r in rows if r.get("text")]


def draft_prompt(order: dict[str, Any], request_text: str | None, notes: list[str]) -> list[dict[str, str]]:
    language = LANGUAGE_NAMES.get(order.get("language") or "en", "English")
    platform = order.get("platform") or "LinkedIn"
    length = order.get("length") or "Medium"
    instructions = (
        f"Write a {platform} post in {language}, {LENGTH_GUIDE.get(length, '')}, in a "
        f"{(order.get('tone') or 'Professional').lower()} tone, in the category "
        f"{order.get('topic') or 'Tips'}. Write as the author, in the first person, from the author's "
        "own notes below; do not invent figures the notes do not give. Return only the post text."
    )
    material = "\n".join(f"- {n[:1000]}" for n in notes) or "- (no notes)"
    user = (
        f"Subject: {order.get('subject') or '(see the request)'}\n"
        f"Request: {(request_text or '')[:2000]}\n"
        f"Author's recent notes:\n{material}"
    )
    return [{"role": "system", "content": instructions}, {"role": "user", "content": user}]


def draft(
    order: dict[str, Any], request_text: str | None, notes: list[str], settings: Settings | None = None
) -> str:
    """The openai provider: a chat model drafts the content (with the order's account's
    settings when given, else the environment's)."""
    settings = settings or context.settings()
    if not settings.openai_api_key:
        raise GenerationError("OPENAI_API_KEY is not set")
    account = account_label(order.get("chatwoot_account_id"))
    ACCOUNT_PROVIDER_CALLS.labels(account, "generation", "openai").inc()
    try:
        client = chat_client(settings, timeout=120.0, max_retries=1)
        response = client.chat.completions.create(
            model=settings.generation_model,
            messages=draft_prompt(order, request_text, notes),  # type: ignore[arg-type]
            max_completion_tokens=DRAFT_MAX_TOKENS,
        )
        text = (response.choices[0].message.content or "").strip()
    except Exception as exc:
        raise GenerationError(f"drafting failed: {type(exc).__name__}") from None
    if not text:
        raise GenerationError("the model returned no text")
    return text


def requeue_undelivered(older_than: int = 300, limit: int = 200) -> int:
    """For the reconciler: ready orders whose notice/bucket copy is still to do."""
    rows = context.db().fetch_all("orders.orders_undelivered", {"older_than": older_than, "limit": limit})
    return sum(1 for r in rows if enqueue_delivery(int(r["id"])))


def requeue_stalled(older_than: int = 1800, limit: int = 200) -> int:
    """For the reconciler: orders the openai provider should be drafting but nothing is (the
    provider of each order's account: its own, else the environment's)."""

    count = 0
    providers: dict[int, str] = {}
    for row in context.db().fetch_all(
        "orders.orders_stalled_queued", {"older_than": older_than, "limit": limit}
    ):
        account_id = int(row["chatwoot_account_id"])
        if account_id not in providers:
            providers[account_id] = provider_name(account_id)
        if providers[account_id] != "openai":
            continue
        try:
            count += enqueue(GENERATE_ORDER, int(row["id"]), retry=_retry(GENERATE_RETRY_INTERVALS))
        except QueueUnavailable:
            break
    return count
