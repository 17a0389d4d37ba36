"""A student in a real browser (Debian's Chromium via Playwright): type, Run, see live output."""

from __future__ import annotations

import re
import secrets
import shutil

import pytest
from playwright.sync_api import expect

from tests.conftest import Stack

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def runner(stack: Stack):
    app = stack.runner()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(stack: Stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        # Sign up through the page itself (its script runs under the gateway's strict CSP).
        page.goto(stack.base_url + "/")
        page.fill("#email", f"browser-{secrets.token_hex(4)}@example.org")
        page.fill("#password", "correct horse battery")
        page.fill("#name", "Ada")
        page.click("#signup")
        page.wait_for_selector("#editor:not(.hidden)", timeout=15_000)
        assert page.text_content("#who") == "Signed in as Ada"
        yield page
        browser.close()


def test_run_button_streams_output_live(stack: Stack, runner, page, tmp_path) -> None:
    code = "import time\nprint('first line', flush=True)\ntime.sleep(1.0)\nprint('second line')\n"
    page.fill("#code", code)
    page.click("#run")
    # The first line is on screen while the program is still sleeping.
    # Locator waits run in Playwright's isolated world: the page's CSP (no eval) stays enforced.
    expect(page.locator("#output")).to_contain_text("first line", timeout=10_000)
    assert "second line" not in page.text_content("#output")
    assert page.text_content("#status") == "running"
    expect(page.locator("#status")).to_have_text(re.compile(r"^OK"), timeout=10_000)
    assert page.text_content("#output") == "first line\nsecond line\n"
    page.screenshot(path=str(tmp_path / "run.png"))


def test_errors_show_on_stderr_and_output_is_text_not_html(stack: Stack, runner, page) -> None:
    page.fill("#code", "print('<b id=\"pwned\">bold</b>')\n1/0\n")
    page.click("#run")
    expect(page.locator("#status")).to_have_text(re.compile(r"^RUNTIME_ERROR"), timeout=10_000)
    assert page.query_selector("#pwned") is None
    assert "<b id=" in page.text_content("#output")
    assert "ZeroDivisionError" in page.text_content("#output .stderr")
