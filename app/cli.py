"""`flask db` and `flask config`, and what every area's commands share (each area registers its own
group from `create_app`)."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from tabulate import tabulate

from app import context
from app.db import plain
from app.migrate import pending, upgrade


def print_table(rows: list[dict[str, Any]], fmt: str = "psql") -> str:
    """Rows as a text table (database values made printable)."""
    if not rows:
        return "(no rows)"
    return tabulate([plain(r) for r in rows], headers="keys", tablefmt=fmt, disable_numparse=True)


def fail(message: str) -> click.ClickException:
    """A command failure: the message on stderr, exit status 1."""
    return click.ClickException(message)


db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""

    applied = upgrade(context.settings().database_url)
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@db_cli.command("status")
def db_status() -> None:
    """List migrations not applied yet."""

    todo = pending(context.settings().database_url)
    click.echo("pending: " + ", ".join(todo) if todo else "database is up to date")


config_cli = AppGroup("config", help="Configuration.")


@config_cli.command("show")
def config_show() -> None:
    """Print the settings in force, secrets reduced to whether they are set."""
    click.echo(json.dumps(context.settings().public_summary(), indent=2, default=str))


def register(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(config_cli)
