"""`flask` commands for operators. Each area adds its own group in `COMMAND_MODULES`."""

from __future__ import annotations

import importlib
import json

import click
from flask import Flask
from flask.cli import AppGroup

from app import context

COMMAND_MODULES: tuple[str, ...] = (
    "app.admin.requeue",
    "app.ingest.spool",
    "app.ingest.backfill",
    "app.users.cli",
    "app.admin.cli",
)
"""Modules with a `register(app)` function that adds their commands."""

db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""
    from app.migrate import upgrade

    applied = upgrade(context.settings().database_url)
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@db_cli.command("status")
def db_status() -> None:
    """List migrations not applied yet."""
    from app.migrate import pending

    todo = pending(context.settings().database_url)
    click.echo("pending: " + ", ".join(todo) if todo else "database is up to date")


config_cli = AppGroup("config", help="Configuration.")


@config_cli.command("show")
def config_show() -> None:
    """Print the settings in force, secrets reduced to whether they are set."""
    click.echo(json.dumps(context.settings().public_summary(), indent=2, default=str))


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(config_cli)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
