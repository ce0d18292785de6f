"""`flask accounts ...`: Chatwoot accounts with settings of their own (URL, tokens, secrets,
inboxes, ready-notice template); `flask chatwoot check`: what each token may do, sending nothing."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from marshmallow import ValidationError

from app.chatwoot import account_ai, accounts, check
from app.cli import fail, print_table

accounts_cli = AppGroup(
    "accounts", help="Chatwoot accounts: URL, API tokens, webhook secret, inboxes, ready-notice template."
)
chatwoot_cli = AppGroup("chatwoot", help="The connection to Chatwoot.")


def _secret(label: str) -> str:
    """A secret from standard input (piped) or a hidden prompt, never from the command line."""
    if not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
    else:
        value = click.prompt(label, hide_input=True, confirmation_prompt=True).strip()
    if not value:
        raise click.UsageError(f"{label}: empty")
    return value


@accounts_cli.command("list")
def accounts_list() -> None:
    """Accounts with their own settings (secrets shown only as set or not)."""
    click.echo(print_table(accounts.list_public()))


@accounts_cli.command("set")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--name", help="A name for the account.")
@click.option("--base-url", help="Chatwoot base URL of this account.")
@click.option("--inbox-ids", help="Only archive these inboxes (comma-separated ids).")
@click.option(
    "--api-token", "ask_token", is_flag=True, help="Read the API access token (prompted, or from stdin)."
)
@click.option(
    "--webhook-secret",
    "ask_secret",
    is_flag=True,
    help="Read a new webhook secret (the old one stays valid until finish-rotation).",
)
@click.option(
    "--url-token",
    "ask_url_token",
    is_flag=True,
    help="Read the account's own ?token= for a Chatwoot too old to sign (16+ characters).",
)
@click.option(
    "--user-token",
    "ask_user_token",
    is_flag=True,
    help="Read a Chatwoot user's access token for reads (prompted, or from stdin).",
)
@click.option(
    "--ready-template", help="Approved WhatsApp template of ready notices after the 24-hour window."
)
@click.option("--ready-template-language", help="Its language: en_US, or en:en_US,pt:pt_BR,es:es.")
@click.option("--ready-template-category", help="Its category (default UTILITY).")
@click.option("--ready-template-params", help="Values filling {{1}}, {{2}}...: what,order_id, or none.")
def accounts_set(
    *,
    account_id: int,
    name: str | None,
    base_url: str | None,
    inbox_ids: str | None,
    ask_token: bool,
    ask_secret: bool,
    ask_url_token: bool,
    ask_user_token: bool,
    ready_template: str | None,
    ready_template_language: str | None,
    ready_template_category: str | None,
    ready_template_params: str | None,
) -> None:
    """Create or change a Chatwoot account's settings. Secrets are read, never echoed."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if base_url is not None:
        body["base_url"] = base_url
    if inbox_ids is not None:
        try:
            body["inbox_ids"] = [int(x) for x in inbox_ids.split(",") if x.strip()]
        except ValueError:
            raise click.UsageError("--inbox-ids: comma-separated numbers") from None
    if ask_token:
        body["api_token"] = _secret("API access token")
    if ask_secret:
        body["webhook_secret"] = _secret("Webhook secret")
    if ask_url_token:
        body["url_token"] = _secret("URL token")
    if ask_user_token:
        body["user_token"] = _secret("User access token")
    for key, value in (
        ("ready_template_name", ready_template),
        ("ready_template_language", ready_template_language),
        ("ready_template_category", ready_template_category),
    ):
        if value is not None:
            body[key] = value
    if ready_template_params is not None:
        none = ready_template_params.strip().lower() in ("", "none")
        body["ready_template_params"] = (
            [] if none else [p.strip() for p in ready_template_params.split(",") if p.strip()]
        )
    try:
        loaded = accounts.AccountBody().load(body)
        view = accounts.upsert(account_id, **loaded)
    except ValidationError as exc:
        raise fail(json.dumps(exc.messages)) from None
    except accounts.SecretsKeyMissing:
        raise fail("set SECRETS_ENCRYPTION_KEY before storing an account's secrets") from None
    click.echo(print_table([view]))


@accounts_cli.command("finish-rotation")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
def accounts_finish_rotation(account_id: int) -> None:
    """Stop accepting the account's previous webhook secret."""
    done = accounts.finish_rotation(account_id)
    click.echo("previous webhook secret dropped" if done else "there was no previous webhook secret")


@accounts_cli.command("delete")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def accounts_delete(account_id: int, yes: bool) -> None:
    """Remove an account's own settings (it falls back to the environment's)."""
    if not yes:
        click.confirm(f"Delete the settings of account {account_id}?", abort=True)
    if not accounts.delete(account_id):
        raise fail(f"no account {account_id}")
    click.echo(f"account {account_id} deleted; it now uses the environment's settings")


@accounts_cli.command("inbox-secret")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
@click.argument("inbox_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--finish-rotation", is_flag=True, help="Stop accepting the inbox's previous secret.")
@click.option("--delete", "remove", is_flag=True, help="Forget the inbox's secrets.")
def accounts_inbox_secret(account_id: int, inbox_id: int, finish_rotation: bool, remove: bool) -> None:
    """Set (or rotate) the secret an API-channel inbox signs its webhook with (Chatwoot 4.13+).

    The secret is read from stdin or a hidden prompt; the previous one stays valid until
    --finish-rotation."""
    if finish_rotation:
        done = accounts.finish_inbox_rotation(account_id, inbox_id)
        click.echo("previous inbox secret dropped" if done else "there was no previous inbox secret")
        return
    if remove:
        if not accounts.delete_inbox_secret(account_id, inbox_id):
            raise fail(f"account {account_id} has no secret for inbox {inbox_id}")
        click.echo(f"inbox {inbox_id} of account {account_id}: secrets deleted")
        return
    secret = _secret("Inbox secret")
    if len(secret) < 8:
        raise click.UsageError("an inbox secret has 8 characters or more")
    try:
        view = accounts.set_inbox_secret(account_id, inbox_id, secret)
    except accounts.SecretsKeyMissing:
        raise fail("set SECRETS_ENCRYPTION_KEY before storing an account's secrets") from None
    click.echo(print_table([view]))


@chatwoot_cli.command("check")
@click.option(
    "--account", "account_ids", multiple=True, type=click.IntRange(1, 2**31 - 1), help="Only this account."
)
def chatwoot_check(account_ids: tuple[int, ...]) -> None:
    """Reach Chatwoot's API with each token and say what each may do. Sends nothing.

    Exits 1 when something that sending needs is missing or refused.
    """
    ids = list(account_ids) or check.account_ids()
    if not ids:
        raise fail("no Chatwoot account: set CHATWOOT_ACCOUNT_ID or `flask accounts set`")
    failed = False
    for account_id in ids:
        result = check.check_account(account_id)
        click.echo(f"account {account_id} ({result.base_url or 'no base URL'}): {result.state}")
        for finding in result.findings:
            click.echo(f"  {finding.what:<8} {finding.state:<4}  {finding.detail}")
        failed = failed or result.state == check.FAIL
    if failed:
        raise fail("Chatwoot is not wired for sending: see above")


# ---------------------------------------------------------------------------------------------
# `flask accounts ai ...`: each account's own AI (app/chatwoot/account_ai.py)

ai_cli = AppGroup("ai", help="An account's own AI: providers, servers, keys, models, languages, budget.")
accounts_cli.add_command(ai_cli)

_AI_OPTIONS = (
    ("transcription_provider", "openai, local or none."),
    ("transcription_base_url", "OpenAI-compatible server for transcription (Groq, speaches...)."),
    ("transcription_model", "Transcription model of the openai provider (whisper-1, whisper-large-v3...)."),
    ("transcription_language", "Language the account's voice notes are spoken in (pt, es...)."),
    ("local_whisper_model", "faster-whisper model directory of the local provider (absolute path)."),
    ("classification_provider", "openai (a chat model helps the rules) or rules (with the learned reading)."),
    ("classification_base_url", "OpenAI-compatible server for the classifier model."),
    ("classification_model", "Chat model that classifies messages."),
    ("generation_provider", "openai or external."),
    ("generation_base_url", "OpenAI-compatible server for drafting."),
    ("generation_model", "Chat model that drafts content."),
    ("reply_language", "Language of replies when the user's is not known: en, pt or es."),
)


def _ai_options(command: Any) -> Any:
    for name, text in reversed(_AI_OPTIONS):
        command = click.option(f"--{name.replace('_', '-')}", name, help=text)(command)
    return command


@ai_cli.command("show")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1), required=False)
def ai_show(account_id: int | None) -> None:
    """The AI settings of one account (with what is in force), or of every account that has
    some; keys are shown only as (set)."""
    if account_id is None:
        rows = [{k: v for k, v in view.items() if k != "in_force"} for view in account_ai.list_views()]
        click.echo(print_table(rows))
        return
    view = account_ai.get_view(account_id)
    if view is None:
        click.echo(f"account {account_id} has no AI settings of its own; in force:")
        click.echo(json.dumps(account_ai.in_force(account_id, None), indent=2))
        return
    click.echo(json.dumps(view, indent=2, default=str))


@ai_cli.command("set")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
@_ai_options
@click.option(
    "--transcription-budget-minutes",
    "transcription_budget_minutes",
    type=click.IntRange(0, 10_000_000),
    help="Audio minutes transcribed per calendar month (UTC); 0: no limit.",
)
@click.option(
    "--transcription-api-key", "ask_transcription_key", is_flag=True, help="Read the transcription key."
)
@click.option(
    "--classification-api-key", "ask_classification_key", is_flag=True, help="Read the classifier's key."
)
@click.option("--generation-api-key", "ask_generation_key", is_flag=True, help="Read the drafting key.")
@click.option(
    "--clear",
    "clear",
    multiple=True,
    metavar="FIELD",
    help="Go back to the environment's setting for FIELD (repeatable), such as transcription_api_key.",
)
def ai_set(*, account_id: int, clear: tuple[str, ...], **options: Any) -> None:
    """Set some of an account's AI settings; the others keep their value. Keys are read from
    stdin (one line each, in the order transcription, classification, generation) or a hidden
    prompt, never from the command line."""
    body: dict[str, Any] = {k: v for k, v in options.items() if v is not None and not k.startswith("ask_")}
    for purpose in account_ai.PURPOSES:
        if options[f"ask_{purpose}_key"]:
            body[f"{purpose}_api_key"] = _secret(f"{purpose.capitalize()} API key")
    for name in clear:
        if name not in account_ai.COLUMNS:
            raise click.UsageError(f"--clear {name}: not a setting; one of {', '.join(account_ai.COLUMNS)}")
        body[name] = None
    if not body:
        raise click.UsageError("nothing to set: give an option, or --clear FIELD")
    try:
        view = account_ai.save(account_id, body)
    except ValidationError as exc:
        raise fail(json.dumps(exc.messages)) from None
    except accounts.SecretsKeyMissing:
        raise fail("set SECRETS_ENCRYPTION_KEY before storing an account's keys") from None
    click.echo(json.dumps(view, indent=2, default=str))


@ai_cli.command("delete")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
def ai_delete(account_id: int) -> None:
    """Forget an account's AI settings: its next jobs use the environment's."""
    if not account_ai.delete(account_id):
        raise fail(f"account {account_id} has no AI settings of its own")
    click.echo(f"account {account_id}: AI settings deleted; it now uses the environment's")


def register(app: Flask) -> None:
    app.cli.add_command(accounts_cli)
    app.cli.add_command(chatwoot_cli)
