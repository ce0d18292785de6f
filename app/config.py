"""Settings read once from the environment (and `.env`), validated at start.

Each setting is declared once, as a field of `Settings` made by `setting()`: its variable name,
parser, default, one line of documentation, its section and whether it is a secret. The loader
is a loop over those fields plus the checks that involve several of them, and `.env.example` is
generated from the same declaration (`python scripts/env_example.py > .env.example`; a test
compares the two).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography.fernet import Fernet
from dotenv import load_dotenv
from limits import parse_many

from app.chatwoot import templates

ENVIRONMENTS = ("development", "production")
TRANSCRIPTION_PROVIDERS = ("openai", "local", "none")
GENERATION_PROVIDERS = ("openai", "external")
REPLY_LANGUAGES = ("en", "pt", "es")
"""Languages the service writes its replies in (app.orders.i18n holds the texts)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_BUCKET_HASH_SECRET = "dev-bucket-hash-secret"  # noqa: S105 (refused in production)
DEFAULT_SECRET_KEY = "dev-secret-key"  # noqa: S105 (refused in production)
# Bucket prefix rules: with "-" and 32 hex characters appended the name must stay within 63 characters.
_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,28}[a-z0-9]$")

EXAMPLE_HEADER = (
    "# Copy to .env (or set in the environment; the environment wins). Optional settings are commented out."
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


# ---------------------------------------------------------------------------------------------
# parsers: (variable name, raw text without surrounding blanks) -> value, or ConfigError

Parser = Callable[[str, str], Any]


def text(name: str, raw: str) -> str:
    return raw


def boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
    value = int(raw.strip())
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def integer(minimum: int = 0) -> Parser:
    """A whole number of at least `minimum`."""
    return lambda name, raw: _int(name, raw, minimum)


def _duration(name: str, raw: str) -> int:
    """Seconds from `90`, `90s`, `15m`, `24h` or `2d`."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", raw)
    if not match:
        raise ConfigError(f"{name}: expected a duration such as 300, 15m, 24h or 2d, got {raw!r}")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def duration(at_least: int = 0) -> Parser:
    """Seconds (`90`, `15m`, `24h`, `2d`); a smaller value is raised to `at_least`."""
    return lambda name, raw: max(at_least, _duration(name, raw))


def seconds(name: str, raw: str) -> float:
    """Seconds, fractions allowed: `1`, `1.5`, `1.5s` or `800ms`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*", raw)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{name}: expected a positive number of seconds such as 1.5 or 800ms, got {raw!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def duration_within(low: int, high: int) -> Parser:
    """Seconds (`90`, `15m`, `24h`, `2d`) from `low` to `high`."""

    def parse(name: str, raw: str) -> int:
        value = _duration(name, raw)
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low} and {high} seconds, got {value}")
        return value

    return parse


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ConfigError(f"{name}: expected a {' or '.join(schemes)} URL")
    return raw.strip().rstrip("/") if parsed.scheme.startswith("http") else raw.strip()


def url(*schemes: str) -> Parser:
    return lambda name, raw: _url(name, raw, schemes)


def _spoken(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


def choice(choices: tuple[str, ...], *, upper: bool = False) -> Parser:
    """One of `choices`, compared in lower case (upper case with `upper`)."""

    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(f"{name}: expected {_spoken(choices)}, got {value!r}")
        return value

    return parse


def rate(name: str, raw: str) -> str:
    """A rate such as `1 per 2 seconds` or `30/minute` (the `limits` library's notation)."""
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"{name}: expected a rate such as '1 per 2 seconds' or '30/minute', got {raw!r}"
        ) from None
    return raw


def _template(check: Callable[[str], Any]) -> Parser:
    """A parser from one of app/chatwoot/templates.py's checks."""

    def parse(name: str, raw: str) -> Any:
        try:
            return check(raw)
        except templates.TemplateConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    return parse


def int_list(name: str, raw: str) -> tuple[int, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return tuple(_int(name, p, minimum=1) for p in parts)


def host_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


def host_patterns(name: str, raw: str) -> tuple[str, ...]:
    """Host names, `*.x` for x's subdomains; `none` for none at all."""
    if raw.strip().lower() == "none":
        return ()
    hosts = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    for host in hosts:
        if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
            raise ConfigError(f"{name}: expected host names such as *.fbcdn.net, got {host!r}")
    return hosts


def soft_delete_retention(name: str, raw: str) -> int:
    """0 (off), or between 7 and 90 days, as GCS allows."""
    retention = _duration(name, raw)
    if retention and not 7 * 86400 <= retention <= 90 * 86400:
        raise ConfigError(f"{name}: 0 (off) or between 7 and 90 days, as GCS allows")
    return retention


def private_key(name: str, raw: str) -> str:
    key = raw.strip().strip('"').replace("\\n", "\n")
    if "BEGIN" not in key or "PRIVATE KEY" not in key:
        raise ConfigError(f"{name}: expected a PEM private key (one line with \\n escapes)")
    return key


def existing_file(name: str, raw: str) -> str:
    if not Path(raw).is_file():
        raise ConfigError(f"{name}: no such file {raw!r}")
    return raw


def model_directory(name: str, raw: str) -> str:
    if not Path(raw).is_dir():
        raise ConfigError(f"{name}: no such model directory {raw!r}")
    return raw


def language_code(name: str, raw: str) -> str:
    """An ISO 639-1 language code such as `pt` (Whisper's language hint)."""
    value = raw.strip().lower()
    if not re.fullmatch(r"[a-z]{2}", value):
        raise ConfigError(f"{name}: expected a two-letter language code such as en, pt or es, got {raw!r}")
    return value


def digits(name: str, raw: str) -> str:
    if not re.fullmatch(r"[0-9]+", raw):
        raise ConfigError(f"{name}: expected digits, got {raw!r}")
    return raw


def price(name: str, raw: str) -> str:
    """A decimal amount from 0 to 1000, kept as written."""
    try:
        value = Decimal(raw)
        if not (value.is_finite() and 0 <= value < 1000):
            raise InvalidOperation
    except InvalidOperation:
        raise ConfigError(f"{name}: expected a number such as 0.006, got {raw!r}") from None
    return raw


def fernet_keys(name: str, raw: str) -> str:
    for part in raw.split(","):
        try:
            Fernet(part.strip())
        except (ValueError, TypeError):
            raise ConfigError(
                f"{name}: expected comma-separated Fernet keys (32 url-safe base64-encoded bytes each)"
            ) from None
    return raw


def bucket_prefix(name: str, raw: str) -> str:
    if not _BUCKET_PREFIX_RE.match(raw) or "--" in raw:
        raise ConfigError(
            f"{name}: 3-30 characters of lowercase letters, digits and single dashes, "
            f"starting and ending with a letter or digit; got {raw!r}"
        )
    if raw.startswith("goog") or "google" in raw or "g00gle" in raw:
        raise ConfigError(f"{name}: must not start with 'goog' or contain 'google'")
    return raw


# ---------------------------------------------------------------------------------------------
# the declaration


@dataclass(frozen=True)
class Variable:
    """How one setting is read from the environment and shown in `.env.example`."""

    env: str
    parse: Parser
    doc: str
    """One line for `.env.example` (and the README's configuration table)."""
    section: str
    secret: bool = False
    """Printed and logged only as `(set)` / `(not set)`."""
    required: str = ""
    """When set, the variable must be given; the text says what a value looks like."""
    example: str | None = None
    """The value shown in `.env.example` (default: the setting's default)."""
    listed: bool = False
    """Shown uncommented in `.env.example`: a value every installation sets."""


SERVICE = "Service"
STORES = "PostgreSQL and Redis (make dev / make up start local ones when these are not set)"
GCS = "Google Cloud Storage"
CHATWOOT = "Chatwoot"
OPENAI = "OpenAI and transcription"
ORDERS = "Orders"
APIS = "APIs"
WORKERS = "Workers"
RELIABILITY = "Reliability"
RECORDS = "Records: exports, retention, legal holds, the delivery audit trail"


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    section: str,
    parse: Parser = text,
    secret: bool = False,
    required: str = "",
    example: str | None = None,
    listed: bool = False,
) -> Any:
    """A field of Settings read from the variable `env`; an empty or absent variable keeps `default`."""
    variable = Variable(env, parse, doc, section, secret, required, example, listed)
    return field(default=default, metadata={"variable": variable})


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting of the service, each declared once (see `setting()`)."""

    # --- Service
    app_env: str = setting(
        "APP_ENV",
        "development",
        "development (default) or production; production refuses unsafe settings.",
        section=SERVICE,
        parse=choice(ENVIRONMENTS),
    )
    log_level: str = setting(
        "LOG_LEVEL",
        "INFO",
        "DEBUG, INFO (default), WARNING or ERROR; logs are JSON lines on stderr.",
        section=SERVICE,
        parse=choice(LOG_LEVELS, upper=True),
    )
    secret_key: str = setting(
        "SECRET_KEY",
        DEFAULT_SECRET_KEY,
        "Signs the admin page's session cookie; 16+ random characters in production.",
        section=SERVICE,
        secret=True,
        example="change-me",
    )
    web_port: int = setting(
        "WEB_PORT",
        8000,
        "Port of the web app started by make dev / make up.",
        section=SERVICE,
        parse=integer(1),
    )
    web_concurrency: int = setting(
        "WEB_CONCURRENCY",
        4,
        "gunicorn worker processes started by make dev / make up.",
        section=SERVICE,
        parse=integer(1),
    )
    trusted_proxies: int = setting(
        "TRUSTED_PROXIES",
        0,
        "Reverse proxies in front of the web process that append to X-Forwarded-For (1 behind the nginx example): the client's address is read from that header, for the admin rate limits and the records of who acted. 0: the header is ignored (a client could forge it).",
        section=SERVICE,
        parse=integer(0),
    )

    # --- PostgreSQL and Redis
    database_url: str = setting(
        "DATABASE_URL",
        "",
        "libpq URL of the database.",
        section=STORES,
        parse=url("postgresql", "postgres"),
        required="a libpq URL such as postgresql://user@host:5432/db",
        example="postgresql://postgres@127.0.0.1:5432/meeting_notes",
        listed=True,
    )
    redis_url: str = setting(
        "REDIS_URL",
        "",
        "Redis 5+ for the RQ queues.",
        section=STORES,
        parse=url("redis", "rediss", "unix"),
        required="such as redis://127.0.0.1:6379/0",
        example="redis://127.0.0.1:6379/0",
        listed=True,
    )

    db_statement_timeout: float = setting(
        "DB_STATEMENT_TIMEOUT",
        30.0,
        "Longest a database statement may run in jobs, the admin API and the CLI (seconds); a server that does not answer at all is given up 5 s later.",
        section=STORES,
        parse=seconds,
        example="30",
    )
    webhook_db_timeout: float = setting(
        "WEBHOOK_DB_TIMEOUT",
        1.0,
        "Time a webhook delivery may spend on the database, connecting included (seconds); past it the delivery is spooled and answered 200.",
        section=STORES,
        parse=seconds,
        example="1",
    )

    # --- Google Cloud Storage
    gcs_project_id: str = setting(
        "GCS_PROJECT_ID",
        "",
        "Project that owns the buckets (required with real credentials).",
        section=GCS,
        example="my-project",
    )
    gcs_bucket_prefix: str = setting(
        "GCS_BUCKET_PREFIX",
        "pacelane-whatsapp",
        'Bucket names are <prefix>-<32 hex>; 3-30 lowercase letters, digits and dashes, no "goog"/"google".',
        section=GCS,
        parse=bucket_prefix,
    )
    gcs_client_email: str = setting(
        "GCS_CLIENT_EMAIL",
        "",
        "Service-account e-mail (with GCS_PRIVATE_KEY).",
        section=GCS,
        example="archiver@my-project.iam.gserviceaccount.com",
    )
    gcs_private_key: str = setting(
        "GCS_PRIVATE_KEY",
        "",
        "Service-account private key on one line, newlines written as \\n.",
        section=GCS,
        parse=private_key,
        secret=True,
        example='"-----BEGIN PRIVATE KEY-----\\nMIIE...\\n-----END PRIVATE KEY-----\\n"',
    )
    gcs_private_key_id: str = setting(
        "GCS_PRIVATE_KEY_ID", "", "Id of that private key.", section=GCS, example="0123456789abcdef"
    )
    google_application_credentials: str = setting(
        "GOOGLE_APPLICATION_CREDENTIALS",
        "",
        "Alternative to the fields above: path of a service-account JSON key file.",
        section=GCS,
        parse=existing_file,
        example="/etc/meeting-notes/sa.json",
    )
    storage_emulator_host: str = setting(
        "STORAGE_EMULATOR_HOST",
        "",
        "GCS emulator URL (fake-gcs-server); make dev / make up start one when no credentials are given.",
        section=GCS,
        parse=url("http", "https"),
        example="http://127.0.0.1:4443",
    )
    gcs_location: str = setting("GCS_LOCATION", "US", "Location of new buckets.", section=GCS)
    bucket_hash_secret: str = setting(
        "BUCKET_HASH_SECRET",
        DEFAULT_BUCKET_HASH_SECRET,
        "Key of the HMAC that names buckets; changing it changes every bucket name. 16+ characters in production.",
        section=GCS,
        secret=True,
        example="change-me-to-a-long-random-secret",
        listed=True,
    )
    max_attachment_bytes: int = setting(
        "MAX_ATTACHMENT_BYTES",
        100 * 1024 * 1024,
        "Largest attachment archived, in bytes (default 100 MiB).",
        section=GCS,
        parse=integer(1),
    )
    gcs_project_number: str = setting(
        "GCS_PROJECT_NUMBER",
        "",
        "Project number owning the buckets; a bucket name that already exists elsewhere is never written to (default: asked from GCS).",
        section=GCS,
        parse=digits,
        example="123456789012",
    )
    gcs_bucket_create_rate: str = setting(
        "GCS_BUCKET_CREATE_RATE",
        "1 per 2 seconds",
        "Bucket creations allowed across all workers (GCS allows about one every 2 s per project).",
        section=GCS,
        parse=rate,
    )
    archive_concurrency: int = setting(
        "ARCHIVE_CONCURRENCY",
        16,
        "Messages archived at once by each worker process (uploads in flight).",
        section=GCS,
        parse=integer(1),
    )
    attachment_download_seconds: int = setting(
        "ATTACHMENT_DOWNLOAD_SECONDS",
        120,
        "Longest one attachment download may take in all, however slowly the server sends (seconds, or 2m).",
        section=GCS,
        parse=duration(1),
    )
    media_allowed_hosts: tuple[str, ...] = setting(
        "MEDIA_ALLOWED_HOSTS",
        ("*.fbcdn.net", "*.cdninstagram.com", "*.fbsbx.com"),
        "Hosts attachment URLs may point at besides the account's Chatwoot host (comma-separated; *.x: "
        "x's subdomains; none: no other host); add the host of Chatwoot's FRONTEND_URL when it differs "
        "from CHATWOOT_BASE_URL.",
        section=GCS,
        parse=host_patterns,
        example="*.fbcdn.net,*.cdninstagram.com,*.fbsbx.com",
    )
    soft_delete_retention_seconds: int = setting(
        "SOFT_DELETE_RETENTION_SECONDS",
        0,
        "Soft-delete retention of new buckets (0: off, so that an erasure leaves nothing to recover; else 7d to 90d).",
        section=GCS,
        parse=soft_delete_retention,
    )
    attachment_retry_seconds: int = setting(
        "ATTACHMENT_RETRY_SECONDS",
        30,
        "How long a job retries an attachment that Chatwoot does not serve yet (404) before the job is retried later (seconds, or 1m).",
        section=GCS,
        parse=duration(),
    )

    # --- Chatwoot
    chatwoot_base_url: str = setting(
        "CHATWOOT_BASE_URL",
        "",
        "Base URL of your Chatwoot, for sending messages and checking attachment URLs.",
        section=CHATWOOT,
        parse=url("http", "https"),
        example="https://chat.example.com",
    )
    chatwoot_api_access_token: str = setting(
        "CHATWOOT_API_ACCESS_TOKEN",
        "",
        "API access token of the agent bot or agent that sends our messages.",
        section=CHATWOOT,
        secret=True,
    )
    chatwoot_user_access_token: str = setting(
        "CHATWOOT_USER_ACCESS_TOKEN",
        "",
        "A Chatwoot user's access token (Profile settings) for reads: the backfill and the send job's check. "
        "Agent-bot tokens may not list; without this, reads use CHATWOOT_API_ACCESS_TOKEN.",
        section=CHATWOOT,
        secret=True,
    )
    whatsapp_ready_template_name: str = setting(
        "WHATSAPP_READY_TEMPLATE_NAME",
        "",
        "Approved WhatsApp template for ready notices once the 24-hour window is closed "
        "(none: such notices are recorded no_template).",
        section=CHATWOOT,
        parse=_template(templates.check_name),
        example="content_ready",
    )
    whatsapp_ready_template_language: str = setting(
        "WHATSAPP_READY_TEMPLATE_LANGUAGE",
        "",
        "Its language: one WhatsApp code, or one per user language (default en:en,pt:pt_BR,es:es).",
        section=CHATWOOT,
        parse=_template(templates.check_languages),
        example="en:en_US,pt:pt_BR,es:es",
    )
    whatsapp_ready_template_category: str = setting(
        "WHATSAPP_READY_TEMPLATE_CATEGORY",
        "UTILITY",
        "Its category (UTILITY, MARKETING, SHIPPING_UPDATE, TICKET_UPDATE, ISSUE_RESOLUTION).",
        section=CHATWOOT,
        parse=_template(templates.check_category),
    )
    whatsapp_ready_template_params: tuple[str, ...] = setting(
        "WHATSAPP_READY_TEMPLATE_PARAMS",
        templates.DEFAULT_PARAMS,
        'The values filling its {{1}}, {{2}}... in order, among what (e.g. "LinkedIn post") and order_id; '
        "none for a template without parameters.",
        section=CHATWOOT,
        parse=_template(templates.parse_params),
        example="what,order_id",
    )
    chatwoot_account_id: int | None = setting(
        "CHATWOOT_ACCOUNT_ID",
        None,
        "The default Chatwoot account id.",
        section=CHATWOOT,
        parse=integer(1),
        example="1",
    )
    chatwoot_webhook_secret: str = setting(
        "CHATWOOT_WEBHOOK_SECRET",
        "",
        "Webhook secret (Chatwoot 4.12.0+ signs each delivery with it); required in production unless WEBHOOK_URL_TOKEN is set.",
        section=CHATWOOT,
        secret=True,
    )
    chatwoot_webhook_secret_previous: str = setting(
        "CHATWOOT_WEBHOOK_SECRET_PREVIOUS",
        "",
        "The previous webhook secret, still accepted while you rotate it.",
        section=CHATWOOT,
        secret=True,
    )
    chatwoot_inbox_ids: tuple[int, ...] = setting(
        "CHATWOOT_INBOX_IDS",
        (),
        "Only archive messages of these inbox ids (comma-separated); empty means every inbox.",
        section=CHATWOOT,
        parse=int_list,
        example="4,7",
    )
    webhook_url_token: str = setting(
        "WEBHOOK_URL_TOKEN",
        "",
        "For Chatwoot older than 4.12.0, which cannot sign: a secret ?token= on the webhook URL.",
        section=CHATWOOT,
        secret=True,
    )
    webhook_timestamp_tolerance: int = setting(
        "WEBHOOK_TIMESTAMP_TOLERANCE",
        300,
        "Accepted age of X-Chatwoot-Timestamp (seconds, or 5m).",
        section=CHATWOOT,
        parse=duration(),
    )
    max_webhook_bytes: int = setting(
        "MAX_WEBHOOK_BYTES",
        32 * 1024 * 1024,
        "Largest authentic webhook body accepted, in bytes (default 32 MiB: email newsletters are large).",
        section=CHATWOOT,
        parse=integer(1024),
    )
    webhook_body_timeout: int = setting(
        "WEBHOOK_BODY_TIMEOUT",
        10,
        "Seconds a webhook body may take to arrive before the request is refused (408).",
        section=CHATWOOT,
        parse=duration(),
    )
    allow_unsigned_webhooks: bool = setting(
        "ALLOW_UNSIGNED_WEBHOOKS",
        False,
        "Development only: accept unsigned webhooks (refused with APP_ENV=production).",
        section=CHATWOOT,
        parse=boolean,
    )
    secrets_encryption_key: str = setting(
        "SECRETS_ENCRYPTION_KEY",
        "",
        "Fernet key(s), comma-separated (newest first), encrypting per-account secrets in the database.",
        section=CHATWOOT,
        parse=fernet_keys,
        secret=True,
    )
    spool_dir: str = setting(
        "SPOOL_DIR",
        "var/spool",
        "Folder for deliveries accepted while PostgreSQL is down (replayed when it is back).",
        section=CHATWOOT,
    )
    chatwoot_allowed_private_hosts: tuple[str, ...] = setting(
        "CHATWOOT_ALLOWED_PRIVATE_HOSTS",
        (),
        "Private-network hosts that a self-hosted Chatwoot's attachment redirects may go to (comma-separated).",
        section=CHATWOOT,
        parse=host_list,
    )

    # --- OpenAI and transcription
    openai_api_key: str = setting(
        "OPENAI_API_KEY",
        "",
        "OpenAI API key: enables Whisper transcription, the order classifier and content drafting.",
        section=OPENAI,
        secret=True,
    )
    openai_base_url: str = setting(
        "OPENAI_BASE_URL",
        "",
        "OpenAI-compatible server (Groq, speaches, LocalAI...) instead of api.openai.com.",
        section=OPENAI,
        parse=url("http", "https"),
    )
    transcription_provider: str = setting(
        "TRANSCRIPTION_PROVIDER",
        "",
        "openai, local or none; default: openai with a key, else local with a model, else none.",
        section=OPENAI,
        parse=choice(TRANSCRIPTION_PROVIDERS),
    )
    transcription_model: str = setting(
        "TRANSCRIPTION_MODEL", "whisper-1", "Transcription model of the openai provider.", section=OPENAI
    )
    local_whisper_model: str = setting(
        "LOCAL_WHISPER_MODEL",
        "",
        "Local faster-whisper model directory (make dev uses the bundled tiny.en model).",
        section=OPENAI,
        parse=model_directory,
    )
    transcript_private_note: bool = setting(
        "TRANSCRIPT_PRIVATE_NOTE",
        False,
        "Post each transcript to the conversation as a private note for agents.",
        section=OPENAI,
        parse=boolean,
    )
    transcription_cost_per_minute: str = setting(
        "TRANSCRIPTION_COST_PER_MINUTE",
        "0.006",
        "Estimated cost per audio minute, for the monitoring query (USD).",
        section=OPENAI,
        parse=price,
    )
    transcription_timeout: int = setting(
        "TRANSCRIPTION_TIMEOUT",
        300,
        "Seconds one transcription request may take before it is retried.",
        section=OPENAI,
        parse=duration(),
    )
    transcription_max_attempts: int = setting(
        "TRANSCRIPTION_MAX_ATTEMPTS",
        4,
        "Provider calls per audio file before the note is marked failed (429, 5xx and timeouts are retried).",
        section=OPENAI,
        parse=integer(1),
    )
    transcription_retry_wait: int = setting(
        "TRANSCRIPTION_RETRY_WAIT",
        2,
        "First wait between those calls, in seconds; doubled each time (a Retry-After from the provider wins).",
        section=OPENAI,
        parse=duration(),
    )
    transcription_max_upload_bytes: int = setting(
        "TRANSCRIPTION_MAX_UPLOAD_BYTES",
        25_000_000,
        "Largest file sent to the openai provider, in bytes; longer audio is split into pieces (OpenAI: 25 MB).",
        section=OPENAI,
        parse=integer(1024),
    )
    transcription_language: str = setting(
        "TRANSCRIPTION_LANGUAGE",
        "",
        "Language voice notes are spoken in when the user's is unknown (pt, es...); an English-only local model skips notes in another.",
        section=OPENAI,
        parse=language_code,
        example="pt",
    )
    transcription_monthly_minutes: int = setting(
        "TRANSCRIPTION_MONTHLY_MINUTES",
        0,
        "Audio minutes transcribed per account and calendar month (UTC) before voice notes are kept untranscribed; 0: no limit.",
        section=OPENAI,
        parse=integer(0),
    )

    # --- Orders
    classifier_model: str = setting(
        "CLASSIFIER_MODEL",
        "",
        "Chat model that classifies messages and extracts order fields (only with OPENAI_API_KEY); rules otherwise.",
        section=ORDERS,
    )
    learned_classifier: bool = setting(
        "LEARNED_CLASSIFIER",
        True,
        "Without a chat model, the learned reading (app/orders/learned.py) reads what the rules find no request in; "
        "false leaves the rules alone.",
        section=ORDERS,
        parse=boolean,
    )
    generation_provider: str = setting(
        "GENERATION_PROVIDER",
        "",
        "openai or external (default without a key: the main app generates content through the API).",
        section=ORDERS,
        parse=choice(GENERATION_PROVIDERS),
    )
    generation_model: str = setting(
        "GENERATION_MODEL",
        "gpt-4o-mini",
        "Chat model that drafts content with GENERATION_PROVIDER=openai.",
        section=ORDERS,
    )
    clarification_timeout: int = setting(
        "CLARIFICATION_TIMEOUT",
        24 * 3600,
        "A clarification left unanswered this long is cancelled (seconds, or 24h).",
        section=ORDERS,
        parse=duration(),
        example="24h",
    )
    ask_when_unsure: bool = setting(
        "ASK_WHEN_UNSURE",
        True,
        "A message that may be a request for content gets one yes/no question; false keeps it as a note.",
        section=ORDERS,
        parse=boolean,
    )
    default_language: str = setting(
        "DEFAULT_LANGUAGE",
        "en",
        "Language of replies when the user's is not known: en, pt or es.",
        section=ORDERS,
        parse=choice(REPLY_LANGUAGES),
    )

    # --- Tokens of the main app's API and the admin API
    api_token: str = setting(
        "API_TOKEN",
        "",
        "Bearer token of the main app's orders API (/api/orders).",
        section=APIS,
        secret=True,
    )
    admin_api_token: str = setting(
        "ADMIN_API_TOKEN",
        "",
        "Bearer token of the admin API and admin page (/admin).",
        section=APIS,
        secret=True,
    )
    admin_rate_limit: str = setting(
        "ADMIN_RATE_LIMIT",
        "300 per minute",
        "Requests per client address to the admin API (the `limits` notation).",
        section=APIS,
        parse=rate,
    )
    admin_auth_failure_limit: str = setting(
        "ADMIN_AUTH_FAILURE_LIMIT",
        "20 per 10 minutes",
        "Failed admin sign-ins (wrong or missing token) per client address before it must wait.",
        section=APIS,
        parse=rate,
    )
    metrics_token: str = setting(
        "METRICS_TOKEN",
        "",
        "Bearer token Prometheus must send to /metrics; empty: /metrics is open (keep it off the public network).",
        section=APIS,
        secret=True,
    )
    prometheus_multiproc_dir: str = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        "Empty folder where every web and worker process writes its metrics, added up by /metrics (make dev sets .dev/prometheus).",
        section=APIS,
        example="/run/meeting-notes/metrics",
    )
    metrics_top_accounts: int = setting(
        "METRICS_TOP_ACCOUNTS",
        20,
        'Accounts that get a label of their own in the per-account metrics (the busiest); the rest add up as account="other".',
        section=APIS,
        parse=integer(1),
    )

    # --- Workers
    worker_processes: int = setting(
        "WORKER_PROCESSES",
        2,
        "Non-forking worker processes serving archive, classify, send and maintenance queues.",
        section=WORKERS,
        parse=integer(1),
    )
    job_timeout: int = setting(
        "JOB_TIMEOUT", 300, "Longest a job may run (seconds, or 5m).", section=WORKERS, parse=duration()
    )

    # --- Reliability: the reconciler and the Chatwoot backfill
    reconcile_interval: int = setting(
        "RECONCILE_INTERVAL",
        60,
        "How often the reconciler re-enqueues stuck work (seconds, or 1m).",
        section=RELIABILITY,
        parse=duration(at_least=1),
    )
    reconcile_grace: int = setting(
        "RECONCILE_GRACE",
        120,
        "Work older than this with no live job is stuck (seconds, or 2m).",
        section=RELIABILITY,
        parse=duration(at_least=1),
    )
    reconcile_max_attempts: int = setting(
        "RECONCILE_MAX_ATTEMPTS",
        6,
        "Re-enqueues of one piece of work before it goes to the dead letter (status error/failed).",
        section=RELIABILITY,
        parse=integer(1),
    )
    reconcile_backoff: int = setting(
        "RECONCILE_BACKOFF",
        30,
        "First retry delay, doubled on each attempt (seconds, or 30s).",
        section=RELIABILITY,
        parse=duration(at_least=1),
    )
    reconcile_backoff_max: int = setting(
        "RECONCILE_BACKOFF_MAX",
        3600,
        "Longest retry delay (seconds, or 1h).",
        section=RELIABILITY,
        parse=duration(at_least=1),
    )
    backfill_interval: int = setting(
        "BACKFILL_INTERVAL",
        900,
        "How often recent Chatwoot conversations are listed to ingest missed messages (seconds, or 15m; 0 turns it off).",
        section=RELIABILITY,
        parse=duration(),
    )
    backfill_window: int = setting(
        "BACKFILL_WINDOW",
        6 * 3600,
        "How far back the backfill looks for active conversations and their messages (seconds, or 6h).",
        section=RELIABILITY,
        parse=duration(),
        example="6h",
    )

    # --- Records
    audit_retention_days: int = setting(
        "AUDIT_RETENTION_DAYS",
        30,
        "Days the delivery audit trail keeps each webhook delivery (daily partitions dropped by the cron process).",
        section=RECORDS,
        parse=integer(1),
    )
    retention_interval: int = setting(
        "RETENTION_INTERVAL",
        3600,
        "How often the cron process applies retention, deletes expired exports, drops old audit partitions and brings legal holds in GCS up to date (seconds, or 1h).",
        section=RECORDS,
        parse=duration(at_least=60),
        example="1h",
    )
    export_keep_days: int = setting(
        "EXPORT_KEEP_DAYS",
        7,
        "Days an export's zip stays in the user's bucket before the cron process deletes it (kept while the user is on legal hold).",
        section=RECORDS,
        parse=integer(1),
    )
    export_url_ttl: int = setting(
        "EXPORT_URL_TTL",
        3600,
        "How long a signed download URL of an export works (seconds, or 1h; 60 s to 7d).",
        section=RECORDS,
        parse=duration_within(60, 7 * 86400),
        example="1h",
    )

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

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public_summary().items())
        return f"Settings({shown})"

    def public_summary(self) -> dict[str, object]:
        """Settings safe to print: secrets reduced to whether they are set, URL passwords masked."""
        out: dict[str, object] = {}
        for f, variable in declared():
            value = getattr(self, f.name)
            if variable.secret:
                out[f.name] = "(set)" if value else "(not set)"
            elif isinstance(value, str) and "://" in value:
                out[f.name] = redact_url(value)
            else:
                out[f.name] = value
        return out

    def secret_values(self) -> list[str]:
        """Every secret value in force (each key of a comma-separated list, each URL password),
        for the redacting log filter."""
        found: list[str] = []
        for f, variable in declared():
            value = getattr(self, f.name)
            if variable.secret and value:
                found.append(str(value))
                # A log line may carry one key of a list, or one line of a PEM key.
                for part in re.split(r"[,\n]", str(value)):
                    if part.strip() and part.strip() != str(value) and "-----" not in part:
                        found.append(part.strip())
            elif isinstance(value, str) and "://" in value and (password := urlparse(value).password):
                found.append(password)
        return found


def declared() -> Iterator[tuple[Field[Any], Variable]]:
    """Each field of Settings with its variable, in declaration order."""
    for f in fields(Settings):
        yield f, f.metadata["variable"]


def secret_variables() -> list[str]:
    """Names of the variables that hold secrets."""
    return [v.env for _, v in declared() if v.secret]


def redact_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.password:
        return value.replace(f":{parsed.password}@", ":***@")
    return value


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Read `.env` into the environment; variables already set win."""
    if Path(path).is_file():
        load_dotenv(path, override=False)


# ---------------------------------------------------------------------------------------------
# loading


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f, variable in declared():
        raw = env.get(variable.env, "").strip()
        if not raw:
            if variable.required:
                raise ConfigError(f"{variable.env}: not set ({variable.required})")
            continue
        values[f.name] = variable.parse(variable.env, raw)
    settings = Settings(**values)
    _check_together(settings)
    if settings.production:
        _check_production(settings)
    return settings


def _check_together(s: Settings) -> None:
    """The rules that involve several settings."""
    has_sa_fields = bool(s.gcs_private_key or s.gcs_client_email)
    creds = s.google_application_credentials
    if has_sa_fields and not (s.gcs_private_key and s.gcs_client_email):
        missing = "GCS_PRIVATE_KEY" if not s.gcs_private_key else "GCS_CLIENT_EMAIL"
        raise ConfigError(f"{missing}: required with the other service-account fields")
    if not (s.storage_emulator_host or has_sa_fields or creds):
        raise ConfigError(
            "STORAGE_EMULATOR_HOST: not set, and no GCS credentials either "
            "(GCS_CLIENT_EMAIL + GCS_PRIVATE_KEY, or GOOGLE_APPLICATION_CREDENTIALS)"
        )
    if (has_sa_fields or creds) and not s.storage_emulator_host and not s.gcs_project_id:
        raise ConfigError("GCS_PROJECT_ID: required with real GCS credentials")
    if s.transcription_provider == "openai" and not s.openai_api_key:
        raise ConfigError("OPENAI_API_KEY: required with TRANSCRIPTION_PROVIDER=openai")
    if s.transcription_provider == "local" and not s.local_whisper_model:
        raise ConfigError("LOCAL_WHISPER_MODEL: required with TRANSCRIPTION_PROVIDER=local")
    if s.generation_provider == "openai" and not s.openai_api_key:
        raise ConfigError("OPENAI_API_KEY: required with GENERATION_PROVIDER=openai")


def _check_production(s: Settings) -> None:
    """Production refuses settings that are only safe on a developer's machine."""
    if s.allow_unsigned_webhooks:
        raise ConfigError("ALLOW_UNSIGNED_WEBHOOKS: not allowed with APP_ENV=production")
    if not (s.chatwoot_webhook_secret or s.webhook_url_token):
        raise ConfigError(
            "CHATWOOT_WEBHOOK_SECRET: required with APP_ENV=production (or WEBHOOK_URL_TOKEN for "
            "Chatwoot older than 4.12.0)"
        )
    if s.bucket_hash_secret == DEFAULT_BUCKET_HASH_SECRET or len(s.bucket_hash_secret) < 16:
        raise ConfigError("BUCKET_HASH_SECRET: set a random secret of 16+ characters in production")
    if s.secret_key == DEFAULT_SECRET_KEY or len(s.secret_key) < 16:
        raise ConfigError("SECRET_KEY: set a random secret of 16+ characters in production")
    if s.webhook_url_token and len(s.webhook_url_token) < 16:
        raise ConfigError("WEBHOOK_URL_TOKEN: use 16+ random characters in production")
    if not s.secrets_encryption_key:
        raise ConfigError("SECRETS_ENCRYPTION_KEY: required with APP_ENV=production")


# ---------------------------------------------------------------------------------------------
# .env.example


def _example_value(default: Any, variable: Variable) -> str:
    if variable.example is not None:
        return variable.example
    if default is None or default == "":
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default)
    return str(default)


def env_example() -> str:
    """The text of `.env.example`: every variable with its line of documentation, by section."""
    lines = [EXAMPLE_HEADER]
    section = None
    for f, variable in declared():
        if variable.section != section:
            section = variable.section
            lines += ["", f"# --- {section} ---"]
        default = None if f.default is MISSING else f.default
        assignment = f"{variable.env}={_example_value(default, variable)}"
        lines += [f"# {variable.doc}", assignment if variable.listed else f"# {assignment}"]
    return "\n".join(lines) + "\n"


_NO_EXAMPLE = Variable("", text, "", "")


def settings_table() -> str:
    """Every variable as a Markdown table (for the README): name, default, what it does."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for f, variable in declared():
        default = "" if f.default is MISSING or variable.secret else _example_value(f.default, _NO_EXAMPLE)
        if variable.required:
            default = "(required)"
        shown = f"`{default}`" if default else ""
        doc = variable.doc.replace("|", "\\|")
        lines.append(f"| `{variable.env}` | {shown} | {doc} |")
    return "\n".join(lines) + "\n"
