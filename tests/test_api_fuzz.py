"""Schemathesis against the gateway's own OpenAPI document, as a client author would run it.

Every check, the coverage, fuzzing and stateful phases, signed in as a teacher (so the editing
routes are reached too) with the quotas raised; any failure or warning fails the test. The
deliberate exceptions are in ``tests/api/schemathesis.toml``, each with its reason.

The run gets its own database: it creates, edits and deletes problems.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from local import embedded
from tests.conftest import ROOT, Stack, stack_env, wait_ready

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "tests" / "api" / "schemathesis.toml"
MAX_EXAMPLES = 15
SEED = 20261130


@pytest.fixture(scope="module")
def fuzzed(nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A seeded stack with a runner, on a database of its own."""
    tmp = tmp_path_factory.mktemp("fuzzed")
    port = embedded.free_port()
    database = f"fuzz_{secrets.token_hex(4)}"
    mongodb = shared_servers["mongodb"].rstrip("/")
    servers = {**shared_servers, "mongodb": f"{mongodb}/{database}"}
    s = Stack(env=stack_env(nats_url, servers, GATEWAY_PORT=str(port)), base_url=f"http://127.0.0.1:{port}", tmp=tmp)
    try:
        gateway = s.spawn("gateway")
        for name in ("caching", "progress", "grading"):
            s.spawn("consume", name).wait_log(f"consumer {name} started")
        wait_ready(gateway, s.base_url)
        cli(s, "seed")
        s.runner()
        yield s
    finally:
        for app in reversed(s.apps):
            app.stop()


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def teacher_token(stack: Stack) -> str:
    email = f"teacher-{secrets.token_hex(6)}@example.org"
    stack.new_user(email)
    cli(stack, "user-role", email, "teacher")  # signs the account out: sign in again
    res = httpx.post(f"{stack.base_url}/auth/login", json={"email": email, "password": "correct horse battery"})
    assert res.status_code == 200, res.text
    return str(res.json()["accessToken"])


def identifiers(stack: Stack, token: str) -> dict[str, list[Any]]:
    """Ids that exist, read from the live API, for the fuzzer to draw from (besides its own), so
    that operations on an existing problem, session, test or job are reached, not only their 404.

    Edits and deletions get problems of their own, made here from a seeded one: the seeded ones
    stay as they are for the operations that read them.
    """
    with stack.client(token) as client:
        listed = client.get("/problems", params={"pageSize": 100}).raise_for_status().json()["items"]
        problems = [p["id"] for p in listed]
        sessions = [s["id"] for s in client.get("/problems/sessions").raise_for_status().json()]
        template = next(
            t
            for t in (client.get(f"/problems/{p}/edit").raise_for_status().json() for p in problems)
            if t["grading"] == "stdout" and not any(test.get("script") for test in t["tests"])
        )
        body = {k: v for k, v in template.items() if k not in ("id", "revision")}

        def create() -> int:
            res = client.post("/problems", json={**body, "slug": f"fuzz-{secrets.token_hex(4)}"})
            assert res.status_code == 201, res.text
            return int(res.json()["id"])

        job = client.post("/execution/submit", json={"code": "print(1)"})
        assert job.status_code == 202, job.text
        return {
            "template": [body],
            "problem_ids": problems,
            "session_ids": sessions,
            "edited_ids": [create() for _ in range(3)],
            "trimmed_ids": [create() for _ in range(3)],
            "deleted_ids": [create() for _ in range(30)],
            "test_ids": [t["id"] for t in body["tests"]],
            "first_test_id": [body["tests"][0]["id"]],
            "job_ids": [job.json()["jobId"]],
        }


# Where each dictionary of live ids goes: (operation, parameter) -> dictionary.
BINDINGS = {
    "GET /problems/{problem_id}": {"path.problem_id": "problem_ids"},
    "GET /problems/{problem_id}/tests": {"path.problem_id": "problem_ids"},
    "GET /problems/{problem_id}/tests/all": {"path.problem_id": "problem_ids"},
    "GET /problems/{problem_id}/edit": {"path.problem_id": "problem_ids"},
    "GET /problems/sessions/{session_id}": {"path.session_id": "session_ids"},
    "POST /execution/submit": {"body.problemId": "problem_ids"},
    "POST /execution/submit/grade": {"body.problemId": "problem_ids"},
    "POST /progress/attempt": {"body.problemId": "problem_ids"},
    "GET /execution/result/{job_id}": {"path.job_id": "job_ids"},
    "GET /execution/result/{job_id}/events": {"path.job_id": "job_ids"},
    "POST /problems": {"body.session": "session_ids"},
    "PUT /problems/{problem_id}": {"path.problem_id": "edited_ids", "body.session": "session_ids"},
    "DELETE /problems/{problem_id}": {"path.problem_id": "deleted_ids"},
    "POST /problems/{problem_id}/tests": {"path.problem_id": "edited_ids"},
    "PUT /problems/{problem_id}/tests/{test_id}": {"path.problem_id": "edited_ids", "path.test_id": "first_test_id"},
    # Its own problems: a deleted test would be missing for the test replacements.
    "DELETE /problems/{problem_id}/tests/{test_id}": {"path.problem_id": "trimmed_ids", "path.test_id": "test_ids"},
}


def _toml(value: Any) -> str:
    """A TOML inline value (TOML has no null: None-valued keys are left out, as their default)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return msgspec.json.encode(value).decode()  # strings, numbers and booleans read the same


def overrides(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fields fixed in the bodies of the editing operations, so that the fuzzer's problems pass the
    rules across fields (a session of the problem's level, stdout tests expecting text) often
    enough to reach the edit itself; every other field stays generated."""
    problem = {
        "body.level": template["level"],
        "body.session": template["session"],
        "body.grading": "stdout",
        "body.tests": template["tests"],
    }
    test = {"body.public": True, "body.expected": "1\n"}
    return {
        "POST /problems": problem,
        "PUT /problems/{problem_id}": problem,
        "POST /problems/{problem_id}/tests": test,
        "PUT /problems/{problem_id}/tests/{test_id}": test,
    }


def write_config(path: Path, ids: dict[str, list[Any]]) -> Path:
    """The committed configuration, plus the dictionaries of live ids, the parameters they feed and
    the fields fixed for the editing operations."""
    template = ids.pop("template")[0]
    lines = [CONFIG.read_text(), "", "# Written by tests/test_api_fuzz.py from the live stack."]
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml(values)}"]
    for operation, fixed in overrides(template).items():
        lines += ["[[operations]]", f'include-name = "{operation}"', f"parameters = {_toml(fixed)}"]
    for operation, parameters in BINDINGS.items():
        bound = ", ".join(
            f'"{key}" = {{ dictionary = "{dictionary}", probability = 0.9 }}' for key, dictionary in parameters.items()
        )
        lines += ["[[operations]]", f'include-name = "{operation}"', f"parameters = {{ {bound} }}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def schemathesis(stack: Stack, token: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{stack.base_url}/schema/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
    )


def test_every_check_and_phase_finds_nothing(fuzzed: Stack, tmp_path: Path) -> None:
    token = teacher_token(fuzzed)
    config = write_config(tmp_path / "schemathesis.toml", identifiers(fuzzed, token))
    proc = schemathesis(fuzzed, token, config, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, output[-4000:]
    assert "WARNINGS" not in output, output[-6000:]
