"""The problem page in a real browser (Debian's Chromium via Playwright) against the real stack:
statement and examples, the CodeMirror editor, Run with live output, Check examples, Submit with
per-test rows, a cut event stream that resumes without gaps or repeats, the rate limit's countdown,
a busy queue, and code kept across reloads. Screenshots go to the test's tmp dir (and to
docs/screenshots/ with UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from local import embedded
from tests.conftest import ROOT, Stack, wait_for, wait_ready
from tests.test_browser import axe_check

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery"
PROBLEM = 101  # kids, "Say hello": 3 public tests, 3 hidden
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = ROOT / "docs" / "screenshots"

RIGHT = 'name = input()\nprint("Hello, " + name + "!")\n'
WRONG = 'name = input()\nprint("Hello " + name)\n'


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@contextmanager
def student(
    browser: Browser, base_url: str, viewport: dict[str, int] = DESKTOP, *, clock: bool = False
) -> Iterator[Page]:
    """A fresh student on the problem page: signed up through the API, signed in through the app's
    own form (the access token lives in the app's memory only)."""
    context = browser.new_context(viewport=viewport, base_url=base_url)
    try:
        email = f"kid-{secrets.token_hex(5)}@example.org"
        res = context.request.post(
            "/auth/register", data={"email": email, "password": PASSWORD, "displayName": "Ada", "level": "kids"}
        )
        assert res.status == 201, res.text()
        page = context.new_page()
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.csp_violations = violations  # type: ignore[attr-defined]
        page.email = email  # type: ignore[attr-defined]
        if clock:
            page.clock.install()
        page.goto("/#/signin")
        open_problem(page)
        yield page
    finally:
        context.close()


def open_problem(page: Page) -> None:
    """Go to the problem, signing in through the app's own form when it asks."""
    signin = page.get_by_role("button", name="Sign in")
    title = page.locator("#pp-title")
    # Wait until the app has started and shown its first page: a route change before that races it.
    expect(page.locator("body.ready")).to_be_attached(timeout=15_000)
    expect(page.locator("main h1")).to_be_focused(timeout=15_000)
    page.evaluate(f"() => {{ window.location.hash = '#/problem/{PROBLEM}'; }}")
    expect(signin.or_(title)).to_be_visible(timeout=15_000)
    if signin.is_visible():
        page.get_by_label("Email").fill(page.email)  # type: ignore[attr-defined]
        page.get_by_label("Password").fill(PASSWORD)
        signin.click()
        page.wait_for_url(re.compile(r"#/home$"), timeout=15_000)
        # Let the home page finish (its heading takes the focus) before moving on.
        expect(page.locator("main h1")).to_contain_text("Hello", timeout=15_000)
        expect(page.locator("main h1")).to_be_focused()
        page.evaluate(f"() => {{ window.location.hash = '#/problem/{PROBLEM}'; }}")
    expect(title).to_have_text("Say hello", timeout=15_000)
    # The app moves focus to the page's heading once the page is in (then it is ours to move).
    expect(title).to_be_focused()
    expect(page.locator("main > *")).to_have_count(1)  # the problem page alone


def set_code(page: Page, code: str) -> None:
    """Replace the editor's text (inserted as text, so auto-indent and bracket closing stay out)."""
    content = page.locator("#pp-editor .cm-content")
    for _ in range(3):
        content.click()
        if not content.evaluate("el => el.getRootNode().activeElement === el"):
            content.focus()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(code)
        if editor_text(page) == code:
            return
    raise AssertionError(f"the editor holds {editor_text(page)!r}, not the code typed")


def editor_text(page: Page) -> str:
    lines = page.locator("#pp-editor .cm-content .cm-line").all_text_contents()
    return "\n".join(lines)


def shoot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


def wait_done(page: Page, timeout: float = 30_000) -> None:
    expect(page.locator("#pp-status")).to_have_attribute("data-state", "done", timeout=timeout)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width}px wide"


# --- the page ----------------------------------------------------------------------------------------


def test_statement_examples_and_a_keyboard_friendly_editor(seeded: Stack, browser: Browser) -> None:
    with student(browser, seeded.base_url) as page:
        # The statement is Markdown, rendered (its code block is a <pre>).
        expect(page.locator(".pp-statement-text pre")).to_contain_text("Hello, Ada!")
        expect(page.locator(".pp-example")).to_have_count(3)
        expect(page.locator(".pp-example").first).to_contain_text("Ada")
        # The editor: CodeMirror with its own styles applied despite the strict CSP, line numbers,
        # Python highlighting, the starter code.
        editor = page.locator("#pp-editor .cm-editor")
        expect(editor).to_be_visible()
        assert editor.evaluate("el => getComputedStyle(el).display") == "flex"
        expect(page.locator("#pp-editor .cm-lineNumbers")).to_be_visible()
        assert editor_text(page) == "name = input()\nprint()\n"
        expect(page.locator("#pp-editor .cm-content")).to_have_attribute("aria-label", re.compile("Python"))
        # Tab indents inside the editor ...
        page.locator("#pp-editor .cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Tab")
        assert editor_text(page).endswith("\n    ")
        # ... and Escape then Tab leaves it, to the input box.
        page.keyboard.press("Escape")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == "pp-stdin"
        assert page.locator("label[for=pp-stdin]").is_visible()
        assert not page.csp_violations, page.csp_violations  # type: ignore[attr-defined]


def test_run_with_input_shows_output_live(seeded: Stack, runner, browser: Browser, tmp_path: Path) -> None:
    code = (
        "import time\n"
        "name = input()\n"
        'print("Hello, " + name + "!", flush=True)\n'
        "for i in range(3):\n"
        "    time.sleep(0.7)\n"
        '    print("tick", i, flush=True)\n'
    )
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        with student(browser, seeded.base_url, viewport) as page:
            set_code(page, code)
            page.fill("#pp-stdin", "Ada\n")
            page.click("#pp-run")
            output = page.locator("#pp-output")
            # The first line is on screen while the program is still sleeping.
            expect(output).to_contain_text("Hello, Ada!", timeout=15_000)
            assert "tick 2" not in output.text_content()
            assert page.locator("#pp-status").get_attribute("data-state") in ("running", "queued")
            expect(page.locator("#pp-run")).to_be_disabled()
            shoot(page, tmp_path, f"problem-live-run-{label}.png")
            wait_done(page)
            assert output.text_content() == "Hello, Ada!\ntick 0\ntick 1\ntick 2\n"
            assert output.get_attribute("data-reconciled") is None
            expect(page.locator("#pp-status")).to_contain_text("Finished")
            expect(page.locator("#pp-run")).to_be_enabled()
            no_horizontal_scroll(page)
            axe_check(page, f"the problem page after a run ({label})")
            assert not page.csp_violations  # type: ignore[attr-defined]


def test_errors_are_text_and_on_stderr(seeded: Stack, runner, browser: Browser) -> None:
    with student(browser, seeded.base_url) as page:
        set_code(page, "print('<b id=\"pwned\">bold</b>')\n1/0\n")
        page.click("#pp-run")
        wait_done(page)
        expect(page.locator("#pp-status")).to_have_attribute("data-verdict", "RUNTIME_ERROR")
        assert page.query_selector("#pwned") is None
        assert "<b id=" in page.text_content("#pp-output")
        expect(page.locator("#pp-output .stderr")).to_contain_text("ZeroDivisionError")


def test_check_examples_then_submit_wrong_then_right(seeded: Stack, runner, browser: Browser, tmp_path: Path) -> None:
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        with student(browser, seeded.base_url, viewport) as page:
            rows = page.locator("#pp-tests > li")
            set_code(page, WRONG)
            # Check examples: the public tests only.
            page.click("#pp-check")
            wait_done(page)
            expect(rows).to_have_count(3)
            expect(page.locator("#pp-summary")).to_have_attribute("data-verdict", "WRONG_ANSWER")
            expect(page.locator("#pp-summary")).to_contain_text("0 of 3 examples passed")

            # Submit: every test; rows light up, hidden ones locked.
            page.click("#pp-submit")
            expect(rows).to_have_count(6)
            wait_done(page)
            expect(page.locator("#pp-summary")).to_have_attribute("data-verdict", "WRONG_ANSWER")
            expect(page.locator("#pp-summary")).to_contain_text("Score: 0 / 100")
            public = page.locator('#pp-tests > li[data-public="true"]')
            hidden = page.locator('#pp-tests > li[data-public="false"]')
            expect(public).to_have_count(3)
            expect(hidden).to_have_count(3)
            expect(hidden.nth(2)).to_contain_text("Hidden test 3")
            expect(hidden.nth(2)).to_contain_text("🔒")
            expect(hidden.nth(2)).to_have_attribute("data-state", "failed")
            assert hidden.nth(0).locator(".pp-diff").count() == 0  # nothing of a hidden test
            first = public.first
            expect(first).to_have_attribute("data-state", "failed")
            expect(first.locator(".pp-diff-del")).to_contain_text("Hello, Ada!")
            expect(first.locator(".pp-diff-add")).to_contain_text("Hello Ada")
            expect(first.locator(".pp-io--expected")).to_have_text("Hello, Ada!\n")
            no_horizontal_scroll(page)
            axe_check(page, f"a graded submission with failed tests ({label})")
            shoot(page, tmp_path, f"problem-graded-failed-{label}.png")

            set_code(page, RIGHT)
            page.click("#pp-submit")
            wait_done(page)
            expect(page.locator("#pp-summary")).to_have_attribute("data-verdict", "ACCEPTED")
            expect(page.locator("#pp-score")).to_have_attribute("data-score", "100")
            expect(page.locator('#pp-tests > li[data-state="passed"]')).to_have_count(6)
            assert not page.csp_violations  # type: ignore[attr-defined]


def test_feedback_for_a_crash_names_the_line(seeded: Stack, runner, browser: Browser) -> None:
    with student(browser, seeded.base_url) as page:
        set_code(page, 'name = input()\nprint("Hello, " + nam + "!")\n')
        page.click("#pp-submit")
        wait_done(page)
        expect(page.locator("#pp-summary")).not_to_have_attribute("data-verdict", "ACCEPTED")
        expect(page.locator("#pp-tests > li").first).to_have_attribute("data-verdict", "RUNTIME_ERROR")
        feedback = page.locator("#pp-tests .pp-feedback").first
        expect(feedback).to_contain_text("line 2")
        expect(feedback.locator(".pp-feedback-code")).to_contain_text("nam")


def test_code_is_kept_across_a_reload(seeded: Stack, browser: Browser) -> None:
    with student(browser, seeded.base_url) as page:
        set_code(page, "print('kept for later')\n")
        key = f"cr:code:{PROBLEM}"
        assert page.evaluate(f"() => localStorage.getItem('{key}')") == "print('kept for later')\n"
        page.reload()
        open_problem(page)
        assert editor_text(page) == "print('kept for later')\n"
        # Start over brings the starter code back.
        page.click("#pp-reset")
        assert editor_text(page) == "name = input()\nprint()\n"


# --- a cut event stream ------------------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy in front of the gateway that can cut the event streams passing through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[tuple[socket.socket, socket.socket, dict[str, bool]]] = []
        self.requests: list[bytes] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            info = {"events": False}
            with self.lock:
                self.conns.append((client, upstream, info))
            threading.Thread(target=self._pump, args=(client, upstream, info, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, info, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, info: dict[str, bool], outgoing: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outgoing and data.startswith(b"GET ") and b"/events" in data.split(b"\r\n", 1)[0]:
                    info["events"] = True
                    with self.lock:
                        self.requests.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut_events(self) -> int:
        cut = 0
        with self.lock:
            for client, upstream, info in self.conns:
                if info["events"] and client.fileno() != -1:
                    for s in (client, upstream):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                            s.close()
                        except OSError:
                            pass
                    info["events"] = False
                    cut += 1
        return cut

    def close(self) -> None:
        self.closed = True
        self.server.close()
        with self.lock:
            for client, upstream, _ in self.conns:
                client.close()
                upstream.close()


def test_a_cut_event_stream_resumes_without_gaps_or_repeats(seeded: Stack, runner, browser: Browser) -> None:
    port = int(seeded.base_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port)
    try:
        with student(browser, f"http://127.0.0.1:{proxy.port}") as page:
            slow = "import time\nfor i in range(1, 9):\n    print('line', i, flush=True)\n    time.sleep(0.4)\n"
            set_code(page, slow)
            page.click("#pp-run")
            output = page.locator("#pp-output")
            expect(output).to_contain_text("line 2", timeout=15_000)
            assert proxy.cut_events() == 1
            assert "line 8" not in output.text_content()  # cut mid-run
            # The browser reconnects by itself, with Last-Event-ID.
            wait_for(lambda: len(proxy.requests) >= 2, 15, what="a second events request")
            assert b"last-event-id:" in proxy.requests[1].lower()
            wait_done(page)
            assert output.text_content() == "".join(f"line {i}\n" for i in range(1, 9))
            # The live events made it whole: the final document had nothing to correct.
            assert output.get_attribute("data-reconciled") is None
            assert int(output.get_attribute("data-connections") or 0) >= 2
    finally:
        proxy.close()


# --- limits ------------------------------------------------------------------------------------------


@contextmanager
def limited_gateway(stack: Stack, **env: str) -> Iterator[str]:
    port = embedded.free_port()
    app = stack.spawn("gateway", env={"GATEWAY_PORT": str(port), **env}, name=f"gateway-{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(app, base)
        yield base
    finally:
        app.stop()


def test_the_rate_limit_shows_a_countdown_and_reenables(seeded: Stack, runner, browser: Browser) -> None:
    with limited_gateway(seeded, EXEC_LIMIT_PER_MINUTE="2") as base, student(browser, base, clock=True) as page:
        set_code(page, "print('hi')\n")
        for _ in range(2):
            page.click("#pp-run")
            wait_done(page)
        page.click("#pp-run")
        countdown = page.locator("#pp-countdown")
        expect(countdown).to_be_visible(timeout=10_000)
        expect(countdown).to_contain_text(re.compile(r"try again in \d+ seconds?"))
        left = int(countdown.get_attribute("data-seconds") or 0)
        assert 1 <= left <= 60
        expect(page.locator("#pp-status")).to_have_attribute("data-reason", "rate-limited")
        expect(page.locator("#pp-run")).to_be_disabled()
        expect(page.locator("#pp-submit")).to_be_disabled()
        page.clock.fast_forward((left + 1) * 1000)
        expect(countdown).to_be_hidden(timeout=5_000)
        expect(page.locator("#pp-run")).to_be_enabled()
        expect(page.locator("#pp-status")).to_have_text("You can run your code again.")


def test_a_busy_queue_says_how_long(seeded: Stack, runner, browser: Browser) -> None:
    with limited_gateway(seeded, MAX_QUEUE_DEPTH="1") as base, student(browser, base, clock=True) as page:
        set_code(page, "print('hi')\n")
        # Someone else's slow job fills the (one-job) queue.
        with seeded.client() as c:
            res = c.post("/execution/submit", json={"code": "import time\ntime.sleep(4)\n"})
            assert res.status_code == 202, res.text
        with httpx.Client(base_url=base) as c:
            wait_for(lambda: c.get("/execution/queue/stats").json()["depth"] >= 1, 10, what="a busy queue")
        page.click("#pp-run")
        countdown = page.locator("#pp-countdown")
        expect(countdown).to_contain_text(re.compile(r"busy right now, about \d+ seconds?"), timeout=10_000)
        expect(page.locator("#pp-status")).to_have_attribute("data-reason", "busy")
        left = int(countdown.get_attribute("data-seconds") or 0)
        page.clock.fast_forward((left + 1) * 1000)
        expect(page.locator("#pp-run")).to_be_enabled(timeout=5_000)


def test_signed_out_goes_to_sign_in_and_keeps_the_code(seeded: Stack, browser: Browser) -> None:
    with student(browser, seeded.base_url) as page:
        set_code(page, "print('do not lose me')\n")
        # Signing out elsewhere ends this login: its access token and refresh cookie stop working.
        res = page.context.request.post("/auth/logout", headers={"X-Requested-With": "coderunner"})
        assert res.status in (200, 204), res.text()
        page.context.clear_cookies()
        page.click("#pp-run")
        page.wait_for_url(re.compile(r"#/signin$"), timeout=15_000)
        assert page.evaluate(f"() => localStorage.getItem('cr:code:{PROBLEM}')") == "print('do not lose me')\n"
