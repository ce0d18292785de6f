"""The admin page (`/admin/`): a dashboard rendered on the server, a search of messages, a page
per user, and its actions: retry work from the dead letter, link an unmapped contact to a user,
and, on a user's page, export the user's archive (a download URL, deletion) and legal holds.

A browser cannot send a bearer token when it navigates, so the admin signs in once with the
admin token; the session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure in
production, limited to /admin) and holds a keyed fingerprint of the token, never the token, so
changing ADMIN_API_TOKEN signs every browser out. Every form carries a CSRF token kept in the
session, and each action is written to the log (`app.admin.audit`) with the client's address.
The actions go through the same code as the CLI and the admin API: `flask requeue` for a retry,
the users service's `add_link` for a link, `app.records` for exports and holds (which record who
acted: `admin (admin page, <client address>)`).
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
from app.admin.auth import actor, signed_in, token_fingerprint, token_matches
from app.admin.stats import dashboard as numbers
from app.db import DatabaseUnavailable
from app.jobs import QueueUnavailable
from app.records import exports, holds
from app.records.search import BadSearch
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
    shown = {"here": request.full_path.rstrip("?"), **values}  # `here`: where a form comes back to
    html = render_template(
        template,
        csrf=csrf_token(),
        nonce=g.csp_nonce,
        notices=get_flashed_messages(with_categories=True),
        **shown,
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
    """Messages found by the words of their text or transcript, by contact or by user, newest
    first, a page at a time."""
    if not signed_in():
        return redirect(url_for("admin_page.login_form"))
    args = request.args
    by = args.get("by", browse.WORDS)
    q = args.get("q", "")
    filters = browse.Filters(**{name: args.get(name, "").strip() for name in browse.FILTERS})
    shown: dict[str, Any] = {"modes": browse.MODES, "by": by, "q": q, "filters": filters}
    try:
        page = int(args.get("page", "1"))
        results = browse.search(by, q, page, filters=filters, before=args.get("before") or None)
    except (BadSearch, ValueError) as exc:  # a page that is not a number is a ValueError
        error = str(exc) if isinstance(exc, BadSearch) else "the page is a number"
        return _page("admin/messages.html", 400, **shown, error=error, results=None)
    return _page(
        "admin/messages.html",
        **shown,
        error=None,
        results=results,
        timeout_seconds=browse.SEARCH_TIMEOUT_MS // 1000,
    )


@bp.get("/user/<user_id>")
def user(user_id: str) -> Any:
    """A user: its bucket(s), counts, links, orders, latest messages, exports and legal holds."""
    if not signed_in():
        return redirect(url_for("admin_page.login_form"))
    return _user_page(user_id)


def _user_page(user_id: str, **values: Any) -> Any:
    try:
        data = browse.user_page(user_id)
    except service.NotFound:
        return _page("admin/error.html", 404, error=f"There is no user {user_id!r}.")
    here = url_for("admin_page.user", user_id=user_id)  # also after a POST that shows the page
    return _page("admin/user.html", data=data, here=here, **values)


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


# ----------------------------------------------------------------------------------------------
# a user's exports and legal holds (app/records/, as the admin API and the CLI do them)


def _to_user(user_id: str) -> Any:
    return redirect(url_for("admin_page.user", user_id=user_id), 303)


def _export_refused(user_id: str, export_id: int) -> Any | None:
    """The answer to an export's form posted without a session or its CSRF token, or naming an
    export that is not this user's; else None."""
    refused = _refused()
    if refused is not None:
        return refused
    try:
        export = exports.get(export_id)
    except service.NotFound:
        export = None
    if export is None or export["user_id"] != user_id:
        return _page("admin/error.html", 404, error=f"User {user_id} has no export {export_id}.")
    return None


@bp.post("/user/<user_id>/exports")
def export_request(user_id: str) -> Any:
    """Record an export of the user's archive and queue the job that builds it."""
    refused = _refused()
    if refused is not None:
        return refused
    try:
        export = exports.request(user_id, requested_by=actor("admin page"))
    except service.NotFound:
        return _page("admin/error.html", 404, error=f"There is no user {user_id!r}.")
    audit.info(
        "admin requested an export",
        extra=_who(action="export", user_id=user_id, export_id=export["id"], queued=export["queued"]),
    )
    later = "" if export["queued"] else " Redis is not answering: the cron process queues it shortly."
    flash(f"Export {export['id']} of user {user_id} is requested; a worker builds it.{later}", "ok")
    return _to_user(user_id)


@bp.post("/user/<user_id>/exports/<int:export_id>/url")
def export_url(user_id: str, export_id: int) -> Any:
    """A download URL of a finished export, shown on the user's page (recorded, never logged)."""
    refused = _export_refused(user_id, export_id)
    if refused is not None:
        return refused
    try:
        issued = exports.issue_url(export_id, actor("admin page"))
    except service.Conflict as exc:  # not built yet, or deleted
        flash(str(exc), "error")
        return _to_user(user_id)
    audit.info(
        "admin issued an export URL",
        extra=_who(
            action="export_url", user_id=user_id, export_id=export_id, expires_at=issued["expires_at"]
        ),
    )
    return _user_page(user_id, issued=issued)


@bp.post("/user/<user_id>/exports/<int:export_id>/delete")
def export_delete(user_id: str, export_id: int) -> Any:
    """Delete an export's file; refused while the user is on legal hold (the refusal names it)."""
    refused = _export_refused(user_id, export_id)
    if refused is not None:
        return refused
    what = _who(action="export_delete", user_id=user_id, export_id=export_id)
    try:
        exports.delete(export_id, actor("admin page"))
    except holds.OnLegalHold as exc:
        audit.warning("admin export deletion refused", extra={**what, "outcome": "on_legal_hold"})
        flash(str(exc), "error")
        return _to_user(user_id)
    audit.info("admin deleted an export", extra={**what, "outcome": "deleted"})
    flash(f"Export {export_id} is deleted.", "ok")
    return _to_user(user_id)


@bp.post("/user/<user_id>/holds")
def hold_place(user_id: str) -> Any:
    """Put the user on legal hold (a reason is required)."""
    refused = _refused()
    if refused is not None:
        return refused
    try:
        hold = holds.place(user_id, request.form.get("reason", ""), actor("admin page"))
    except service.Invalid as exc:
        flash(f"No hold placed: {exc}.", "error")
        return _to_user(user_id)
    except (service.NotFound, holds.UserErased) as exc:
        return _page("admin/error.html", 404, error=str(exc))
    audit.info("admin placed a legal hold", extra=_who(action="hold", user_id=user_id, hold_id=hold["id"]))
    flash(
        f"User {user_id} is on legal hold #{hold['id']}: nothing of theirs is deleted while it is on.", "ok"
    )
    return _to_user(user_id)


@bp.post("/user/<user_id>/holds/<int:hold_id>/lift")
def hold_lift(user_id: str, hold_id: int) -> Any:
    """Lift one of the user's holds (a reason is optional)."""
    refused = _refused()
    if refused is not None:
        return refused
    try:
        lifted = holds.lift(user_id, hold_id, actor("admin page"), request.form.get("reason") or None)
    except (service.Invalid, service.Conflict, service.NotFound) as exc:  # UserErased is a Conflict
        flash(f"Legal hold #{hold_id} is not lifted: {exc}.", "error")
        return _to_user(user_id)
    audit.info("admin lifted a legal hold", extra=_who(action="unhold", user_id=user_id, hold_id=hold_id))
    left = f" {lifted['holds_left']} other hold(s) still on." if lifted["holds_left"] else ""
    flash(f"Legal hold #{hold_id} of user {user_id} is lifted.{left}", "ok")
    return _to_user(user_id)


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
