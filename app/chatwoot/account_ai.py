"""Each Chatwoot account its own AI: providers, servers, keys and models, languages, a budget.

An account with a row in `account_ai_settings` uses what the row sets and the environment's
settings for the rest; every other account uses the environment's settings, unchanged. Keys are
stored encrypted like the account's other secrets (`accounts.encrypt`, SECRETS_ENCRYPTION_KEY),
and are shown only as `(set)`.

`for_account(account_id)` is what a job reads, once per job: one query, no cache between jobs,
so a key rotated through the admin API or `flask accounts ai set` serves the very next job,
without a restart. The result holds one `Settings` per purpose (transcription, classification,
drafting), the environment's with the account's values laid over them, so that the code which
reads settings runs unchanged. The environment's OpenAI key goes only to the environment's
server: an account that names another server brings its own key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography.fernet import InvalidToken
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from app import context
from app.chatwoot.accounts import SecretsKeyMissing, decrypt, encrypt
from app.config import GENERATION_PROVIDERS, REPLY_LANGUAGES, TRANSCRIPTION_PROVIDERS, Settings

CLASSIFICATION_PROVIDERS = ("openai", "rules")
PROVIDERS: dict[str, tuple[str, ...]] = {
    "transcription": TRANSCRIPTION_PROVIDERS,
    "classification": CLASSIFICATION_PROVIDERS,
    "generation": GENERATION_PROVIDERS,
}
KEYLESS: dict[str, tuple[str, ...]] = {
    "transcription": ("local", "none"),
    "classification": ("rules",),
    "generation": ("external",),
}
"""Providers that take no key (nor server URL): a key given for one of them is refused."""
PURPOSES = tuple(PROVIDERS)
KEY_FIELDS = tuple(f"{p}_api_key" for p in PURPOSES)
COLUMNS = (
    "transcription_provider",
    "transcription_base_url",
    "transcription_api_key",
    "transcription_model",
    "transcription_language",
    "local_whisper_model",
    "classification_provider",
    "classification_base_url",
    "classification_api_key",
    "classification_model",
    "generation_provider",
    "generation_base_url",
    "generation_api_key",
    "generation_model",
    "reply_language",
    "transcription_budget_minutes",
)
"""Every setting an account may have, as the API and the CLI name them (keys end in `_api_key`;
the table stores them encrypted as `<name>_enc`)."""
OPENAI_ORIGIN = "https://api.openai.com"
SET = "(set)"


class KeysUnreadable(Exception):
    """The account's stored keys cannot be decrypted: SECRETS_ENCRYPTION_KEY lost the key they
    were written with (keep the old key after the new one while rotating it)."""


def _column(name: str) -> str:
    return f"{name}_enc" if name in KEY_FIELDS else name


# ---------------------------------------------------------------------------------------------
# what a job reads


@dataclass(frozen=True)
class AccountAI:
    """The AI settings in force for one account."""

    account_id: int
    own: bool
    """True when the account has settings of its own (else every field is the environment's)."""
    transcription: Settings
    classification: Settings
    generation: Settings
    transcription_language: str
    """The language the account's voice notes are spoken in, when declared ("" unknown)."""
    reply_language: str
    budget_minutes: int
    """Audio minutes of transcription per calendar month (UTC); 0: no limit."""

    @property
    def classifier_model_on(self) -> bool:
        """Whether classification calls the chat model (else the rules decide alone)."""
        return bool(self.classification.openai_api_key and self.classification.classifier_model)

    @property
    def generation_provider(self) -> str:
        return self.generation.effective_generation_provider


def for_account(account_id: int, settings: Settings | None = None) -> AccountAI:
    """The account's AI settings: its row laid over the environment's (read now, not cached)."""
    env = settings or context.settings()
    row = context.db().fetch_one("account_ai.ai_settings_get", {"account_id": int(account_id)})
    return resolve(int(account_id), row, env)


def resolve(account_id: int, row: dict[str, Any] | None, env: Settings) -> AccountAI:
    if row is None:
        return AccountAI(
            account_id=account_id,
            own=False,
            transcription=env,
            classification=env,
            generation=env,
            transcription_language=env.transcription_language,
            reply_language=env.default_language,
            budget_minutes=env.transcription_monthly_minutes,
        )
    try:
        keys = {p: decrypt(row.get(f"{p}_api_key_enc"), env) for p in PURPOSES}
    except (InvalidToken, SecretsKeyMissing):
        raise KeysUnreadable(
            f"the AI keys of account {account_id} cannot be decrypted with SECRETS_ENCRYPTION_KEY"
        ) from None
    budget = row.get("transcription_budget_minutes")
    return AccountAI(
        account_id=account_id,
        own=True,
        transcription=_transcription(env, row, keys["transcription"]),
        classification=_classification(env, row, keys["classification"]),
        generation=_generation(env, row, keys["generation"]),
        transcription_language=row.get("transcription_language") or env.transcription_language,
        reply_language=row.get("reply_language") or env.default_language,
        budget_minutes=int(budget) if budget is not None else env.transcription_monthly_minutes,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url or OPENAI_ORIGIN)
    try:
        port = parsed.port
    except ValueError:
        port = None
    return (parsed.scheme.lower(), (parsed.hostname or "").lower(), port)


def server_and_key(own_url: str | None, own_key: str, env: Settings) -> tuple[str, str]:
    """The server a purpose calls and the key it sends: the account's own key, else the
    environment's, but only to the environment's own server."""
    base = (own_url or env.openai_base_url or "").rstrip("/")
    if own_key:
        return base, own_key
    same_server = _origin(base) == _origin(env.openai_base_url)
    return base, env.openai_api_key if same_server else ""


def _overlay(env: Settings, row: dict[str, Any], purpose: str, own_key: str) -> dict[str, Any]:
    base, key = server_and_key(row.get(f"{purpose}_base_url"), own_key, env)
    return {"openai_base_url": base, "openai_api_key": key}


def _transcription(env: Settings, row: dict[str, Any], own_key: str) -> Settings:
    changes = _overlay(env, row, "transcription", own_key)
    for column, field in (
        ("transcription_provider", "transcription_provider"),
        ("transcription_model", "transcription_model"),
        ("local_whisper_model", "local_whisper_model"),
    ):
        if row.get(column):
            changes[field] = row[column]
    return _changed(env, changes)


def _classification(env: Settings, row: dict[str, Any], own_key: str) -> Settings:
    changes = _overlay(env, row, "classification", own_key)
    if row.get("classification_model"):
        changes["classifier_model"] = row["classification_model"]
    if row.get("classification_provider") == "rules":
        changes["openai_api_key"] = ""  # no model call, whatever the environment has
    return _changed(env, changes)


def _generation(env: Settings, row: dict[str, Any], own_key: str) -> Settings:
    changes = _overlay(env, row, "generation", own_key)
    if row.get("generation_provider"):
        changes["generation_provider"] = row["generation_provider"]
    if row.get("generation_model"):
        changes["generation_model"] = row["generation_model"]
    return _changed(env, changes)


def _changed(env: Settings, changes: dict[str, Any]) -> Settings:
    """The environment's settings themselves when nothing differs (the same client keys)."""
    if all(getattr(env, k) == v for k, v in changes.items()):
        return env
    return replace(env, **changes)


# ---------------------------------------------------------------------------------------------
# what admins write


def _provider_field(purpose: str) -> fields.String:
    choices = PROVIDERS[purpose]
    spoken = ", ".join(choices[:-1]) + " or " + choices[-1]
    return fields.String(
        allow_none=True, validate=validate.OneOf(choices, error=f"unknown provider {{input!r}}: use {spoken}")
    )


def _url_field() -> fields.Url:
    return fields.Url(
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
        error_messages={"invalid": "not a valid http(s) URL, such as https://api.groq.com/openai/v1"},
    )


def _key_field() -> fields.String:
    return fields.String(allow_none=True, load_only=True, validate=validate.Length(1, 4096))


def _model_field() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^\S{1,200}$", error="a model name: 1 to 200 characters, no spaces"),
    )


def _model_directory(value: str) -> None:
    path = Path(value)
    if not path.is_absolute():
        raise ValidationError("an absolute path to a faster-whisper model directory")
    if not (path / "model.bin").is_file():
        raise ValidationError(f"no faster-whisper model (model.bin) in {value}")


class AIBody(Schema):
    """An account's AI settings as the admin API and `flask accounts ai set` take them: a field
    left out keeps its value, a field set to null goes back to the environment's setting."""

    class Meta:
        unknown = RAISE

    transcription_provider = _provider_field("transcription")
    transcription_base_url = _url_field()
    transcription_api_key = _key_field()
    transcription_model = _model_field()
    transcription_language = fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^[a-z]{2}$", error="a two-letter language code such as en, pt or es"),
    )
    local_whisper_model = fields.String(
        allow_none=True, validate=[validate.Length(1, 1024), _model_directory]
    )
    classification_provider = _provider_field("classification")
    classification_base_url = _url_field()
    classification_api_key = _key_field()
    classification_model = _model_field()
    generation_provider = _provider_field("generation")
    generation_base_url = _url_field()
    generation_api_key = _key_field()
    generation_model = _model_field()
    reply_language = fields.String(
        allow_none=True,
        validate=validate.OneOf(REPLY_LANGUAGES, error=f"one of {', '.join(REPLY_LANGUAGES)}"),
    )
    transcription_budget_minutes = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(0, 10_000_000)
    )


def _check_together(body: dict[str, Any], stored: dict[str, Any] | None, env: Settings) -> None:
    """The rules that involve several fields, on the settings as they would be once saved."""
    merged: dict[str, Any] = {name: (stored or {}).get(_column(name)) for name in COLUMNS}
    merged.update(body)
    env_provider = {
        "transcription": env.transcription_provider,
        "classification": "",
        "generation": env.generation_provider,
    }
    errors: dict[str, list[str]] = {}
    for purpose in PURPOSES:
        provider = merged[f"{purpose}_provider"] or env_provider[purpose]
        if provider not in KEYLESS[purpose]:
            continue
        for name, what in ((f"{purpose}_api_key", "key"), (f"{purpose}_base_url", "server URL")):
            if body.get(name):
                errors[name] = [f"the {provider} {purpose} provider takes no {what}"]
    if errors:
        raise ValidationError(errors)
    # A provider that needs a key (or a model) must have one, its own or the environment's.
    for purpose in PURPOSES:
        touched = {f"{purpose}_provider", f"{purpose}_api_key", f"{purpose}_base_url"} & set(body)
        if merged[f"{purpose}_provider"] != "openai" or not touched:
            continue
        key = merged[f"{purpose}_api_key"] or ""
        base, usable = server_and_key(merged[f"{purpose}_base_url"], "set" if key else "", env)
        if not usable:
            where = base or OPENAI_ORIGIN
            errors[f"{purpose}_api_key"] = [f"the openai {purpose} provider needs a key for {where}"]
    if merged["transcription_provider"] == "local" and not (
        merged["local_whisper_model"] or env.local_whisper_model
    ):
        errors["local_whisper_model"] = ["the local transcription provider needs a model directory"]
    if merged["classification_provider"] == "openai" and not (
        merged["classification_model"] or env.classifier_model
    ):
        errors["classification_model"] = ["the openai classification provider needs a model"]
    if errors:
        raise ValidationError(errors)


def save(account_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Validate and store some of an account's AI settings; returns the public view.

    Raises ValidationError (each message naming its field) or accounts.SecretsKeyMissing."""
    body: dict[str, Any] = AIBody().load(data)
    if not body:
        raise ValidationError({"_schema": ["give at least one setting (null clears one)"]})
    database = context.db()
    stored = database.fetch_one("account_ai.ai_settings_get", {"account_id": account_id})
    _check_together(body, stored, context.settings())
    params: dict[str, Any] = {"account_id": account_id}
    for name in COLUMNS:
        value = body.get(name)
        if name in KEY_FIELDS and value:
            value = encrypt(value)
        elif name.endswith("_base_url") and value:
            value = value.rstrip("/")
        params[_column(name)] = value
        params[f"{_column(name)}_set"] = name in body
    row = database.fetch_one("account_ai.ai_settings_upsert", params)
    assert row is not None
    return public_view(row)


def delete(account_id: int) -> bool:
    """Forget an account's AI settings: it uses the environment's from its next job on."""
    return context.db().execute("account_ai.ai_settings_delete", {"account_id": account_id}) > 0


def get_view(account_id: int) -> dict[str, Any] | None:
    row = context.db().fetch_one("account_ai.ai_settings_get", {"account_id": account_id})
    return public_view(row) if row is not None else None


def list_views() -> list[dict[str, Any]]:
    return [public_view(r) for r in context.db().fetch_all("account_ai.ai_settings_list")]


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    """The stored settings, keys shown only as `(set)`, and what is in force for each purpose."""
    out: dict[str, Any] = {"chatwoot_account_id": row["chatwoot_account_id"]}
    for name in COLUMNS:
        value = row.get(_column(name))
        out[name] = (SET if value else None) if name in KEY_FIELDS else value
    out["in_force"] = in_force(int(row["chatwoot_account_id"]), row)
    for stamp in ("created_at", "updated_at"):
        out[stamp] = row[stamp].isoformat() if row.get(stamp) else None
    return out


def in_force(account_id: int, row: dict[str, Any] | None) -> dict[str, Any]:
    """What the account's jobs use, each value with where it comes from; no key, only whether
    one is set. Keys that cannot be decrypted (the encryption key changed) show as such."""
    env = context.settings()
    try:
        ai = resolve(account_id, row, env)
    except KeysUnreadable as exc:
        return {"error": str(exc)}
    t, c, g = ai.transcription, ai.classification, ai.generation
    provider = t.effective_transcription_provider
    transcription: dict[str, Any] = {"provider": provider}
    if provider == "openai":
        transcription |= {
            "server": _shown(t.openai_base_url),
            "model": t.transcription_model,
            "key": _is_set(t.openai_api_key),
        }
    elif provider == "local":
        transcription["local_whisper_model"] = t.local_whisper_model
    transcription["language"] = ai.transcription_language or None
    transcription["monthly_budget_minutes"] = ai.budget_minutes or None
    classification: dict[str, Any] = {"provider": "openai" if ai.classifier_model_on else "rules"}
    if ai.classifier_model_on:
        classification |= {"server": _shown(c.openai_base_url), "model": c.classifier_model, "key": SET}
    generation: dict[str, Any] = {"provider": ai.generation_provider}
    if ai.generation_provider == "openai":
        generation |= {
            "server": _shown(g.openai_base_url),
            "model": g.generation_model,
            "key": _is_set(g.openai_api_key),
        }
    return {
        "transcription": transcription,
        "classification": classification,
        "generation": generation,
        "reply_language": ai.reply_language,
    }


def _shown(url: str) -> str:
    """A server URL without any password in it."""
    return re.sub(r"://[^/@]*@", "://***@", url) if url else OPENAI_ORIGIN


def _is_set(value: str) -> str:
    return SET if value else "(not set)"
