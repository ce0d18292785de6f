"""`flask requeue`: retry stuck or failed work now, by stage, status or id, printing what it did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask

from app import context, reconcile
from app.config import ConfigError, _duration
from app.db import DatabaseUnavailable
from app.jobs import QueueUnavailable
from app.reconcile import STAGES

CLI_STAGES = ("archive", "update", "transcription", "classification", "outbox")
"""Stages an operator names; `outbox` covers both pending and sending notices."""


def _stages(names: tuple[str, ...]) -> list[Any]:

    wanted = set(names or CLI_STAGES)
    return [s for s in STAGES if s.name in wanted or (s.name == "outbox_sending" and "outbox" in wanted)]


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        seconds = _duration("--since", raw)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--since: ")) from None
    return datetime.now(UTC) - timedelta(seconds=seconds)


def _print_outcomes(outcomes: list[Any]) -> None:
    labels = {
        "enqueued": "enqueued again",
        "would_enqueue": "would be enqueued again",
        "live": "left alone: its job is queued or running",
        "gave_up": "given up (dead letter)",
        "would_give_up": "would be given up (dead letter)",
    }
    for o in outcomes:
        attempts = f" (attempt {o.attempts})" if o.action == "enqueued" else f" (attempts {o.attempts})"
        detail = f": {o.detail}" if o.detail else ""
        click.echo(
            f"{o.stage.removesuffix('_sending')} {o.row_id}: {labels.get(o.action, o.action)}{attempts}{detail}"
        )


def _summary(outcomes: list[Any], dry_run: bool) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    if not counts:
        return "nothing to requeue"
    parts = ", ".join(f"{n} {action.replace('_', ' ')}" for action, n in sorted(counts.items()))
    return ("dry run: " if dry_run else "") + parts


@click.command("requeue")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(CLI_STAGES),
    help="Only this stage (repeatable; default: all).",
)
@click.option(
    "--status",
    type=click.Choice(("stuck", "error", "all")),
    default="stuck",
    show_default=True,
    help="stuck: waiting work with no live job; error: the dead letter (error/failed), revived.",
)
@click.option("--id", "ids", multiple=True, type=click.IntRange(min=1), help="Only this row id (repeatable).")
@click.option(
    "--grace",
    default=None,
    help="Stuck means waiting longer than this (e.g. 0, 90s, 5m; default RECONCILE_GRACE, or 0 with --id).",
)
@click.option(
    "--since", default=None, help="With --status error: only rows that failed within this time (e.g. 24h)."
)
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows per stage.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--list", "list_only", is_flag=True, help="Only list the dead letter.")
def requeue_command(
    *,
    stages: tuple[str, ...],
    status: str,
    ids: tuple[int, ...],
    grace: str | None,
    since: str | None,
    limit: int,
    dry_run: bool,
    list_only: bool,
) -> None:
    """Retry stuck or failed work now (ignoring the backoff), printing what was done."""

    since_at = _since(since)
    try:
        if list_only:
            _list_dead_letters(stages, ids, since_at, limit)
            return
        outcomes: list[Any] = []
        if status in ("error", "all"):
            outcomes += _revive(stages, ids, since_at, limit, dry_run)
        if status in ("stuck", "all"):
            if grace is None:
                grace_seconds = 0 if ids else context.settings().reconcile_grace
            else:
                try:
                    grace_seconds = _duration("--grace", grace)
                except ConfigError as exc:
                    raise click.BadParameter(str(exc).removeprefix("--grace: ")) from None
            outcomes += reconcile.sweep(
                _stages(stages),
                ids=list(ids) or None,
                due_only=False,
                grace=grace_seconds,
                dry_run=dry_run,
                give_up=False,
                limit=limit,
            )
    except DatabaseUnavailable:
        raise click.ClickException("PostgreSQL is unavailable; nothing was changed") from None
    except QueueUnavailable:
        raise click.ClickException("Redis is unavailable; rows stay as they are, try again later") from None
    _print_outcomes(outcomes)
    click.echo(_summary(outcomes, dry_run))


def _dead_letter_rows(
    stage: str | None, ids: tuple[int, ...], since_at: datetime | None, limit: int
) -> list[dict[str, Any]]:
    return context.db().fetch_all(
        "reconcile.dead_letters",
        {"stage": stage, "ids": list(ids) or None, "since": since_at, "limit": limit},
    )


def _list_dead_letters(
    stages: tuple[str, ...], ids: tuple[int, ...], since_at: datetime | None, limit: int
) -> None:
    rows: list[dict[str, Any]] = []
    for stage in stages or (None,):
        rows += _dead_letter_rows(stage, ids, since_at, limit)
    for r in rows:
        when = r["updated_at"].isoformat(timespec="seconds") if r["updated_at"] else "-"
        click.echo(
            f"{r['stage']} {r['id']}: account {r['chatwoot_account_id']}, conversation "
            f"{r['chatwoot_conversation_id']}, {r['attempts']} attempts, {when}: {r['error_details'] or '-'}"
        )
    click.echo(f"{len(rows)} in the dead letter")


def _revive(
    stages: tuple[str, ...], ids: tuple[int, ...], since_at: datetime | None, limit: int, dry_run: bool
) -> list[Any]:
    """Put the dead letter back into its waiting state and enqueue it."""

    outcomes: list[Any] = []
    for stage_name in stages or CLI_STAGES:
        if dry_run:
            for r in _dead_letter_rows(stage_name, ids, since_at, limit):
                outcomes.append(
                    reconcile.Outcome(stage_name, int(r["id"]), "would_enqueue", int(r["attempts"] or 0))
                )
            continue
        revived = context.db().fetch_all(
            f"reconcile.revive_{stage_name}", {"ids": list(ids) or None, "since": since_at}
        )
        revived_ids = [int(r["id"]) for r in revived][:limit]
        if not revived_ids:
            continue
        outcomes += reconcile.sweep(
            _stages((stage_name,)), ids=revived_ids, due_only=False, grace=0, give_up=False, limit=limit
        )
    return outcomes


def register(app: Flask) -> None:
    app.cli.add_command(requeue_command)


def retry(stage: str, row_id: int) -> list[Any]:
    """Retry one row now, as `flask requeue --status all --stage STAGE --id ROW_ID` does: out of
    the dead letter when it is there, else enqueued again when it waits with no live job.

    An empty list: nothing to retry (done meanwhile, or a notice that may have reached Chatwoot).
    Raises DatabaseUnavailable or QueueUnavailable as the sweep does.
    """

    if stage not in CLI_STAGES:
        raise ValueError(f"no stage {stage!r}")
    outcomes = _revive((stage,), (row_id,), None, 1, dry_run=False)
    if not outcomes:
        outcomes = reconcile.sweep(
            _stages((stage,)), ids=[row_id], due_only=False, grace=0, give_up=False, limit=1
        )
    return outcomes


def dead_letters(limit: int = 20) -> list[dict[str, Any]]:
    """The newest rows of the dead letter, every stage (the admin page's list)."""
    return context.db().fetch_all("admin.dead_letters_newest", {"limit": limit})
