"""`flask chatwoot check`: prove the wiring to Chatwoot without sending anything.

For each account it reaches Chatwoot's API with each token and says what the token may do, as
Chatwoot decides it (`app/controllers/concerns/access_token_auth_helper.rb`):
- `GET /api/v1/profile` answers a user's token with the user and its role in each account, and
  an agent bot's token with 401 "Access to this endpoint is not authorized for bots";
- with a bot's token, `GET .../conversations/<id>` (a conversation we know) shows that the bot
  reaches the account (bots may show conversations since Chatwoot 4.15);
- with the read token, `GET .../conversations` (one page) shows whether the backfill can list.
Only GET requests: nothing is created, nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app import context
from app.chatwoot import accounts, reads
from app.chatwoot import client as chatwoot

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Finding:
    what: str
    """writes, reads, template..."""
    state: str
    """ok, warn or fail."""
    detail: str


@dataclass
class AccountCheck:
    account_id: int
    base_url: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def state(self) -> str:
        states = {f.state for f in self.findings}
        return FAIL if FAIL in states else WARN if WARN in states else OK


def account_ids() -> list[int]:
    """The default account and every account with settings of its own."""
    ids = {int(r["chatwoot_account_id"]) for r in context.db().fetch_all("accounts.list", {})}
    default = context.settings().chatwoot_account_id
    if default:
        ids.add(default)
    return sorted(ids)


def check_account(account_id: int) -> AccountCheck:
    config = accounts.resolve(account_id, use_cache=False)
    result = AccountCheck(account_id, config.base_url)
    if not config.base_url or not config.api_token:
        missing = "CHATWOOT_BASE_URL" if not config.base_url else "CHATWOOT_API_ACCESS_TOKEN"
        result.findings.append(Finding("writes", FAIL, f"{missing} is not set: nothing can be sent"))
        return result
    client = chatwoot.client_for(account_id)
    write_source = "the account's API access token" if config.own_row else "CHATWOOT_API_ACCESS_TOKEN"
    result.findings.append(_writes(client, write_source))
    result.findings.append(_reads(client))
    result.findings.append(_template(config))
    return result


def _who(client: chatwoot.Client, token: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """("user", profile, None) / ("bot", None, None) / ("refused" | "unreachable", None, why)."""
    try:
        return "user", client.profile(token), None
    except chatwoot.BotTokenRefused:
        return "bot", None, None
    except chatwoot.Unauthorized as exc:
        return "refused", None, exc.reason
    except chatwoot.ChatwootError as exc:
        return "unreachable", None, exc.reason


def _role(profile: dict[str, Any], account_id: int) -> str | None:
    for account in profile.get("accounts") or []:
        if isinstance(account, dict) and account.get("id") == account_id:
            return str(account.get("role") or "member")
    return None


def _user(profile: dict[str, Any], account_id: int) -> str:
    name = profile.get("name") or profile.get("email") or f"user {profile.get('id')}"
    role = _role(profile, account_id)
    return (
        f"a user's token ({name}, {role} of account {account_id})"
        if role
        else (f"a user's token ({name}), but not a member of account {account_id}")
    )


def _writes(client: chatwoot.Client, source: str) -> Finding:
    kind, profile, why = _who(client, client.api_token)
    if kind == "unreachable":
        return Finding("writes", FAIL, f"Chatwoot did not answer at {client.base_url}: {why}")
    if kind == "refused":
        return Finding("writes", FAIL, f"{source} refused: {why}")
    if kind == "user":
        assert profile is not None
        state = OK if _role(profile, client.account_id) else FAIL
        return Finding(
            "writes", state, f"{source} is {_user(profile, client.account_id)}; may create messages"
        )
    # An agent bot's token: does it reach this account? Show a conversation we know.
    known = context.db().fetch_one("chatwoot.recent_conversation", {"account_id": client.account_id})
    text = f"{source} is an agent bot's token: may create messages, show and update conversations"
    if known is None:
        return Finding(
            "writes",
            OK,
            f"{text} (no conversation known yet to prove it reaches account {client.account_id})",
        )
    conversation_id = int(known["chatwoot_conversation_id"])
    try:
        client.show_conversation(conversation_id)
    except chatwoot.BotTokenRefused:
        return Finding(
            "writes",
            OK,
            f"{text} (this Chatwoot, before 4.15, does not let bots show a conversation: not proven)",
        )
    except chatwoot.Unauthorized as exc:
        return Finding(
            "writes", FAIL, f"{text}, but Chatwoot refuses it on account {client.account_id}: {exc.reason}"
        )
    except chatwoot.NotFound:
        return Finding("writes", WARN, f"{text}; conversation {conversation_id} was not found")
    except chatwoot.ChatwootError as exc:
        return Finding("writes", FAIL, f"{text}; Chatwoot did not answer: {exc.reason}")
    return Finding(
        "writes", OK, f"{text}; reaches conversation {conversation_id} of account {client.account_id}"
    )


def _reads(client: chatwoot.Client) -> Finding:
    source, token = client.read_token_source, client.reads_with
    try:
        client.list_conversations(1)
    except chatwoot.BotTokenRefused as exc:
        reads.record(client.account_id, token, source, False, exc.reason)
        return Finding(
            "reads",
            WARN,
            f"{source} is an agent bot's token and may not list: the backfill is off, and an unknown "
            "send outcome is settled by our message's webhook echo; "
            + reads.FIX.format(account=client.account_id),
        )
    except chatwoot.Unauthorized as exc:
        return Finding("reads", FAIL, f"{source} may not list account {client.account_id}: {exc.reason}")
    except chatwoot.ChatwootError as exc:
        return Finding("reads", FAIL, f"listing conversations failed: {exc.reason}")
    reads.record(client.account_id, token, source, True)
    who = ""
    if token != client.api_token:
        kind, profile, _ = _who(client, token)
        if kind == "user" and profile is not None:
            who = f" is {_user(profile, client.account_id)} and"
            if _role(profile, client.account_id) == "agent":
                who += " (an agent sees only the inboxes it belongs to)"
    return Finding("reads", OK, f"{source}{who} lists conversations and messages: the backfill is on")


def _template(config: accounts.AccountConfig) -> Finding:
    template = config.ready_template
    if template is None:
        return Finding(
            "template",
            WARN,
            "no WhatsApp template for ready notices: after the 24-hour window they are recorded "
            "no_template (WHATSAPP_READY_TEMPLATE_NAME, or `flask accounts set "
            f"{config.account_id} --ready-template`)",
        )
    languages = (
        ", ".join(f"{k}:{v}" for k, v in (template.languages or {}).items()) or "en:en, pt:pt_BR, es:es"
    )
    params = ", ".join(template.params) or "none"
    return Finding(
        "template",
        OK,
        f"ready notices after the 24-hour window use {template.name} ({template.category}; languages "
        f"{languages}; body values {params})",
    )
