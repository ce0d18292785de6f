"""Admin authentication: the admin token, compared in constant time, and the rate limits that
protect it (per client address, failed sign-ins more strictly)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Flask, request
from flask_limiter import Limiter

from app import context

AUTH_SCOPE = "admin-auth"
"""Rate-limit scope shared by every failed sign-in (API and admin page)."""
API_SCOPE = "admin-api"


def token_matches(given: str | None) -> bool:
    """Constant-time comparison with ADMIN_API_TOKEN (never true when it is not set)."""
    expected = context.settings().admin_api_token
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_address() -> str:
    return request.remote_addr or "unknown"


def init_limits(app: Flask, blueprints: tuple[Blueprint, ...]) -> Any:
    """Rate limits for the admin blueprints (stored in Redis): every request, and failed sign-ins."""
    settings = context.settings()
    limiter = Limiter(
        key_func=client_address,
        app=None,
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        strategy="moving-window",
        key_prefix="meeting-notes:admin",
        headers_enabled=True,
        # Redis down: keep limiting, per process, rather than refusing every admin request.
        in_memory_fallback_enabled=True,
    )
    failed = limiter.shared_limit(
        settings.admin_auth_failure_limit,
        scope=AUTH_SCOPE,
        deduct_when=lambda response: response.status_code == 401,
        error_message="too many failed sign-ins from this address; wait and try again",
    )
    overall = limiter.shared_limit(settings.admin_rate_limit, scope=API_SCOPE)
    for blueprint in blueprints:
        failed(blueprint)
        overall(blueprint)
    _init_limiter_for(app, limiter, tuple(b.name for b in blueprints))
    app.extensions["admin_limiter"] = limiter
    return limiter


def _init_limiter_for(app: Flask, limiter: Any, blueprints: tuple[str, ...]) -> None:
    """Flask-Limiter's request hooks, run for the requests of `blueprints` only.

    It registers them for every request of the app; the webhook, which has no limit, would
    still pay for them on each delivery. Its hooks are moved to the blueprints' own hook lists
    (ahead of the blueprints' hooks, so a limit is checked before the token is).
    """
    tables: tuple[dict[str | None, list[Any]], ...] = (
        app.before_request_funcs,  # type: ignore[assignment]
        app.after_request_funcs,  # type: ignore[assignment]
        app.teardown_request_funcs,  # type: ignore[assignment]
    )
    app_wide = [list(table.get(None, ())) for table in tables]
    limiter.init_app(app)
    for table, before in zip(tables, app_wide, strict=True):
        added = [hook for hook in table.get(None, ()) if hook not in before]
        table[None] = before
        for name in blueprints:
            table.setdefault(name, [])[:0] = added
