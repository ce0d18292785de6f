"""JSON logs on stderr, with secrets, URL tokens and phone numbers redacted from every line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Query-string values that are credentials.
_URL_TOKEN_RE = re.compile(r"([?&](?:token|access_token|api_access_token|key|signature)=)[^&\s\"']+", re.I)
# A phone number: an optional +, then 8 to 15 digits, maybe with spaces or dashes. Keep the last 4.
_PHONE_RE = re.compile(r"(?<![\w.])\+?\d[\d \-]{6,16}(\d{4})(?![\w.])")
_BEARER_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
_DSN_PASSWORD_RE = re.compile(r"(\w+://[^:/\s]+:)[^@\s]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with known secrets, URL tokens, bearer tokens and phone numbers masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    # Each expression runs only when the text holds what it needs to match: most values
    # (ids, outcomes, event names) skip all but the phone number's.
    if "=" in text:
        text = _URL_TOKEN_RE.sub(r"\1***", text)
    if "earer" in text.lower():
        text = _BEARER_RE.sub(r"\1***", text)
    if "://" in text:
        text = _DSN_PASSWORD_RE.sub(r"\1***@", text)
    return _PHONE_RE.sub(_masked_phone, text)


def _masked_phone(match: re.Match[str]) -> str:
    return "***" + match.group(1)


_TRACEBACK = "Traceback (most recent call last):"


def without_traceback(text: str) -> str:
    """A message that embeds a traceback (RQ logs a failed job's) reduced to its text before the
    traceback and the exception's last line: logs carry no stack traces."""
    head, _, rest = text.partition(_TRACEBACK)
    lines = [ln.strip() for ln in rest.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return f"{head.rstrip()} {last}".strip()


class RedactingFilter(logging.Filter):
    """Masks secrets in the message and in every string field of the record."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        record.msg = redact(str(record.msg), self.secrets)
        if _TRACEBACK in record.msg:
            record.msg = without_traceback(record.msg)
        fields = record.__dict__
        for key in fields.keys() - _STANDARD_ATTRS:
            value = fields[key]
            if value is not None and not isinstance(value, int | float):
                fields[key] = self._clean(value)
        if record.exc_info:
            # Exceptions are logged by type only: a traceback can carry payloads and secrets.
            exc = record.exc_info[1]
            record.__dict__["error_type"] = type(exc).__name__ if exc else None
            record.exc_info = None
            record.exc_text = None
        return True

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send every logger's records as JSON lines to stderr, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
        )
    )
    handler.addFilter(RedactingFilter(secrets))
    # No line names its source file: skip finding the caller's frame for every record (the
    # logging HOWTO's "Optimization"). Process ids stay: gunicorn's own lines print them.
    logging._srcfile = None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log request URLs or bodies at INFO/DEBUG.
    for noisy in ("urllib3", "google", "openai", "httpx", "httpx2", "httpcore", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def settings_secrets(settings: Any) -> list[str]:
    """Every secret value in the settings (see `Settings.secret_values`), for the redacting filter."""
    return list(settings.secret_values())
