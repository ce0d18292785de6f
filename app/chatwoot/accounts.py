"""Chatwoot accounts: base URL, API tokens, webhook secrets, inbox filter and ready-notice
template of each account.

An account with a row in `chatwoot_accounts` uses its own values; every other account uses the
environment's (`CHATWOOT_BASE_URL`, `CHATWOOT_API_ACCESS_TOKEN`, `CHATWOOT_WEBHOOK_SECRET`...).
Two tokens: the API access token writes (an agent bot's may only create messages and show or
update conversations), the user access token reads (lists conversations and messages); without
a user token, reads use the API access token.
Secrets are stored encrypted with Fernet keys from `SECRETS_ENCRYPTION_KEY` (several keys,
newest first, so the key can be rotated) and are never returned by any API.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from app import context
from app.chatwoot import signatures, templates
from app.chatwoot.payloads import INT32_MAX
from app.config import Settings
from app.db import DatabaseUnavailable, queries

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
"""Seconds the accounts' settings are reused before they are read again."""
ENV = 0
"""Owner of the environment's secrets (CHATWOOT_WEBHOOK_SECRET) among signature candidates."""


class SecretsKeyMissing(Exception):
    """An account secret must be stored or read, but SECRETS_ENCRYPTION_KEY is not set."""


@dataclass(frozen=True)
class AccountConfig:
    account_id: int
    base_url: str
    api_token: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    """Every secret that signs this account's deliveries: the account webhook's (current, then
    previous during a rotation) and each API-channel inbox's (current and previous)."""
    inbox_ids: tuple[int, ...]
    """Inboxes whose messages are archived; empty means all."""
    own_row: bool
    """True when the account has its own row in chatwoot_accounts."""
    url_token: str = field(default="", repr=False)
    """The `?token=` that authenticates this account's unsigned deliveries: its own, or the
    global WEBHOOK_URL_TOKEN when it has no secret of its own."""
    own_secrets: bool = False
    """True when its deliveries are verified with secrets of its own (never the environment's)."""
    read_token: str = field(default="", repr=False)
    """The token reads use: the user access token, else the API access token."""
    read_token_source: str = ""
    """Which setting the read token comes from (said when Chatwoot refuses it)."""
    ready_template: templates.Template | None = None
    """The WhatsApp template of ready notices outside the 24-hour window; None: not configured."""


def _fernet(settings: Settings) -> Any:
    if not settings.secrets_encryption_key:
        raise SecretsKeyMissing("SECRETS_ENCRYPTION_KEY is not set")
    return MultiFernet([Fernet(k.strip()) for k in settings.secrets_encryption_key.split(",") if k.strip()])


def encrypt(value: str, settings: Settings | None = None) -> str:
    token: bytes = _fernet(settings or context.settings()).encrypt(value.encode())
    return token.decode()


def decrypt(token: str | None, settings: Settings | None = None) -> str:
    if not token:
        return ""
    value: bytes = _fernet(settings or context.settings()).decrypt(token.encode())
    return value.decode()


def env_config(account_id: int, settings: Settings | None = None) -> AccountConfig:
    """The settings of an account without a row of its own: the environment's."""
    s = settings or context.settings()
    secrets = tuple(x for x in (s.chatwoot_webhook_secret, s.chatwoot_webhook_secret_previous) if x)
    read_token, read_source = (
        (s.chatwoot_user_access_token, "CHATWOOT_USER_ACCESS_TOKEN")
        if s.chatwoot_user_access_token
        else (s.chatwoot_api_access_token, "CHATWOOT_API_ACCESS_TOKEN")
    )
    return AccountConfig(
        account_id=account_id,
        base_url=s.chatwoot_base_url,
        api_token=s.chatwoot_api_access_token,
        webhook_secrets=secrets,
        inbox_ids=s.chatwoot_inbox_ids,
        own_row=False,
        url_token=s.webhook_url_token,
        read_token=read_token,
        read_token_source=read_source,
        ready_template=env_template(s),
    )


def env_template(s: Settings) -> templates.Template | None:
    if not s.whatsapp_ready_template_name:
        return None
    return templates.Template(
        name=s.whatsapp_ready_template_name,
        languages=templates.parse_languages(s.whatsapp_ready_template_language),
        category=s.whatsapp_ready_template_category,
        params=s.whatsapp_ready_template_params,
    )


def _row_template(row: dict[str, Any], fallback: templates.Template | None) -> templates.Template | None:
    """The account's own template; its unset fields take the environment's (or the defaults)."""
    if not row.get("ready_template_name"):
        return fallback
    params = row.get("ready_template_params")
    return templates.Template(
        name=row["ready_template_name"],
        languages=templates.parse_languages(row.get("ready_template_language") or "")
        or (fallback.languages if fallback else {}),
        category=row.get("ready_template_category") or (fallback.category if fallback else "UTILITY"),
        params=tuple(params)
        if params is not None
        else (fallback.params if fallback else templates.DEFAULT_PARAMS),
    )


def from_row(row: dict[str, Any], settings: Settings | None = None) -> AccountConfig:
    """An account's own settings; what it leaves unset comes from the environment, except that
    the environment's API token never goes to another host and the environment's secrets and
    URL token never authenticate an account that has secrets of its own."""
    s = settings or context.settings()
    fallback = env_config(int(row["chatwoot_account_id"]), s)
    own: list[str] = [
        decrypt(row.get("webhook_secret_enc"), s),
        decrypt(row.get("previous_webhook_secret_enc"), s),
    ]
    for inbox in row.get("inbox_secrets") or ():
        own += [decrypt(inbox.get("secret_enc"), s), decrypt(inbox.get("previous_secret_enc"), s)]
    secrets = tuple(dict.fromkeys(x for x in own if x))
    base_url = (row.get("base_url") or fallback.base_url).rstrip("/")
    same_host = _origin(base_url) == _origin(fallback.base_url)
    own_token = decrypt(row.get("api_access_token_enc"), s)
    # The environment's tokens serve only the environment's Chatwoot host.
    api_token = own_token or (fallback.api_token if same_host else "")
    own_url_token = decrypt(row.get("url_token_enc"), s)
    user_token = decrypt(row.get("user_access_token_enc"), s)
    if user_token:
        read_token, read_source = user_token, "the account's user access token"
    elif s.chatwoot_user_access_token and same_host:
        read_token, read_source = s.chatwoot_user_access_token, "CHATWOOT_USER_ACCESS_TOKEN"
    elif own_token:
        read_token, read_source = api_token, "the account's API access token"
    else:
        read_token, read_source = api_token, "CHATWOOT_API_ACCESS_TOKEN"
    return AccountConfig(
        account_id=int(row["chatwoot_account_id"]),
        base_url=base_url,
        api_token=api_token,
        webhook_secrets=secrets or fallback.webhook_secrets,
        inbox_ids=tuple(row.get("inbox_ids") or ()) or fallback.inbox_ids,
        own_row=True,
        url_token=own_url_token or ("" if secrets else fallback.url_token),
        own_secrets=bool(secrets),
        read_token=read_token,
        read_token_source=read_source,
        ready_template=_row_template(row, fallback.ready_template),
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    return (parsed.scheme.lower(), (parsed.hostname or "").lower(), port)


@dataclass(frozen=True)
class Registry:
    """The settings of every account with a row of its own, read at once (one query, however
    many accounts deliver) and kept in memory: a delivery naming any account id, known or not,
    costs no query and no memory of its own."""

    own: dict[int, AccountConfig]
    settings: Settings

    def config(self, account_id: int) -> AccountConfig:
        found = self.own.get(account_id)
        return found if found is not None else env_config(account_id, self.settings)

    def candidates(self, account_id: int | None) -> list[tuple[str, int]]:
        """(secret, owner) pairs a delivery may be signed with: the claimed account's, or, when
        the body names no account, every secret held (the environment's under ENV)."""
        if account_id is not None:
            config = self.config(account_id)
            owner = account_id if config.own_secrets else ENV
            return [(secret, owner) for secret in config.webhook_secrets]
        pairs = [(secret, ENV) for secret in env_config(ENV, self.settings).webhook_secrets]
        for config in self.own.values():
            if config.own_secrets:
                pairs += [(secret, config.account_id) for secret in config.webhook_secrets]
        return pairs

    def signed_by(self, account_id: int | None, owners: list[Any]) -> bool:
        """Whether one of the secrets that matched may sign this account's deliveries."""
        if account_id is None:
            return bool(owners)
        config = self.config(account_id)
        return (account_id if config.own_secrets else ENV) in owners

    def url_token_ok(self, account_id: int | None, token: str) -> bool:
        """Whether `token` authenticates a delivery of this account (or, for an event naming no
        account, any account)."""
        if account_id is not None:
            return signatures.token_matches(token, self.config(account_id).url_token)
        tokens = [env_config(ENV, self.settings).url_token, *(c.url_token for c in self.own.values())]
        return any(signatures.token_matches(token, t) for t in tokens if t)

    def url_token_known(self, token: str) -> bool:
        return self.url_token_ok(None, token)


_registry: list[tuple[float, Registry]] = []


def registry(max_age: float = CACHE_SECONDS) -> Registry:
    """The accounts' settings, read again when older than `max_age` seconds.

    While PostgreSQL cannot be read the last settings read stay in force (kept across outages);
    raises DatabaseUnavailable only when this process has never read them.
    """
    now = time.monotonic()
    if _registry and now - _registry[0][0] < max_age:
        return _registry[0][1]
    try:
        rows = context.db().fetch_all("accounts.list")
    except DatabaseUnavailable:
        if _registry:
            return _registry[0][1]
        raise
    settings = context.settings()
    loaded = Registry({int(r["chatwoot_account_id"]): _readable(r, settings) for r in rows}, settings)
    _registry[:] = [(now, loaded)]
    return loaded


def _readable(row: dict[str, Any], settings: Settings) -> AccountConfig:
    """The account's settings; when its secrets cannot be decrypted (SECRETS_ENCRYPTION_KEY
    missing or changed), settings that authenticate nothing and call nothing: fail closed,
    never the environment's in their place."""
    try:
        return from_row(row, settings)
    except (SecretsKeyMissing, InvalidToken, ValueError):
        log.error(
            "an account's secrets cannot be decrypted: its deliveries are refused until "
            "SECRETS_ENCRYPTION_KEY holds the key they were stored with",
            extra={"account_id": row["chatwoot_account_id"]},
        )
        return AccountConfig(
            account_id=int(row["chatwoot_account_id"]),
            base_url=(row.get("base_url") or "").rstrip("/"),
            api_token="",
            webhook_secrets=(),
            inbox_ids=tuple(row.get("inbox_ids") or ()),
            own_row=True,
            url_token="",
            own_secrets=True,
        )


def resolve(account_id: int, use_cache: bool = True) -> AccountConfig:
    """The configuration in force for a Chatwoot account (its own row, else the environment's)."""
    return registry(CACHE_SECONDS if use_cache else 0.0).config(account_id)


def forget_cached() -> None:
    _registry.clear()


def upsert(
    account_id: int,
    *,
    name: str | None = None,
    base_url: str | None = None,
    api_token: str | None = None,
    webhook_secret: str | None = None,
    inbox_ids: list[int] | None = None,
    url_token: str | None = None,
    user_token: str | None = None,
    ready_template_name: str | None = None,
    ready_template_language: str | None = None,
    ready_template_category: str | None = None,
    ready_template_params: list[str] | None = None,
) -> dict[str, Any]:
    """Create or change an account. A new webhook secret keeps the old one as the previous secret.

    Returns the public view of the row (no secrets, only whether each is set).
    """
    params = {
        "account_id": account_id,
        "name": name,
        "base_url": base_url.rstrip("/") if base_url else None,
        "api_token_enc": encrypt(api_token) if api_token else None,
        "webhook_secret_enc": encrypt(webhook_secret) if webhook_secret else None,
        "inbox_ids": inbox_ids,
        "url_token_enc": encrypt(url_token) if url_token else None,
        "user_token_enc": encrypt(user_token) if user_token else None,
        "template_name": ready_template_name,
        "template_language": ready_template_language,
        "template_category": ready_template_category,
        "template_params": ready_template_params,
    }
    row = context.db().fetch_one("accounts.upsert", params)
    forget_cached()
    assert row is not None
    return public_view(row)


def finish_rotation(account_id: int) -> bool:
    """Stop accepting the previous webhook secret of an account."""
    forget_cached()
    return context.db().execute("accounts.drop_previous_secret", {"account_id": account_id}) > 0


def delete(account_id: int) -> bool:
    forget_cached()
    return context.db().execute("accounts.delete", {"account_id": account_id}) > 0


def list_public() -> list[dict[str, Any]]:
    return [public_view(r) for r in context.db().fetch_all("accounts.list")]


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "chatwoot_account_id": row["chatwoot_account_id"],
        "name": row.get("name"),
        "base_url": row.get("base_url"),
        "inbox_ids": list(row.get("inbox_ids") or []),
        "api_token_set": bool(row.get("api_access_token_enc")),
        "webhook_secret_set": bool(row.get("webhook_secret_enc")),
        "previous_webhook_secret_set": bool(row.get("previous_webhook_secret_enc")),
        "url_token_set": bool(row.get("url_token_enc")),
        "inbox_secrets": [
            {"inbox_id": i["inbox_id"], "previous_secret_set": bool(i.get("previous_secret_enc"))}
            for i in row.get("inbox_secrets") or ()
        ],
        "user_token_set": bool(row.get("user_access_token_enc")),
        "ready_template": _template_view(row),
        "created_at": row["created_at"].isoformat() if row.get("created_at") else None,
        "updated_at": row["updated_at"].isoformat() if row.get("updated_at") else None,
    }


def _template_view(row: dict[str, Any]) -> str | None:
    if not row.get("ready_template_name"):
        return None
    parts = [row["ready_template_name"]]
    for key in ("ready_template_language", "ready_template_category"):
        if row.get(key):
            parts.append(str(row[key]))
    if row.get("ready_template_params") is not None:
        parts.append("(" + ", ".join(row["ready_template_params"]) + ")")
    return " ".join(parts)


def _checked(check: Any) -> Any:
    """A marshmallow validator from one of app.chatwoot.templates' checks."""

    def validator(value: Any) -> None:
        try:
            check(value)
        except templates.TemplateConfigError as exc:
            raise ValidationError(str(exc)) from None

    return validator


class AccountBody(Schema):
    """An account's settings as the admin API and `flask accounts set` take them."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(1, 200))
    base_url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    api_token = fields.String(validate=validate.Length(1, 4096), load_only=True)
    webhook_secret = fields.String(validate=validate.Length(8, 4096), load_only=True)
    inbox_ids = fields.List(fields.Integer(strict=True, validate=validate.Range(1, INT32_MAX)))
    url_token = fields.String(validate=validate.Length(16, 4096), load_only=True)
    user_token = fields.String(validate=validate.Length(1, 4096), load_only=True)
    ready_template_name = fields.String(validate=_checked(templates.check_name))
    ready_template_language = fields.String(
        validate=[validate.Length(1, 200), _checked(templates.parse_languages)]
    )
    ready_template_category = fields.String(validate=_checked(templates.check_category))
    ready_template_params = fields.List(
        fields.String(validate=validate.OneOf(templates.VALUES)), validate=validate.Length(max=10)
    )

    @post_load
    def _normalize(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "ready_template_category" in data:
            data["ready_template_category"] = templates.check_category(data["ready_template_category"])
        return data


def set_inbox_secret(account_id: int, inbox_id: int, secret: str) -> dict[str, Any]:
    """Store (or rotate) the secret an API-channel inbox signs its webhook with; the account's
    row is created when it has none."""
    encrypted = encrypt(secret)
    db = context.db()
    with db.transaction() as cur:
        cur.execute(
            queries["accounts.upsert"],
            {
                "account_id": account_id,
                "name": None,
                "base_url": None,
                "api_token_enc": None,
                "webhook_secret_enc": None,
                "inbox_ids": None,
                "url_token_enc": None,
                "user_token_enc": None,
                "template_name": None,
                "template_language": None,
                "template_category": None,
                "template_params": None,
            },
        )
        cur.execute(
            queries["accounts.inbox_secret_set"],
            {"account_id": account_id, "inbox_id": inbox_id, "secret_enc": encrypted},
        )
    forget_cached()
    return account_view(account_id)


def finish_inbox_rotation(account_id: int, inbox_id: int) -> bool:
    forget_cached()
    params = {"account_id": account_id, "inbox_id": inbox_id}
    return context.db().execute("accounts.inbox_secret_finish_rotation", params) > 0


def delete_inbox_secret(account_id: int, inbox_id: int) -> bool:
    forget_cached()
    params = {"account_id": account_id, "inbox_id": inbox_id}
    return context.db().execute("accounts.inbox_secret_delete", params) > 0


def account_view(account_id: int) -> dict[str, Any]:
    """The public view of one account (NotFound-free: an empty dict when it has no row)."""
    for row in context.db().fetch_all("accounts.list"):
        if row["chatwoot_account_id"] == account_id:
            return public_view(row)
    return {}
