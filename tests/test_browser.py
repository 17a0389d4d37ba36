"""The browser app in a real browser (Debian's Chromium via Playwright) against the real stack.

A student signs up through the page (age 10: the kids level), sees the kids' lessons and problems,
opens their progress and a result, signs out and in again; a teacher edits a problem. Every page
is checked by axe-core (no serious or critical violation), and no page may log an error (a CSP
violation is one) or ask anything of another origin. Screenshots land in the test's tmp dir, and
in docs/screenshots/ too with UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ROOT, Stack, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"  # copied from web/node_modules by `make web`
SCREENSHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()


# Answers the app expects and handles: a page load signed out (no refresh cookie) and a wrong password.
EXPECTED_FAILURES = ("/auth/refresh", "/auth/login")


class Watched:
    """A page, and every console error, page error and request to another origin it produced."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: None if r.url.startswith((origin, "data:")) else self.foreign.append(r.url))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and url.endswith(EXPECTED_FAILURES):
            return
        self.errors.append(f"{message.text} ({url})")

    def check(self) -> None:
        # A CSP violation is a console error ("Refused to apply inline style ...").
        errors, foreign = self.errors[:], self.foreign[:]
        self.errors.clear()
        self.foreign.clear()
        assert errors == [], errors
        assert foreign == [], f"requests to other origins: {foreign}"


@pytest.fixture(scope="module")
def student(seeded: Stack, browser: Browser) -> Iterator[dict[str, Any]]:
    """One student's browser tab, shared by the tests of this module in order."""
    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(context.new_page(), seeded.base_url)
    email = f"kid-{secrets.token_hex(4)}@example.org"
    yield {"page": watched.page, "watched": watched, "email": email}
    context.close()


@pytest.fixture(autouse=True)
def _no_page_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "student" in request.fixturenames:
        request.getfixturevalue("student")["watched"].check()


def axe_check(page: Page, what: str) -> None:
    """axe-core on the current page: no serious or critical violation."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated over the DevTools protocol: the page's CSP (no inline script) does not apply.
        page.evaluate(AXE.read_text())
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], f"axe on {what}: {bad}"


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """Desktop and phone screenshots; the phone size must not scroll sideways."""
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {size} scrolls sideways by {overflow}px"
        path = tmp_path / f"{name}-{size}.png"
        page.screenshot(path=str(path), full_page=size == "desktop")
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
    page.set_viewport_size(DESKTOP)


def heading(page: Page) -> Any:
    return page.locator("main h1")


def kids_lessons(stack: Stack) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        sessions = c.get("/problems/sessions", params={"level": "kids"}).json()
        return [c.get(f"/problems/sessions/{s['id']}").json() for s in sessions]


def test_sign_up_by_age_and_see_the_kids_lessons(seeded: Stack, student: dict[str, Any], tmp_path: Path) -> None:
    page: Page = student["page"]
    page.goto(seeded.base_url + "/")
    expect(page).to_have_url(re.compile(r"#/signin$"), timeout=15_000)
    expect(heading(page)).to_have_text("Sign in")
    axe_check(page, "sign in")

    page.get_by_role("link", name="Create an account").click()
    expect(heading(page)).to_have_text("Create your account")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Email").fill(student["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("How old are you?").fill("10")
    page.get_by_label("How old are you?").press("Tab")  # "change": the levels for age 10 are asked for
    kids = page.locator('input[name="level"][value="kids"]')
    expect(kids).to_be_checked(timeout=10_000)
    axe_check(page, "sign up")
    page.get_by_role("button", name="Create my account").click()

    expect(heading(page)).to_have_text("Hello, Ada!", timeout=15_000)
    expect(page).to_have_url(re.compile(r"#/home$"))
    lessons = kids_lessons(seeded)
    assert lessons, "the seeded curriculum has kids' sessions"
    for lesson in lessons:
        section = page.locator("section.session", has=page.get_by_role("heading", name=lesson["title"]))
        expect(section).to_have_count(1)
        links = section.get_by_role("link")
        expect(links).to_have_text([p["title"] for p in lesson["problems"]])
    first = lessons[0]["problems"][0]
    expect(page.locator("#next-problem")).to_have_text(first["title"])
    assert page.get_attribute("#next-problem", "href") == f"#/problem/{first['id']}"
    assert page.locator(".solved-badge").count() == 0
    axe_check(page, "home")
    screenshot(page, tmp_path, "home")


def test_progress_history_and_a_result(seeded: Stack, runner: object, student: dict[str, Any], tmp_path: Path) -> None:
    page: Page = student["page"]
    problem = kids_lessons(seeded)[0]["problems"][0]
    assert problem["slug"] == "hello", "the first kids problem is 'Say hello' (curriculum/content/kids)"
    # A free run and a solved problem, submitted as this student (a second login).
    with httpx.Client(base_url=seeded.base_url, timeout=30) as c:
        token = c.post("/auth/login", json={"email": student["email"], "password": PASSWORD}).json()["accessToken"]
        c.headers["Authorization"] = f"Bearer {token}"
        job = c.post("/execution/submit", json={"code": "print('hello from the test')"}).json()
        solution = 'name = input()\nprint("Hello, " + name + "!")\n'
        graded = c.post("/execution/submit/grade", json={"code": solution, "problemId": problem["id"]}).json()
        for j in (job, graded):
            wait_for(
                lambda j=j: c.get(f"/execution/result/{j['jobId']}").json()["status"] in ("completed", "failed"),
                30,
                what="the job's result",
            )
        assert c.get(f"/execution/result/{graded['jobId']}").json()["grade"]["verdict"] == "ACCEPTED"
        wait_for(lambda: c.get("/execution/history").json()["total"] >= 2, 30, what="the history")

    page.get_by_role("link", name="My progress").click()
    expect(heading(page)).to_have_text("My progress", timeout=15_000)
    expect(page.locator("#history tbody tr")).to_have_count(2, timeout=10_000)
    expect(page.locator("#history")).to_contain_text("Ran fine")
    expect(page.get_by_text("days in a row").or_(page.get_by_text("day in a row"))).to_be_visible()
    axe_check(page, "progress")
    screenshot(page, tmp_path, "progress")

    page.locator(f'#history a[href="#/result/{job["jobId"]}"]').click()
    expect(heading(page)).to_have_text("Result: Ran fine", timeout=10_000)
    expect(page.locator("pre.output").first).to_have_text("hello from the test\n")
    axe_check(page, "result")

    page.get_by_role("link", name="My lessons").click()
    expect(heading(page)).to_have_text("Hello, Ada!")
    # The progress projection is eventually consistent: the solved mark appears on a later visit.

    def solved_mark() -> bool:
        page.get_by_role("link", name="My lessons").click()
        page.wait_for_selector("main:not([aria-busy])")
        return page.locator(".solved-badge").count() >= 1

    wait_for(solved_mark, 20, interval=0.5, what="the solved mark on the home page")


def test_a_reload_keeps_the_sign_in(seeded: Stack, student: dict[str, Any]) -> None:
    page: Page = student["page"]
    page.reload()
    expect(heading(page)).to_have_text("Hello, Ada!", timeout=15_000)
    assert page.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))").count("refreshToken") == 0


def test_sign_out_and_in_again(seeded: Stack, student: dict[str, Any]) -> None:
    page: Page = student["page"]
    page.get_by_role("button", name="Sign out").click()
    expect(heading(page)).to_have_text("Sign in", timeout=10_000)
    expect(page.get_by_role("link", name="My lessons")).to_have_count(0)
    page.reload()  # the logout revoked the login and cleared the cookie: still signed out
    expect(heading(page)).to_have_text("Sign in", timeout=10_000)
    page.get_by_label("Email").fill(student["email"])
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(heading(page)).to_have_text("Hello, Ada!", timeout=10_000)
    # Keyboard only: the page's heading has the focus; backwards through the navigation is the
    # skip link, the first stop of the page; Enter on it moves to the page's content.
    assert page.evaluate("document.activeElement.tagName") == "H1"
    visited = []
    for _ in range(8):
        page.keyboard.press("Shift+Tab")
        visited.append(page.evaluate("document.activeElement.textContent.trim()"))
        if page.evaluate("document.activeElement.className") == "skip-link":
            break
    assert visited[-1] == "Skip to the page", visited
    assert {"My lessons", "My progress", "Sign out"} <= set(visited), visited
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    expect(page).to_have_url(re.compile(r"#/home$"))


def test_a_teacher_edits_a_problem(seeded: Stack, browser: Browser) -> None:
    email = f"teacher-{secrets.token_hex(4)}@example.org"
    seeded.new_user(email)
    subprocess.run(
        [sys.executable, "-m", "cli", "user-role", email, "teacher"],
        env=seeded.env, cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with httpx.Client(base_url=seeded.base_url, timeout=30) as c:
        token = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["accessToken"]
    teacher = seeded.client(token)
    created = teacher.post(
        "/problems",
        json={
            "slug": f"p-{secrets.token_hex(4)}",
            "title": "Echo",
            "level": "adults",
            "session": "adults-strings",
            "order": 99,
            "statement": "Echo the line.",
            "solution": "print(input())",
            "tests": [{"id": "t1", "public": True, "stdin": "hi\n", "expected": "hi\n"}],
        },
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(context.new_page(), seeded.base_url)
    page = watched.page
    try:
        page.goto(seeded.base_url + "/#/signin")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(heading(page)).to_have_text("Hello, T!", timeout=15_000)
        page.get_by_role("link", name="Teacher").click()
        expect(heading(page)).to_have_text("Problems", timeout=15_000)
        axe_check(page, "teacher list")
        page.get_by_role("link", name="Edit Echo", exact=True).click()
        expect(heading(page)).to_have_text("Edit: Echo", timeout=10_000)
        page.get_by_label("Title").fill("Echo twice")
        page.get_by_label("Statement (Markdown)").fill("Print the line **twice**.")
        page.get_by_role("button", name="Add a test").click()
        page.locator("#test-1-stdin").fill("yo\n")
        page.locator("#test-1-expected").fill('"yo\\nyo\\n"')
        page.locator("#test-1-public").uncheck()
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".form-status")).to_contain_text("Saved", timeout=10_000)
        axe_check(page, "teacher edit")
        stored = teacher.get(f"/problems/{pid}").json()
        assert stored["title"] == "Echo twice"
        assert stored["statement"] == "Print the line **twice**."
        # The form edits what it shows and keeps the rest (the solution is not on the form).
        assert teacher.get(f"/problems/{pid}/edit").json()["solution"] == "print(input())"
        tests = teacher.get(f"/problems/{pid}/tests/all").json()
        assert [(t["id"], t["public"], t["stdin"], t["expected"]) for t in tests] == [
            ("t1", True, "hi\n", "hi\n"),
            ("t2", False, "yo\n", "yo\nyo\n"),
        ]
        watched.check()
    finally:
        context.close()
        teacher.delete(f"/problems/{pid}")
        teacher.close()
