"""`flask storage ...`: the archive's buckets and attachments, for operators at a shell."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from app.archive import audit as bucket_audit
from app.archive import jobs
from app.cli import fail

storage_cli = AppGroup("storage", help="The archive in Google Cloud Storage.")


@storage_cli.command("audit")
@click.option("--fix", is_flag=True, help="Send our settings again to the buckets that differ.")
def audit(fix: bool) -> None:
    """List the user buckets whose settings differ from what we require (exit status 1 when any
    is left differing): lifecycle NEARLINE 30 / COLDLINE 90 / ARCHIVE 365, uniform bucket-level
    access, public access prevention, the service's labels, SOFT_DELETE_RETENTION_SECONDS."""
    left = 0
    found = 0
    for finding in bucket_audit.audit(fix=fix):
        found += 1
        state = "fixed" if finding.fixed else (f"NOT FIXED ({finding.error})" if fix else "differs")
        click.echo(f"{finding.bucket}: {state}")
        for difference in finding.differences:
            click.echo(f"  - {difference}")
        if not finding.fixed:
            left += 1
    if not found:
        click.echo("every bucket has the required settings")
    if left:
        raise fail(f"{left} bucket(s) differ" + ("" if fix else "; run with --fix to set them again"))


@storage_cli.command("retry-attachments")
@click.argument("note_id", type=click.IntRange(1, 2**63 - 1))
@click.option(
    "--attachment", "attachment_id", type=click.IntRange(0, 2**63 - 1), help="Only this attachment."
)
def retry_attachments(note_id: int, attachment_id: int | None) -> None:
    """Fetch again the attachments of message NOTE_ID (meeting_notes.id) marked unavailable."""
    try:
        ids = jobs.retry_attachments(note_id, attachment_id)
    except LookupError as exc:
        raise fail(str(exc)) from None
    if not ids:
        raise fail(f"message {note_id} has no unavailable attachment to retry")
    click.echo(f"queued: attachments {', '.join(map(str, ids))} of message {note_id}")


def register(app: Flask) -> None:
    app.cli.add_command(storage_cli)
