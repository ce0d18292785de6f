"""The admin API under `/admin`: users and their contact links, link codes, unmapped contacts,
erasure, Chatwoot accounts, and the numbers of the admin page.

Every request needs `Authorization: Bearer <ADMIN_API_TOKEN>` (compared in constant time);
requests are rate-limited per client address, and so are failed sign-ins, more strictly.
Errors are JSON: `{"error": code, "detail": ...}`. Secrets and tokens are write-only.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from app import context
from app.db import DatabaseUnavailable, queries
from app.errors import error_response

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUTH_SCOPE = "admin-auth"
"""Rate-limit scope shared by every failed sign-in (API and admin page)."""
API_SCOPE = "admin-api"
MAX_PAGE = 500
INT32_MAX = 2**31 - 1
LANGUAGES = ("en", "pt", "es")
# A user id is part of URLs: printable, no slash, no surrounding spaces.
_USER_ID_RE = re.compile(r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]{0,198}[^\s/\x00-\x1f\x7f])?$")


# ----------------------------------------------------------------------------------------------
# authentication and rate limits


def token_matches(given: str | None) -> bool:
    """Constant-time comparison with ADMIN_API_TOKEN (never true when it is not set)."""
    expected = context.settings().admin_api_token
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


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


@bp.after_request
def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def client_address() -> str:
    return request.remote_addr or "unknown"


def init_app(app: Flask) -> None:
    """Register the admin API and the admin page, with their rate limits (stored in Redis)."""
    from flask_limiter import Limiter

    from app.admin import page as admin_page

    settings = context.settings()
    limiter = Limiter(
        key_func=client_address,
        app=None,
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        strategy="moving-window",
        key_prefix="meeting-notes:admin",
        headers_enabled=True,
        # Redis down: keep limiting, per process, rather than refusing every admin request.
        in_memory_fallback_enabled=True,
    )
    failed = limiter.shared_limit(
        settings.admin_auth_failure_limit,
        scope=AUTH_SCOPE,
        deduct_when=lambda response: response.status_code == 401,
        error_message="too many failed sign-ins from this address; wait and try again",
    )
    overall = limiter.shared_limit(settings.admin_rate_limit, scope=API_SCOPE)
    failed(bp)
    overall(bp)
    failed(admin_page.bp)
    overall(admin_page.bp)
    _init_limiter_for(app, limiter, (bp.name, admin_page.bp.name))
    app.extensions["admin_limiter"] = limiter
    app.register_blueprint(bp)
    admin_page.init_app(app)


def _init_limiter_for(app: Flask, limiter: Any, blueprints: tuple[str, ...]) -> None:
    """Flask-Limiter's request hooks, run for the requests of `blueprints` only.

    It registers them for every request of the app; the webhook, which has no limit, would
    still pay for them on each delivery. Its hooks are moved to the blueprints' own hook lists
    (ahead of the blueprints' hooks, so a limit is checked before the token is).
    """
    tables: tuple[dict[str | None, list[Any]], ...] = (
        app.before_request_funcs,  # type: ignore[assignment]
        app.after_request_funcs,  # type: ignore[assignment]
        app.teardown_request_funcs,  # type: ignore[assignment]
    )
    app_wide = [list(table.get(None, ())) for table in tables]
    limiter.init_app(app)
    for table, before in zip(tables, app_wide, strict=True):
        added = [hook for hook in table.get(None, ()) if hook not in before]
        table[None] = before
        for name in blueprints:
            table.setdefault(name, [])[:0] = added


# ----------------------------------------------------------------------------------------------
# request bodies


def json_body() -> dict[str, Any]:
    data = request.get_json(silent=True, force=False)
    if request.data and not request.is_json:
        raise BadBody(415, "unsupported_media_type", "send application/json")
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
            _USER_ID_RE, error="1 to 200 printable characters, no slash, no leading or trailing space"
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


class AccountBody(_Strict):
    name = fields.String(validate=validate.Length(1, 200))
    base_url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    api_token = fields.String(validate=validate.Length(1, 4096), load_only=True)
    webhook_secret = fields.String(validate=validate.Length(8, 4096), load_only=True)
    inbox_ids = fields.List(fields.Integer(strict=True, validate=validate.Range(1, INT32_MAX)))


class PageQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 1_000_000))
    after = fields.String(load_default="")


# ----------------------------------------------------------------------------------------------
# what the API and the CLI do


class NotFound(LookupError):
    """No such user, link or account."""


class Conflict(Exception):
    """The request contradicts what exists (a user that exists already, a contact linked elsewhere)."""


class Invalid(ValueError):
    """Input the operation cannot use; the message says why."""


class StorageUnavailable(Exception):
    """GCS failed during an erasure; what is done stays done and a second run finishes it."""


@contextmanager
def _gcs_step() -> Iterator[None]:
    from google.api_core.exceptions import GoogleAPIError
    from requests import RequestException

    from app.archive import storage

    try:
        yield
    except (GoogleAPIError, RequestException, OSError, storage.StorageError) as exc:
        raise StorageUnavailable(type(exc).__name__) from None


def plain(value: Any) -> Any:
    """A database value as JSON can carry it."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def list_users(limit: int = 100, after: str = "") -> list[dict[str, Any]]:
    return [plain(r) for r in context.db().fetch_all("admin.user_list", {"limit": limit, "after": after})]


def get_user(user_id: str) -> dict[str, Any]:
    db = context.db()
    row = db.fetch_one("admin.user_get", {"user_id": user_id})
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    row["links"] = db.fetch_all("admin.user_links", {"user_id": user_id})
    return dict(plain(row))


def create_user(
    user_id: str,
    *,
    display_name: str | None = None,
    language: str | None = None,
    notify_on_ready: bool = False,
) -> dict[str, Any]:
    """A new user with its bucket name (the bucket itself is created on first archive)."""
    from app.archive import storage

    if not _USER_ID_RE.match(user_id):
        raise Invalid("a user id is 1 to 200 printable characters, no slash, no leading or trailing space")
    row = context.db().fetch_one(
        "admin.user_insert",
        {
            "user_id": user_id,
            "bucket_name": storage.bucket_name(user_id),
            "notify_on_ready": notify_on_ready,
            "display_name": display_name,
            "language": language,
        },
    )
    if row is None:
        raise Conflict(f"user {user_id!r} exists already")
    log.info("user created", extra={"user_id": user_id})
    return get_user(user_id)


_UNSET = object()


def update_user(
    user_id: str,
    *,
    display_name: Any = _UNSET,
    language: Any = _UNSET,
    notify_on_ready: Any = _UNSET,
) -> dict[str, Any]:
    """Change some fields of a user; a field left out stays as it is."""
    params = {
        "user_id": user_id,
        "set_display_name": display_name is not _UNSET,
        "display_name": None if display_name is _UNSET else display_name,
        "set_language": language is not _UNSET,
        "language": None if language is _UNSET else language,
        "set_notify_on_ready": notify_on_ready is not _UNSET,
        "notify_on_ready": False if notify_on_ready is _UNSET else bool(notify_on_ready),
    }
    if context.db().fetch_one("admin.user_update", params) is None:
        raise NotFound(f"no user {user_id!r}")
    log.info(
        "user updated",
        extra={
            "user_id": user_id,
            "fields": [k[4:] for k, v in params.items() if k.startswith("set_") and v],
        },
    )
    return get_user(user_id)


@dataclass
class LinkOutcome:
    user_id: str
    added: list[tuple[str, str]]
    existing: list[tuple[str, str]]
    moved: list[tuple[str, str]]
    account_id: int
    rehome_queued: bool

    def as_dict(self) -> dict[str, Any]:
        def pairs(items: list[tuple[str, str]]) -> list[dict[str, str]]:
            return [{"link_type": t, "link_value": v} for t, v in items]

        return {
            "user_id": self.user_id,
            "chatwoot_account_id": self.account_id,
            "added": pairs(self.added),
            "already_linked": pairs(self.existing),
            "moved": pairs(self.moved),
            "rehome_queued": self.rehome_queued,
        }


def default_account(account_id: int | None) -> int:
    found = account_id or context.settings().chatwoot_account_id
    if found is None:
        raise Invalid("give chatwoot_account_id (CHATWOOT_ACCOUNT_ID is not set)")
    return int(found)


def add_link(
    user_id: str,
    *,
    account_id: int | None = None,
    contact_id: int | None = None,
    phone: str | None = None,
    identifier: str | None = None,
    region: str | None = None,
    replace: bool = False,
    rehome: bool = True,
) -> LinkOutcome:
    """Link a contact to an existing user, then queue the move of its fallback-archived messages."""
    from app.users import contacts as users
    from app.users import link_codes as links

    if context.db().fetch_one("links.user_exists", {"user_id": user_id}) is None:
        raise NotFound(f"no user {user_id!r}")
    account = default_account(account_id)
    try:
        result = users.link_contact(
            account,
            user_id,
            contact_id=contact_id,
            phone=phone,
            identifier=identifier,
            region=region,
            replace=replace,
        )
    except users.LinkConflict as exc:
        raise Conflict(str(exc)) from None
    except users.InvalidContact as exc:
        raise Invalid(str(exc)) from None
    queued = links.schedule_rehome(account, user_id) if rehome else False
    return LinkOutcome(user_id, result.added, result.existing, result.moved, account, queued)


def remove_link(user_id: str, link_id: int) -> dict[str, Any]:
    row = context.db().fetch_one("admin.link_delete", {"user_id": user_id, "link_id": link_id})
    if row is None:
        raise NotFound(f"user {user_id!r} has no link {link_id}")
    log.info("contact unlinked", extra={"user_id": user_id, "link_type": row["link_type"]})
    return dict(plain(row))


def unmapped_contacts(limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    rows = context.db().fetch_all("admin.unmapped_contacts", {"limit": limit, "offset": offset})
    return [plain(r) for r in rows]


@dataclass
class ErasureReport:
    user_id: str
    bucket_name: str
    user_existed: bool
    bucket_objects_deleted: int = 0
    fallback_objects_deleted: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def nothing_left(self) -> bool:
        """True when this run found nothing to delete (the user was already erased)."""
        return not (self.bucket_objects_deleted or self.fallback_objects_deleted or any(self.rows.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "bucket_name": self.bucket_name,
            "user_existed": self.user_existed,
            "bucket_objects_deleted": self.bucket_objects_deleted,
            "fallback_objects_deleted": self.fallback_objects_deleted,
            "rows_deleted": dict(self.rows),
            "nothing_deleted": self.nothing_left,
        }


def erase_user(user_id: str) -> ErasureReport:
    """Delete everything kept about a user (GDPR erasure); safe to run again.

    In order: the user's bucket with every object in it, and the objects of the user's contacts
    still archived under an account's fallback bucket; then, in one transaction, the outbox
    messages, orders, conversations, messages (with their attachments, updates and transcripts),
    link codes, contact links, roll-up rows and the user itself; last, the bucket once more, in
    case an archive job wrote to it meanwhile. A run interrupted part-way is finished by the next.
    """
    from app.archive import storage
    from app.ingest import spool
    from app.users import contacts as users

    db = context.db()
    user = db.fetch_one("users.user_get", {"user_id": user_id})
    bucket = str(user["bucket_name"]) if user else storage.bucket_name(user_id)
    report = ErasureReport(user_id, bucket, user_existed=user is not None)
    links = db.fetch_all("admin.user_links", {"user_id": user_id})
    contacts: dict[int, dict[str, list[Any]]] = {}
    for link in links:
        per = contacts.setdefault(
            int(link["chatwoot_account_id"]), {"contact_id": [], "phone": [], "identifier": []}
        )
        value: Any = int(link["link_value"]) if link["link_type"] == "contact_id" else link["link_value"]
        per[link["link_type"]].append(value)
    fallback: list[dict[str, Any]] = []
    for account_id, per in contacts.items():
        fallback += db.fetch_all(
            "admin.erase_fallback_notes",
            {
                "account_id": account_id,
                "contact_ids": per["contact_id"],
                "phones": per["phone"],
                "identifiers": per["identifier"],
            },
        )

    # Deliveries spooled while PostgreSQL was down go first, so that no replay brings them back.
    spool.purge_contacts(contacts)
    with _gcs_step():
        report.bucket_objects_deleted += storage.delete_bucket(bucket)
        for note in fallback:
            if not note["gcs_storage_path"]:
                continue
            source, _ = storage.parse_gs_uri(note["gcs_storage_path"])
            if source == bucket:
                continue
            day = note["message_created_at"] or note["created_at"]
            for name in storage.iter_message_objects(
                source, storage.message_prefix(day, note["chatwoot_message_id"])
            ):
                if storage.delete_object(source, name):
                    report.fallback_objects_deleted += 1

    contact_pairs = [(a, c) for a, per in contacts.items() for c in per["contact_id"]]
    with db.transaction() as cur:
        cur.execute(
            queries["admin.erase_note_keys"],
            {"user_id": user_id, "fallback_ids": [n["id"] for n in fallback]},
        )
        notes = cur.fetchall()
        note_ids = [n["id"] for n in notes]
        base = {
            "user_id": user_id,
            "note_ids": note_ids,
            "contact_accounts": [a for a, _ in contact_pairs],
            "contact_ids": [c for _, c in contact_pairs],
        }
        cur.execute(queries["admin.erase_find_orders"], base)
        orders = cur.fetchall()
        cur.execute(queries["admin.erase_find_conversations"], base)
        conversations = {(c["chatwoot_account_id"], c["chatwoot_conversation_id"]) for c in cur.fetchall()}
        for row in [*notes, *orders]:
            if row["chatwoot_account_id"] is not None and row["chatwoot_conversation_id"] is not None:
                conversations.add((row["chatwoot_account_id"], row["chatwoot_conversation_id"]))
        conv = {
            **base,
            "order_ids": [o["id"] for o in orders],
            "conversation_accounts": [a for a, _ in sorted(conversations)],
            "conversation_ids": [c for _, c in sorted(conversations)],
        }
        cur.execute(queries["admin.erase_outbox"], conv)
        report.rows["outbox"] = cur.rowcount
        cur.execute(queries["admin.erase_orders"], conv)
        report.rows["orders"] = cur.rowcount
        cur.execute(queries["admin.erase_conversations"], conv)
        report.rows["conversations"] = cur.rowcount
        cur.execute(queries["admin.erase_count_children"], base)
        children = cur.fetchone() or {}
        cur.execute(queries["admin.erase_notes"], base)
        report.rows["meeting_notes"] = cur.rowcount
        for name in ("message_updates", "message_attachments", "transcriptions"):
            report.rows[name] = int(children.get(name) or 0)
        cur.execute(queries["admin.erase_link_codes"], base)
        report.rows["link_codes"] = cur.rowcount
        cur.execute(queries["admin.erase_contact_links"], base)
        report.rows["contact_links"] = cur.rowcount
        cur.execute(queries["admin.erase_user_stats"], base)
        cur.execute(queries["admin.erase_bucket_rows"], {"bucket_name": bucket})
        cur.execute(queries["admin.erase_mapping"], base)
        report.rows["user_bucket_mapping"] = cur.rowcount
    with _gcs_step():
        report.bucket_objects_deleted += storage.delete_bucket(bucket)
    users_forget = getattr(users, "forget_cached", None)
    if callable(users_forget):
        users_forget()
    log.info(
        "user erased",
        extra={
            "user_id": user_id,
            "bucket_objects": report.bucket_objects_deleted,
            "fallback_objects": report.fallback_objects_deleted,
            "rows": report.rows,
        },
    )
    return report


BACKLOG_SQL = Path(__file__).resolve().parents[2] / "sql" / "10_backlog_by_status_and_age.sql"
"""The monitoring query the page shares with `flask monitor`, so both count the same backlog."""


def backlog() -> list[dict[str, Any]]:
    """Work waiting per stage, with the age of the oldest item in seconds."""
    with context.db().transaction() as cur:
        cur.execute(BACKLOG_SQL.read_text())
        rows = cur.fetchall()
    out = []
    for row in rows:
        age = row["oldest_age"]
        out.append(
            {
                "stage": row["stage"],
                "waiting": int(row["waiting"]),
                "oldest_seconds": int(age.total_seconds()) if age is not None else None,
            }
        )
    return out


def dashboard(days: int = 14, limit: int = 10) -> dict[str, Any]:
    """The numbers of the admin page: per day, backlog, recent errors, unmapped contacts."""
    db = context.db()
    per_day = [plain(r) for r in db.fetch_all("admin.dashboard_days", {"days": days})]
    return {
        "today": per_day[-1] if per_day else None,
        "days": per_day,
        "backlog": backlog(),
        "errors": [plain(r) for r in db.fetch_all("admin.dashboard_errors", {"limit": limit})],
        "unmapped": unmapped_contacts(limit=limit),
    }


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
    from app.users import link_codes as links

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
    from app.chatwoot import accounts

    return jsonify(accounts=accounts.list_public())


@bp.put("/accounts/<int:account_id>")
def accounts_upsert(account_id: int) -> Any:
    from app.chatwoot import accounts

    if not 1 <= account_id <= INT32_MAX:
        raise NotFound(f"no account {account_id}")
    body = AccountBody().load(json_body())
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
    from app.chatwoot import accounts

    return jsonify(chatwoot_account_id=account_id, finished=accounts.finish_rotation(account_id))


@bp.delete("/accounts/<int:account_id>")
def accounts_delete(account_id: int) -> Any:
    from app.chatwoot import accounts

    if not accounts.delete(account_id):
        raise NotFound(f"no account {account_id}")
    log.info("chatwoot account deleted", extra={"account_id": account_id})
    return jsonify(chatwoot_account_id=account_id, deleted=True)
