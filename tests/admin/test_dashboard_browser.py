"""The admin page in a real browser: headless Chromium against gunicorn on loopback.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so the test needs no extra package. It
signs in by filling the form, then reads the numbers the page shows and compares them with the
database. Skipped, saying why, only where no Chromium is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import ADMIN_TOKEN, Server, add_note, add_user, sql

pytestmark = [pytest.mark.usefixtures("admin_env"), pytest.mark.browser]

CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def _above_four(fd: int) -> int:
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """A headless Chromium and one page, driven with DevTools protocol commands over a pipe."""

    def __init__(self, binary: str, profile: Path):
        self.log = profile.parent / "chromium.log"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Above 4, so that placing them on 3 and 4 in the child cannot overwrite one with the other.
        to_browser_r, from_browser_w = (_above_four(to_browser_r), _above_four(from_browser_w))
        command = " ".join([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"])
        # Chromium reads commands on fd 3 and writes answers on fd 4.
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f"exec {command} 3<&{to_browser_r} 4>&{from_browser_w}"],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115 (the child keeps it)
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=True)

    def log_tail(self) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if "dbus" not in ln]
        return "\n".join(lines[-15:])

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 65536)
                if not chunk:
                    raise RuntimeError("Chromium closed its pipe: " + self.log_tail())
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: bool = False, timeout: float = 30
    ) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def click_and_wait(self, element_id: str) -> None:
        self.events.clear()
        self.evaluate(f"document.getElementById({json.dumps(element_id)}).click()")
        self.wait_for("Page.loadEventFired")

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (make system-deps installs Debian's chromium package)")
    chromium = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


READ_PAGE = """JSON.stringify({
  path: location.pathname,
  cookie: document.cookie,
  today: ['received', 'stored', 'errors', 'waiting'].map(k => document.getElementById('today-' + k).textContent),
  bars: Array.from(document.querySelectorAll('g.bar')).map(g => [g.dataset.day, Number(g.dataset.received)]),
  backlog: Object.fromEntries(Array.from(document.querySelectorAll('#backlog tr[data-stage]')).map(
      tr => [tr.dataset.stage, Number(tr.querySelector('.waiting').textContent)])),
  unmapped: Array.from(document.querySelectorAll('#unmapped tr[data-contact]')).map(
      tr => [tr.dataset.contact, Number(tr.querySelector('.messages').textContent)]),
  errors: Array.from(document.querySelectorAll('#errors td.count')).map(td => Number(td.textContent)),
  svgWidth: document.querySelector('#chart svg').getBoundingClientRect().width
})"""


def test_sign_in_and_read_the_numbers(browser: Chromium, environ: dict[str, str]) -> None:
    from app.admin.api import dashboard

    add_user("u1")
    for _ in range(4):
        add_note(user_id="u1")
    add_note(status="error", error="gcs unavailable")
    add_note(status="error", error="gcs unavailable")
    add_note(status="received")
    for _ in range(3):
        add_note(contact_id=970, name="Unknown", phone="+5511900000001")
    expected = dashboard()

    with Server(environ, workers=1) as server:
        browser.navigate(server.url + "/admin/")
        assert browser.evaluate("location.pathname") == "/admin/login"
        browser.evaluate(f"document.getElementById('token').value = {json.dumps(ADMIN_TOKEN)}")
        browser.click_and_wait("sign-in")
        page = json.loads(browser.evaluate(READ_PAGE))

        assert page["path"] == "/admin/"
        assert page["cookie"] == ""  # HttpOnly: scripts cannot read the session
        today = expected["today"]
        assert page["today"] == [str(today[k]) for k in ("received", "stored", "errors", "waiting")]
        assert page["today"] == ["10", "7", "2", "1"]
        assert page["bars"] == [[d["day"], d["received"]] for d in expected["days"]]
        assert page["backlog"] == {b["stage"]: b["waiting"] for b in expected["backlog"]}
        assert page["backlog"]["archive"] == 1 and page["backlog"]["archive error"] == 2
        assert page["unmapped"] == [
            [f"{c['account_id']}:{c['contact_id']}", c["messages"]] for c in expected["unmapped"]
        ]
        assert ["1:970", 3] in page["unmapped"]
        assert page["errors"] == [2]
        assert page["svgWidth"] > 100  # the inline chart is laid out

        # The session holds across navigations, and new data shows on reload.
        add_note(user_id="u1")
        browser.navigate(server.url + "/admin/")
        assert json.loads(browser.evaluate(READ_PAGE))["today"][0] == "11"

        browser.click_and_wait("sign-out")
        assert browser.evaluate("location.pathname") == "/admin/login"
        browser.navigate(server.url + "/admin/")
        assert browser.evaluate("location.pathname") == "/admin/login"
    assert sql("SELECT count(*) AS n FROM meeting_notes")[0]["n"] == 11


def test_a_wrong_token_in_the_browser(browser: Chromium, environ: dict[str, str]) -> None:
    with Server(environ, workers=1) as server:
        browser.navigate(server.url + "/admin/login")
        browser.evaluate("document.getElementById('token').value = 'not-the-token'")
        browser.click_and_wait("sign-in")
        assert browser.evaluate("location.pathname") == "/admin/login"
        assert browser.evaluate("document.getElementById('error').textContent") == "Wrong admin token."
        browser.navigate(server.url + "/admin/")
        assert browser.evaluate("location.pathname") == "/admin/login"


def click(browser: Chromium, selector: str) -> None:
    """Click the element and wait for the page it leads to."""
    browser.events.clear()
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
    browser.wait_for("Page.loadEventFired")


def colour(browser: Chromium, selector: str, prop: str) -> str:
    return str(browser.evaluate(f"getComputedStyle(document.querySelector({json.dumps(selector)})).{prop}"))


GREEN = "rgb(47, 133, 90)"
NONE = "rgba(0, 0, 0, 0)"


def test_colours_search_user_page_retry_and_link(browser: Chromium, environ: dict[str, str]) -> None:
    add_user("u1")
    for _ in range(3):
        add_note(user_id="u1")
    invoice = add_note(user_id="u1")
    sql("UPDATE meeting_notes SET content = 'Please send the quarterly invoice' WHERE id = %s", (invoice,))
    dead = add_note(status="error", error="gave up after 6 attempts: gcs unavailable")
    add_note(contact_id=970, name="Stranger", phone="+5511900000001")

    with Server(environ, workers=1) as server:
        browser.navigate(server.url + "/admin/login")
        browser.evaluate(f"document.getElementById('token').value = {json.dumps(ADMIN_TOKEN)}")
        browser.click_and_wait("sign-in")
        assert browser.evaluate("location.pathname") == "/admin/"

        # Colours only on the chart and its legend: the table's cells stay unpainted.
        for kind in ("stored", "errors", "waiting"):
            assert colour(browser, f"#days td.{kind}", "backgroundColor") == NONE, kind
        assert colour(browser, "#backlog td.waiting", "backgroundColor") == NONE
        assert colour(browser, ".legend .swatch.stored", "backgroundColor") == GREEN
        assert colour(browser, "rect.bar-stored", "fill") == GREEN

        # Search by words, then follow the result to its user's page.
        browser.evaluate("document.getElementById('search-by').value = 'words'")
        browser.evaluate("document.getElementById('search-q').value = 'INVOICE'")
        click(browser, "#search-go")
        assert browser.evaluate("location.pathname") == "/admin/messages"
        rows = browser.evaluate(
            "Array.from(document.querySelectorAll('#results tr[data-id]')).map(tr => tr.dataset.id)"
        )
        assert rows == [str(invoice)]
        click(browser, f'tr[data-id="{invoice}"] td.user a')
        assert browser.evaluate("location.pathname") == "/admin/user/u1"
        assert browser.evaluate("document.getElementById('count-messages').textContent") == "4"

        # Export the user's archive: the page lists the export it queued.
        click(browser, "#export-request")
        assert browser.evaluate("location.pathname") == "/admin/user/u1"
        assert "is requested" in browser.evaluate("document.querySelector('.notice.ok').textContent")
        assert browser.evaluate("document.querySelectorAll('tr[data-export]').length") == 1

        # Retry the dead letter from the dashboard.
        browser.navigate(server.url + "/admin/")
        click(browser, f'tr[data-dead="archive:{dead}"] button.retry')
        assert browser.evaluate("location.pathname") == "/admin/"
        assert f"archive {dead}: queued again." in browser.evaluate(
            "document.querySelector('.notice.ok').textContent"
        )
        assert sql("SELECT processing_status FROM meeting_notes WHERE id = %s", (dead,))[0][
            "processing_status"
        ] == ("received")

        # Link the unmapped contact to u1.
        form = 'tr[data-contact="1:970"] form'
        browser.evaluate(f"document.querySelector({json.dumps(form + ' input[name=user_id]')}).value = 'u1'")
        click(browser, form + " button")
        assert browser.evaluate("location.pathname") == "/admin/user/u1"
        assert browser.evaluate("document.querySelector('[data-link=\"1:contact_id:970\"]') !== null")
    assert sql("SELECT user_id FROM contact_links WHERE link_value = '970'") == [{"user_id": "u1"}]
