"""Approved WhatsApp templates, sent through Chatwoot when WhatsApp's 24-hour window is closed.

Outside the window WhatsApp delivers only approved templates. Chatwoot's create-message call takes
one as `template_params` (`name`, `category`, `language`, `processed_params`; see Chatwoot's
`Messages::MessageBuilder#template_params` and `Whatsapp::TemplateProcessorService`): the
template's body variables `{{1}}`, `{{2}}`... are filled from `processed_params.body`.

A template is configured per account (`flask accounts set --ready-template ...`) or globally
(`WHATSAPP_READY_TEMPLATE_*`). Its language is one WhatsApp code for everyone (`en_US`), or one
per user language (`en:en_US,pt:pt_BR,es:es`). Its parameters name, in order, the values that
fill `{{1}}`, `{{2}}`...: `what` (the content, in the user's language: "LinkedIn post") and
`order_id`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("UTILITY", "MARKETING", "SHIPPING_UPDATE", "TICKET_UPDATE", "ISSUE_RESOLUTION")
"""The categories Chatwoot's API describes for `template_params.category`."""
VALUES = ("what", "order_id")
"""Values a ready notice offers to its template's parameters."""
DEFAULT_PARAMS = ("what", "order_id")
DEFAULT_LANGUAGES = {"en": "en", "pt": "pt_BR", "es": "es"}
"""WhatsApp's codes for the user languages, when no language is configured."""
USER_LANGUAGES = ("en", "pt", "es")

_CODE_RE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2,4})?$")
_NAME_RE = re.compile(r"^[a-z0-9_]{1,512}$")


class TemplateConfigError(ValueError):
    """A template setting that WhatsApp would never accept; the message says which and why."""


def parse_languages(raw: str) -> dict[str, str]:
    """`en_US` (one code for every user language) or `en:en_US,pt:pt_BR`; {} when empty."""
    text = raw.strip()
    if not text:
        return {}
    if ":" not in text:
        if not _CODE_RE.match(text):
            raise TemplateConfigError(f"expected a WhatsApp language code such as en_US, got {text!r}")
        return dict.fromkeys(USER_LANGUAGES, text)
    out: dict[str, str] = {}
    for part in text.split(","):
        lang, _, code = part.strip().partition(":")
        lang, code = lang.strip(), code.strip()
        if lang not in USER_LANGUAGES or not _CODE_RE.match(code):
            raise TemplateConfigError(
                f"expected user language:WhatsApp code pairs such as en:en_US,pt:pt_BR, got {part.strip()!r}"
            )
        out[lang] = code
    return out


def check_languages(raw: str) -> str:
    """The language setting as written, once it parses."""
    parse_languages(raw)
    return raw.strip()


def parse_params(raw: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`what,order_id` -> ("what", "order_id"); `none` for a template without parameters."""
    if isinstance(raw, str) and raw.strip().lower() == "none":
        return ()
    names = [p.strip() for p in (raw.split(",") if isinstance(raw, str) else raw) if p.strip()]
    unknown = [n for n in names if n not in VALUES]
    if unknown:
        raise TemplateConfigError(
            f"unknown template value(s) {', '.join(unknown)}; known: {', '.join(VALUES)}"
        )
    return tuple(names)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise TemplateConfigError(
            f"a WhatsApp template name is lowercase letters, digits and underscores, got {name!r}"
        )
    return name


def check_category(category: str) -> str:
    value = category.strip().upper()
    if value not in CATEGORIES:
        raise TemplateConfigError(f"expected one of {', '.join(CATEGORIES)}, got {category!r}")
    return value


@dataclass(frozen=True)
class Template:
    """An approved WhatsApp template, as configured for an account (or globally)."""

    name: str
    languages: dict[str, str]
    """WhatsApp language code by user language (en, pt, es)."""
    category: str = "UTILITY"
    params: tuple[str, ...] = DEFAULT_PARAMS

    def language(self, user_language: str | None) -> str:
        languages = self.languages or DEFAULT_LANGUAGES
        if user_language in languages:
            return languages[user_language]
        return languages.get("en") or next(iter(languages.values()))

    def params_for(self, values: dict[str, Any]) -> dict[str, Any]:
        """Chatwoot's `template_params` for these values (`values` as recorded with the notice)."""
        body = {str(i): str(values.get(name, "")) for i, name in enumerate(self.params, 1)}
        processed: dict[str, Any] = {"body": body} if body else {}
        return {
            "name": self.name,
            "category": self.category,
            "language": self.language(values.get("language")),
            "processed_params": processed,
        }
