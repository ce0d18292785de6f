"""`flask monitor`: every monitoring query of the admins' `sql/` folder, printed as a table with its
run time.

`sql/` belongs to the admins: files they run with psql, which they may edit, add or rename.
`flask monitor` runs whatever is there, by design. The service itself never reads that folder:
the queries the admin page uses live in `app/queries/admin.sql` (where one is the same statement
as a file of `sql/`, a test keeps the two texts the same).
"""

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
"""The admins' folder of the checkout: the default of `flask monitor --dir`."""
MONITOR_STATEMENT_TIMEOUT = "60s"


def sql_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or SQL_DIR).glob("*.sql"))


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
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of .sql files to run (default: sql/ of this checkout).",
)
@with_appcontext
def monitor(only: tuple[str, ...], fmt: str, rebuild_rollups: bool, directory: Path | None) -> None:
    """Run each monitoring query of sql/ (the admins' folder) and print its result as a table."""
    folder = directory or SQL_DIR
    if not folder.is_dir():
        raise fail(f"no folder {folder}: give the folder of the monitoring .sql files with --dir")
    db = context.db()
    if rebuild_rollups:
        started = time.perf_counter()
        with db.transaction() as cur:
            cur.execute("SELECT rebuild_monitoring_rollups()")
        click.echo(f"roll-ups rebuilt in {time.perf_counter() - started:.1f} s\n")
    files = [p for p in sql_files(folder) if not only or any(o in p.name for o in only)]
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
