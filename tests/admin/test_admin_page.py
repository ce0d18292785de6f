"""The admin page: sign-in with the token, the session cookie, CSRF, and the numbers shown."""

from __future__ import annotations

import builtins
import io
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import ADMIN_TOKEN, AUTH, ROOT, add_note, add_user, assert_absent, csrf_of, sign_in

pytestmark = pytest.mark.usefixtures("admin_env")


def session_cookie(response: Any) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("meeting_notes_admin="))


def test_the_page_asks_to_sign_in_first(client: Any) -> None:
    response = client.get("/admin/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")
    form = client.get("/admin/login")
    assert form.status_code == 200 and form.content_type.startswith("text/html")
    assert 'type="password" name="token"' in form.get_data(as_text=True)


def test_signing_in_sets_a_strict_http_only_cookie(client: Any) -> None:
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/")
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # development over plain http
    page = client.get("/admin/")
    assert page.status_code == 200
    assert 'id="today-received"' in page.get_data(as_text=True)


def test_the_cookie_holds_no_token(app: Any, client: Any) -> None:
    response = sign_in(client)
    value = session_cookie(response).split(";")[0].split("=", 1)[1]
    data = app.session_interface.get_signing_serializer(app).loads(value)
    assert set(data) == {"admin", "csrf", "_permanent"}
    assert_absent(str(data), ADMIN_TOKEN)
    assert_absent(value, ADMIN_TOKEN)


def test_cookie_is_secure_in_production(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    client = create_app(replace(settings, app_env="production", secret_key="x" * 32)).test_client()
    assert "Secure" in session_cookie(client.get("/admin/login"))


def test_a_wrong_token_is_refused_and_counted(client: Any, settings: Any) -> None:
    response = sign_in(client, "not-the-token")
    assert response.status_code == 401
    assert "Wrong admin token." in response.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302
    allowed = int(settings.admin_auth_failure_limit.split()[0])
    for _ in range(allowed - 1):
        assert sign_in(client, "guess").status_code == 401
    # The guesser is stopped, on the page and on the API (they share the count for this address).
    assert sign_in(client, "guess").status_code == 429
    assert client.get("/admin/users", headers={"Authorization": "Bearer guess"}).status_code == 429
    # The admins are not: the right token, from the same address, still signs in and still works.
    assert client.get("/admin/users", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert sign_in(client).status_code == 303
    assert client.get("/admin/").status_code == 200


def test_forms_need_their_csrf_token(client: Any) -> None:
    client.get("/admin/login")
    assert client.post("/admin/login", data={"token": ADMIN_TOKEN}).status_code == 400
    assert client.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": "forged"}).status_code == 400
    assert client.get("/admin/").status_code == 302
    sign_in(client)
    assert client.post("/admin/logout", data={}).status_code == 400
    assert client.get("/admin/").status_code == 200  # still signed in
    page = client.get("/admin/").get_data(as_text=True)
    response = client.post("/admin/logout", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/login")
    assert client.get("/admin/").status_code == 302


def test_changing_the_admin_token_signs_everyone_out(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    client = create_app(settings).test_client()
    sign_in(client)
    assert client.get("/admin/").status_code == 200
    rotated = create_app(replace(settings, admin_api_token="a-new-admin-token")).test_client()
    rotated._cookies = client._cookies  # the same browser, after the token changed
    assert rotated.get("/admin/").status_code == 302


def test_page_off_without_a_token_setting(settings: Any, db: Any, redis_conn: Any) -> None:
    from app import create_app

    client = create_app(replace(settings, admin_api_token="")).test_client()
    assert client.get("/admin/login").status_code == 503
    assert client.get("/admin/").status_code == 302


def test_security_headers(client: Any) -> None:
    response = client.get("/admin/login")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<style nonce="{nonce.group(1)}">' in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script" not in response.get_data(as_text=True)


def test_the_numbers_shown(client: Any) -> None:
    add_user("u1")
    for _ in range(3):
        add_note(user_id="u1")
    add_note(status="error", error="gcs unavailable")
    add_note(status="received")
    add_note(contact_id=960, name="<script>alert(1)</script>", phone="+5511900000000")
    sign_in(client)
    html = client.get("/admin/").get_data(as_text=True)

    def shown(element_id: str) -> str:
        found = re.search(rf'id="{element_id}">([^<]*)<', html)
        assert found, element_id
        return found.group(1)

    assert (
        shown("today-received"),
        shown("today-stored"),
        shown("today-errors"),
        shown("today-waiting"),
    ) == (
        "6",
        "4",
        "1",
        "1",
    )
    assert html.count('class="bar"') == 14
    assert re.search(r'data-stage="archive"><td>archive</td><td class="num waiting">1<', html)
    assert re.search(r'data-stage="archive error"><td>archive error</td><td class="num waiting">1<', html)
    assert "gcs unavailable" in html
    assert 'data-contact="1:960"' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no external assets


def test_the_page_never_reads_the_admins_sql_folder(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of sql/ may be renamed or edited by admins: the page reads app/queries only."""
    add_note(status="received")
    folder = (ROOT / "sql").resolve()
    real_open = builtins.open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).resolve().is_relative_to(folder):
            raise FileNotFoundError(f"{file} (sql/ renamed)")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    with pytest.raises(FileNotFoundError):
        (ROOT / "sql" / "10_backlog_by_status_and_age.sql").read_text()
    sign_in(client)
    page = client.get("/admin/")
    assert page.status_code == 200
    assert re.search(
        r'data-stage="archive"><td>archive</td><td class="num waiting">1<', page.get_data(as_text=True)
    )
    stats = client.get("/admin/stats", headers=AUTH)
    assert stats.status_code == 200
    assert {b["stage"]: b["waiting"] for b in stats.get_json()["backlog"]}["archive"] == 1
