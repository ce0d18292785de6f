"""`flask deliveries`, `flask retention`, `flask exports` and `flask search`: the records an admin
reads and changes at a shell (`flask users export|hold|unhold|holds` are with the users)."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from app import context
from app.cli import fail, print_table
from app.ingest import audit
from app.records import exports, maintenance, retention, search
from app.users.service import Conflict, Invalid, NotFound


def _actor(given: str | None) -> str:
    return given or f"cli:{getpass.getuser()}"


# ------------------------------------------------------------------------------------------
# deliveries

deliveries_cli = AppGroup(
    "deliveries", help="The delivery audit trail: every webhook delivery and our answer."
)

_DELIVERY_COLUMNS = (
    "received_at",
    "delivery_id",
    "event",
    "signature",
    "http_status",
    "outcome",
    "reason",
    "note_id",
    "update_id",
    "duration_ms",
    "body_bytes",
    "body_sha256",
)


@deliveries_cli.command("show")
@click.argument("message_id", required=False)
@click.option("--delivery", "delivery_id", help="An X-Chatwoot-Delivery id instead of a message id.")
@click.option(
    "--account",
    "account_id",
    type=click.IntRange(min=1),
    help="Chatwoot account (default: CHATWOOT_ACCOUNT_ID).",
)
@click.option("--days", type=click.IntRange(min=1), help="Only the last N days.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def deliveries_show(
    message_id: str | None, delivery_id: str | None, account_id: int | None, days: int | None, as_json: bool
) -> None:
    """Did Chatwoot send message MESSAGE_ID, when, and what did we answer? Every delivery of it
    (creates, updates, repeats) with its signature outcome and our answer, then what the archive
    holds of it."""
    if not message_id and not delivery_id:
        raise click.UsageError("give a Chatwoot message id, or --delivery <X-Chatwoot-Delivery id>")
    if account_id is None and message_id:
        account_id = context.settings().chatwoot_account_id
    rows = audit.find(message_id=message_id, delivery_id=delivery_id, account_id=account_id, since_days=days)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    what = (
        f"message {message_id}" + (f" of account {account_id}" if account_id else "")
        if message_id
        else f"delivery {delivery_id}"
    )
    keep = context.settings().audit_retention_days
    if not rows:
        click.echo(f"no delivery of {what} in the audit trail (it keeps the last {keep} days)")
    else:
        click.echo(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'} of {what}:")
        click.echo(print_table([{k: r.get(k) for k in _DELIVERY_COLUMNS} for r in rows]))
    if message_id:
        stored = audit.message_rows(message_id, account_id)
        click.echo("\nin the archive:")
        click.echo(
            print_table(stored) if stored else "(no row: never stored, erased, or deleted by retention)"
        )


@deliveries_cli.command("list")
@click.option("--minutes", type=click.IntRange(1, 60 * 24 * 31), default=60, show_default=True)
@click.option("--outcome", help="Only this outcome (accepted, duplicate, ignored, unauthorized, invalid...).")
@click.option("--status", "http_status", type=click.IntRange(100, 599), help="Only this HTTP status.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
def deliveries_list(minutes: int, outcome: str | None, http_status: int | None, limit: int) -> None:
    """The latest deliveries, newest first (refused ones too: they name no message)."""
    rows = context.db().fetch_all(
        "deliveries.deliveries_recent",
        {"minutes": minutes, "outcome": outcome, "http_status": http_status, "limit": limit},
    )
    click.echo(
        print_table([{k: r.get(k) for k in ("chatwoot_message_id", *_DELIVERY_COLUMNS)} for r in rows])
    )


# ------------------------------------------------------------------------------------------
# retention

retention_cli = AppGroup(
    "retention", help="Retention per Chatwoot account: delete messages older than N days."
)


@retention_cli.command("show")
@click.option(
    "--runs", type=click.IntRange(0, 1000), default=10, show_default=True, help="Latest runs shown."
)
def retention_show(runs: int) -> None:
    """Each account's retention and the latest runs (accounts not listed keep messages for ever)."""
    click.echo(print_table(retention.policies()))
    if runs:
        click.echo("\nlatest runs:")
        click.echo(print_table(retention.recent_runs(runs)))


@retention_cli.command("set")
@click.argument("account_id", type=int)
@click.option(
    "--days", type=int, required=True, help="Delete messages received more than this many days ago."
)
@click.option("--by", "by", help="Who sets it, as recorded (default: cli:<shell user>).")
def retention_set(account_id: int, days: int, by: str | None) -> None:
    """Delete ACCOUNT_ID's messages older than --days days (rows, objects and media), from the next run."""
    try:
        policy = retention.set_policy(account_id, days, _actor(by))
    except Invalid as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"account {policy['chatwoot_account_id']}: messages older than {policy['days']} days are deleted "
        "from the next run on (`flask retention run` runs it now)"
    )


@retention_cli.command("off")
@click.argument("account_id", type=int)
@click.option("--by", "by", help="Who turns it off, as recorded (default: cli:<shell user>).")
def retention_off(account_id: int, by: str | None) -> None:
    """Keep ACCOUNT_ID's messages for ever (the default)."""
    try:
        retention.clear_policy(account_id, _actor(by))
    except (Invalid, NotFound) as exc:
        raise fail(str(exc)) from None
    click.echo(f"account {account_id}: messages are kept for ever")


@retention_cli.command("run")
def retention_run() -> None:
    """Run the cron process's records pass now: retention, lifecycle rules, expired exports,
    GCS holds, audit partitions."""
    try:
        results = maintenance.run()
    except maintenance.RecordsStepFailed as exc:
        raise fail(f"steps failed: {exc} (see the log)") from None
    for run in results["retention"]:
        click.echo(
            f"account {run['account_id']} ({run['days']} days, before {run['cutoff']}): "
            f"{run['messages_deleted']} message(s) and {run['objects_deleted']} object(s) deleted, "
            f"{run['kept_on_hold']} kept on legal hold"
        )
    for name, result in results.items():
        if name != "retention":
            click.echo(f"{name}: {result}")


# ------------------------------------------------------------------------------------------
# exports

exports_cli = AppGroup("exports", help="Exports of users' archives (`flask users export` makes one).")


def _export_or_fail(export_id: int) -> dict[str, Any]:
    try:
        return exports.get(export_id)
    except NotFound as exc:
        raise fail(str(exc)) from None


@exports_cli.command("show")
@click.argument("export_id", type=click.IntRange(min=1))
def exports_show(export_id: int) -> None:
    """An export: its state, file, counts, and who did what with it when."""
    export = _export_or_fail(export_id)
    events = export.pop("events")
    click.echo(print_table([{"field": k, "value": v} for k, v in export.items()], "plain"))
    click.echo("\nevents:")
    click.echo(print_table(events))


@exports_cli.command("list")
@click.argument("user_id")
def exports_list(user_id: str) -> None:
    """A user's exports, newest first."""
    click.echo(print_table(exports.of_user(user_id)))


@exports_cli.command("url")
@click.argument("export_id", type=click.IntRange(min=1))
@click.option("--by", "by", help="Who it is for, as recorded (default: cli:<shell user>).")
def exports_url(export_id: int, by: str | None) -> None:
    """A download URL of a finished export, valid EXPORT_URL_TTL (recorded)."""
    try:
        link = exports.issue_url(export_id, _actor(by))
    except (NotFound, Conflict) as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"valid until {link['expires_at']} ({'signed' if link['signed'] else 'not signed: emulator'}):"
    )
    click.echo(link["url"])


@exports_cli.command("delete")
@click.argument("export_id", type=click.IntRange(min=1))
@click.option("--by", "by", help="Who deletes it, as recorded (default: cli:<shell user>).")
def exports_delete(export_id: int, by: str | None) -> None:
    """Delete an export's file now (refused while its user is on legal hold)."""
    try:
        exports.delete(export_id, _actor(by))
    except (NotFound, Conflict) as exc:
        raise fail(str(exc)) from None
    click.echo(f"export {export_id} deleted")


# ------------------------------------------------------------------------------------------
# search


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a date such as 2025-03-31 or 2025-03-31T14:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("search")
@click.argument("words", nargs=-1, required=True)
@click.option("--user", "user_id", help="Only this user's messages.")
@click.option("--account", "account_id", type=click.IntRange(min=1), help="Only this Chatwoot account.")
@click.option("--contact", "contact_id", type=click.IntRange(min=1), help="Only this Chatwoot contact id.")
@click.option("--channel", help="Only this channel (whatsapp, api, web_widget, email...).")
@click.option("--since", help="Received on or after (2025-03-01, UTC unless given).")
@click.option("--until", help="Received before.")
@click.option("--days", type=click.IntRange(min=1), help="Received in the last N days.")
@click.option("--limit", type=click.IntRange(1, search.MAX_LIMIT), default=20, show_default=True)
def search_command(**options: Any) -> None:
    """Full-text search of archived messages and transcripts, newest first."""
    since = _date(options["since"])
    if options["days"]:
        since = datetime.now(UTC) - timedelta(days=options["days"])
    query = search.Query(
        " ".join(options["words"]),
        user_id=options["user_id"],
        account_id=options["account_id"],
        contact_id=options["contact_id"],
        channel=options["channel"],
        since=since,
        until=_date(options["until"]),
        limit=options["limit"],
    )
    try:
        rows = search.search(query)
    except (Invalid, NotFound) as exc:
        raise fail(str(exc)) from None
    columns = ("message_at", "user_id", "chatwoot_contact_id", "source_type", "message_type", "id", "excerpt")
    click.echo(print_table([{k: r[k] for k in columns} for r in rows]))


def register(app: Flask) -> None:
    for group in (deliveries_cli, retention_cli, exports_cli, search_command):
        app.cli.add_command(group)
