"""Settings read once from the environment (and `.env`), validated at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlparse

ENVIRONMENTS = ("development", "production")
TRANSCRIPTION_PROVIDERS = ("openai", "local", "none")
GENERATION_PROVIDERS = ("openai", "external")
DEFAULT_BUCKET_HASH_SECRET = "dev-bucket-hash-secret"  # noqa: S105 (refused in production)
DEFAULT_SECRET_KEY = "dev-secret-key"  # noqa: S105 (refused in production)
# Bucket prefix rules: with "-" and 32 hex characters appended the name must stay within 63 characters.
_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,28}[a-z0-9]$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _duration(name: str, raw: str) -> int:
    """Seconds from `90`, `90s`, `15m`, `24h` or `2d`."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", raw)
    if not match:
        raise ConfigError(f"{name}: expected a duration such as 300, 15m, 24h or 2d, got {raw!r}")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ConfigError(f"{name}: expected a {' or '.join(schemes)} URL")
    return raw.strip().rstrip("/") if parsed.scheme.startswith("http") else raw.strip()


def _rate(name: str, raw: str) -> str:
    """A rate such as `1 per 2 seconds` or `30/minute` (the `limits` library's notation)."""
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"{name}: expected a rate such as '1 per 2 seconds' or '30/minute', got {raw!r}"
        ) from None
    return raw


def _int_list(name: str, raw: str) -> tuple[int, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return tuple(_int(name, p, minimum=1) for p in parts)


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; see `.env.example` for one line on each."""

    app_env: str = "development"
    log_level: str = "INFO"
    secret_key: str = DEFAULT_SECRET_KEY

    database_url: str = ""
    redis_url: str = ""

    # Google Cloud Storage
    gcs_project_id: str = ""
    gcs_bucket_prefix: str = "pacelane-whatsapp"
    gcs_client_email: str = ""
    gcs_private_key: str = field(default="", repr=False)
    gcs_private_key_id: str = ""
    google_application_credentials: str = ""
    storage_emulator_host: str = ""
    gcs_location: str = "US"
    bucket_hash_secret: str = field(default=DEFAULT_BUCKET_HASH_SECRET, repr=False)
    max_attachment_bytes: int = 100 * 1024 * 1024
    gcs_project_number: str = ""
    gcs_bucket_create_rate: str = "1 per 2 seconds"
    attachment_retry_seconds: int = 30
    # The archive (app/archive): uploads in flight per worker process, the overall deadline of
    # one attachment download, the hosts attachments are fetched from, soft delete of new buckets.
    archive_concurrency: int = 16
    attachment_download_seconds: int = 120
    media_allowed_hosts: tuple[str, ...] = ("*.fbcdn.net", "*.cdninstagram.com", "*.fbsbx.com")
    soft_delete_retention_seconds: int = 0

    # Chatwoot
    chatwoot_base_url: str = ""
    chatwoot_api_access_token: str = field(default="", repr=False)
    chatwoot_account_id: int | None = None
    chatwoot_webhook_secret: str = field(default="", repr=False)
    chatwoot_webhook_secret_previous: str = field(default="", repr=False)
    chatwoot_inbox_ids: tuple[int, ...] = ()
    webhook_url_token: str = field(default="", repr=False)
    webhook_timestamp_tolerance: int = 300
    max_webhook_bytes: int = 1024 * 1024
    allow_unsigned_webhooks: bool = False
    secrets_encryption_key: str = field(default="", repr=False)
    spool_dir: str = "var/spool"
    chatwoot_allowed_private_hosts: tuple[str, ...] = ()

    # OpenAI and transcription
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    transcription_provider: str = ""
    transcription_model: str = "whisper-1"
    local_whisper_model: str = ""
    transcript_private_note: bool = False
    transcription_cost_per_minute: str = "0.006"
    transcription_timeout: int = 300
    transcription_max_attempts: int = 4
    transcription_retry_wait: int = 2
    transcription_max_upload_bytes: int = 25_000_000

    # Orders
    classifier_model: str = ""
    generation_provider: str = ""
    generation_model: str = "gpt-4o-mini"
    clarification_timeout: int = 24 * 3600

    # Tokens of the main app's API and the admin API
    api_token: str = field(default="", repr=False)
    admin_api_token: str = field(default="", repr=False)
    admin_rate_limit: str = "300 per minute"
    admin_auth_failure_limit: str = "20 per 10 minutes"
    metrics_token: str = field(default="", repr=False)

    # Workers
    worker_processes: int = 2
    job_timeout: int = 300

    # Reliability: the reconciler and the Chatwoot backfill
    reconcile_interval: int = 60
    reconcile_grace: int = 120
    reconcile_max_attempts: int = 6
    reconcile_backoff: int = 30
    reconcile_backoff_max: int = 3600
    backfill_interval: int = 900
    backfill_window: int = 6 * 3600

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def uses_gcs_emulator(self) -> bool:
        return bool(self.storage_emulator_host)

    @property
    def effective_transcription_provider(self) -> str:
        """The configured provider, or the default chosen from what is available."""
        if self.transcription_provider:
            return self.transcription_provider
        if self.openai_api_key:
            return "openai"
        if self.local_whisper_model:
            return "local"
        return "none"

    @property
    def effective_generation_provider(self) -> str:
        if self.generation_provider:
            return self.generation_provider
        return "openai" if self.openai_api_key else "external"

    def public_summary(self) -> dict[str, object]:
        """Settings safe to print: secrets reduced to whether they are set."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                out[f.name] = "(set)" if value else "(not set)"
            elif f.name in ("database_url", "redis_url"):
                out[f.name] = _redact_url(str(value))
            else:
                out[f.name] = value
        return out


def _redact_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def _private_key(raw: str) -> str:
    key = raw.strip().strip('"').replace("\\n", "\n")
    if "BEGIN" not in key or "PRIVATE KEY" not in key:
        raise ConfigError("GCS_PRIVATE_KEY: expected a PEM private key (one line with \\n escapes)")
    return key


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Read `.env` into the environment; variables already set win."""
    if Path(path).is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise ConfigError naming the first bad variable."""
    env = dict(os.environ if environ is None else environ)

    def get(name: str, default: str = "") -> str:
        return env.get(name, default).strip()

    values: dict[str, object] = {}
    app_env = get("APP_ENV", "development").lower()
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV: expected development or production, got {app_env!r}")
    values["app_env"] = app_env
    level = get("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    values["log_level"] = level
    values["secret_key"] = get("SECRET_KEY", DEFAULT_SECRET_KEY)

    if not get("DATABASE_URL"):
        raise ConfigError("DATABASE_URL: not set (a libpq URL such as postgresql://user@host:5432/db)")
    values["database_url"] = _url("DATABASE_URL", get("DATABASE_URL"), ("postgresql", "postgres"))
    if not get("REDIS_URL"):
        raise ConfigError("REDIS_URL: not set (such as redis://127.0.0.1:6379/0)")
    values["redis_url"] = _url("REDIS_URL", get("REDIS_URL"), ("redis", "rediss", "unix"))

    prefix = get("GCS_BUCKET_PREFIX", "pacelane-whatsapp")
    if not _BUCKET_PREFIX_RE.match(prefix) or "--" in prefix:
        raise ConfigError(
            "GCS_BUCKET_PREFIX: 3-30 characters of lowercase letters, digits and single dashes, "
            f"starting and ending with a letter or digit; got {prefix!r}"
        )
    if prefix.startswith("goog") or "google" in prefix or "g00gle" in prefix:
        raise ConfigError("GCS_BUCKET_PREFIX: must not start with 'goog' or contain 'google'")
    values["gcs_bucket_prefix"] = prefix
    for name in ("GCS_PROJECT_ID", "GCS_CLIENT_EMAIL", "GCS_PRIVATE_KEY_ID", "GCS_LOCATION"):
        if get(name):
            values[name.lower()] = get(name)
    if env.get("GCS_PRIVATE_KEY", "").strip():
        values["gcs_private_key"] = _private_key(env["GCS_PRIVATE_KEY"])
    creds = get("GOOGLE_APPLICATION_CREDENTIALS")
    if creds:
        if not Path(creds).is_file():
            raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS: no such file {creds!r}")
        values["google_application_credentials"] = creds
    if get("STORAGE_EMULATOR_HOST"):
        values["storage_emulator_host"] = _url(
            "STORAGE_EMULATOR_HOST", get("STORAGE_EMULATOR_HOST"), ("http", "https")
        )
    has_sa_fields = bool(values.get("gcs_private_key") or values.get("gcs_client_email"))
    if has_sa_fields and not (values.get("gcs_private_key") and values.get("gcs_client_email")):
        missing = "GCS_PRIVATE_KEY" if not values.get("gcs_private_key") else "GCS_CLIENT_EMAIL"
        raise ConfigError(f"{missing}: required with the other service-account fields")
    if not (values.get("storage_emulator_host") or has_sa_fields or creds):
        raise ConfigError(
            "STORAGE_EMULATOR_HOST: not set, and no GCS credentials either "
            "(GCS_CLIENT_EMAIL + GCS_PRIVATE_KEY, or GOOGLE_APPLICATION_CREDENTIALS)"
        )
    if (
        (has_sa_fields or creds)
        and not values.get("storage_emulator_host")
        and not values.get("gcs_project_id")
    ):
        raise ConfigError("GCS_PROJECT_ID: required with real GCS credentials")
    values["bucket_hash_secret"] = get("BUCKET_HASH_SECRET", DEFAULT_BUCKET_HASH_SECRET)
    if get("MAX_ATTACHMENT_BYTES"):
        values["max_attachment_bytes"] = _int("MAX_ATTACHMENT_BYTES", get("MAX_ATTACHMENT_BYTES"), 1)
    if get("GCS_PROJECT_NUMBER"):
        if not get("GCS_PROJECT_NUMBER").isdigit():
            raise ConfigError(f"GCS_PROJECT_NUMBER: expected digits, got {get('GCS_PROJECT_NUMBER')!r}")
        values["gcs_project_number"] = get("GCS_PROJECT_NUMBER")
    if get("GCS_BUCKET_CREATE_RATE"):
        values["gcs_bucket_create_rate"] = _rate("GCS_BUCKET_CREATE_RATE", get("GCS_BUCKET_CREATE_RATE"))
    if get("ATTACHMENT_RETRY_SECONDS"):
        values["attachment_retry_seconds"] = _duration(
            "ATTACHMENT_RETRY_SECONDS", get("ATTACHMENT_RETRY_SECONDS")
        )

    if get("ARCHIVE_CONCURRENCY"):
        values["archive_concurrency"] = _int("ARCHIVE_CONCURRENCY", get("ARCHIVE_CONCURRENCY"), 1)
    if get("ATTACHMENT_DOWNLOAD_SECONDS"):
        values["attachment_download_seconds"] = max(
            1, _duration("ATTACHMENT_DOWNLOAD_SECONDS", get("ATTACHMENT_DOWNLOAD_SECONDS"))
        )
    if "MEDIA_ALLOWED_HOSTS" in env:
        hosts = tuple(
            h.strip().lower().rstrip(".") for h in get("MEDIA_ALLOWED_HOSTS").split(",") if h.strip()
        )
        for host in hosts:
            if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
                raise ConfigError(
                    f"MEDIA_ALLOWED_HOSTS: expected host names such as *.fbcdn.net, got {host!r}"
                )
        values["media_allowed_hosts"] = hosts
    if get("SOFT_DELETE_RETENTION_SECONDS"):
        retention = _duration("SOFT_DELETE_RETENTION_SECONDS", get("SOFT_DELETE_RETENTION_SECONDS"))
        if retention and not 7 * 86400 <= retention <= 90 * 86400:
            raise ConfigError(
                "SOFT_DELETE_RETENTION_SECONDS: 0 (off) or between 7 and 90 days, as GCS allows"
            )
        values["soft_delete_retention_seconds"] = retention

    if get("CHATWOOT_BASE_URL"):
        values["chatwoot_base_url"] = _url("CHATWOOT_BASE_URL", get("CHATWOOT_BASE_URL"), ("http", "https"))
    values["chatwoot_api_access_token"] = get("CHATWOOT_API_ACCESS_TOKEN")
    if get("CHATWOOT_ACCOUNT_ID"):
        values["chatwoot_account_id"] = _int("CHATWOOT_ACCOUNT_ID", get("CHATWOOT_ACCOUNT_ID"), 1)
    values["chatwoot_webhook_secret"] = get("CHATWOOT_WEBHOOK_SECRET")
    values["chatwoot_webhook_secret_previous"] = get("CHATWOOT_WEBHOOK_SECRET_PREVIOUS")
    if get("CHATWOOT_INBOX_IDS"):
        values["chatwoot_inbox_ids"] = _int_list("CHATWOOT_INBOX_IDS", get("CHATWOOT_INBOX_IDS"))
    values["webhook_url_token"] = get("WEBHOOK_URL_TOKEN")
    if get("WEBHOOK_TIMESTAMP_TOLERANCE"):
        values["webhook_timestamp_tolerance"] = _duration(
            "WEBHOOK_TIMESTAMP_TOLERANCE", get("WEBHOOK_TIMESTAMP_TOLERANCE")
        )
    if get("MAX_WEBHOOK_BYTES"):
        values["max_webhook_bytes"] = _int("MAX_WEBHOOK_BYTES", get("MAX_WEBHOOK_BYTES"), 1024)
    values["allow_unsigned_webhooks"] = _bool("ALLOW_UNSIGNED_WEBHOOKS", get("ALLOW_UNSIGNED_WEBHOOKS"))
    values["secrets_encryption_key"] = get("SECRETS_ENCRYPTION_KEY")
    if values["secrets_encryption_key"]:
        from cryptography.fernet import Fernet

        for part in str(values["secrets_encryption_key"]).split(","):
            try:
                Fernet(part.strip())
            except (ValueError, TypeError):
                raise ConfigError(
                    "SECRETS_ENCRYPTION_KEY: expected comma-separated Fernet keys "
                    "(32 url-safe base64-encoded bytes each)"
                ) from None
    values["spool_dir"] = get("SPOOL_DIR", "var/spool")
    if get("CHATWOOT_ALLOWED_PRIVATE_HOSTS"):
        values["chatwoot_allowed_private_hosts"] = tuple(
            h.strip().lower() for h in get("CHATWOOT_ALLOWED_PRIVATE_HOSTS").split(",") if h.strip()
        )

    values["openai_api_key"] = get("OPENAI_API_KEY")
    if get("OPENAI_BASE_URL"):
        values["openai_base_url"] = _url("OPENAI_BASE_URL", get("OPENAI_BASE_URL"), ("http", "https"))
    provider = get("TRANSCRIPTION_PROVIDER").lower()
    if provider and provider not in TRANSCRIPTION_PROVIDERS:
        raise ConfigError(f"TRANSCRIPTION_PROVIDER: expected openai, local or none, got {provider!r}")
    if provider == "openai" and not values["openai_api_key"]:
        raise ConfigError("OPENAI_API_KEY: required with TRANSCRIPTION_PROVIDER=openai")
    values["transcription_provider"] = provider
    values["transcription_model"] = get("TRANSCRIPTION_MODEL", "whisper-1")
    values["local_whisper_model"] = get("LOCAL_WHISPER_MODEL")
    if provider == "local" and not values["local_whisper_model"]:
        raise ConfigError("LOCAL_WHISPER_MODEL: required with TRANSCRIPTION_PROVIDER=local")
    if values["local_whisper_model"] and not Path(str(values["local_whisper_model"])).is_dir():
        raise ConfigError(f"LOCAL_WHISPER_MODEL: no such model directory {values['local_whisper_model']!r}")
    values["transcript_private_note"] = _bool("TRANSCRIPT_PRIVATE_NOTE", get("TRANSCRIPT_PRIVATE_NOTE"))
    values["transcription_cost_per_minute"] = get("TRANSCRIPTION_COST_PER_MINUTE", "0.006")
    try:
        rate = Decimal(str(values["transcription_cost_per_minute"]))
        if not (rate.is_finite() and 0 <= rate < 1000):
            raise InvalidOperation
    except InvalidOperation:
        raise ConfigError(
            "TRANSCRIPTION_COST_PER_MINUTE: expected a number such as 0.006, "
            f"got {values['transcription_cost_per_minute']!r}"
        ) from None
    if get("TRANSCRIPTION_TIMEOUT"):
        values["transcription_timeout"] = _duration("TRANSCRIPTION_TIMEOUT", get("TRANSCRIPTION_TIMEOUT"))
    if get("TRANSCRIPTION_MAX_ATTEMPTS"):
        values["transcription_max_attempts"] = _int(
            "TRANSCRIPTION_MAX_ATTEMPTS", get("TRANSCRIPTION_MAX_ATTEMPTS"), 1
        )
    if get("TRANSCRIPTION_RETRY_WAIT"):
        values["transcription_retry_wait"] = _duration(
            "TRANSCRIPTION_RETRY_WAIT", get("TRANSCRIPTION_RETRY_WAIT")
        )
    if get("TRANSCRIPTION_MAX_UPLOAD_BYTES"):
        values["transcription_max_upload_bytes"] = _int(
            "TRANSCRIPTION_MAX_UPLOAD_BYTES", get("TRANSCRIPTION_MAX_UPLOAD_BYTES"), 1024
        )

    values["classifier_model"] = get("CLASSIFIER_MODEL")
    gen = get("GENERATION_PROVIDER").lower()
    if gen and gen not in GENERATION_PROVIDERS:
        raise ConfigError(f"GENERATION_PROVIDER: expected openai or external, got {gen!r}")
    if gen == "openai" and not values["openai_api_key"]:
        raise ConfigError("OPENAI_API_KEY: required with GENERATION_PROVIDER=openai")
    values["generation_provider"] = gen
    values["generation_model"] = get("GENERATION_MODEL", "gpt-4o-mini")
    if get("CLARIFICATION_TIMEOUT"):
        values["clarification_timeout"] = _duration("CLARIFICATION_TIMEOUT", get("CLARIFICATION_TIMEOUT"))

    values["api_token"] = get("API_TOKEN")
    values["admin_api_token"] = get("ADMIN_API_TOKEN")
    for name, default in (
        ("ADMIN_RATE_LIMIT", "300 per minute"),
        ("ADMIN_AUTH_FAILURE_LIMIT", "20 per 10 minutes"),
    ):
        values[name.lower()] = _rate(name, get(name, default))
    values["metrics_token"] = get("METRICS_TOKEN")
    if get("WORKER_PROCESSES"):
        values["worker_processes"] = _int("WORKER_PROCESSES", get("WORKER_PROCESSES"), 1)
    if get("JOB_TIMEOUT"):
        values["job_timeout"] = _duration("JOB_TIMEOUT", get("JOB_TIMEOUT"))
    for name in ("RECONCILE_INTERVAL", "RECONCILE_GRACE", "RECONCILE_BACKOFF", "RECONCILE_BACKOFF_MAX"):
        if get(name):
            values[name.lower()] = max(1, _duration(name, get(name)))
    if get("RECONCILE_MAX_ATTEMPTS"):
        values["reconcile_max_attempts"] = _int("RECONCILE_MAX_ATTEMPTS", get("RECONCILE_MAX_ATTEMPTS"), 1)
    for name in ("BACKFILL_INTERVAL", "BACKFILL_WINDOW"):
        if get(name):
            values[name.lower()] = _duration(name, get(name))

    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.production:
        _check_production(settings)
    return settings


def _check_production(s: Settings) -> None:
    """Production refuses settings that are only safe on a developer's machine."""
    if s.allow_unsigned_webhooks:
        raise ConfigError("ALLOW_UNSIGNED_WEBHOOKS: not allowed with APP_ENV=production")
    if not (s.chatwoot_webhook_secret or s.webhook_url_token):
        raise ConfigError(
            "CHATWOOT_WEBHOOK_SECRET: required with APP_ENV=production (or WEBHOOK_URL_TOKEN for "
            "Chatwoot older than 4.11.2)"
        )
    if s.bucket_hash_secret == DEFAULT_BUCKET_HASH_SECRET or len(s.bucket_hash_secret) < 16:
        raise ConfigError("BUCKET_HASH_SECRET: set a random secret of 16+ characters in production")
    if s.secret_key == DEFAULT_SECRET_KEY or len(s.secret_key) < 16:
        raise ConfigError("SECRET_KEY: set a random secret of 16+ characters in production")
    if s.webhook_url_token and len(s.webhook_url_token) < 16:
        raise ConfigError("WEBHOOK_URL_TOKEN: use 16+ random characters in production")
    if not s.secrets_encryption_key:
        raise ConfigError("SECRETS_ENCRYPTION_KEY: required with APP_ENV=production")
