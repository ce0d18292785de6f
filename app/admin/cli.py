"""Admin commands: `flask users ...` (added to the users group), `flask accounts ...`, `flask monitor`.

They do what the admin API does, for operators at a shell on the server.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from app import context

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MONITOR_STATEMENT_TIMEOUT = "60s"

accounts_cli = AppGroup("accounts", help="Chatwoot accounts: URL, API token, webhook secret, inboxes.")


def _table(rows: list[dict[str, Any]], fmt: str = "psql") -> str:
    from tabulate import tabulate

    from app.admin.api import plain

    if not rows:
        return "(no rows)"
    return tabulate([plain(r) for r in rows], headers="keys", tablefmt=fmt, disable_numparse=True)


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


# ----------------------------------------------------------------------------------------------
# users


@click.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--after", default="", help="Start after this user id (paging).")
@with_appcontext
def users_list(limit: int, after: str) -> None:
    """List users with their bucket, message count and links."""
    from app.admin import api as admin

    click.echo(_table(admin.list_users(limit, after)))


@click.command("show")
@click.argument("user_id")
@with_appcontext
def users_show(user_id: str) -> None:
    """Show a user and the contacts linked to it."""
    from app.admin import api as admin

    try:
        user = admin.get_user(user_id)
    except admin.NotFound as exc:
        raise _fail(str(exc)) from None
    links = user.pop("links")
    click.echo(_table([{"field": k, "value": v} for k, v in user.items()], "plain"))
    click.echo("\nlinks:")
    click.echo(_table(links))


@click.command("create")
@click.argument("user_id")
@click.option("--name", "display_name", help="Display name.")
@click.option("--language", type=click.Choice(["en", "pt", "es"]), help="Language of replies.")
@click.option(
    "--notify/--no-notify",
    "notify_on_ready",
    default=False,
    show_default=True,
    help="Tell the user when content is ready.",
)
@with_appcontext
def users_create(user_id: str, display_name: str | None, language: str | None, notify_on_ready: bool) -> None:
    """Create a user; its bucket name is derived from the user id."""
    from app.admin import api as admin

    try:
        user = admin.create_user(
            user_id, display_name=display_name, language=language, notify_on_ready=notify_on_ready
        )
    except (admin.Conflict, admin.Invalid) as exc:
        raise _fail(str(exc)) from None
    click.echo(f"created user {user['user_id']} (bucket {user['bucket_name']})")


@click.command("update")
@click.argument("user_id")
@click.option("--name", "display_name", help="New display name.")
@click.option("--clear-name", is_flag=True, help="Remove the display name.")
@click.option(
    "--language", type=click.Choice(["en", "pt", "es", "none"]), help="Language of replies (none: unknown)."
)
@click.option(
    "--notify/--no-notify", "notify_on_ready", default=None, help="Tell the user when content is ready."
)
@with_appcontext
def users_update(
    user_id: str,
    display_name: str | None,
    clear_name: bool,
    language: str | None,
    notify_on_ready: bool | None,
) -> None:
    """Change a user's display name, language or notify_on_ready."""
    from app.admin import api as admin

    changes: dict[str, Any] = {}
    if clear_name:
        changes["display_name"] = None
    elif display_name is not None:
        changes["display_name"] = display_name
    if language is not None:
        changes["language"] = None if language == "none" else language
    if notify_on_ready is not None:
        changes["notify_on_ready"] = notify_on_ready
    if not changes:
        raise click.UsageError("give --name, --clear-name, --language or --notify/--no-notify")
    try:
        user = admin.update_user(user_id, **changes)
    except admin.NotFound as exc:
        raise _fail(str(exc)) from None
    click.echo(
        f"updated user {user['user_id']}: name={user['display_name']!r} language={user['language']} "
        f"notify_on_ready={user['notify_on_ready']}"
    )


@click.command("notify")
@click.argument("user_id")
@click.argument("state", type=click.Choice(["on", "off"]))
@with_appcontext
def users_notify(user_id: str, state: str) -> None:
    """Turn the "content is ready" notice on or off for a user."""
    from app.admin import api as admin

    try:
        admin.update_user(user_id, notify_on_ready=state == "on")
    except admin.NotFound as exc:
        raise _fail(str(exc)) from None
    click.echo(f"notify_on_ready is {state} for {user_id}")


@click.command("link")
@click.argument("user_id")
@click.option(
    "--account",
    "account_id",
    type=click.IntRange(min=1),
    help="Chatwoot account (default: CHATWOOT_ACCOUNT_ID).",
)
@click.option("--contact-id", type=click.IntRange(min=1), help="Chatwoot contact id.")
@click.option("--phone", help="Phone number with its country code (+5491155550123).")
@click.option("--identifier", help="Chatwoot contact identifier.")
@click.option("--region", help="Country (ISO code such as BR) of a phone number written without +.")
@click.option("--replace", is_flag=True, help="Move a link that belongs to another user to this one.")
@click.option("--no-rehome", is_flag=True, help="Do not move the contact's archived messages now.")
@with_appcontext
def users_link(
    *,
    user_id: str,
    account_id: int | None,
    contact_id: int | None,
    phone: str | None,
    identifier: str | None,
    region: str | None,
    replace: bool,
    no_rehome: bool,
) -> None:
    """Link a Chatwoot contact to an existing user, then move its archived messages to the user's bucket."""
    from app.admin import api as admin
    from app.users import contacts as users

    if contact_id is None and not phone and not identifier:
        raise click.UsageError("give --contact-id, --phone or --identifier")
    try:
        outcome = admin.add_link(
            user_id,
            account_id=account_id,
            contact_id=contact_id,
            phone=phone,
            identifier=identifier,
            region=region,
            replace=replace,
            rehome=False,
        )
    except (admin.NotFound, admin.Conflict, admin.Invalid) as exc:
        raise _fail(str(exc)) from None
    for label, items in (
        ("linked", outcome.added),
        ("already linked", outcome.existing),
        ("moved", outcome.moved),
    ):
        for link_type, value in items:
            click.echo(
                f"{label}: {link_type.replace('_', ' ')} {value} (account {outcome.account_id}) -> {user_id}"
            )
    if no_rehome:
        return
    try:
        moved = users.rehome_messages(outcome.account_id, user_id)
    except Exception as exc:  # GCS or the database unavailable: the move resumes when run again
        raise _fail(
            f"the link is saved; moving the archive failed ({type(exc).__name__}): run the command again"
        ) from None
    click.echo(
        f"re-homed {moved.messages} message(s): {moved.objects_copied} object(s) copied, "
        f"{moved.objects_deleted} deleted from the account's bucket"
    )


@click.command("unlink")
@click.argument("user_id")
@click.argument("link_id", type=click.IntRange(min=1))
@with_appcontext
def users_unlink(user_id: str, link_id: int) -> None:
    """Remove one contact link of a user (LINK_ID as shown by `flask users show`)."""
    from app.admin import api as admin

    try:
        row = admin.remove_link(user_id, link_id)
    except admin.NotFound as exc:
        raise _fail(str(exc)) from None
    click.echo(
        f"unlinked {row['link_type'].replace('_', ' ')} {row['link_value']} (account {row['chatwoot_account_id']})"
    )


@click.command("link-code")
@click.argument("user_id")
@click.option(
    "--account", "account_id", type=click.IntRange(min=1), help="Only valid from this Chatwoot account."
)
@with_appcontext
def users_link_code(user_id: str, account_id: int | None) -> None:
    """Make a one-time code the user sends from WhatsApp as `LINK <code>` (valid 10 minutes)."""
    from app.users import link_codes as links

    try:
        issued = links.issue_code(user_id, account_id)
    except links.UnknownUser:
        raise _fail(f"no user {user_id!r}") from None
    click.echo(f"code: {issued.code}")
    click.echo(f"expires: {issued.expires_at.isoformat()}")
    click.echo(f"The user sends: LINK {issued.code}  (once, within 10 minutes)")


@click.command("erase")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def users_erase(user_id: str, yes: bool) -> None:
    """Erase a user (GDPR): bucket and objects, messages, orders, conversations, links. Safe to repeat."""
    from app.admin import api as admin

    if not yes:
        click.confirm(f"Erase everything kept about {user_id!r}? This cannot be undone", abort=True)
    try:
        report = admin.erase_user(user_id)
    except admin.StorageUnavailable as exc:
        raise _fail(f"erasure stopped part-way ({exc}): run the command again") from None
    data = report.as_dict()
    click.echo(f"erased {user_id} (bucket {report.bucket_name})")
    click.echo(f"  bucket objects deleted: {report.bucket_objects_deleted}")
    click.echo(f"  fallback objects deleted: {report.fallback_objects_deleted}")
    for table, count in data["rows_deleted"].items():
        click.echo(f"  {table}: {count} row(s)")
    if report.nothing_left:
        click.echo("nothing was left to delete")


@click.command("unmapped")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@with_appcontext
def users_unmapped(limit: int, offset: int) -> None:
    """Contacts with archived messages but no user, most messages first."""
    from app.admin import api as admin

    click.echo(_table(admin.unmapped_contacts(limit, offset)))


USER_COMMANDS = (
    users_list,
    users_show,
    users_create,
    users_update,
    users_notify,
    users_link,
    users_unlink,
    users_link_code,
    users_erase,
    users_unmapped,
)


# ----------------------------------------------------------------------------------------------
# accounts


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
    from app.chatwoot import accounts

    click.echo(_table(accounts.list_public()))


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
def accounts_set(
    *,
    account_id: int,
    name: str | None,
    base_url: str | None,
    inbox_ids: str | None,
    ask_token: bool,
    ask_secret: bool,
) -> None:
    """Create or change a Chatwoot account's settings. Secrets are read, never echoed."""
    from app.admin.api import AccountBody
    from app.chatwoot import accounts

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
    from marshmallow import ValidationError

    try:
        loaded = AccountBody().load(body)
        view = accounts.upsert(account_id, **loaded)
    except ValidationError as exc:
        raise _fail(json.dumps(exc.messages)) from None
    except accounts.SecretsKeyMissing:
        raise _fail("set SECRETS_ENCRYPTION_KEY before storing an account's secrets") from None
    click.echo(_table([view]))


@accounts_cli.command("finish-rotation")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
def accounts_finish_rotation(account_id: int) -> None:
    """Stop accepting the account's previous webhook secret."""
    from app.chatwoot import accounts

    done = accounts.finish_rotation(account_id)
    click.echo("previous webhook secret dropped" if done else "there was no previous webhook secret")


@accounts_cli.command("delete")
@click.argument("account_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def accounts_delete(account_id: int, yes: bool) -> None:
    """Remove an account's own settings (it falls back to the environment's)."""
    from app.chatwoot import accounts

    if not yes:
        click.confirm(f"Delete the settings of account {account_id}?", abort=True)
    if not accounts.delete(account_id):
        raise _fail(f"no account {account_id}")
    click.echo(f"account {account_id} deleted; it now uses the environment's settings")


# ----------------------------------------------------------------------------------------------
# monitor


def sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def description(text: str) -> str:
    """The leading comment lines of a query file."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return " ".join(lines)


@click.command("monitor")
@click.option("--only", "only", multiple=True, help="Run the files whose name contains this (repeatable).")
@click.option("--format", "fmt", default="psql", show_default=True, help="tabulate table format.")
@click.option(
    "--rebuild-rollups", is_flag=True, help="Recompute the monitoring roll-ups from the rows first."
)
@with_appcontext
def monitor(only: tuple[str, ...], fmt: str, rebuild_rollups: bool) -> None:
    """Run each monitoring query of sql/ and print its result as a table."""
    from app.db import DatabaseUnavailable

    db = context.db()
    if rebuild_rollups:
        started = time.perf_counter()
        with db.transaction() as cur:
            cur.execute("SELECT rebuild_monitoring_rollups()")
        click.echo(f"roll-ups rebuilt in {time.perf_counter() - started:.1f} s\n")
    files = [p for p in sql_files() if not only or any(o in p.name for o in only)]
    if not files:
        raise _fail("no query file matches")
    failed = 0
    for path in files:
        text = path.read_text()
        click.echo(f"== {path.stem} ==")
        about = description(text)
        if about:
            click.echo(about)
        started = time.perf_counter()
        try:
            with db.transaction() as cur:
                cur.execute("SET LOCAL statement_timeout = %s", (MONITOR_STATEMENT_TIMEOUT,))
                cur.execute(text)
                rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        except DatabaseUnavailable as exc:
            raise _fail(f"PostgreSQL is not answering: {_first_line(exc)}") from None
        except Exception as exc:
            failed += 1
            click.echo(f"failed: {type(exc).__name__}: {_first_line(exc)}\n")
            continue
        elapsed = (time.perf_counter() - started) * 1000
        click.echo(_table(rows, fmt))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''}, {elapsed:.0f} ms)\n")
    if failed:
        raise _fail(f"{failed} quer{'ies' if failed > 1 else 'y'} failed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return re.sub(r"postgres(?:ql)?://\S+", "postgresql://***", text[0])[:300] if text else ""


def register(app: Flask) -> None:
    from app.users.cli import users_cli

    for command in USER_COMMANDS:
        users_cli.add_command(command)
    if "users" not in app.cli.commands:
        app.cli.add_command(users_cli)
    app.cli.add_command(accounts_cli)
    app.cli.add_command(monitor)
