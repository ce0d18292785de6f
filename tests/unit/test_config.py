"""Settings declared once: `.env.example` is generated from the declaration, secrets never print."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from typing import Any

import pytest
from cryptography.fernet import Fernet

from app.config import (
    ConfigError,
    Settings,
    declared,
    env_example,
    load_settings,
    secret_variables,
)
from tests.helpers.common import ROOT

MINIMAL = {
    "DATABASE_URL": "postgresql://u@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443",
}

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEY|PRIVATE_KEY|_KEY$")
NOT_SECRETS = {"GCS_PRIVATE_KEY_ID"}
"""Names that look like secrets but are not (the id of a key, not the key)."""


def test_env_example_is_generated_from_the_settings() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), (
        "regenerate it: python scripts/env_example.py > .env.example"
    )
    check = subprocess.run(
        [sys.executable, "scripts/env_example.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_every_setting_is_declared_once_with_a_line_of_documentation() -> None:
    names = [variable.env for _, variable in declared()]
    assert len(names) == len(set(names))
    for f, variable in declared():
        assert variable.env == f.name.upper(), f"{f.name} is read from {variable.env}"
        assert variable.doc and "\n" not in variable.doc
        assert f"\n# {variable.doc}\n" in env_example()


def test_defaults_pass_their_own_parser() -> None:
    """The default of each setting is what the variable would give when set to its example."""
    defaults = Settings()
    for f, variable in declared():
        if variable.example is not None or getattr(defaults, f.name) in ("", None, ()):
            continue
        assert variable.parse(variable.env, str(getattr(defaults, f.name))) == getattr(defaults, f.name)


def test_every_secret_looking_setting_is_marked_secret() -> None:
    """A new setting named like a secret must be declared `secret=True` (or listed here as not one)."""
    looks_secret = {v.env for _, v in declared() if SECRET_NAME.search(v.env)} - NOT_SECRETS
    assert looks_secret <= set(secret_variables())


def _secret_environ() -> dict[str, str]:
    """Every secret setting set to a value of its own, as its parser accepts it."""
    values = {name: f"{name.lower()}-value-{i:02d}-x7Qp" for i, name in enumerate(secret_variables())}
    values["SECRETS_ENCRYPTION_KEY"] = ",".join(Fernet.generate_key().decode() for _ in range(2))
    values["GCS_PRIVATE_KEY"] = (
        "-----BEGIN PRIVATE KEY-----\\nMIIEsecretkeymaterial9Zq\\n-----END PRIVATE KEY-----\\n"
    )
    return {
        **MINIMAL,
        **values,
        "DATABASE_URL": "postgresql://app:db-password-4Kx9@127.0.0.1:5432/db",
        "REDIS_URL": "redis://:redis-password-8Hw2@127.0.0.1:6379/0",
        "GCS_CLIENT_EMAIL": "sa@p.iam.gserviceaccount.com",
        "GCS_PROJECT_ID": "p",
    }


def _secret_texts(settings: Settings) -> list[str]:
    out = []
    for f, variable in declared():
        if variable.secret:
            value = str(getattr(settings, f.name))
            assert value, f"{variable.env} was not set by the test"
            out.append(value)
            out.extend(p for p in value.split(",") if "," in value)
            out.extend(line for line in value.splitlines() if "PRIVATE KEY" not in line and line)
    return [*out, "db-password-4Kx9", "redis-password-8Hw2"]


def test_public_summary_shows_each_secret_as_set() -> None:
    settings = load_settings(_secret_environ())
    summary = settings.public_summary()
    printed = json.dumps(summary, default=str)
    for f, variable in declared():
        if variable.secret:
            assert summary[f.name] == "(set)", variable.env
    for secret in _secret_texts(settings):
        assert secret not in printed
        assert secret not in repr(settings)
    assert load_settings(MINIMAL).public_summary()["secret_key"] == "(set)"  # the development key
    assert load_settings(MINIMAL).public_summary()["api_token"] == "(not set)"


def test_flask_config_show_prints_no_secret() -> None:
    from app import context, create_app

    settings = load_settings(_secret_environ())
    try:
        app = create_app(settings)
        result = app.test_cli_runner().invoke(args=["config", "show"])
    finally:
        context.use_settings(None)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["secret_key"] == "(set)"
    assert shown["database_url"] == "postgresql://app:***@127.0.0.1:5432/db"
    for secret in _secret_texts(settings):
        assert secret not in result.output


def test_log_lines_mask_every_secret() -> None:
    from app.logs import RedactingFilter, settings_secrets

    settings = load_settings(_secret_environ())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(settings_secrets(settings)))
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for secret in _secret_texts(settings):
            logger.warning("value %s in the message", secret, extra={"field": f"and {secret} in a field"})
            logger.warning(f"as text: {secret}")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert logged.count("***") >= len(_secret_texts(settings))
    for secret in _secret_texts(settings):
        assert secret not in logged


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL: not set (a libpq URL such as postgresql://user@host:5432/db)"),
        ({"REDIS_URL": " "}, "REDIS_URL: not set (such as redis://127.0.0.1:6379/0)"),
        ({"WORKER_PROCESSES": "٣"}, "WORKER_PROCESSES: expected a whole number, got '٣'"),
        ({"JOB_TIMEOUT": "²"}, "JOB_TIMEOUT: expected a duration such as 300, 15m, 24h or 2d, got '²'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got 'LOUD'"),
        ({"GENERATION_PROVIDER": "x"}, "GENERATION_PROVIDER: expected openai or external, got 'x'"),
        ({"GCS_PROJECT_NUMBER": "12a"}, "GCS_PROJECT_NUMBER: expected digits, got '12a'"),
        ({"TRANSCRIPTION_COST_PER_MINUTE": "nan"}, "TRANSCRIPTION_COST_PER_MINUTE: expected a number"),
        ({"GCS_CLIENT_EMAIL": "a@b"}, "GCS_PRIVATE_KEY: required with the other service-account fields"),
    ],
)
def test_errors_name_the_variable(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**MINIMAL, **changes})
    assert str(caught.value).startswith(message)


def test_values_are_parsed_as_declared() -> None:
    s: Any = load_settings(
        {
            **MINIMAL,
            "APP_ENV": "Development",
            "CHATWOOT_INBOX_IDS": "4, 7",
            "RECONCILE_INTERVAL": "0",
            "CLARIFICATION_TIMEOUT": "2h",
            "ALLOW_UNSIGNED_WEBHOOKS": "yes",
            "CHATWOOT_ALLOWED_PRIVATE_HOSTS": "Chat.Local, x",
            "CHATWOOT_BASE_URL": "https://chat.example.com/",
        }
    )
    assert s.app_env == "development"
    assert s.chatwoot_inbox_ids == (4, 7)
    assert s.reconcile_interval == 1
    assert s.clarification_timeout == 7200
    assert s.allow_unsigned_webhooks is True
    assert s.chatwoot_allowed_private_hosts == ("chat.local", "x")
    assert s.chatwoot_base_url == "https://chat.example.com"


def test_the_settings_table_lists_every_variable_without_secret_values() -> None:
    from app.config import settings_table

    table = settings_table()
    for _, variable in declared():
        assert f"| `{variable.env}` |" in table
    assert "dev-secret-key" not in table and "dev-bucket-hash-secret" not in table
