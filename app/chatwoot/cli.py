"""`flask accounts ...`: Chatwoot accounts with settings of their own (URL, token, secrets, inboxes)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from marshmallow import ValidationError

from app.chatwoot import accounts
from app.cli import fail, print_table

accounts_cli = AppGroup("accounts", help="Chatwoot accounts: URL, API token, webhook secret, inboxes.")


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
def accounts_set(
    *,
    account_id: int,
    name: str | None,
    base_url: str | None,
    inbox_ids: str | None,
    ask_token: bool,
    ask_secret: bool,
    ask_url_token: bool,
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


def register(app: Flask) -> None:
    app.cli.add_command(accounts_cli)
