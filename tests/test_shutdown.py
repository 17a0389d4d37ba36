"""Graceful shutdown under load: a SIGTERM to a runner, a consumer or a gateway loses no job and
duplicates no effect (one ``finished`` and one ``graded`` per job, each attempt counted once)."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from curriculum import files
from local import embedded
from schemas import subjects
from schemas.executions import ExecutionStarted
from tests.conftest import App, Stack, wait_for, wait_ready
from tests.helpers import json_lines, read_events, stored_messages

pytestmark = pytest.mark.e2e

HELLO = files.load().problems[0]
# Long enough to be running when the signal comes, short enough for the test.
SLOW = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.4)\n"


def _stop_with_sigterm(app: App, within: float) -> float:
    """SIGTERM ``app``; it must exit 0 within ``within`` seconds. Returns how long it took."""
    assert app.proc is not None and app.proc.poll() is None
    began = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    code = app.proc.wait(within)
    assert code == 0, f"{app.args} exited {code}:\n{app.log()[-3000:]}"
    return time.monotonic() - began


def _submit_many(client: httpx.Client, count: int, code: str, *, grade: bool = False) -> list[str]:
    jobs = []
    for _ in range(count):
        if grade:
            res = client.post("/execution/submit/grade", json={"code": code, "problemId": HELLO.id})
        else:
            res = client.post("/execution/submit", json={"code": code})
        assert res.status_code == 202, res.text
        jobs.append(res.json()["jobId"])
    return jobs


def _result(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    body = client.get(f"/execution/result/{job_id}").json()
    return body if body.get("status") in ("completed", "failed") else None


def _finished_once(nats_url: str, jobs: list[str]) -> None:
    for job in jobs:
        assert len(stored_messages(nats_url, "EXECUTIONS", subjects.finished_of(job))) == 1, job


def test_a_runner_finishes_its_running_jobs_and_another_takes_the_rest(seeded: Stack, nats_url: str) -> None:
    """Jobs in hand finish within the grace period; the runner then exits 0 and pulls nothing
    more. Jobs still queued run on the other runner. Each job finishes exactly once."""
    first = seeded.runner(RUNNER_CONCURRENCY="2", RUNNER_SHUTDOWN_GRACE_SECONDS="20")
    token = seeded.new_user()
    with seeded.client(token) as c:
        jobs = _submit_many(c, 8, SLOW)
        # Wait until the first runner is running two of them, then stop it.
        wait_for(lambda: _started_by(nats_url, jobs) >= 2, 30, what="two jobs started")
        second = seeded.runner(RUNNER_CONCURRENCY="2")
        took = _stop_with_sigterm(first, 30)
        results = {job: wait_for(lambda job=job: _result(c, job), 60, what=f"result of {job}") for job in jobs}
    for job, result in results.items():
        assert result["verdict"] == "OK", (job, result)
        assert result["stdout"] == "0\n1\n2\n3\n", (job, result)
    _finished_once(nats_url, jobs)
    # It finished what it had (no job was handed back), so no job ran twice.
    records = json_lines(first.log())
    assert not any("handing back" in r["message"] for r in records), records[-5:]
    assert any("runner stopping" in r["message"] for r in records)
    assert took < 20
    second.stop()


def test_a_runner_past_its_grace_hands_jobs_back_at_once(seeded: Stack, nats_url: str) -> None:
    """With a grace shorter than the jobs, the jobs in hand are handed back (nak) and another
    runner starts them straight away: every job still finishes, once."""
    long_job = "import time\ntime.sleep(2.5)\nprint('done')\n"
    first = seeded.runner(RUNNER_CONCURRENCY="2", RUNNER_SHUTDOWN_GRACE_SECONDS="0.3")
    token = seeded.new_user()
    with seeded.client(token) as c:
        jobs = _submit_many(c, 2, long_job)
        wait_for(lambda: _started_by(nats_url, jobs) >= 2, 30, what="both started")
        _stop_with_sigterm(first, 15)
        assert any("handing back 2 unfinished jobs" in r["message"] for r in json_lines(first.log()))
        second = seeded.runner(RUNNER_CONCURRENCY="2")
        results = {job: wait_for(lambda job=job: _result(c, job), 60, what=f"result of {job}") for job in jobs}
    for job, result in results.items():
        assert result["verdict"] == "OK" and result["stdout"] == "done\n", (job, result)
        assert result["attempt"] == 2, result  # the first attempt was handed back, not finished
    _finished_once(nats_url, jobs)
    second.stop()


def _started_by(nats_url: str, jobs: list[str]) -> int:
    return sum(1 for job in jobs if stored_messages(nats_url, "EXECUTIONS", subjects.of_kind(job, ExecutionStarted)))


@pytest.mark.parametrize("consumer", ["grading", "progress", "caching"])
def test_a_consumer_stopped_under_load_loses_and_repeats_nothing(seeded: Stack, nats_url: str, consumer: str) -> None:
    """While graded submissions flow, the consumer gets SIGTERM (it finishes the message in hand
    and hands back the rest of its batch) and a new instance takes over: every job is graded
    once, and the projection counts every attempt once."""
    runner = seeded.runner(RUNNER_CONCURRENCY="2")
    email = f"load-{secrets.token_hex(5)}@example.org"
    token = seeded.new_user(email)
    count = 12
    with seeded.client(token) as c:
        jobs: list[str] = []
        submitter = threading.Thread(target=lambda: jobs.extend(_submit_many(c, count, HELLO.solution, grade=True)))
        submitter.start()
        time.sleep(1.0)  # some graded, some queued: the signal lands mid-stream
        old = next(a for a in seeded.apps if a.args == ["consume", consumer] and a.proc and a.proc.poll() is None)
        _stop_with_sigterm(old, 15)
        assert f"consumer {consumer} stopped" in old.log() or any(
            f"consumer {consumer}" in r["message"] and "stopped" in r["message"] for r in json_lines(old.log())
        )
        seeded.spawn("consume", consumer).wait_log("started")
        submitter.join(60)
        assert len(jobs) == count
        for job in jobs:
            result = wait_for(lambda job=job: _graded(c, job), 60, what=f"grade of {job}")
            assert result["grade"]["verdict"] == "ACCEPTED", result
        for job in jobs:
            assert len(stored_messages(nats_url, "EXECUTIONS", subjects.graded_of(job))) == 1, job

        def counted() -> dict[str, Any] | None:
            items = c.get("/progress").json()["items"]
            item = next((i for i in items if i["item"] == f"problem:{HELLO.id}"), None)
            return item if item and item["attempts"] >= count else None

        item = wait_for(counted, 60, what="every attempt counted")
        assert isinstance(item, dict) and item["attempts"] == count, item
    runner.stop()


def _graded(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    body = client.get(f"/execution/result/{job_id}").json()
    return body if body.get("grade") else None


def test_a_gateway_tells_open_streams_to_reconnect_and_they_resume_elsewhere(seeded: Stack) -> None:
    """On SIGTERM the gateway ends each open event stream with `reconnect` (instead of holding its
    shutdown until the job ends), answers what is in flight, and exits 0 promptly. The client
    reconnects with Last-Event-ID to another gateway and gets the rest of the output, no gaps."""
    runner = seeded.runner(RUNNER_CONCURRENCY="2")
    port = embedded.free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = seeded.spawn("gateway", env={"GATEWAY_PORT": str(port), "SSE_HEARTBEAT_SECONDS": "30"})
    wait_ready(gateway, base)
    token = seeded.new_user()
    slow = "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.5)\n"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30, headers=headers) as c:
        accepted = c.post("/execution/submit", json={"code": slow}).json()
        seen: list[tuple[str, str, str]] = []
        stopping = threading.Thread(target=lambda: _stop_with_sigterm(gateway, 10))
        began = 0.0
        with connect_sse(c, "GET", accepted["eventsUrl"]) as source:
            for sse in source.iter_sse():
                if sse.data:
                    seen.append((sse.id, sse.event, sse.data))
                if sse.event == "output" and not began:
                    began = time.monotonic()  # the program is running: stop the gateway now
                    stopping.start()
            took = time.monotonic() - began
        stopping.join(15)
    assert seen[-1][1] == "reconnect", seen[-3:]
    assert took < 5, took  # not held until the job ends (5 s)
    assert gateway.proc is not None and gateway.proc.returncode == 0
    last_id = next(i for i, e, _ in reversed(seen) if i)
    # The same URL on another gateway (the stack's), resuming after the last event seen.
    with seeded.client(token) as c:
        rest = read_events(c, accepted["eventsUrl"], last_event_id=last_id)
    assert rest[-1].event == "done"
    output = "".join(json.loads(d)["text"] for _, e, d in seen if e == "output")
    output += "".join(e.data["text"] for e in rest if e.event == "output")
    assert output == "".join(f"{i}\n" for i in range(10))
    runner.stop()
