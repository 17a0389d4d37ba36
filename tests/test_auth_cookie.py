"""The browser's refresh cookie: set on sign-in, used with the header guard, rotated, cleared."""

from __future__ import annotations

import secrets

import httpx
import pytest

from gateway.accounts.controller import cookie_request_allowed, refresh_cookie
from gateway.settings import GatewaySettings
from tests.conftest import Stack

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
GUARD = {"X-Requested-With": "coderunner"}


def _set_cookie(res: httpx.Response) -> tuple[str, dict[str, str]]:
    """The one Set-Cookie of an answer: the cr_refresh value and its attributes (lower-case names)."""
    headers = res.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    pair, *attributes = [part.strip() for part in headers[0].split(";")]
    name, _, value = pair.partition("=")
    assert name == "cr_refresh", headers
    attrs = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        attrs[key.lower()] = val
    return value, attrs


def _browser(stack: Stack) -> httpx.Client:
    """A client without a cookie jar of its own: each test says exactly which cookie it sends."""
    return httpx.Client(base_url=stack.base_url, timeout=30)


def _post(stack: Stack, path: str, cookie: str | None, headers: dict[str, str] | None = None) -> httpx.Response:
    with _browser(stack) as c:
        # No body at all: the cookie path.
        return c.post(path, headers={**(headers or {}), **({"Cookie": f"cr_refresh={cookie}"} if cookie else {})})


def _sign_in(stack: Stack) -> httpx.Response:
    email = f"cookie-{secrets.token_hex(6)}@example.org"
    with _browser(stack) as c:
        account = {"email": email, "password": PASSWORD, "displayName": "C", "level": "adults"}
        res = c.post("/auth/register", json=account)
        assert res.status_code == 201, res.text
        res = c.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert res.status_code == 200, res.text
        return res


def test_login_sets_the_refresh_cookie(stack: Stack) -> None:
    res = _sign_in(stack)
    value, attrs = _set_cookie(res)
    # The JSON pair is unchanged for API clients, and the cookie holds the same refresh token.
    assert set(res.json()) == {"accessToken", "refreshToken", "expiresIn", "tokenType"}
    assert value == res.json()["refreshToken"]
    assert "httponly" in attrs
    assert attrs["samesite"] == "Strict"
    assert attrs["path"] == "/auth"
    assert attrs["max-age"] == str(int(stack.env.get("REFRESH_TOKEN_DAYS", "30")) * 86_400)
    # The test stack runs in development (http://127.0.0.1), where a Secure cookie would be dropped.
    assert stack.env.get("APP_ENV", "development") == "development"
    assert "secure" not in attrs


def test_cookie_refresh_rotates_and_reuse_revokes_the_family(stack: Stack) -> None:
    first, _ = _set_cookie(_sign_in(stack))
    res = _post(stack, "/auth/refresh", first, GUARD)
    assert res.status_code == 200, res.text
    second, attrs = _set_cookie(res)
    assert second == res.json()["refreshToken"] != first
    assert attrs["path"] == "/auth" and attrs["samesite"] == "Strict" and "httponly" in attrs
    with _browser(stack) as c:
        me = c.get("/auth/me", headers={"Authorization": f"Bearer {res.json()['accessToken']}"})
        assert me.status_code == 200, me.text
    # The rotated cookie is refused, and its reuse revokes the login: the newest cookie is dead too.
    reused = _post(stack, "/auth/refresh", first, GUARD)
    assert reused.status_code == 401
    assert reused.headers["content-type"].startswith("application/problem+json")
    assert _set_cookie(reused)[1]["max-age"] == "0"  # the browser drops the dead cookie
    assert _post(stack, "/auth/refresh", second, GUARD).status_code == 401


def test_the_cookie_needs_the_header(stack: Stack) -> None:
    token, _ = _set_cookie(_sign_in(stack))
    for headers in ({}, {"X-Requested-With": "XMLHttpRequest"}):
        res = _post(stack, "/auth/refresh", token, headers)
        assert res.status_code == 401, res.text
        assert res.headers["content-type"].startswith("application/problem+json")
        assert "X-Requested-With" in res.json()["detail"]
        assert "set-cookie" not in res.headers
        assert _post(stack, "/auth/logout", token, headers).status_code == 401
    # Neither refusal spent or revoked the token.
    assert _post(stack, "/auth/refresh", token, GUARD).status_code == 200


def test_no_body_and_no_cookie_is_refused(stack: Stack) -> None:
    for path in ("/auth/refresh", "/auth/logout"):
        res = _post(stack, path, None, GUARD)
        assert res.status_code == 401, res.text
        assert res.headers["content-type"].startswith("application/problem+json")


def test_cookie_logout_clears_the_cookie_and_revokes_the_login(stack: Stack) -> None:
    login = _sign_in(stack)
    token, _ = _set_cookie(login)
    res = _post(stack, "/auth/logout", token, GUARD)
    assert res.status_code == 204, res.text
    value, attrs = _set_cookie(res)
    assert value == "" and attrs["max-age"] == "0" and attrs["path"] == "/auth"
    assert _post(stack, "/auth/refresh", token, GUARD).status_code == 401
    with _browser(stack) as c:
        me = c.get("/auth/me", headers={"Authorization": f"Bearer {login.json()['accessToken']}"})
        assert me.status_code == 401


def test_body_refresh_and_logout_still_work_and_win_over_the_cookie(stack: Stack) -> None:
    a = _sign_in(stack).json()["refreshToken"]
    b = _sign_in(stack).json()["refreshToken"]
    with _browser(stack) as c:
        # Body and cookie both present: the body's token is the one used (and rotated).
        res = c.post("/auth/refresh", json={"refreshToken": a}, headers={"Cookie": f"cr_refresh={b}"})
        assert res.status_code == 200, res.text
        assert _set_cookie(res)[0] == res.json()["refreshToken"]
        assert c.post("/auth/logout", json={"refreshToken": res.json()["refreshToken"]}).status_code == 204
    assert _post(stack, "/auth/refresh", b, GUARD).status_code == 200  # b was neither spent nor revoked


def test_the_guard_accepts_only_our_header_value() -> None:
    assert cookie_request_allowed("coderunner")
    for value in (None, "", "XMLHttpRequest", "CodeRunner", "coderunner "):
        assert not cookie_request_allowed(value)


def test_the_cookie_is_secure_outside_development() -> None:
    common = {
        "nats_url": "nats://x",
        "redis_url": "redis://x",
        "mongodb_uri": "mongodb://x",
        "jwt_secret": secrets.token_urlsafe(48),
    }
    staging = refresh_cookie(GatewaySettings(**common, app_env="staging"), "t")["Set-Cookie"]
    development = refresh_cookie(GatewaySettings(**common, app_env="development"), "t")["Set-Cookie"]
    assert staging.endswith("; Secure") and "Secure" not in development
