"""The admin page (`/admin/`): a dashboard rendered on the server, a search of messages, a page
per user, and two actions: retry work from the dead letter, link an unmapped contact to a user.

A browser cannot send a bearer token when it navigates, so the admin signs in once with the
admin token; the session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure in
production, limited to /admin) and holds a keyed fingerprint of the token, never the token, so
changing ADMIN_API_TOKEN signs every browser out. Every form carries a CSRF token kept in the
session, and each action is written to the log (`app.admin.audit`) with the client's address.
The actions go through the same code as the CLI: `flask requeue` for a retry, the users
service's `add_link` for a link.
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
    flash,
    g,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from app import context
from app.admin import browse, requeue
from app.admin.auth import signed_in, token_fingerprint, token_matches
from app.admin.stats import dashboard as numbers
from app.db import DatabaseUnavailable
from app.jobs import QueueUnavailable
from app.users import service

log = logging.getLogger(__name__)
audit = logging.getLogger("app.admin.audit")
"""Who did what from the admin page: one line per action, with the client's address."""

bp = Blueprint("admin_page", __name__, url_prefix="/admin")

SESSION_HOURS = 8
"""Hours a sign-in lasts."""
COOKIE_NAME = "meeting_notes_admin"
CHART_DAYS = 14
DEAD_LETTERS_SHOWN = 20
USERS_SUGGESTED = 500
"""User ids the link form suggests (any other may be typed)."""


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
    html = render_template(
        template,
        csrf=csrf_token(),
        nonce=g.csp_nonce,
        notices=get_flashed_messages(with_categories=True),
        here=request.full_path.rstrip("?"),
        **values,
    )
    return html, status, {"Content-Type": "text/html; charset=utf-8"}


@bp.errorhandler(DatabaseUnavailable)
def database_down(exc: DatabaseUnavailable) -> Any:
    return _page("admin/error.html", 503, error="PostgreSQL is not answering; try again shortly.")


def _back(default: str) -> Any:
    """A redirect to the form's `next` page when it is one of ours, else to `default`."""
    target = request.form.get("next", "")
    if not (target.startswith("/admin/") and "//" not in target and "\\" not in target):
        target = default
    return redirect(target, 303)


def _refused() -> Any | None:
    """The answer to a form posted without a session or without its CSRF token, else None."""
    if not signed_in():
        return redirect(url_for("admin_page.login_form"), 303)
    if not csrf_ok():
        return _page("admin/error.html", 400, error="The form expired. Please go back, reload and try again.")
    return None


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
    return _page(
        "admin/dashboard.html",
        data=data,
        chart=chart(data["days"]),
        dead=requeue.dead_letters(limit=DEAD_LETTERS_SHOWN),
        users=[u["user_id"] for u in service.list_users(limit=USERS_SUGGESTED)],
        modes=browse.MODES,
    )


@bp.get("/messages")
def messages() -> Any:
    """Messages found by contact, user, text or transcript, newest first, a page at a time."""
    if not signed_in():
        return redirect(url_for("admin_page.login_form"))
    by = request.args.get("by", "text")
    q = request.args.get("q", "")
    try:
        page = int(request.args.get("page", "1"))
        results = browse.search(by, q, page)
    except ValueError as exc:  # BadSearch, or a page that is not a number
        error = str(exc) if isinstance(exc, browse.BadSearch) else "the page is a number"
        return _page("admin/messages.html", 400, modes=browse.MODES, by=by, q=q, error=error, results=None)
    return _page(
        "admin/messages.html",
        modes=browse.MODES,
        by=by,
        q=q,
        error=None,
        results=results,
        timeout_seconds=browse.SEARCH_TIMEOUT_MS // 1000,
    )


@bp.get("/user/<user_id>")
def user(user_id: str) -> Any:
    """A user: its bucket(s), counts, links, orders and latest messages with their statuses."""
    if not signed_in():
        return redirect(url_for("admin_page.login_form"))
    try:
        data = browse.user_page(user_id)
    except service.NotFound:
        return _page("admin/error.html", 404, error=f"There is no user {user_id!r}.")
    return _page("admin/user.html", data=data)


RETRY_OUTCOMES = {
    "enqueued": "queued again",
    "live": "left alone: its job is already queued or running",
}


@bp.post("/retry")
def retry() -> Any:
    """Retry one row of the dead letter (or stuck work) now, as `flask requeue --id` does."""
    refused = _refused()
    if refused is not None:
        return refused
    stage = request.form.get("stage", "")
    try:
        row_id = int(request.form.get("id", ""))
    except ValueError:
        row_id = 0
    if stage not in requeue.CLI_STAGES or not 0 < row_id < 2**63:
        return _page("admin/error.html", 400, error="Nothing to retry: the form names no stage and row.")
    what = f"{stage} {row_id}"
    try:
        outcomes = requeue.retry(stage, row_id)
    except QueueUnavailable:
        audit.warning("admin retry failed", extra=_who(action="retry", stage=stage, row_id=row_id))
        flash(f"{what}: Redis is not answering; try again shortly (the reconciler also retries it).", "error")
        return _back(url_for("admin_page.dashboard"))
    actions = [o.action for o in outcomes]
    audit.info(
        "admin retry", extra=_who(action="retry", stage=stage, row_id=row_id, outcome=actions or ["none"])
    )
    if not outcomes:
        flash(
            f"{what}: nothing to retry. It is done or on its way, or (a notice) it may have reached "
            "Chatwoot already, so it is not sent again.",
            "error",
        )
    else:
        flash(f"{what}: {RETRY_OUTCOMES.get(outcomes[-1].action, outcomes[-1].action)}.", "ok")
    return _back(url_for("admin_page.dashboard"))


@bp.post("/contacts/link")
def link_contact() -> Any:
    """Link an unmapped contact to a user, through the users service (and create the user if asked)."""
    refused = _refused()
    if refused is not None:
        return refused
    user_id = request.form.get("user_id", "").strip()
    try:
        account_id = int(request.form.get("account_id", ""))
        contact_id = int(request.form.get("contact_id", ""))
    except ValueError:
        return _page("admin/error.html", 400, error="Nothing to link: the form names no account and contact.")
    back = url_for("admin_page.dashboard") + "#unmapped"
    what = f"contact {contact_id} of account {account_id}"
    try:
        if request.form.get("create") == "yes" and not _user_exists(user_id):
            service.create_user(user_id)
            audit.info("admin created a user", extra=_who(action="create_user", user_id=user_id))
        outcome = service.add_link(user_id, account_id=account_id, contact_id=contact_id)
    except service.NotFound:
        flash(f"{what}: there is no user {user_id!r}. Tick “create the user” to create it.", "error")
        return _back(back)
    except (service.Conflict, service.Invalid) as exc:
        flash(f"{what}: {exc}", "error")
        return _back(back)
    audit.info(
        "admin linked a contact",
        extra=_who(
            action="link",
            user_id=user_id,
            account_id=account_id,
            contact_id=contact_id,
            added=len(outcome.added),
            moved=len(outcome.moved),
        ),
    )
    moving = " Its archived messages are moving to the user's bucket." if outcome.rehome_queued else ""
    flash(f"{what} is linked to user {user_id}.{moving}", "ok")
    return redirect(url_for("admin_page.user", user_id=user_id), 303)


def _user_exists(user_id: str) -> bool:
    try:
        service.get_user(user_id)
    except service.NotFound:
        return False
    return True


def _who(**values: Any) -> dict[str, Any]:
    return {**values, "client": request.remote_addr}


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
