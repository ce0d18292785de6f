"""The main app's orders API: list orders by status, post the content of a ready order.

`GET /api/orders?status=queued` and `POST /api/orders/<id>/ready`, both with
`Authorization: Bearer <API_TOKEN>`. Errors are JSON: `{"error": code, "detail": ...}`.
"""

from __future__ import annotations

import hmac
from datetime import date, datetime
from typing import Any

from flask import Blueprint, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app import context, http_input
from app.errors import error_response
from app.orders import generation

bp = Blueprint("orders_api", __name__, url_prefix="/api")

STATUSES = ("clarifying", "waiting_for_contact", "queued", "generating", "ready", "failed", "cancelled")
MAX_LIMIT = 200
MAX_CONTENT_CHARS = 100_000

PUBLIC_FIELDS = (
    "id",
    "status",
    "platform",
    "length",
    "tone",
    "topic",
    "subject",
    "language",
    "request_text",
    "user_id",
    "chatwoot_account_id",
    "chatwoot_conversation_id",
    "chatwoot_contact_id",
    "content",
    "content_url",
    "provider",
    "created_at",
    "updated_at",
    "ready_at",
)


@bp.before_request
def require_token() -> Any:
    expected = context.settings().api_token
    if not expected:
        return error_response(503, "api_disabled", "API_TOKEN is not set on this service")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        response = error_response(401, "unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return None


bp.before_request(http_input.check_request)


def public(order: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PUBLIC_FIELDS:
        value = order.get(name)
        out[name] = value.isoformat() if isinstance(value, datetime | date) else value
    return out


class ListQuery(Schema):
    status = fields.String(load_default="queued", validate=validate.OneOf(STATUSES))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIMIT))
    after_id = fields.Integer(load_default=0, validate=validate.Range(0))


class ReadyBody(Schema):
    content = fields.String(load_default=None, validate=validate.Length(1, MAX_CONTENT_CHARS))
    content_url = fields.Url(load_default=None, schemes={"http", "https"}, validate=validate.Length(max=2048))
    url = fields.Url(load_default=None, schemes={"http", "https"}, validate=validate.Length(max=2048))

    @validates_schema
    def content_or_link(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("content") or "").strip() and not (data.get("content_url") or data.get("url")):
            raise ValidationError("give the content, a link (content_url), or both", "_schema")


@bp.get("/orders")
def list_orders() -> Any:
    try:
        args = ListQuery().load(request.args.to_dict())
    except ValidationError as exc:
        return error_response(422, "invalid", exc.messages)
    rows = context.db().fetch_all("orders.orders_list", args)
    next_after = rows[-1]["id"] if len(rows) == args["limit"] else None
    return {"orders": [public(r) for r in rows], "next_after_id": next_after}


@bp.get("/orders/<int:order_id>")
def get_order(order_id: int) -> Any:
    order = context.db().fetch_one("orders.order_with_request", {"id": order_id})
    if order is None:
        return error_response(404, "not_found", f"no order {order_id}")
    return {"order": public(order)}


@bp.post("/orders/<int:order_id>/ready")
def order_ready(order_id: int) -> Any:
    if not request.is_json:
        return error_response(415, "unsupported_media_type", "send application/json")
    body = http_input.parsed_json()
    if not isinstance(body, dict):
        return error_response(400, "bad_request", "the body must be a JSON object")
    try:
        data = ReadyBody().load(body)
    except ValidationError as exc:
        return error_response(422, "invalid", exc.messages)
    content = data.get("content")
    link = data.get("content_url") or data.get("url")

    database = context.db()
    order = database.fetch_one("orders.order_get", {"id": order_id})
    if order is None:
        return error_response(404, "not_found", f"no order {order_id}")
    if order["status"] == "ready":
        if order["content"] == content and order["content_url"] == link:
            return {"order": public(_with_request(order_id))}
        return error_response(409, "conflict", "the order is already ready with other content")
    if order["status"] not in ("queued", "generating"):
        return error_response(409, "conflict", f"the order is {order['status']}")
    if generation.complete(order_id, content, link, "external") is None:
        current = database.fetch_one("orders.order_get", {"id": order_id})
        return error_response(409, "conflict", f"the order is {(current or {}).get('status')}")
    generation.enqueue_delivery(order_id)
    return {"order": public(_with_request(order_id))}


def _with_request(order_id: int) -> dict[str, Any]:
    row = context.db().fetch_one("orders.order_with_request", {"id": order_id})
    assert row is not None
    return row
