"""Accounts and tokens under attack: guessing races, lockout abuse, refresh races, revocation, input."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator

import httpx
import jwt
import pytest

from local import embedded
from tests.conftest import ROOT, Stack, wait_for, wait_ready
from tests.helpers import submit

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
WRONG = "not-the-password"
OWNER, ATTACKER = "198.51.100.23", "203.0.113.7"
_redis_db = 8


@contextlib.contextmanager
def gateway_with(stack: Stack, **env: str) -> Iterator[str]:
    """A second gateway on the same servers with other settings; yields its base URL."""
    port = embedded.free_port()
    global _redis_db
    _redis_db = _redis_db % 15 + 1
    redis_url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{_redis_db}"
    app = stack.spawn("gateway", env={"GATEWAY_PORT": str(port), "REDIS_URL": redis_url, **env})
    wait_ready(app, f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.stop()


def _email() -> str:
    return f"a{time.time_ns()}@example.org"


def _register(client: httpx.Client, email: str, **fields: str) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "displayName": "Kim", "level": "teens", **fields}
    return client.post("/auth/register", json=body)


def _login(client: httpx.Client, email: str, password: str = PASSWORD, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post("/auth/login", json={"email": email, "password": password}, headers=headers)


def _burst(base_url: str, email: str, passwords: list[str], address: str | None = None) -> list[int]:
    """Every password tried at once; the status codes in the same order."""
    headers = {"X-Forwarded-For": address} if address else {}

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as ac:
            results = await asyncio.gather(
                *(ac.post("/auth/login", json={"email": email, "password": p}) for p in passwords)
            )
        return [r.status_code for r in results]

    return asyncio.run(go())


def _set_role(stack: Stack, email: str, role: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "cli", "user-role", email, role],
        env=stack.env, cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


# --- guessing -------------------------------------------------------------------------------------


def test_parallel_guesses_cannot_pass_the_lockout(stack: Stack) -> None:
    email = _email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201
    codes = _burst(stack.base_url, email, [WRONG] * 30)
    assert codes.count(401) <= 5 and codes.count(429) >= 25, codes
    # Once the limit is reached the right password is refused like the wrong ones, even in a crowd.
    codes = _burst(stack.base_url, email, [WRONG] * 10 + [PASSWORD] + [WRONG] * 9)
    assert set(codes) == {429}, codes


def test_an_attacker_cannot_lock_the_owner_out(stack: Stack) -> None:
    email = _email()
    with gateway_with(stack, TRUSTED_PROXIES="127.0.0.1") as url, httpx.Client(base_url=url, timeout=30) as c:
        assert _register(c, email).status_code == 201
        codes = [_login(c, email, WRONG, ATTACKER).status_code for _ in range(6)]
        assert codes == [401] * 5 + [429], codes
        assert _login(c, email, PASSWORD, ATTACKER).status_code == 429
        # The owner, from another address, signs in fine.
        assert _login(c, email, PASSWORD, OWNER).status_code == 200


def test_guesses_from_many_addresses_hit_a_softer_account_limit_but_not_the_owner(stack: Stack) -> None:
    email = _email()
    with gateway_with(stack, TRUSTED_PROXIES="127.0.0.1") as url, httpx.Client(base_url=url, timeout=30) as c:
        assert _register(c, email).status_code == 201
        assert _login(c, email, PASSWORD, OWNER).status_code == 200  # the owner's usual address
        codes: list[int] = []
        for i in range(14):  # 14 addresses x 4 guesses: never 5 from one address, 56 in all
            codes += _burst(url, email, [WRONG] * 4, address=f"192.0.2.{i + 1}")
        assert codes.count(401) <= 50 and codes.count(429) >= 6, codes
        # A new address is refused even with the right password (the account is under attack)...
        assert _login(c, email, PASSWORD, "192.0.2.200").status_code == 429
        # ...but the owner's usual address is not.
        assert _login(c, email, PASSWORD, OWNER).status_code == 200


# --- refresh races --------------------------------------------------------------------------------


def test_concurrent_refreshes_leave_no_live_token(stack: Stack) -> None:
    email = _email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201

    async def trial() -> tuple[str, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as ac:
            login = await ac.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            token = login.json()["refreshToken"]
            results = await asyncio.gather(*(ac.post("/auth/refresh", json={"refreshToken": token}) for _ in range(2)))
        return token, list(results)

    live = []
    for _ in range(12):
        token, results = asyncio.run(trial())
        ok = [r for r in results if r.status_code == 200]
        assert len(ok) <= 1, [r.status_code for r in results]
        with stack.client(anonymous=True) as c:
            for pair in (r.json() for r in ok):
                if c.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]}).status_code != 401:
                    live.append("refresh token")
                if c.get("/auth/me", headers={"Authorization": f"Bearer {pair['accessToken']}"}).status_code != 401:
                    live.append("access token")
            assert c.post("/auth/refresh", json={"refreshToken": token}).status_code == 401
    assert not live, f"{len(live)} tokens survived reuse detection: {live}"


# --- revocation -----------------------------------------------------------------------------------


def test_logout_revokes_the_access_token_at_once(stack: Stack) -> None:
    email = _email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201
        pair = _login(c, email).json()
        other = _login(c, email).json()  # another login (device) of the same user
        bearer = {"Authorization": f"Bearer {pair['accessToken']}"}
        assert c.get("/auth/me", headers=bearer).status_code == 200
        assert c.post("/auth/logout", json={"refreshToken": pair["refreshToken"]}).status_code == 204
        wait_for(lambda: c.get("/auth/me", headers=bearer).status_code == 401, 1.0, what="401 after logout")
        # Only that login is signed out.
        assert c.get("/auth/me", headers={"Authorization": f"Bearer {other['accessToken']}"}).status_code == 200


def test_a_logged_out_logins_sse_tickets_stop_working(stack: Stack) -> None:
    email = _email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201
        pair = _login(c, email).json()
    with stack.client(pair["accessToken"]) as a:
        job = submit(a, "print(1)")
    job_id, ticket = job["jobId"], job["eventsUrl"].split("ticket=", 1)[1]
    # The ticket the gateway minted carries this login's family.
    assert jwt.decode(ticket, options={"verify_signature": False})["fid"]

    def status() -> int:
        with (
            stack.client(anonymous=True) as c,
            c.stream("GET", f"/execution/result/{job_id}/events?ticket={ticket}") as r,
        ):
            return r.status_code

    assert status() == 200  # the control
    with stack.client(anonymous=True) as c:
        assert c.post("/auth/logout", json={"refreshToken": pair["refreshToken"]}).status_code == 204
    wait_for(lambda: status() == 401, 1.0, what="ticket refused after logout")


def test_a_role_change_signs_the_user_out(stack: Stack) -> None:
    student = stack.new_user()
    with stack.client(student) as s:
        job = submit(s, "print('homework')")
    email = _email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201
    _set_role(stack, email, "teacher")
    with stack.client(anonymous=True) as c:
        pair = _login(c, email).json()
    with stack.client(pair["accessToken"]) as t:
        assert t.get(f"/execution/result/{job['jobId']}").status_code == 200  # the control
        _set_role(stack, email, "student")
        assert t.get(f"/execution/result/{job['jobId']}").status_code in (401, 404)
        assert t.get("/auth/me").status_code == 401
    with stack.client(anonymous=True) as c:
        assert c.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]}).status_code == 401
        # Signing in again works, with the new role.
        again = _login(c, email).json()["accessToken"]
        me = c.get("/auth/me", headers={"Authorization": f"Bearer {again}"})
        assert me.status_code == 200 and me.json()["role"] == "student"


# --- input hygiene --------------------------------------------------------------------------------

BAD_NAMES = {
    "blank": "   ",
    "nul": "Kim\x00",
    "control": "Kim\x07\x1b[31m",
    "rlo": "Kim\u202etxt.exe",
    "lri": "\u2066Kim",
    "rlm": "Kim\u200f",
    "invisible": "\u200b\u200b",
}
BAD_EMAILS = {
    "nul": "kim\x00{}@example.org",
    "control": "kim\x01{}@example.org",
    "rlo": "kim\u202e{}@example.org",
    "pdi": "kim{}\u2069@example.org",
    "lrm": "kim\u200e{}@example.org",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_display_names_are_refused(stack: Stack, name: str) -> None:
    with stack.client(anonymous=True) as c:
        res = _register(c, _email(), displayName=name)
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert "displayName" in res.json()["detail"]


@pytest.mark.parametrize("template", BAD_EMAILS.values(), ids=BAD_EMAILS.keys())
def test_bad_emails_are_refused(stack: Stack, template: str) -> None:
    with stack.client(anonymous=True) as c:
        res = _register(c, template.format(time.time_ns()))
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert "email" in res.json()["detail"]


def test_names_are_stripped_and_normalised(stack: Stack) -> None:
    email = _email()
    decomposed = "  Jose\u0301 Nun\u0303ez \t"
    with stack.client(anonymous=True) as c:
        res = _register(c, email, displayName=decomposed)
        assert res.status_code == 201, res.text
        assert res.json()["displayName"] == unicodedata.normalize("NFC", decomposed.strip()) == "José Nuñez"
        # Emoji sequences joined with U+200D are fine.
        assert _register(c, _email(), displayName="Kim \U0001f469\u200d\U0001f4bb").status_code == 201
