"""`flask monitor`: every monitoring query of `sql/`, printed as a table with its run time."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext

from app import context
from app.cli import fail, print_table
from app.db import DatabaseUnavailable

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MONITOR_STATEMENT_TIMEOUT = "60s"


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
    db = context.db()
    if rebuild_rollups:
        started = time.perf_counter()
        with db.transaction() as cur:
            cur.execute("SELECT rebuild_monitoring_rollups()")
        click.echo(f"roll-ups rebuilt in {time.perf_counter() - started:.1f} s\n")
    files = [p for p in sql_files() if not only or any(o in p.name for o in only)]
    if not files:
        raise fail("no query file matches")
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
            raise fail(f"PostgreSQL is not answering: {_first_line(exc)}") from None
        except Exception as exc:
            failed += 1
            click.echo(f"failed: {type(exc).__name__}: {_first_line(exc)}\n")
            continue
        elapsed = (time.perf_counter() - started) * 1000
        click.echo(print_table(rows, fmt))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''}, {elapsed:.0f} ms)\n")
    if failed:
        raise fail(f"{failed} quer{'ies' if failed > 1 else 'y'} failed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return re.sub(r"postgres(?:ql)?://\S+", "postgresql://***", text[0])[:300] if text else ""


def register(app: Flask) -> None:
    app.cli.add_command(monitor)
