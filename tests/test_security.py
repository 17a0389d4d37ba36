"""The gateway's security: accounts, tokens, ownership, quotas, backpressure, hardening."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from local import embedded
from tests.conftest import App, Stack, wait_for, wait_ready
from tests.helpers import json_lines, read_events, submit

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
_redis_db = 0


@pytest.fixture(scope="module")
def runner(stack: Stack) -> Iterator[App]:
    app = stack.runner()
    yield app
    app.stop()


@contextlib.contextmanager
def gateway_with(stack: Stack, **env: str) -> Iterator[str]:
    """A second gateway on the same servers with other settings; yields its base URL."""
    port = embedded.free_port()
    # Its own Redis database: quota counters are shared by replicas, so they must not see the
    # counts the module's main gateway (with other limits) made.
    global _redis_db
    _redis_db = _redis_db % 15 + 1
    redis_url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{_redis_db}"
    app = stack.spawn("gateway", env={"GATEWAY_PORT": str(port), "REDIS_URL": redis_url, **env})

    wait_ready(app, f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.stop()


def _register(client: httpx.Client, email: str) -> httpx.Response:
    return client.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "displayName": "Kim", "level": "teens"}
    )


def _unique_email() -> str:
    return f"u{time.time_ns()}@example.org"


# --- accounts -------------------------------------------------------------------------------------


def test_register_login_me_and_duplicate_email(stack: Stack) -> None:
    email = _unique_email()
    with stack.client(anonymous=True) as c:
        res = _register(c, email.upper())
        assert res.status_code == 201
        assert res.json()["email"] == email and res.json()["role"] == "student"
        assert "password" not in res.text
        assert _register(c, email).status_code == 409
        tokens = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        assert tokens["tokenType"] == "Bearer" and tokens["expiresIn"] == 900
        me = c.get("/auth/me", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
        assert me.json()["displayName"] == "Kim" and me.json()["level"] == "teens"


def test_login_failures_say_nothing_and_are_slowed(stack: Stack) -> None:
    email = _unique_email()
    with stack.client(anonymous=True) as c:
        _register(c, email)
        wrong_password = c.post("/auth/login", json={"email": email, "password": "nope-nope-nope"})
        wrong_email = c.post("/auth/login", json={"email": "x" + email, "password": PASSWORD})
        assert wrong_password.status_code == wrong_email.status_code == 401
        assert wrong_password.json()["detail"] == wrong_email.json()["detail"]
        for _ in range(4):
            c.post("/auth/login", json={"email": email, "password": "nope-nope-nope"})
        blocked = c.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0


def test_passwords_are_hashed_with_argon2id(stack: Stack, shared_servers) -> None:
    from pymongo import MongoClient

    email = _unique_email()
    with stack.client(anonymous=True) as c:
        _register(c, email)
    doc = MongoClient(shared_servers["mongodb"])["coderunner"]["users"].find_one({"email": email})
    assert doc["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")


# --- tokens ---------------------------------------------------------------------------------------


def _claims(stack: Stack) -> dict:
    with stack.client() as c:
        me = c.get("/auth/me").json()
    now = int(time.time())
    return {"sub": me["id"], "role": "student", "iat": now, "exp": now + 600, "iss": "coderunner",
            "aud": "coderunner-api"}  # fmt: skip


def _me_with(stack: Stack, token: str) -> int:
    with stack.client(token) as c:
        return c.get("/auth/me").status_code


def test_forged_tokens_are_rejected(stack: Stack) -> None:
    secret = stack.env["JWT_SECRET"]
    claims = _claims(stack)
    assert _me_with(stack, jwt.encode(claims, secret, algorithm="HS256")) == 200  # the control
    # alg "none"
    assert _me_with(stack, jwt.encode(claims, None, algorithm="none")) == 401
    # HS/RS confusion: an RS256 token (here signed with a key the attacker made) is never accepted.
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _me_with(stack, jwt.encode(claims, key, algorithm="RS256")) == 401
    # HS512 with the right secret is still another algorithm.
    assert _me_with(stack, jwt.encode(claims, secret, algorithm="HS512")) == 401
    # Expired, wrong audience, wrong issuer, missing claims, wrong key.
    assert _me_with(stack, jwt.encode({**claims, "exp": int(time.time()) - 5}, secret, algorithm="HS256")) == 401
    assert _me_with(stack, jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS256")) == 401
    assert _me_with(stack, jwt.encode({**claims, "iss": "evil"}, secret, algorithm="HS256")) == 401
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    assert _me_with(stack, jwt.encode(no_exp, secret, algorithm="HS256")) == 401
    assert _me_with(stack, jwt.encode(claims, "x" * 48, algorithm="HS256")) == 401
    # A job's SSE ticket is not an access token.
    with stack.client() as c:
        job = submit(c, "print(1)")
    ticket = job["eventsUrl"].split("ticket=")[1]
    assert _me_with(stack, ticket) == 401


def test_refresh_rotates_and_reuse_revokes_the_family(stack: Stack) -> None:
    email = _unique_email()
    with stack.client(anonymous=True) as c:
        _register(c, email)
        first = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        second = c.post("/auth/refresh", json={"refreshToken": first["refreshToken"]})
        assert second.status_code == 200
        second_tokens = second.json()
        assert second_tokens["refreshToken"] != first["refreshToken"]
        # Reusing the rotated token: refused, and the whole login is revoked.
        assert c.post("/auth/refresh", json={"refreshToken": first["refreshToken"]}).status_code == 401
        assert c.post("/auth/refresh", json={"refreshToken": second_tokens["refreshToken"]}).status_code == 401
        # Another login is its own family; logout revokes it.
        other = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        assert c.post("/auth/logout", json={"refreshToken": other["refreshToken"]}).status_code == 204
        assert c.post("/auth/refresh", json={"refreshToken": other["refreshToken"]}).status_code == 401


def test_concurrent_refreshes_with_one_token_give_one_pair(stack: Stack) -> None:
    email = _unique_email()
    with stack.client(anonymous=True) as c:
        _register(c, email)
        token = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["refreshToken"]

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as ac:
            results = await asyncio.gather(*(ac.post("/auth/refresh", json={"refreshToken": token}) for _ in range(8)))
        return sorted(r.status_code for r in results)

    codes = asyncio.run(race())
    assert codes.count(200) == 1 and codes.count(401) == 7, codes


# --- ownership ------------------------------------------------------------------------------------


def test_jobs_are_visible_to_their_owner_only(stack: Stack, runner) -> None:
    alice, bob = stack.new_user(), stack.new_user()
    with stack.client(alice) as a:
        job = submit(a, "print('alice only')")
        assert read_events(a, job["eventsUrl"])[-1].data["stdout"] == "alice only\n"
        other = submit(a, "print(2)")
    job_id = job["jobId"]
    with stack.client(bob) as b:
        assert b.get(f"/execution/result/{job_id}").status_code == 404
        assert b.get(f"/execution/result/{job_id}/events").status_code == 404
        assert b.get("/execution/result/doesnotexist").status_code == 404  # same answer as no job
    alice_ticket = job["eventsUrl"].split("ticket=")[1]
    with stack.client(anonymous=True) as anon:
        assert anon.get(f"/execution/result/{job_id}").status_code == 401
        assert anon.get(f"/execution/result/{job_id}/events").status_code == 401
        assert anon.post("/execution/submit", json={"code": "print(1)"}).status_code == 401
        # The ticket alone is enough for EventSource, which cannot send headers...
        assert read_events(anon, job["eventsUrl"])[-1].data["stdout"] == "alice only\n"
        # ...and it opens that one job's stream only.
        stolen = anon.get(f"/execution/result/{other['jobId']}/events?ticket={alice_ticket}")
        assert stolen.status_code == 401


# --- quotas ---------------------------------------------------------------------------------------


def test_eleven_quick_submissions_give_one_429_with_headers(stack: Stack) -> None:
    with gateway_with(stack, EXEC_LIMIT_PER_MINUTE="10", EXEC_LIMIT_PER_DAY="500") as url:
        token = stack.new_user()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            responses = [c.post("/execution/submit", json={"code": "print(1)"}) for _ in range(11)]
    codes = [r.status_code for r in responses]
    assert codes == [202] * 10 + [429], codes
    ok, limited = responses[0], responses[-1]
    assert ok.headers["RateLimit-Policy"] == '"exec-minute";q=10;w=60, "exec-day";q=500;w=86400'
    assert ok.headers["RateLimit"].startswith('"exec-minute";r=9;t=')
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit"].startswith('"exec-minute";r=0;t=')
    assert limited.headers["content-type"].startswith("application/problem+json")


def test_fifty_concurrent_submissions_accept_exactly_ten(stack: Stack) -> None:
    with gateway_with(stack, EXEC_LIMIT_PER_MINUTE="10") as url:
        token = stack.new_user()

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as ac:
                results = await asyncio.gather(
                    *(ac.post("/execution/submit", json={"code": f"print({i})"}) for i in range(50))
                )
            return [r.status_code for r in results]

        codes = asyncio.run(burst())
    assert codes.count(202) == 10 and codes.count(429) == 40, codes


def test_api_quota_cannot_be_dodged_with_forwarded_headers(stack: Stack) -> None:
    with gateway_with(stack, API_LIMIT_ANONYMOUS_PER_MINUTE="5") as url, httpx.Client(base_url=url, timeout=30) as c:
        codes = [
            c.get("/execution/queue/stats", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(6)
        ]
        assert codes == [200] * 5 + [429]
        assert c.get("/health").status_code == 200  # probes are not counted


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_quota_counts_students_per_user_anonymous_per_address_and_caps_the_address(stack: Stack) -> None:
    """One address (a school behind NAT): each signed-in student has their own allowance (keyed by
    the address, the first student's fourth request would have used the whole class's); requests
    without a valid token share the address's anonymous allowance, forged tokens included (they
    cannot each buy a fresh one); and the address has a ceiling over all of them."""
    forged = [
        jwt.encode(
            {"sub": f"user-{i}", "role": "student", "iss": "coderunner", "aud": "coderunner-api", "exp": 2**31},
            "not-the-gateway-secret-but-long-enough-for-hs256",
            algorithm="HS256",
        )
        for i in range(4)
    ]
    students = [stack.new_user(), stack.new_user()]
    limits = {
        "API_LIMIT_PER_MINUTE": "3",
        "API_LIMIT_ANONYMOUS_PER_MINUTE": "3",
        "API_LIMIT_PER_ADDRESS_PER_MINUTE": "8",
    }
    with gateway_with(stack, **limits) as url, httpx.Client(base_url=url, timeout=30) as c:

        def me(tokens: list[str]) -> list[httpx.Response]:
            return [c.get("/auth/me", headers=_bearer(token)) for token in tokens]

        anonymous = me(forged)  # the address: 3 used
        assert [r.status_code for r in anonymous] == [401, 401, 401, 429]
        assert anonymous[-1].headers["RateLimit"].startswith('"api-anonymous";r=0')
        first = me([students[0]] * 4)  # the address: 6 used
        assert [r.status_code for r in first] == [200, 200, 200, 429]
        assert first[-1].headers["RateLimit"].startswith('"api";r=0')
        second = me([students[1]] * 3)  # the same address, another student: 2 more, then its ceiling
        assert [r.status_code for r in second] == [200, 200, 429]
        assert second[-1].headers["RateLimit"].startswith('"api-address";r=0')


def test_a_long_sign_in_queue_answers_503_at_once_and_locks_nobody_out(stack: Stack) -> None:
    """With the password-hashing queue over SIGN_IN_MAX_WAIT_SECONDS, sign-ins are refused with
    Retry-After instead of waiting; refusals are not failed attempts, so the account still signs in."""
    email = _unique_email()
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        assert _register(c, email).status_code == 201
    with gateway_with(stack, SIGN_IN_MAX_WAIT_SECONDS="0.001") as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as ac:
                body = {"email": email, "password": PASSWORD}
                return await asyncio.gather(*(ac.post("/auth/login", json=body) for _ in range(20)))

        answers = asyncio.run(burst())
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503} and 200 in codes, codes
        refused = [r for r in answers if r.status_code == 503]
        assert len(refused) >= 6, codes  # more than the 5 failed attempts that would lock the address
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        assert refused[0].json()["type"].endswith("/sign-in-busy")
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200


# --- backpressure ---------------------------------------------------------------------------------


def test_full_backlog_gives_503_with_an_estimate(stack: Stack, runner) -> None:
    runner.stop()  # nothing consumes: the backlog only grows
    try:
        with gateway_with(stack, MAX_QUEUE_DEPTH="3") as url:
            token = stack.new_user()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                base = c.get("/execution/queue/stats").json()["depth"]
                codes = []
                for i in range(max(0, 3 - base)):
                    codes.append(c.post("/execution/submit", json={"code": f"print({i})"}).status_code)
                assert set(codes) <= {202}
                stats = wait_for(
                    lambda: (s := c.get("/execution/queue/stats").json())["depth"] >= 3 and s, 10, what="backlog"
                )
                assert isinstance(stats, dict)
                assert stats["capacity"] == 3 and stats["pending"] + stats["inFlight"] == stats["depth"]
                full = c.post("/execution/submit", json={"code": "print('too many')"})
                assert full.status_code == 503
                assert int(full.headers["Retry-After"]) >= 1
                assert "estimated wait" in full.json()["detail"]
    finally:
        runner.start().wait_log("pulling with concurrency")


# --- hardening ------------------------------------------------------------------------------------


def test_security_headers_and_request_ids(stack: Stack) -> None:
    with stack.client() as c:
        page = c.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        generated = c.get("/execution/queue/stats").headers["x-request-id"]
        assert len(generated) == 16
        echoed = c.get("/auth/me", headers={"X-Request-ID": "trace-abc-123"})
        assert echoed.headers["x-request-id"] == "trace-abc-123"
        bad = c.get("/auth/me", headers={"X-Request-ID": "bad id\twith spaces"})
        assert bad.headers["x-request-id"] != "bad id\twith spaces"
        c.post("/execution/submit", json={"code": "print('logged')"}, headers={"X-Request-ID": "req-for-log-1"})
    gateway_log = next(a for a in stack.apps if a.args == ["gateway"]).log()
    assert any(e.get("request_id") == "req-for-log-1" and "queued" in e["message"] for e in json_lines(gateway_log))


def test_cors_only_for_the_configured_origin(stack: Stack) -> None:
    with gateway_with(stack, CORS_ORIGIN="https://app.example.org") as url, httpx.Client(base_url=url) as c:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        ok = c.options("/execution/submit", headers={"Origin": "https://app.example.org", **preflight})
        # The exact origin, echoed: never the wildcard.
        assert ok.headers.get("access-control-allow-origin") == "https://app.example.org"
        assert "authorization" in ok.headers.get("access-control-allow-headers", "").lower()
        simple = c.get("/execution/queue/stats", headers={"Origin": "https://app.example.org"})
        assert simple.headers.get("access-control-allow-origin") == "https://app.example.org"
        for origin in ("https://evil.example", "https://app.example.org.evil.example", "null"):
            evil = c.options("/execution/submit", headers={"Origin": origin, **preflight})
            assert "access-control-allow-origin" not in evil.headers, (origin, evil.headers)
            evil_get = c.get("/execution/queue/stats", headers={"Origin": origin})
            assert "access-control-allow-origin" not in evil_get.headers, (origin, evil_get.headers)


def test_old_paths_are_gone_and_debug_is_absent(stack: Stack) -> None:
    with stack.client() as c:
        for path in ("/api/run", "/api/submit"):
            res = c.post(path, json={"code": "print(1)"})
            assert res.status_code == 410
            assert "/execution/submit" in res.json()["detail"]
        for path in ("/api/debug/", "/api/debug/env", "/api/debug/config"):
            assert c.get(path).status_code == 404


def test_body_size_is_limited(stack: Stack) -> None:
    with stack.client() as c:
        res = c.post("/execution/submit", json={"code": "x" * 300_000})
        assert res.status_code == 413


def test_teachers_can_read_students_jobs(stack: Stack, runner) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    student = stack.new_user()
    email = _unique_email()
    with stack.client(anonymous=True) as c:
        assert _register(c, email).status_code == 201
    subprocess.run(
        [sys.executable, "-m", "cli", "user-role", email, "teacher"],
        env=stack.env, cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with stack.client(anonymous=True) as c:
        teacher = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["accessToken"]
    with stack.client(student) as s:
        job = submit(s, "print('homework')")
        read_events(s, job["eventsUrl"])
    with stack.client(teacher) as t:
        assert t.get("/auth/me").json()["role"] == "teacher"
        assert t.get(f"/execution/result/{job['jobId']}").json()["stdout"] == "homework\n"
