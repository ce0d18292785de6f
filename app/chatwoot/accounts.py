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

import time
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from app import context
from app.chatwoot import templates
from app.chatwoot.payloads import INT32_MAX
from app.config import Settings

CACHE_SECONDS = 30.0
"""Seconds an account's configuration is reused before it is read again."""


class SecretsKeyMissing(Exception):
    """An account secret must be stored or read, but SECRETS_ENCRYPTION_KEY is not set."""


@dataclass(frozen=True)
class AccountConfig:
    account_id: int
    base_url: str
    api_token: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    """Current secret first, then the previous one during a rotation."""
    inbox_ids: tuple[int, ...]
    """Inboxes whose messages are archived; empty means all."""
    own_row: bool
    """True when the account has its own row in chatwoot_accounts."""
    read_token: str = field(default="", repr=False)
    """The token reads use: the user access token, else the API access token."""
    read_token_source: str = ""
    """Which setting the read token comes from (said when Chatwoot refuses it)."""
    ready_template: templates.Template | None = None
    """The WhatsApp template of ready notices outside the 24-hour window; None: not configured."""


def _fernet(settings: Settings) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

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
        read_token=read_token,
        read_token_source=read_source,
        ready_template=env_template(s),
    )


def env_template(s: Settings) -> templates.Template | None:
    if not s.ready_template_name:
        return None
    return templates.Template(
        name=s.ready_template_name,
        languages=templates.parse_languages(s.ready_template_language),
        category=s.ready_template_category,
        params=s.ready_template_params,
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
    s = settings or context.settings()
    fallback = env_config(int(row["chatwoot_account_id"]), s)
    secrets = tuple(
        x
        for x in (
            decrypt(row.get("webhook_secret_enc"), s),
            decrypt(row.get("previous_webhook_secret_enc"), s),
        )
        if x
    )
    api_token = decrypt(row.get("api_access_token_enc"), s) or fallback.api_token
    user_token = decrypt(row.get("user_access_token_enc"), s)
    if user_token:
        read_token, read_source = user_token, "the account's user access token"
    elif s.chatwoot_user_access_token:
        read_token, read_source = s.chatwoot_user_access_token, "CHATWOOT_USER_ACCESS_TOKEN"
    elif row.get("api_access_token_enc"):
        read_token, read_source = api_token, "the account's API access token"
    else:
        read_token, read_source = api_token, "CHATWOOT_API_ACCESS_TOKEN"
    return AccountConfig(
        account_id=int(row["chatwoot_account_id"]),
        base_url=(row.get("base_url") or fallback.base_url).rstrip("/"),
        api_token=api_token,
        webhook_secrets=secrets or fallback.webhook_secrets,
        inbox_ids=tuple(row.get("inbox_ids") or ()) or fallback.inbox_ids,
        own_row=True,
        read_token=read_token,
        read_token_source=read_source,
        ready_template=_row_template(row, fallback.ready_template),
    )


_cache: dict[int, tuple[float, AccountConfig]] = {}


def resolve(account_id: int, use_cache: bool = True) -> AccountConfig:
    """The configuration in force for a Chatwoot account (its own row, else the environment's)."""
    now = time.monotonic()
    if use_cache:
        hit = _cache.get(account_id)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    row = context.db().fetch_one("accounts.account_get", {"account_id": account_id})
    config = from_row(row) if row else env_config(account_id)
    _cache[account_id] = (now, config)
    return config


def forget_cached() -> None:
    _cache.clear()


def upsert(
    account_id: int,
    *,
    name: str | None = None,
    base_url: str | None = None,
    api_token: str | None = None,
    webhook_secret: str | None = None,
    inbox_ids: list[int] | None = None,
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
        "user_token_enc": encrypt(user_token) if user_token else None,
        "template_name": ready_template_name,
        "template_language": ready_template_language,
        "template_category": ready_template_category,
        "template_params": ready_template_params,
    }
    row = context.db().fetch_one("accounts.upsert", params)
    _cache.pop(account_id, None)
    assert row is not None
    return public_view(row)


def finish_rotation(account_id: int) -> bool:
    """Stop accepting the previous webhook secret of an account."""
    _cache.pop(account_id, None)
    return context.db().execute("accounts.drop_previous_secret", {"account_id": account_id}) > 0


def delete(account_id: int) -> bool:
    _cache.pop(account_id, None)
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
