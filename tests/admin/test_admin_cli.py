"""`flask users ...` (admin commands) and `flask accounts ...`, run as an operator would."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.helpers.admin import add_link, add_note, add_user, assert_absent, count, sql

pytestmark = pytest.mark.usefixtures("admin_env")


def run(runner: Any, *args: str, input: str | None = None) -> Any:
    return runner.invoke(args=list(args), input=input, catch_exceptions=False)


def test_users_group_has_every_user_command(runner: Any) -> None:
    result = run(runner, "users", "--help")
    assert not re.search(r"^\s+map\s", result.output, re.MULTILINE)  # one command links: `link`
    for name in (
        "create",
        "update",
        "notify",
        "link",
        "unlink",
        "link-code",
        "erase",
        "unmapped",
        "list",
        "show",
    ):
        assert re.search(rf"^\s+{name}\s", result.output, re.MULTILINE), name


def test_create_update_show_list(runner: Any) -> None:
    from app.archive import storage

    result = run(runner, "users", "create", "u1", "--name", "Ana", "--language", "pt")
    assert result.exit_code == 0 and storage.bucket_name("u1") in result.output
    assert run(runner, "users", "create", "u1").exit_code == 1
    assert "exists already" in run(runner, "users", "create", "u1").output
    assert run(runner, "users", "create", "bad/id").exit_code == 1

    result = run(runner, "users", "update", "u1", "--clear-name", "--language", "es", "--notify")
    assert result.exit_code == 0
    row = sql("SELECT * FROM user_bucket_mapping")[0]
    assert (row["display_name"], row["language"], row["notify_on_ready"]) == (None, "es", True)
    assert run(runner, "users", "update", "u1").exit_code == 2
    assert run(runner, "users", "update", "zz", "--notify").exit_code == 1

    show = run(runner, "users", "show", "u1")
    assert show.exit_code == 0 and "u1" in show.output and "links:" in show.output
    assert run(runner, "users", "show", "zz").exit_code == 1
    listed = run(runner, "users", "list")
    assert listed.exit_code == 0 and "u1" in listed.output


def test_notify_on_and_off(runner: Any) -> None:
    add_user("u2")
    assert run(runner, "users", "notify", "u2", "on").exit_code == 0
    assert sql("SELECT notify_on_ready FROM user_bucket_mapping")[0]["notify_on_ready"] is True
    assert run(runner, "users", "notify", "u2", "off").exit_code == 0
    assert sql("SELECT notify_on_ready FROM user_bucket_mapping")[0]["notify_on_ready"] is False
    assert run(runner, "users", "notify", "zz", "on").exit_code == 1
    assert run(runner, "users", "notify", "u2", "maybe").exit_code == 2


def test_link_moves_the_archive_and_unlink(runner: Any, run_jobs: Any) -> None:
    from tests.helpers.archive import ingest, text_message

    note_id = ingest(text_message(7001, contact_id=700))
    run_jobs(queues=("archive",))
    add_user("u3")
    result = run(runner, "users", "link", "u3", "--contact-id", "700")
    assert result.exit_code == 0, result.output
    assert "linked: contact id 700 (account 1) -> u3" in result.output
    assert "re-homed 1 message(s)" in result.output
    assert sql("SELECT user_id FROM meeting_notes WHERE id = %s", (note_id,))[0]["user_id"] == "u3"

    assert run(runner, "users", "link", "u3").exit_code == 2
    assert run(runner, "users", "link", "zz", "--contact-id", "1").exit_code == 1
    add_user("u4")
    conflict = run(runner, "users", "link", "u4", "--contact-id", "700")
    assert conflict.exit_code == 1 and "already linked" in conflict.output
    assert run(runner, "users", "link", "u4", "--phone", "12").exit_code == 1

    link_id = sql("SELECT id FROM contact_links")[0]["id"]
    assert run(runner, "users", "unlink", "u3", str(link_id)).exit_code == 0
    assert count("contact_links") == 0
    assert run(runner, "users", "unlink", "u3", str(link_id)).exit_code == 1


def test_link_code(runner: Any) -> None:
    add_user("u5")
    result = run(runner, "users", "link-code", "u5")
    assert result.exit_code == 0
    code = re.search(r"code: (\d{6})", result.output)
    assert code and f"LINK {code.group(1)}" in result.output
    assert run(runner, "users", "link-code", "zz").exit_code == 1

    from app.users.link_codes import redeem_link_code

    assert redeem_link_code(1, 287, None, code.group(1)).ok


def test_erase_twice(runner: Any) -> None:
    add_user("u6")
    add_link("u6", "contact_id", "287")
    add_note(user_id="u6")
    assert run(runner, "users", "erase", "u6", input="n\n").exit_code == 1  # asked, refused
    assert count("user_bucket_mapping") == 1
    first = run(runner, "users", "erase", "u6", input="y\n")
    assert first.exit_code == 0, first.output
    assert "meeting_notes: 1 row(s)" in first.output and "contact_links: 1 row(s)" in first.output
    second = run(runner, "users", "erase", "u6", "--yes")
    assert second.exit_code == 0 and "nothing was left to delete" in second.output


def test_unmapped(runner: Any) -> None:
    add_note(contact_id=910, name="Someone")
    add_note(contact_id=910, name="Someone")
    result = run(runner, "users", "unmapped")
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "910" in line)
    assert "Someone" in line and re.search(r"\|\s+2\s+\|", line)
    assert "(no rows)" in run(runner, "users", "unmapped", "--offset", "5").output


def test_accounts_commands_never_print_secrets(runner: Any, use_settings: Any) -> None:
    from app.chatwoot import accounts

    accounts.forget_cached()
    key = Fernet.generate_key().decode()
    use_settings(secrets_encryption_key=key)
    outputs = []
    result = run(
        runner,
        "accounts",
        "set",
        "7",
        "--name",
        "Acme",
        "--base-url",
        "https://cw.acme.test",
        "--inbox-ids",
        "3,4",
        "--api-token",
        input="cw-token-123456\n",
    )
    outputs.append(result.output)
    assert result.exit_code == 0, result.output
    assert accounts.resolve(7, use_cache=False).api_token == "cw-token-123456"
    result = run(runner, "accounts", "set", "7", "--webhook-secret", input="hook-secret-abcdef\n")
    outputs.append(result.output)
    assert accounts.resolve(7, use_cache=False).webhook_secrets == ("hook-secret-abcdef",)
    outputs.append(run(runner, "accounts", "list").output)
    assert "True" in outputs[-1]
    result = run(runner, "accounts", "finish-rotation", "7")
    outputs.append(result.output)
    assert result.exit_code == 0
    assert run(runner, "accounts", "set", "7", "--base-url", "ftp://nope").exit_code == 1
    assert run(runner, "accounts", "set", "7", "--inbox-ids", "a,b").exit_code == 2
    result = run(runner, "accounts", "delete", "7", "--yes")
    outputs.append(result.output)
    assert result.exit_code == 0
    assert run(runner, "accounts", "delete", "7", "--yes").exit_code == 1
    for output in outputs:
        assert_absent(output, "cw-token-123456", "hook-secret-abcdef", key)


def test_accounts_secret_without_the_key(runner: Any, use_settings: Any) -> None:
    use_settings(secrets_encryption_key="")
    result = run(runner, "accounts", "set", "7", "--api-token", input="tok-1234567\n")
    assert result.exit_code == 1 and "SECRETS_ENCRYPTION_KEY" in result.output
    assert_absent(result.output, "tok-1234567")
