"""The admin API under `/admin`: users and their contact links, link codes, unmapped contacts,
erasure, Chatwoot accounts, and the numbers of the admin page.

Every request needs `Authorization: Bearer <ADMIN_API_TOKEN>` (compared in constant time);
requests are rate-limited per client address, and so are failed sign-ins, more strictly.
Errors are JSON: `{"error": code, "detail": ...}`. Secrets and tokens are write-only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from app import context, http_input
from app.admin.auth import actor, bearer_token, token_matches
from app.admin.stats import dashboard
from app.chatwoot import account_ai, accounts
from app.db import DatabaseUnavailable
from app.errors import error_response
from app.ingest import audit
from app.records import exports, holds, retention, search
from app.users import link_codes as links
from app.users import tombstones
from app.users.erase import StorageUnavailable, erase_user
from app.users.service import (
    LANGUAGES,
    USER_ID_RE,
    Conflict,
    Invalid,
    NotFound,
    add_link,
    create_user,
    get_user,
    list_users,
    remove_link,
    unmapped_contacts,
    update_user,
)

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")

MAX_PAGE = 500
INT32_MAX = 2**31 - 1


@bp.before_request
def require_token() -> Any:
    if not context.settings().admin_api_token:
        return error_response(503, "admin_disabled", "ADMIN_API_TOKEN is not set on this service")
    if not token_matches(bearer_token()):
        response = error_response(
            401, "unauthorized", "a valid admin token is required: Authorization: Bearer <token>"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
        return response
    return None


bp.before_request(http_input.check_request)


@bp.after_request
def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# ----------------------------------------------------------------------------------------------
# request bodies


def json_body() -> dict[str, Any]:
    if request.data and not request.is_json:
        raise BadBody(415, "unsupported_media_type", "send application/json")
    data = http_input.parsed_json()
    if data is None:
        data = {} if not request.data else None
    if not isinstance(data, dict):
        raise BadBody(400, "bad_request", "the body must be a JSON object")
    return data


@dataclass
class BadBody(Exception):
    status: int
    code: str
    detail: Any = None


@bp.errorhandler(BadBody)
def bad_body(exc: BadBody) -> Any:
    return error_response(exc.status, exc.code, exc.detail)


@bp.errorhandler(ValidationError)
def invalid(exc: ValidationError) -> Any:
    return error_response(422, "invalid", exc.messages)


class StrictBoolean(fields.Boolean):
    """true or false, as JSON booleans only (not "yes", 1 or "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _user_id_field(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(
            USER_ID_RE, error="1 to 200 printable characters, no slash, no leading or trailing space"
        ),
        **kwargs,
    )


class UserCreate(_Strict):
    user_id = _user_id_field(required=True)
    display_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    language = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(LANGUAGES))
    notify_on_ready = StrictBoolean(load_default=False)


class UserUpdate(_Strict):
    display_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    language = fields.String(allow_none=True, validate=validate.OneOf(LANGUAGES))
    notify_on_ready = StrictBoolean()

    @validates_schema
    def not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("give display_name, language or notify_on_ready", "_schema")


class NotifyBody(_Strict):
    notify_on_ready = StrictBoolean(required=True)


class LinkCreate(_Strict):
    chatwoot_account_id = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(1, INT32_MAX)
    )
    contact_id = fields.Integer(load_default=None, strict=True, validate=validate.Range(1, INT32_MAX))
    phone = fields.String(load_default=None, validate=validate.Length(1, 40))
    identifier = fields.String(load_default=None, validate=validate.Length(1, 255))
    region = fields.String(load_default=None, validate=validate.Regexp(r"^[A-Za-z]{2}$"))
    replace = StrictBoolean(load_default=False)

    @validates_schema
    def one_contact(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("contact_id") is None and not data.get("phone") and not data.get("identifier"):
            raise ValidationError("give contact_id, phone or identifier", "_schema")


class LinkCodeCreate(_Strict):
    chatwoot_account_id = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(1, INT32_MAX)
    )


class PageQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 1_000_000))
    after = fields.String(load_default="")


# ----------------------------------------------------------------------------------------------
# views


def _not_found(exc: NotFound) -> Any:
    return error_response(404, "not_found", str(exc.args[0]) if exc.args else "not found")


@bp.errorhandler(NotFound)
def not_found(exc: NotFound) -> Any:
    return _not_found(exc)


@bp.errorhandler(DatabaseUnavailable)
def database_down(exc: DatabaseUnavailable) -> Any:
    return error_response(503, "database_unavailable", "PostgreSQL is not answering; try again shortly")


@bp.errorhandler(Conflict)
def conflict(exc: Conflict) -> Any:
    return error_response(409, "conflict", str(exc))


@bp.errorhandler(Invalid)
def bad_value(exc: Invalid) -> Any:
    return error_response(422, "invalid", str(exc))


@bp.get("/users")
def users_index() -> Any:
    query = PageQuery().load(request.args)
    return jsonify(users=list_users(query["limit"], query["after"]))


@bp.post("/users")
def users_create() -> Any:
    body = UserCreate().load(json_body())
    return jsonify(create_user(**body)), 201


@bp.get("/users/<user_id>")
def users_show(user_id: str) -> Any:
    return jsonify(get_user(user_id))


@bp.patch("/users/<user_id>")
def users_update(user_id: str) -> Any:
    body = UserUpdate().load(json_body())
    return jsonify(update_user(user_id, **body))


@bp.put("/users/<user_id>/notify")
def users_notify(user_id: str) -> Any:
    body = NotifyBody().load(json_body())
    return jsonify(update_user(user_id, notify_on_ready=body["notify_on_ready"]))


@bp.delete("/users/<user_id>")
def users_erase(user_id: str) -> Any:
    try:
        report = erase_user(user_id)
    except StorageUnavailable as exc:
        return error_response(503, "storage_unavailable", f"erasure stopped part-way; run it again ({exc})")
    return jsonify(report.as_dict())


@bp.post("/users/<user_id>/links")
def links_create(user_id: str) -> Any:
    body = LinkCreate().load(json_body())
    outcome = add_link(
        user_id,
        account_id=body["chatwoot_account_id"],
        contact_id=body["contact_id"],
        phone=body["phone"],
        identifier=body["identifier"],
        region=body["region"],
        replace=body["replace"],
    )
    return jsonify(outcome.as_dict()), 201 if (outcome.added or outcome.moved) else 200


@bp.delete("/users/<user_id>/links/<int:link_id>")
def links_delete(user_id: str, link_id: int) -> Any:
    return jsonify(deleted=remove_link(user_id, link_id))


@bp.post("/users/<user_id>/link-code")
def link_code_create(user_id: str) -> Any:
    body = LinkCodeCreate().load(json_body())
    try:
        issued = links.issue_code(user_id, body["chatwoot_account_id"])
    except links.UnknownUser:
        raise NotFound(f"no user {user_id!r}") from None
    return (
        jsonify(
            user_id=issued.user_id,
            code=issued.code,
            expires_at=issued.expires_at.isoformat(),
            chatwoot_account_id=issued.chatwoot_account_id,
            instructions=f"Send LINK {issued.code} from WhatsApp within 10 minutes. The code works once.",
        ),
        201,
    )


@bp.get("/contacts/unmapped")
def contacts_unmapped() -> Any:
    query = PageQuery().load(request.args)
    return jsonify(contacts=unmapped_contacts(query["limit"], query["offset"]))


@bp.get("/stats")
def stats() -> Any:
    return jsonify(dashboard())


@bp.get("/accounts")
def accounts_index() -> Any:
    return jsonify(accounts=accounts.list_public())


@bp.put("/accounts/<int:account_id>")
def accounts_upsert(account_id: int) -> Any:
    if not 1 <= account_id <= INT32_MAX:
        raise NotFound(f"no account {account_id}")
    body = accounts.AccountBody().load(json_body())
    try:
        view = accounts.upsert(account_id, **body)
    except accounts.SecretsKeyMissing:
        return error_response(
            409, "secrets_key_missing", "set SECRETS_ENCRYPTION_KEY before storing an account's secrets"
        )
    log.info("chatwoot account saved", extra={"account_id": account_id, "fields": sorted(body)})
    return jsonify(view)


@bp.post("/accounts/<int:account_id>/finish-rotation")
def accounts_finish_rotation(account_id: int) -> Any:
    return jsonify(chatwoot_account_id=account_id, finished=accounts.finish_rotation(account_id))


@bp.delete("/accounts/<int:account_id>")
def accounts_delete(account_id: int) -> Any:
    if not accounts.delete(account_id):
        raise NotFound(f"no account {account_id}")
    log.info("chatwoot account deleted", extra={"account_id": account_id})
    return jsonify(chatwoot_account_id=account_id, deleted=True)


class InboxSecretBody(_Strict):
    secret = fields.String(required=True, validate=validate.Length(8, 4096), load_only=True)


@bp.put("/accounts/<int:account_id>/inboxes/<int:inbox_id>/secret")
def inbox_secret_set(account_id: int, inbox_id: int) -> Any:
    """An API-channel inbox's webhook secret (Chatwoot 4.13+ signs that inbox's webhook with it);
    a new one keeps the old one valid until finish-rotation."""
    if not (1 <= account_id <= INT32_MAX and 1 <= inbox_id <= INT32_MAX):
        raise NotFound(f"no account {account_id} or inbox {inbox_id}")
    body = InboxSecretBody().load(json_body())
    try:
        view = accounts.set_inbox_secret(account_id, inbox_id, body["secret"])
    except accounts.SecretsKeyMissing:
        return error_response(
            409, "secrets_key_missing", "set SECRETS_ENCRYPTION_KEY before storing an account's secrets"
        )
    log.info("inbox secret saved", extra={"account_id": account_id, "inbox_id": inbox_id})
    return jsonify(view)


@bp.post("/accounts/<int:account_id>/inboxes/<int:inbox_id>/finish-rotation")
def inbox_secret_finish_rotation(account_id: int, inbox_id: int) -> Any:
    finished = accounts.finish_inbox_rotation(account_id, inbox_id)
    return jsonify(chatwoot_account_id=account_id, inbox_id=inbox_id, finished=finished)


@bp.delete("/accounts/<int:account_id>/inboxes/<int:inbox_id>/secret")
def inbox_secret_delete(account_id: int, inbox_id: int) -> Any:
    if not accounts.delete_inbox_secret(account_id, inbox_id):
        raise NotFound(f"account {account_id} has no secret for inbox {inbox_id}")
    log.info("inbox secret deleted", extra={"account_id": account_id, "inbox_id": inbox_id})
    return jsonify(chatwoot_account_id=account_id, inbox_id=inbox_id, deleted=True)


@bp.post("/users/<user_id>/reconsent")
def users_reconsent(user_id: str) -> Any:
    """An erased user's explicit consent: the erasure's tombstones are lifted (nothing erased
    comes back; the user's contacts are archived again from now on)."""
    lifted = tombstones.lift(user_id)
    if lifted is None:
        raise NotFound(f"no erasure holds for user {user_id!r}")
    log.info("erasure lifted by re-consent", extra={"contacts_released": lifted["contacts_released"]})
    return jsonify(lifted)


# ----------------------------------------------------------------------------------------------
# each account's own AI (app/chatwoot/account_ai.py): keys are write-only, shown as "(set)"


@bp.get("/accounts/ai")
def accounts_ai_index() -> Any:
    return jsonify(accounts=account_ai.list_views())


@bp.get("/accounts/<int:account_id>/ai")
def accounts_ai_show(account_id: int) -> Any:
    view = account_ai.get_view(account_id) if 1 <= account_id <= INT32_MAX else None
    if view is None:
        raise NotFound(f"account {account_id} has no AI settings of its own (it uses the environment's)")
    return jsonify(view)


@bp.put("/accounts/<int:account_id>/ai")
def accounts_ai_set(account_id: int) -> Any:
    """Some of an account's AI settings: a field left out keeps its value, null clears it."""
    if not 1 <= account_id <= INT32_MAX:
        raise NotFound(f"no account {account_id}")
    body = json_body()
    try:
        view = account_ai.save(account_id, body)
    except accounts.SecretsKeyMissing:
        return error_response(
            409, "secrets_key_missing", "set SECRETS_ENCRYPTION_KEY before storing an account's keys"
        )
    log.info("account AI settings saved", extra={"account_id": account_id, "fields": sorted(body)})
    return jsonify(view)


@bp.delete("/accounts/<int:account_id>/ai")
def accounts_ai_delete(account_id: int) -> Any:
    if not (1 <= account_id <= INT32_MAX and account_ai.delete(account_id)):
        raise NotFound(f"account {account_id} has no AI settings of its own")
    log.info("account AI settings deleted", extra={"account_id": account_id})
    return jsonify(chatwoot_account_id=account_id, deleted=True)


# ----------------------------------------------------------------------------------------------
# records: exports, legal holds, retention, search, the delivery audit trail (app/records/)


class ActorBody(_Strict):
    by = fields.String(load_default=None, validate=validate.Length(1, 200))
    """Who acts, as recorded (an admin's name); the client's address is added."""


class HoldBody(ActorBody):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class LiftBody(ActorBody):
    reason = fields.String(load_default=None, validate=validate.Length(1, 500))


class RetentionBody(ActorBody):
    days = fields.Integer(required=True, strict=True)


class SearchQuery(Schema):
    class Meta:
        unknown = RAISE

    q = fields.String(load_default="")
    user = _user_id_field(load_default=None)
    account = fields.Integer(load_default=None, validate=validate.Range(1, INT32_MAX))
    contact = fields.Integer(load_default=None, validate=validate.Range(1, INT32_MAX))
    channel = fields.String(load_default=None, validate=validate.Regexp(r"^[a-z_]{1,40}$"))
    since = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    until = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 50))
    before = fields.String(load_default=None, validate=validate.Length(1, 80))
    """The `next` value of the previous page."""


class DeliveriesQuery(Schema):
    class Meta:
        unknown = RAISE

    message_id = fields.String(load_default=None, validate=validate.Length(1, 200))
    delivery_id = fields.String(load_default=None, validate=validate.Length(1, 128))
    account = fields.Integer(load_default=None, validate=validate.Range(1, INT32_MAX))
    days = fields.Integer(load_default=None, validate=validate.Range(1, 3660))

    @validates_schema
    def one_key(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("message_id") and not data.get("delivery_id"):
            raise ValidationError("give message_id or delivery_id", "_schema")


def _actor(body: dict[str, Any]) -> str:
    return actor("admin API", body.get("by"))


@bp.errorhandler(holds.UserErased)
def user_erased(exc: holds.UserErased) -> Any:
    return error_response(409, "erased", str(exc))


@bp.errorhandler(holds.OnLegalHold)
def on_legal_hold(exc: holds.OnLegalHold) -> Any:
    return error_response(409, "on_legal_hold", str(exc))


@bp.post("/users/<user_id>/exports")
def exports_create(user_id: str) -> Any:
    body = ActorBody().load(json_body())
    return jsonify(exports.request(user_id, _actor(body))), 202


@bp.get("/users/<user_id>/exports")
def exports_index(user_id: str) -> Any:
    get_user(user_id)
    return jsonify(exports=exports.of_user(user_id))


@bp.get("/exports/<int:export_id>")
def exports_show(export_id: int) -> Any:
    return jsonify(exports.get(export_id))


@bp.post("/exports/<int:export_id>/url")
def exports_url(export_id: int) -> Any:
    body = ActorBody().load(json_body())
    return jsonify(exports.issue_url(export_id, _actor(body)))


@bp.delete("/exports/<int:export_id>")
def exports_delete(export_id: int) -> Any:
    body = ActorBody().load(json_body())
    return jsonify(exports.delete(export_id, _actor(body)))


@bp.get("/users/<user_id>/holds")
def holds_index(user_id: str) -> Any:
    return jsonify(holds.of_user(user_id))


@bp.post("/users/<user_id>/holds")
def holds_create(user_id: str) -> Any:
    body = HoldBody().load(json_body())
    return jsonify(holds.place(user_id, body["reason"], _actor(body))), 201


@bp.delete("/users/<user_id>/holds/<int:hold_id>")
def holds_lift(user_id: str, hold_id: int) -> Any:
    body = LiftBody().load(json_body())
    return jsonify(holds.lift(user_id, hold_id, _actor(body), body["reason"]))


@bp.get("/holds")
def holds_all() -> Any:
    return jsonify(holds=holds.all_active())


@bp.get("/retention")
def retention_index() -> Any:
    return jsonify(policies=retention.policies(), runs=retention.recent_runs())


@bp.put("/retention/<int:account_id>")
def retention_set(account_id: int) -> Any:
    body = RetentionBody().load(json_body())
    return jsonify(retention.set_policy(account_id, body["days"], _actor(body)))


@bp.delete("/retention/<int:account_id>")
def retention_off(account_id: int) -> Any:
    body = ActorBody().load(json_body())
    return jsonify(retention.clear_policy(account_id, _actor(body)))


@bp.get("/search")
def search_messages() -> Any:
    args = SearchQuery().load(request.args)
    query = search.Query(
        args["q"],
        user_id=args["user"],
        account_id=args["account"],
        contact_id=args["contact"],
        channel=args["channel"],
        since=args["since"],
        until=args["until"],
        limit=args["limit"],
        before=search.parse_cursor(args["before"]) if args["before"] else None,
    )
    rows = search.search(query)
    after = search.cursor(rows[-1]) if len(rows) == query.limit else None
    return jsonify(results=rows, next=after)


@bp.get("/deliveries")
def deliveries_show() -> Any:
    args = DeliveriesQuery().load(request.args)
    found = audit.find(
        message_id=args["message_id"],
        delivery_id=args["delivery_id"],
        account_id=args["account"],
        since_days=args["days"],
    )
    stored = audit.message_rows(args["message_id"], args["account"]) if args["message_id"] else []
    return jsonify(deliveries=found, archive=stored)
