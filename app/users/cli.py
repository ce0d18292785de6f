"""`flask users ...`: users, the Chatwoot contacts linked to them, link codes and erasure.

They do what the admin API does, for operators at a shell on the server.
"""

from __future__ import annotations

import getpass
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from app.cli import fail, print_table
from app.records import exports, holds
from app.users import link_codes as links
from app.users import service, tombstones
from app.users.erase import StorageUnavailable, erase_user
from app.users.rehome import rehome_messages

users_cli = AppGroup("users", help="Users and the Chatwoot contacts linked to them.")


@users_cli.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--after", default="", help="Start after this user id (paging).")
def users_list(limit: int, after: str) -> None:
    """List users with their bucket, message count and links."""
    click.echo(print_table(service.list_users(limit, after)))


@users_cli.command("show")
@click.argument("user_id")
def users_show(user_id: str) -> None:
    """Show a user and the contacts linked to it."""
    try:
        user = service.get_user(user_id)
    except service.NotFound as exc:
        raise fail(str(exc)) from None
    links = user.pop("links")
    click.echo(print_table([{"field": k, "value": v} for k, v in user.items()], "plain"))
    click.echo("\nlinks:")
    click.echo(print_table(links))


@users_cli.command("create")
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
def users_create(user_id: str, display_name: str | None, language: str | None, notify_on_ready: bool) -> None:
    """Create a user; its bucket name is derived from the user id."""
    try:
        user = service.create_user(
            user_id, display_name=display_name, language=language, notify_on_ready=notify_on_ready
        )
    except (service.Conflict, service.Invalid) as exc:
        raise fail(str(exc)) from None
    click.echo(f"created user {user['user_id']} (bucket {user['bucket_name']})")


@users_cli.command("update")
@click.argument("user_id")
@click.option("--name", "display_name", help="New display name.")
@click.option("--clear-name", is_flag=True, help="Remove the display name.")
@click.option(
    "--language", type=click.Choice(["en", "pt", "es", "none"]), help="Language of replies (none: unknown)."
)
@click.option(
    "--notify/--no-notify", "notify_on_ready", default=None, help="Tell the user when content is ready."
)
def users_update(
    user_id: str,
    display_name: str | None,
    clear_name: bool,
    language: str | None,
    notify_on_ready: bool | None,
) -> None:
    """Change a user's display name, language or notify_on_ready."""
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
        user = service.update_user(user_id, **changes)
    except service.NotFound as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"updated user {user['user_id']}: name={user['display_name']!r} language={user['language']} "
        f"notify_on_ready={user['notify_on_ready']}"
    )


@users_cli.command("notify")
@click.argument("user_id")
@click.argument("state", type=click.Choice(["on", "off"]))
def users_notify(user_id: str, state: str) -> None:
    """Turn the "content is ready" notice on or off for a user."""
    try:
        service.update_user(user_id, notify_on_ready=state == "on")
    except service.NotFound as exc:
        raise fail(str(exc)) from None
    click.echo(f"notify_on_ready is {state} for {user_id}")


@users_cli.command("link")
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
@click.option("--create", is_flag=True, help="Create the user when it does not exist yet.")
@click.option("--name", "display_name", help="Display name of a user created with --create.")
def users_link(
    *,
    user_id: str,
    create: bool,
    display_name: str | None,
    account_id: int | None,
    contact_id: int | None,
    phone: str | None,
    identifier: str | None,
    region: str | None,
    replace: bool,
    no_rehome: bool,
) -> None:
    """Link a Chatwoot contact to a user, then move the contact's archived messages from the
    account's fallback bucket into the user's bucket. Safe to run again."""
    if contact_id is None and not phone and not identifier:
        raise click.UsageError("give --contact-id, --phone or --identifier")
    try:
        account_id = service.default_account(account_id)
    except service.Invalid:
        raise click.UsageError("give --account (CHATWOOT_ACCOUNT_ID is not set)") from None
    try:
        service.link_values(contact_id, phone, identifier, region)  # bad input creates no user
        if create:
            created = service.ensure_user(user_id, display_name=display_name)
            label = "new user" if created["created"] else "user"
            click.echo(f"{label} {user_id} (bucket {created['bucket_name']})")
        outcome = service.add_link(
            user_id,
            account_id=account_id,
            contact_id=contact_id,
            phone=phone,
            identifier=identifier,
            region=region,
            replace=replace,
            rehome=False,
        )
    except (service.NotFound, service.Conflict, service.Invalid) as exc:
        raise fail(str(exc)) from None
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
        moved = rehome_messages(outcome.account_id, user_id)
    except Exception as exc:  # GCS or the database unavailable: the move resumes when run again
        raise fail(
            f"the link is saved; moving the archive failed ({type(exc).__name__}): run the command again"
        ) from None
    click.echo(
        f"re-homed {moved.messages} message(s): {moved.objects_copied} object(s) copied, "
        f"{moved.objects_deleted} deleted from the account's bucket"
    )


@users_cli.command("unlink")
@click.argument("user_id")
@click.argument("link_id", type=click.IntRange(min=1))
def users_unlink(user_id: str, link_id: int) -> None:
    """Remove one contact link of a user (LINK_ID as shown by `flask users show`)."""
    try:
        row = service.remove_link(user_id, link_id)
    except service.NotFound as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"unlinked {row['link_type'].replace('_', ' ')} {row['link_value']} (account {row['chatwoot_account_id']})"
    )


@users_cli.command("link-code")
@click.argument("user_id")
@click.option(
    "--account", "account_id", type=click.IntRange(min=1), help="Only valid from this Chatwoot account."
)
def users_link_code(user_id: str, account_id: int | None) -> None:
    """Make a one-time code the user sends from WhatsApp as `LINK <code>` (valid 10 minutes)."""
    try:
        issued = links.issue_code(user_id, account_id)
    except links.UnknownUser:
        raise fail(f"no user {user_id!r}") from None
    click.echo(f"code: {issued.code}")
    click.echo(f"expires: {issued.expires_at.isoformat()}")
    click.echo(f"The user sends: LINK {issued.code}  (once, within 10 minutes)")


@users_cli.command("erase")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_erase(user_id: str, yes: bool) -> None:
    """Erase a user (GDPR): bucket and objects, messages, orders, conversations, links. Safe to repeat."""
    if not yes:
        click.confirm(f"Erase everything kept about {user_id!r}? This cannot be undone", abort=True)
    try:
        report = erase_user(user_id)
    except StorageUnavailable as exc:
        raise fail(f"erasure stopped part-way ({exc}): run the command again") from None
    except holds.OnLegalHold as exc:
        raise fail(str(exc)) from None
    data = report.as_dict()
    click.echo(f"erased {user_id} (bucket {report.bucket_name})")
    click.echo(
        f"  bucket objects deleted: {report.bucket_objects_deleted} (in {report.bucket_rounds} round(s))"
    )
    click.echo(f"  fallback objects deleted: {report.fallback_objects_deleted}")
    click.echo(f"  soft delete: {report.soft_delete}")
    for table, count in data["rows_deleted"].items():
        click.echo(f"  {table}: {count} row(s)")
    if report.nothing_left:
        click.echo("nothing was left to delete")
    click.echo(
        f"tombstoned: {report.contacts_tombstoned} contact key(s); nothing of theirs is stored again "
        f"until `flask users reconsent {user_id}`"
    )


@users_cli.command("reconsent")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_reconsent(user_id: str, yes: bool) -> None:
    """Record an erased user's explicit consent: lift the erasure's tombstones, so that the
    user's contacts are archived again from now on (nothing erased comes back)."""
    if not yes:
        click.confirm(f"Has {user_id!r} explicitly consented to be archived again?", abort=True)
    lifted = tombstones.lift(user_id)
    if lifted is None:
        raise fail(f"no erasure holds for {user_id!r}")
    click.echo(
        f"re-consent recorded for {user_id}: {lifted['contacts_released']} contact key(s) released "
        f"(erased {lifted['erased_at']})"
    )


@users_cli.command("unmapped")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
def users_unmapped(limit: int, offset: int) -> None:
    """Contacts with archived messages but no user, most messages first."""
    click.echo(print_table(service.unmapped_contacts(limit, offset)))


def _actor(given: str | None) -> str:
    """Who runs the command, as recorded: --by, or the shell user."""
    return given or f"cli:{getpass.getuser()}"


@users_cli.command("export")
@click.argument("user_id")
@click.option("--by", "by", help="Who asks for it, as recorded (default: cli:<shell user>).")
@click.option("--queue", is_flag=True, help="Leave it to the workers instead of building it here.")
def users_export(user_id: str, by: str | None, queue: bool) -> None:
    """Export a user's archive: a zip of every message, update, attachment and transcript with a
    manifest (SHA-256 of every file), in the user's bucket; prints a signed URL that expires."""
    try:
        export = exports.request(user_id, _actor(by), queue=queue)
    except service.NotFound as exc:
        raise fail(str(exc)) from None
    click.echo(f"export {export['id']} of {user_id} requested")
    if queue:
        click.echo(f"queued; `flask exports show {export['id']}` follows it")
        return
    try:
        built = exports.build(int(export["id"]))
    except Exception as exc:
        raise fail(
            f"export {export['id']} failed ({type(exc).__name__}); run `flask exports show {export['id']}`"
        ) from None
    counts = built.summary.get("counts", {})
    click.echo(
        f"built gs://{export['bucket_name']}/{built.object_name}: {built.size_bytes} bytes, sha256 {built.sha256}"
    )
    click.echo("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    link = exports.issue_url(int(export["id"]), _actor(by))
    click.echo(
        f"download ({'signed, ' if link['signed'] else 'not signed (emulator), '}until {link['expires_at']}):"
    )
    click.echo(link["url"])


@users_cli.command("hold")
@click.argument("user_id")
@click.option("--reason", required=True, help="Why (a case, a dispute); recorded and shown in every refusal.")
@click.option("--by", "by", help="Who places it, as recorded (default: cli:<shell user>).")
def users_hold(user_id: str, reason: str, by: str | None) -> None:
    """Put a user on legal hold: no erasure, retention or export deletion until it is lifted."""
    try:
        hold = holds.place(user_id, reason, _actor(by))
    except (service.NotFound, service.Conflict, service.Invalid) as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"legal hold #{hold['id']} placed on {user_id} ({hold['reason']}); GCS holds: {hold['storage']}"
    )


@users_cli.command("unhold")
@click.argument("user_id")
@click.argument("hold_id", type=click.IntRange(min=1))
@click.option("--by", "by", help="Who lifts it, as recorded (default: cli:<shell user>).")
@click.option("--reason", help="Why it is lifted.")
def users_unhold(user_id: str, hold_id: int, by: str | None, reason: str | None) -> None:
    """Lift one legal hold of a user (HOLD_ID as shown by `flask users holds`)."""
    try:
        hold = holds.lift(user_id, hold_id, _actor(by), reason)
    except (service.NotFound, service.Conflict, service.Invalid) as exc:
        raise fail(str(exc)) from None
    left = hold["holds_left"]
    click.echo(
        f"legal hold #{hold_id} lifted on {user_id}; "
        + (f"{left} hold(s) still on" if left else f"no hold left; GCS holds released: {hold['storage']}")
    )


@users_cli.command("holds")
@click.argument("user_id", required=False)
def users_holds(user_id: str | None) -> None:
    """The legal holds of a user (all, lifted ones too), or every hold on now."""
    if user_id is None:
        click.echo(print_table(holds.all_active()))
        return
    try:
        found = holds.of_user(user_id)
    except (service.NotFound, service.Conflict) as exc:
        raise fail(str(exc)) from None
    click.echo(
        f"{user_id}: {'ON LEGAL HOLD' if found['on_hold'] else 'not on hold'}; GCS: {found['storage']}"
    )
    click.echo(print_table(found["holds"]))


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
