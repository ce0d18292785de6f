"""The admin page (`/admin/`): a small read-only dashboard rendered on the server.

A browser cannot send a bearer token when it navigates, so the admin signs in once with the
admin token; the session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure in
production, limited to /admin) and holds a keyed fingerprint of the token, never the token, so
changing ADMIN_API_TOKEN signs every browser out. The sign-in and sign-out forms carry a CSRF
token kept in the session.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from app import context
from app.admin.auth import signed_in, token_fingerprint, token_matches
from app.admin.stats import dashboard as numbers

log = logging.getLogger(__name__)

bp = Blueprint("admin_page", __name__, url_prefix="/admin")

SESSION_HOURS = 8
"""Hours a sign-in lasts."""
COOKIE_NAME = "meeting_notes_admin"
CHART_DAYS = 14


def init_app(app: Flask) -> None:
    settings = context.settings()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.production,
        SESSION_COOKIE_PATH="/admin",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.session_interface = _CookieSessions()
    app.register_blueprint(bp)


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, where a request without the cookie (every webhook
    delivery) gets a new empty session without building the cookie's signer."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies
        ):
            return self.session_class()
        return super().open_session(app, request)


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    return isinstance(expected, str) and bool(given) and hmac.compare_digest(given, expected)


@bp.before_request
def nonce() -> None:
    g.csp_nonce = secrets.token_urlsafe(16)


@bp.after_request
def headers(response: Response) -> Response:
    nonce_value = getattr(g, "csp_nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce_value}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, status: int = 200, **values: Any) -> Any:
    html = render_template(template, csrf=csrf_token(), nonce=g.csp_nonce, **values)
    return html, status, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/login")
def login_form() -> Any:
    if not context.settings().admin_api_token:
        return _page("admin/login.html", 503, error="The admin page is off: ADMIN_API_TOKEN is not set.")
    if signed_in():
        return redirect(url_for("admin_page.dashboard"))
    return _page("admin/login.html")


@bp.post("/login")
def login() -> Any:

    if not context.settings().admin_api_token:
        return _page("admin/login.html", 503, error="The admin page is off: ADMIN_API_TOKEN is not set.")
    if not csrf_ok():
        return _page("admin/login.html", 400, error="The form expired. Please sign in again.")
    if not token_matches(request.form.get("token", "").strip()):
        log.warning("admin sign-in refused", extra={"client": request.remote_addr})
        return _page("admin/login.html", 401, error="Wrong admin token.")
    session.clear()
    session.permanent = True
    session["admin"] = token_fingerprint()
    session["csrf"] = secrets.token_urlsafe(32)  # a new token after signing in
    log.info("admin signed in", extra={"client": request.remote_addr})
    return redirect(url_for("admin_page.dashboard"), 303)


@bp.post("/logout")
def logout() -> Any:
    if not csrf_ok():
        return _page("admin/login.html", 400, error="The form expired. Please sign in again.")
    session.clear()
    return redirect(url_for("admin_page.login_form"), 303)


@bp.get("/")
def dashboard() -> Any:

    if not signed_in():
        return redirect(url_for("admin_page.login_form"))
    data = numbers(days=CHART_DAYS)
    return _page("admin/dashboard.html", data=data, chart=chart(data["days"]))


def chart(days: list[dict[str, Any]], width: int = 700, height: int = 220) -> dict[str, Any]:
    """Bar geometry of the per-day chart (stacked stored / errors / waiting), in SVG units."""
    top, bottom, left = 16, 34, 44
    plot_h = height - top - bottom
    peak = max([int(d["received"]) for d in days] + [1])
    step = (width - left - 8) / max(len(days), 1)
    bar_w = max(step * 0.7, 2)
    bars = []
    for i, day in enumerate(days):
        x = left + i * step + (step - bar_w) / 2
        y = float(top + plot_h)
        parts = []
        for kind in ("stored", "errors", "waiting"):
            h = plot_h * int(day[kind]) / peak
            y -= h
            parts.append({"kind": kind, "y": round(y, 2), "h": round(h, 2), "value": int(day[kind])})
        bars.append(
            {
                "day": day["day"],
                "label": str(day["day"])[5:],
                "x": round(x, 2),
                "w": round(bar_w, 2),
                "received": int(day["received"]),
                "parts": parts,
            }
        )
    ticks = [{"value": round(peak * f), "y": round(top + plot_h * (1 - f), 2)} for f in (0, 0.5, 1)]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "ticks": ticks,
        "left": left,
        "base": top + plot_h,
        "label_y": height - 12,
    }


@bp.app_template_filter("duration")
def duration(seconds: int | float) -> str:
    """`42 s`, `17 min`, `5 h 3 min`, `2 d 4 h`."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
