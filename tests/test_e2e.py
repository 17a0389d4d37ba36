"""One submission end to end: HTTP → JetStream → sandboxed runner → SSE, on real servers."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx
import msgspec
import nats
import pytest
import redis

from bus import streams
from consumers.caching import cache_key
from local import embedded
from schemas import subjects
from schemas.executions import ExecutionStarted
from schemas.results import JobResult
from tests.conftest import Stack, wait_for
from tests.helpers import output_of, read_events, stored_messages, submit

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runner(stack: Stack):
    app = stack.runner()
    yield app
    app.stop()


def test_hello_streams_output_and_done(stack: Stack, runner) -> None:
    with stack.client() as client:
        started = time.monotonic()
        job = submit(client, 'print("hello")')
        assert job["status"] == "queued"
        assert job["eventsUrl"].startswith(f"/execution/result/{job['jobId']}/events?ticket=")
        events = read_events(client, job["eventsUrl"])
        elapsed = time.monotonic() - started
        names = [e.event for e in events]
        assert names[0] == "started"
        assert names[-2:] == ["finished", "done"]
        assert output_of(events) == "hello\n"
        done = events[-1].data
        assert done["status"] == "completed"
        assert done["verdict"] == "OK"
        assert done["exitCode"] == 0
        # Every event but done carries the JetStream sequence as its id, increasing.
        ids = [int(e.id) for e in events[:-1]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # The done data is the same document the result endpoint serves.
        result = client.get(job["resultUrl"]).json()
        assert result == done
        assert elapsed < 5, elapsed  # generous: the figure itself is measured in bench/


def test_output_arrives_while_the_program_runs(stack: Stack, runner) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    with stack.client() as client:
        job = submit(client, code)
        from httpx_sse import connect_sse

        seen: list[tuple[float, str]] = []
        with connect_sse(client, "GET", job["eventsUrl"]) as source:
            for sse in source.iter_sse():
                if sse.data == "":  # heartbeat artefact of httpx-sse, see helpers.read_events
                    continue
                seen.append((time.monotonic(), sse.event))
                if sse.event == "done":
                    break
        first_output = next(t for t, name in seen if name == "output")
        done = seen[-1][0]
        # The first line reached us well before the program ended.
        assert done - first_output > 1.0


def test_resume_with_last_event_id_loses_and_repeats_nothing(stack: Stack, runner) -> None:
    code = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.15)"
    with stack.client() as client:
        job = submit(client, code)
        first = read_events(client, job["eventsUrl"], stop_after=3)
        assert len(first) == 3 and first[-1].id
        rest = read_events(client, job["eventsUrl"], last_event_id=first[-1].id)
        combined = first + rest
        ids = [int(e.id) for e in combined if e.event != "done"]
        assert ids == sorted(set(ids)), "an event was repeated or reordered"
        assert output_of(combined) == "".join(f"{i}\n" for i in range(6))
        full = read_events(client, job["eventsUrl"])
        assert [e.id for e in full] == [e.id for e in combined]
        # done after a resume is complete, not just the tail.
        assert rest[-1].data["stdout"] == "".join(f"{i}\n" for i in range(6))
        # After the end, resuming from the last id gives just done.
        again = read_events(client, job["eventsUrl"], last_event_id=full[-2].id)
        assert [e.event for e in again] == ["done"]


def test_bad_last_event_id_is_a_problem(stack: Stack, runner) -> None:
    with stack.client() as client:
        job = submit(client, "print(1)")
        res = client.get(job["eventsUrl"], headers={"Last-Event-ID": "abc"})
        assert res.status_code == 400
        assert res.headers["content-type"].startswith("application/problem+json")
        assert "Last-Event-ID" in res.json()["detail"]


def test_idempotency_key_runs_once(stack: Stack, runner, nats_url: str) -> None:
    code = "print('once')"
    with stack.client() as client:
        a = submit(client, code, key="retry-me-1")
        b = submit(client, code, key="retry-me-1")
        assert a["jobId"] == b["jobId"]
        other = submit(client, code, key="retry-me-2")
        assert other["jobId"] != a["jobId"]
        read_events(client, a["eventsUrl"])
        # Later retries (outside any in-memory window) still map to the same job.
        c = submit(client, code, key="retry-me-1")
        assert c["jobId"] == a["jobId"]
    assert len(stored_messages(nats_url, streams.SUBMISSIONS, subjects.submission(a["jobId"]))) == 1
    started = stored_messages(nats_url, streams.EXECUTIONS, subjects.of_kind(a["jobId"], ExecutionStarted))
    assert len(started) == 1


def test_wall_clock_limit_gives_time_limit(stack: Stack, runner) -> None:
    with stack.client() as client:
        started = time.monotonic()
        job = submit(client, "import time\nprint('going to sleep', flush=True)\ntime.sleep(60)")
        events = read_events(client, job["eventsUrl"])
        done = events[-1].data
        assert done["verdict"] == "TIME_LIMIT"
        assert done["status"] == "completed"
        assert done["stdout"] == "going to sleep\n"
        assert time.monotonic() - started < 20


def test_runtime_error_and_stderr(stack: Stack, runner) -> None:
    with stack.client() as client:
        job = submit(client, "import sys\nprint('x = ', input())\n1/0", stdin="42\n")
        done = read_events(client, job["eventsUrl"])[-1].data
        assert done["verdict"] == "RUNTIME_ERROR"
        assert done["exitCode"] == 1
        assert done["stdout"] == "x =  42\n"
        assert "ZeroDivisionError" in done["stderr"]


def test_unknown_job_is_404_problem(stack: Stack) -> None:
    with stack.client() as client:
        for url in ("/execution/result/doesnotexist", "/execution/result/doesnotexist/events"):
            res = client.get(url)
            assert res.status_code == 404
            assert res.headers["content-type"].startswith("application/problem+json")
            assert res.json()["title"] == "Job not found"


def test_invalid_submissions_are_problems(stack: Stack) -> None:
    with stack.client() as client:
        res = client.post("/execution/submit", json={"stdin": "x"})
        assert res.status_code == 400
        assert res.headers["content-type"].startswith("application/problem+json")
        res = client.post("/execution/submit", json={"code": "x" * (64 * 1024 + 1)})
        assert res.status_code == 413
        res = client.post("/execution/submit", json={"code": "   "})
        assert res.status_code == 400
        res = client.post("/execution/submit", json={"code": "print(1)", "unexpected": 1})
        assert res.status_code == 400


def test_consumers_cache_and_record_results(stack: Stack, runner, shared_servers) -> None:
    from pymongo import MongoClient

    with stack.client() as client:
        job = submit(client, "print('cached')")
        done = read_events(client, job["eventsUrl"])[-1].data
    r = redis.Redis.from_url(shared_servers["redis"])
    cached = wait_for(lambda: r.get(cache_key(job["jobId"])), what="cached result")
    assert msgspec.json.decode(cached, type=JobResult) == msgspec.convert(done, JobResult)
    mongo = MongoClient(shared_servers["mongodb"])
    records = mongo["coderunner"]["execution_records"]
    record = wait_for(lambda: records.find_one({"job_id": job["jobId"]}), what="execution record")
    with stack.client() as client:
        assert record["user_id"] == client.get("/auth/me").json()["id"]
    assert record["verdict"] == "OK"
    assert records.count_documents({"job_id": job["jobId"]}) == 1


def test_health_ready_and_openapi(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        assert ready == {"status": "ready", "checks": {"nats": "ok", "redis": "ok", "mongodb": "ok"}}
        schema = client.get("/schema/openapi.json").json()
        assert "/execution/submit" in schema["paths"]
        assert "/execution/result/{job_id}/events" in schema["paths"]


def test_events_cli_prints_a_jobs_history(stack: Stack, runner, nats_url: str) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    with stack.client() as client:
        job = submit(client, "print('for the record')")
        read_events(client, job["eventsUrl"])
    out = subprocess.run(
        [sys.executable, "-m", "cli", "events", "--", job["jobId"]],
        env={**stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert msgspec.json.decode(out[0])["type"] == "submission.requested"
    kinds = [msgspec.json.decode(line.split("\t", 1)[1])["type"] for line in out[1:]]
    assert kinds == ["execution.started", "execution.output", "execution.finished"]


def test_idle_streams_get_comment_heartbeats(stack: Stack, runner) -> None:
    with stack.client() as client:
        job = submit(client, "import time\ntime.sleep(1.6)\nprint('late')")
        lines: list[str] = []
        with client.stream("GET", job["eventsUrl"]) as res:
            for line in res.iter_lines():
                lines.append(line)
                if line.startswith("event: done"):
                    break
    # SSE_HEARTBEAT_SECONDS is 0.5 in the tests: the silent 1.6 s carry comment lines.
    assert lines.count(": keep-alive") >= 2
    assert "data: " not in [line for line in lines if line.startswith(":")]


def test_trace_context_crosses_the_bus(stack: Stack, runner, nats_url: str) -> None:
    with stack.client() as client:
        job = submit(client, "print('traced')")
        read_events(client, job["eventsUrl"])

    async def headers() -> tuple[dict[str, str], dict[str, str]]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        msg = await js.get_msg(streams.SUBMISSIONS, subject=subjects.submission(job["jobId"]))
        finished = await js.get_msg(streams.EXECUTIONS, subject=subjects.finished_of(job["jobId"]))
        await nc.close()
        return dict(msg.headers or {}), dict(finished.headers or {})

    hdrs, runner_hdrs = asyncio.run(headers())
    assert hdrs["Nats-Msg-Id"] == job["jobId"]
    traceparent = r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}"
    gateway_side = re.fullmatch(traceparent, hdrs["traceparent"])
    runner_side = re.fullmatch(traceparent, runner_hdrs.get("traceparent", ""))
    assert gateway_side and runner_side, runner_hdrs
    # The runner continued the gateway's trace (same trace id) in a span of its own.
    assert runner_side.group(1) == gateway_side.group(1)
    assert runner_side.group(2) != gateway_side.group(2)


def _health_requests_counted(client: httpx.Client) -> float:
    body = client.get("/metrics").text
    pattern = r'^coderunner_requests_total\{[^}]*path="/health"[^}]*status_code="200"[^}]*\} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, body, re.M))


def test_metrics_are_exposed(stack: Stack) -> None:
    with stack.client() as client:
        before = _health_requests_counted(client)
        for _ in range(3):
            client.get("/health")
        assert _health_requests_counted(client) == before + 3
        body = client.get("/metrics").text
    assert re.search(r'^coderunner_request_duration_seconds_bucket\{[^}]*path="/health"', body, re.M)


def test_ready_reports_an_unreachable_dependency(stack: Stack) -> None:
    port = embedded.free_port()
    dead = embedded.free_port()  # nothing listens here
    gateway = stack.spawn("gateway", env={"GATEWAY_PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{dead}/0"})
    try:

        def ready() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
            except httpx.HTTPError:
                return None

        res = wait_for(ready, 30, what="second gateway answering")
        assert isinstance(res, httpx.Response)
        assert res.status_code == 503
        body = res.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["nats"] == "ok" and body["checks"]["mongodb"] == "ok"
        assert body["checks"]["redis"].startswith("unavailable")
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        gateway.stop()


def test_runner_answers_with_its_pool_stats(stack: Stack, runner, nats_url: str) -> None:
    from schemas.ops import RunnerStats

    with stack.client() as client:
        for _ in range(3):
            read_events(client, submit(client, "print(1)")["eventsUrl"])

    async def ask() -> bytes:
        nc = await nats.connect(nats_url)
        try:
            return (await nc.request(subjects.RUNNER_STATS, b"", timeout=5)).data
        finally:
            await nc.close()

    stats = msgspec.json.decode(asyncio.run(ask()), type=RunnerStats)
    assert stats.pool.backend == "bwrap"
    assert stats.pool.warm_hits >= 3
    assert stats.pool.created >= stats.pool.destroyed + stats.pool.idle
    assert stats.concurrency == 2
    # Which mechanism enforces each limit is reported, and matches this host.
    assert set(stats.enforcement) >= {"memory", "pids", "cpu", "seccomp"}
    if all(os.access(f"/sys/fs/cgroup/{c}", os.W_OK) for c in ("memory", "pids", "cpu")):
        assert stats.enforcement["memory"] == "cgroup v1"
