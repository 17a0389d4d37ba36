"""Grading end to end: problems from MongoDB, tests in the sandbox, the grading consumer as its own
process, results over SSE and the result route. Real servers throughout."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import nats
import pytest

from bus import streams
from curriculum import files
from schemas import subjects
from schemas.executions import ExecutionFinished
from schemas.submissions import submission_decoder
from tests.conftest import ROOT, Stack, wait_for
from tests.helpers import read_events, stored_messages

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def teacher(seeded: Stack) -> httpx.Client:
    email = f"teacher-{secrets.token_hex(6)}@example.org"
    seeded.new_user(email)
    subprocess.run(
        [sys.executable, "-m", "cli", "user-role", email, "teacher"],
        env=seeded.env, cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with httpx.Client(base_url=seeded.base_url, timeout=30) as c:
        token = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["accessToken"]
    client = seeded.client(token)
    yield client
    client.close()


def create_problem(teacher: httpx.Client, **fields: Any) -> int:
    body = {
        "slug": f"p-{secrets.token_hex(4)}",
        "title": "A test problem",
        "level": "adults",
        "session": "adults-strings",
        "order": 99,
        "statement": "Echo the line.",
        **fields,
    }
    res = teacher.post("/problems", json=body)
    assert res.status_code == 201, res.text
    return int(res.json()["id"])


def grade(client: httpx.Client, code: str, problem_id: int, *, run: bool = False) -> dict[str, Any]:
    """Submit and wait for the final result (the grade)."""
    if run:
        res = client.post("/execution/submit", json={"code": code, "problemId": problem_id})
    else:
        res = client.post("/execution/submit/grade", json={"code": code, "problemId": problem_id})
    assert res.status_code == 202, res.text
    return wait_result(client, res.json()["resultUrl"])


def wait_result(client: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def done() -> bool:
        res = client.get(url)
        assert res.status_code == 200, res.text
        box.update(res.json())
        return box["status"] in ("completed", "failed")

    wait_for(done, timeout, interval=0.1, what=f"result at {url}")
    return box


def test_every_reference_solution_is_accepted_and_every_wrong_one_is_not(seeded: Stack, runner) -> None:
    curriculum = files.load()
    assert len(curriculum.problems) >= 36
    assert len({p.session for p in curriculum.problems}) >= 8
    jobs: list[tuple[str, int, bool, str]] = []
    with seeded.client() as c:
        for problem in curriculum.problems:
            assert sum(t.public for t in problem.tests) >= 3 and sum(not t.public for t in problem.tests) >= 3
            for code, good in [(problem.solution, True)] + [(w.code, False) for w in problem.wrong_solutions]:
                res = c.post("/execution/submit/grade", json={"code": code, "problemId": problem.id})
                assert res.status_code == 202, res.text
                jobs.append((problem.slug, problem.id, good, res.json()["resultUrl"]))
        failures = []
        for slug, _, good, url in jobs:
            result = wait_result(c, url, timeout=300)
            grade = result["grade"]
            if good and (grade["verdict"] != "ACCEPTED" or grade["score"] != 100):
                failures.append(f"{slug}: reference got {grade['verdict']} {grade['score']} {result['tests']}")
            if not good and grade["verdict"] == "ACCEPTED":
                failures.append(f"{slug}: a wrong solution was accepted")
    assert not failures, "\n".join(failures)


def test_hidden_tests_stay_hidden(seeded: Stack, runner, teacher: httpx.Client, nats_url: str) -> None:
    secret_in, secret_out = f"IN-{secrets.token_hex(8)}", f"OUT-{secrets.token_hex(8)}"
    problem_id = create_problem(
        teacher,
        tests=[
            {"id": "p1", "public": True, "stdin": "hello\n", "expected": "hello\n"},
            {"id": "h1", "public": False, "stdin": secret_in + "\n", "expected": secret_out + "\n"},
        ],
    )
    code = "line = input()\nprint(line)\nraise ValueError(line)\n"  # echoes the hidden input everywhere
    with seeded.client() as c:
        res = c.post("/execution/submit/grade", json={"code": code, "problemId": problem_id})
        assert res.status_code == 202
        accepted = res.json()
        events = read_events(c, accepted["eventsUrl"])
        stream_text = msgspec.json.encode([e.data for e in events]).decode()
        result = wait_result(c, accepted["resultUrl"])
        public_views = [
            c.get(f"/problems/{problem_id}").text,
            c.get(f"/problems/{problem_id}/tests").text,
            c.get(f"/problems/{problem_id}/tests/all").text,
            c.get("/problems", params={"level": "adults", "pageSize": 100}).text,
        ]
    kinds = [e.event for e in events]
    assert "observed" not in kinds and "test" in kinds and kinds[-2:] == ["graded", "done"], kinds
    hidden = next(t for t in result["tests"] if t["testId"] == "h1")
    assert set(hidden) <= {"testId", "index", "public", "verdict", "weight"}, hidden
    for text in [stream_text, msgspec.json.encode(result).decode(), *public_views]:
        assert secret_in not in text and secret_out not in text
    # What enters the sandbox: the job as the runner receives it has the hidden input (its test
    # runs on it) but never an expected output.
    [raw] = stored_messages(nats_url, streams.SUBMISSIONS, subjects.submission(accepted["jobId"]))
    job = submission_decoder.decode(raw)
    assert secret_out not in raw.decode() and "expected" not in raw.decode()
    assert [t.id for t in job.tests] == ["p1", "h1"] and job.tests[1].stdin == secret_in + "\n"
    # Without the stream's allow-list the secret would reach the student: the internal observation
    # of the hidden test holds it (the program printed its input).
    observed = stored_messages(nats_url, streams.EXECUTIONS, f"coderunner.v1.executions.{accepted['jobId']}.observed")
    assert any(secret_in.encode() in raw for raw in observed)
    # The one public test shows everything, with a diff; hidden shows only its verdict.
    public = next(t for t in result["tests"] if t["testId"] == "p1")
    assert public["verdict"] == "RUNTIME_ERROR" and public["feedback"]["kind"] == "ValueError"
    assert public["feedback"]["line"] == 3 and public["feedback"]["message"] == "hello"
    assert result["grade"]["verdict"] == "RUNTIME_ERROR" and result["grade"]["score"] == 0


def test_run_on_a_problem_runs_the_public_tests_only(seeded: Stack, runner) -> None:
    problem = files.load().problems[0]
    with seeded.client() as c:
        result = grade(c, problem.solution, problem.id, run=True)
    ids = [t["testId"] for t in result["tests"]]
    assert ids == [t.id for t in problem.public_tests()]
    assert all(t["public"] and "expected" in t and "actual" in t for t in result["tests"])
    assert result["grade"]["scope"] == "public" and result["grade"]["verdict"] == "ACCEPTED"


def test_partial_scores_by_weight_and_a_per_test_time_limit(seeded: Stack, runner, teacher) -> None:
    problem_id = create_problem(
        teacher,
        timeLimitMs=1000,
        tests=[
            {"id": "p1", "public": True, "stdin": "1\n", "expected": "2\n", "weight": 1},
            {"id": "p2", "public": True, "stdin": "2\n", "expected": "4\n", "weight": 3},
            {"id": "h1", "public": False, "stdin": "0\n", "expected": "0\n", "weight": 2},
            {"id": "h2", "public": False, "stdin": "5\n", "expected": "10\n", "weight": 4},
        ],
    )
    # Loops for ever on 0, is wrong on 5: only p1 and p2 pass.
    code = "n = int(input())\nwhile n == 0:\n    pass\nprint(n * 2 if n != 5 else 11)\n"
    with seeded.client() as c:
        started = time.monotonic()
        result = grade(c, code, problem_id)
        elapsed = time.monotonic() - started
    verdicts = {t["testId"]: t["verdict"] for t in result["tests"]}
    assert verdicts == {"p1": "ACCEPTED", "p2": "ACCEPTED", "h1": "TIME_LIMIT", "h2": "WRONG_ANSWER"}
    assert result["grade"]["score"] == 40.0 and result["grade"]["passed"] == 2
    assert result["grade"]["verdict"] == "TIME_LIMIT"  # the first failing test's
    assert result["grade"]["feedback"]["kind"] == "TIME_LIMIT"
    assert elapsed < 30, "one test's time limit did not end the others"


def test_a_memory_limit_fails_only_its_test(seeded: Stack, runner, teacher) -> None:
    problem_id = create_problem(
        teacher,
        memoryLimitMb=48,
        tests=[
            {"id": "p1", "public": True, "stdin": "small\n", "expected": "ok\n"},
            {"id": "p2", "public": True, "stdin": "big\n", "expected": "ok\n"},
        ],
    )
    code = "if input() == 'big':\n    hog = bytearray(256 * 1024 * 1024)\nprint('ok')\n"
    with seeded.client() as c:
        result = grade(c, code, problem_id)
    assert [t["verdict"] for t in result["tests"]] == ["ACCEPTED", "MEMORY_LIMIT"], result["tests"]
    assert result["grade"]["score"] == 50.0 and result["grade"]["verdict"] == "MEMORY_LIMIT"
    assert result["tests"][1]["feedback"]["kind"] == "MEMORY_LIMIT"


def test_a_syntax_error_is_a_compile_error_with_help(seeded: Stack, runner) -> None:
    problem = files.load().problems[0]
    with seeded.client() as c:
        result = grade(c, "name = input()\nprint('Hello, ' + name\n", problem.id)
    grade_ = result["grade"]
    assert grade_["verdict"] == "COMPILE_ERROR" and grade_["score"] == 0
    assert grade_["feedback"]["kind"] == "SyntaxError" and grade_["feedback"]["line"] == 2
    assert "harness" not in msgspec.json.encode(result).decode()


def test_function_and_script_tests(seeded: Stack, runner, teacher) -> None:
    function_id = create_problem(
        teacher,
        grading="function",
        function="mean",
        comparison="float",
        tolerance=1e-3,
        tests=[
            {"id": "p1", "public": True, "args": [[1, 2]], "expected": 1.5},
            {"id": "p2", "public": True, "args": [[1, 1, 2]], "expected": 1.333},
            {"id": "p3", "public": True, "args": [[2]], "expected": 2, "comparison": "normalized"},
        ],
    )
    script_id = create_problem(
        teacher,
        grading="script",
        tests=[
            {"id": "p1", "public": True, "script": "assert double(2) == 4"},
            {"id": "p2", "public": True, "script": "assert double(-1) == -2"},
        ],
    )
    with seeded.client() as c:
        good = grade(c, "def mean(xs):\n    return sum(xs) / len(xs)\n", function_id)
        bad = grade(c, "def mean(xs):\n    return sum(xs) // len(xs)\n", function_id)
        script_good = grade(c, "def double(x):\n    return x * 2\n", script_id)
        script_bad = grade(c, "def double(x):\n    return abs(x) * 2\n", script_id)
    assert good["grade"]["verdict"] == "ACCEPTED", good["tests"]
    assert [t["verdict"] for t in bad["tests"]] == ["WRONG_ANSWER", "WRONG_ANSWER", "ACCEPTED"]
    assert bad["tests"][0]["input"] == "mean([1,2])" and bad["tests"][0]["actual"] == "1"
    assert script_good["grade"]["verdict"] == "ACCEPTED"
    assert [t["verdict"] for t in script_bad["tests"]] == ["ACCEPTED", "WRONG_ANSWER"]
    assert script_bad["tests"][1]["feedback"]["kind"] == "AssertionError"


def test_a_redelivered_event_never_yields_a_second_grade(
    seeded: Stack, runner, teacher: httpx.Client, nats_url: str
) -> None:
    tests = [{"id": f"p{i}", "public": True, "stdin": f"{i}\n", "expected": f"{i}\n"} for i in range(3)]
    problem_id = create_problem(teacher, tests=tests)
    with seeded.client() as c:
        first = grade(c, "print(input())\n", problem_id)
    assert first["grade"]["verdict"] == "ACCEPTED"
    # The teacher changes the expectations; then the finished event is delivered again.
    current = teacher.get(f"/problems/{problem_id}/tests/all")
    assert current.status_code == 200, current.text
    res = teacher.put(f"/problems/{problem_id}/tests/p0", json={**tests[0], "expected": "changed\n"})
    assert res.status_code == 200, res.text
    job_id = first["jobId"]

    async def redeliver() -> int:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        raw = await js.get_msg(streams.EXECUTIONS, subject=subjects.finished_of(job_id), direct=True)
        ack = await js.publish(subjects.finished_of(job_id), raw.data, headers={"Nats-Msg-Id": secrets.token_hex(8)})
        await nc.close()
        return ack.seq

    seq = asyncio.run(redeliver())

    async def processed() -> bool:
        nc = await nats.connect(nats_url)
        info = await nc.jetstream().consumer_info(streams.EXECUTIONS, "grading")
        await nc.close()
        return info.ack_floor.stream_seq >= seq

    wait_for(lambda: asyncio.run(processed()), 30, what="grading consumer past the redelivered event")
    graded = stored_messages(nats_url, streams.EXECUTIONS, subjects.graded_of(job_id))
    assert len(graded) == 1
    finished = stored_messages(nats_url, streams.EXECUTIONS, subjects.finished_of(job_id))
    assert len(finished) == 2 and msgspec.json.decode(finished[1], type=ExecutionFinished).graded
    with seeded.client() as c:
        assert c.get(f"/execution/result/{job_id}").json()["grade"] == first["grade"]
