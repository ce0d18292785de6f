"""Admin authentication: the admin token, compared in constant time, the page's session, and the
rate limits that protect them.

Failed sign-ins are limited per client address, and a request that presents the right token (or
a signed-in session) is never refused for them: a stranger behind the same proxy cannot lock the
admins out. Reaching the failure limit logs an alert and counts it."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, g, request, session
from flask_limiter import Limiter

from app import context
from app.metrics import ADMIN_SIGN_IN_ALERTS

log = logging.getLogger(__name__)

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


def actor(where: str, by: str | None = None) -> str:
    """Who acts, as the records keep it: the name given (else "admin"), where from, and the
    client's address, e.g. `admin (admin page, 10.0.0.5)`."""
    return f"{by or 'admin'} ({where}, {client_address()})"[:200]


def token_fingerprint() -> str:
    """A keyed digest of the admin token: what the page's session holds instead of the token."""
    s = context.settings()
    return hmac.new(
        s.secret_key.encode(), b"admin-session:" + s.admin_api_token.encode(), hashlib.sha256
    ).hexdigest()


def signed_in() -> bool:
    """Whether the page's session was opened with the admin token in force."""
    held = session.get("admin")
    if not context.settings().admin_api_token or not isinstance(held, str):
        return False
    return hmac.compare_digest(held, token_fingerprint())


def authenticated() -> bool:
    """Whether this request presents the admin token (bearer, or the sign-in form) or a session."""
    found = g.get("admin_authenticated")
    if found is None:
        found = (
            token_matches(bearer_token())
            or (request.method == "POST" and token_matches(request.form.get("token", "").strip()))
            or signed_in()
        )
        g.admin_authenticated = found
    return bool(found)


def limit_key() -> str:
    """Whose request budget this is: the admins' (valid credentials), else the client address's."""
    return "admins" if authenticated() else client_address()


def _failures_over_limit(limit: Any) -> None:
    ADMIN_SIGN_IN_ALERTS.inc()
    log.warning(
        "admin sign-in failures over the limit: refusing this address's unauthenticated requests",
        extra={"client": client_address(), "limit": str(limit.limit)},
    )


def init_limits(app: Flask, blueprints: tuple[Blueprint, ...]) -> Any:
    """Rate limits for the admin blueprints (stored in Redis): every request, and failed sign-ins."""
    settings = context.settings()
    limiter = Limiter(
        key_func=limit_key,
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
        key_func=client_address,
        deduct_when=lambda response: response.status_code == 401,
        exempt_when=lambda: authenticated() or request.endpoint == "admin_page.login_form",
        on_breach=_failures_over_limit,
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
