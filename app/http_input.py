"""What the JSON APIs (admin, orders) accept before a view runs: text PostgreSQL can store, JSON
bodies that parse and are not nested absurdly deep. A request that breaks a rule gets a 4xx that
names the field, never a 500 from the database driver or the parser."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request

from app.chatwoot.payloads import parse_body
from app.chatwoot.schemas import MAX_DEPTH
from app.errors import error_response

_UNPARSED = object()


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store this text, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


def value_problem(value: Any, prefix: str) -> tuple[str, str] | None:
    """(path, reason) of the first string (or key) in a JSON value that cannot be stored, or of a
    value nested more than MAX_DEPTH levels deep; None when all is well."""
    stack: list[tuple[Any, str, int]] = [(value, prefix, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return path, f"nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            reason = text_problem(item)
            if reason:
                return path, reason
        elif isinstance(item, dict):
            for key, sub in item.items():
                reason = text_problem(str(key))
                if reason:
                    return f"{path}.<key>", reason
                stack.append((sub, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}.{i}", depth + 1) for i, sub in enumerate(item))
    return None


def check_request() -> Response | None:
    """A before_request hook: 422 for unstorable text in the path or the query string, 400 for a
    JSON body that does not parse, 422 for one with unstorable text or absurd nesting."""
    for name, raw in (request.view_args or {}).items():
        if isinstance(raw, str) and (reason := text_problem(raw)):
            return _invalid(f"path.{name}", reason)
    for name, values in request.args.lists():
        for raw in [name, *values]:
            if reason := text_problem(raw):
                return _invalid(f"query.{text_or_placeholder(name)}", reason)
    data = request.get_data(cache=True)
    if not data or not request.is_json:
        g.json_body = _UNPARSED
        return None
    try:
        body = parse_body(data)
    except ValueError:
        answer: Response = error_response(
            400, "bad_request", "the body is not valid JSON (or is nested too deeply)"
        )
        return answer
    found = value_problem(body, "body")
    if found:
        return _invalid(*found)
    g.json_body = body
    return None


def parsed_json() -> Any:
    """The JSON body check_request() parsed (None when there was none)."""
    body = g.get("json_body", _UNPARSED)
    return None if body is _UNPARSED else body


def text_or_placeholder(name: str) -> str:
    return name if text_problem(name) is None else "<name>"


def _invalid(field: str, reason: str) -> Response:
    response: Response = error_response(422, "invalid", {field: [reason]})
    return response
