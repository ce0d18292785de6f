"""`flask users ...`: mapping Chatwoot contacts to users (other areas add commands to this group)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from app import context

users_cli = AppGroup("users", help="Users and the Chatwoot contacts linked to them.")


@users_cli.command("map")
@click.option("--user", "user_id", required=True, help="The user id (created if new).")
@click.option("--contact-id", type=click.IntRange(min=1), help="Chatwoot contact id.")
@click.option("--phone", help="Phone number, with its country code (+5491155550123).")
@click.option("--identifier", help="Chatwoot contact identifier.")
@click.option(
    "--account",
    "account_id",
    type=click.IntRange(min=1),
    help="Chatwoot account id (default: CHATWOOT_ACCOUNT_ID).",
)
@click.option("--region", help="Country (ISO code such as BR) of a phone number written without +.")
@click.option("--name", "display_name", help="Display name of the user.")
@click.option("--replace", is_flag=True, help="Move links that belong to another user to this one.")
def users_map(
    *,
    user_id: str,
    contact_id: int | None,
    phone: str | None,
    identifier: str | None,
    account_id: int | None,
    region: str | None,
    display_name: str | None,
    replace: bool,
) -> None:
    """Link a Chatwoot contact to a user, then move the contact's archived messages from the
    account's fallback bucket into the user's bucket. Safe to run again."""
    from app.archive import storage
    from app.users import contacts as users

    account = account_id or context.settings().chatwoot_account_id
    if account is None:
        raise click.UsageError("give --account (CHATWOOT_ACCOUNT_ID is not set)")
    if contact_id is None and not phone and not identifier:
        raise click.UsageError("give --contact-id, --phone or --identifier")
    try:
        link = users.link_contact(
            account,
            user_id,
            contact_id=contact_id,
            phone=phone,
            identifier=identifier,
            region=region,
            replace=replace,
            display_name=display_name,
        )
    except (users.LinkConflict, users.InvalidContact) as exc:
        raise click.ClickException(str(exc)) from None
    created = "new user" if link.created_user else "user"
    click.echo(f"{created} {link.user_id} (bucket {link.bucket_name})")
    for label, items in (("linked", link.added), ("already linked", link.existing), ("moved", link.moved)):
        for link_type, value in items:
            click.echo(f"  {label}: {link_type.replace('_', ' ')} {value} (account {account})")
    try:
        moved = users.rehome_messages(account, link.user_id)
    except storage.StorageError as exc:
        raise click.ClickException(f"the link is saved; moving the archive failed: {exc}") from None
    except Exception as exc:  # GCS or the database unavailable: the move resumes when run again
        raise click.ClickException(
            f"the link is saved; moving the archive failed ({type(exc).__name__}): run the command again"
        ) from None
    click.echo(
        f"re-homed {moved.messages} message(s): {moved.objects_copied} object(s) copied, "
        f"{moved.objects_deleted} deleted from the account's bucket"
    )


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
