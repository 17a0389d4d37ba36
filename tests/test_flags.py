"""Feature flags (flags/, docs/flags.md), against a real stack under a steady stream of submissions.

Each flag is flipped while jobs keep coming; the running processes pick the change up within
seconds (measured: each process's ``coderunner_flag_value`` as it scrapes, and the behaviour of the
jobs that came after), nothing is restarted, and every accepted job finishes. The kill switch
answers 503 problem details while reads, event streams and queued jobs keep working, and the queue
drains. Each behavioural check is also run where the flag is off, and fails there. The CLI refuses
a bad name or value in one line; every change leaves an audit event on the bus.

The module has a Redis of its own: flags live in a Redis hash, and the kill switch must not reach
the stacks of other modules (which share the session's Redis).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest
import redis

from bus import streams
from config.loader import load as load_settings
from flags.declared import GRADING_NEAR_MISS, READ_ONLY, SANDBOX_DOCKER, on_for
from flags.store import REDIS_KEY, FlagReader
from local import embedded
from runner.settings import RunnerSettings
from runner.worker import Runner
from schemas import subjects
from schemas.executions import ExecutionStarted, execution_decoder
from schemas.flags import flag_event_decoder
from schemas.grades import Graded
from telemetry import metrics
from tests import leftovers
from tests.conftest import ROOT, App, Stack, _start_servers, _stop_servers, stack_env, wait_for, wait_ready
from tests.helpers import read_events
from tests.sandboxes import DOCKER_HOST, DOCKER_IMAGE

# The load: one submission every LOAD_INTERVAL seconds from a few students, every GRADE_EVERY-th a
# graded one (problem 101, with an answer that is right but for its capital letters).
LOAD_INTERVAL = 0.4
GRADE_EVERY = 4
STUDENTS = 4
HELLO = 101
NEAR_MISS_CODE = 'name = input()\nprint("hello, " + name + "!")\n'
# How long a change may take to reach a process before the test gives up (it reports the figure).
WITHIN = 15.0

pytestmark = pytest.mark.e2e


# --- the stack --------------------------------------------------------------------------------------


@dataclass
class Setup:
    stack: Stack
    runner: App
    gateway_metrics: str
    runner_metrics: str
    grading_metrics: str
    redis_url: str
    nats_url: str
    # What each flip measured, printed at the end (pytest -s shows it).
    figures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def flag_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    servers = _start_servers(tmp_path_factory.mktemp("flags-redis"), {"redis"})
    try:
        yield servers.urls["redis"]
    finally:
        _stop_servers(servers)


@pytest.fixture(scope="module")
def setup(
    nats_url: str, shared_servers: dict[str, str], flag_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """Gateway, consumers and one runner with both sandbox backends (bubblewrap its own, Docker its
    second), each serving /metrics; the curriculum seeded."""
    tmp = tmp_path_factory.mktemp("flags-stack")
    port, grading_port, runner_port = (embedded.free_port() for _ in range(3))
    env = stack_env(nats_url, {**shared_servers, "redis": flag_redis}, GATEWAY_PORT=str(port))
    s = Stack(env=env, base_url=f"http://127.0.0.1:{port}", tmp=tmp)
    try:
        gateway = s.spawn("gateway")
        for name in streams.CONSUMERS:
            extra = {"METRICS_PORT": str(grading_port)} if name == "grading" else {}
            s.spawn("consume", name, env=extra).wait_log(f"consumer {name} started")
        wait_ready(gateway, s.base_url)
        subprocess.run(
            [sys.executable, "-m", "cli", "seed"], env=s.env, cwd=ROOT, check=True, capture_output=True, timeout=120
        )
        runner = s.spawn(
            "runner",
            env={
                "SANDBOX_SECOND_BACKEND": "docker",
                "DOCKER_HOST": DOCKER_HOST,
                "SANDBOX_IMAGE": DOCKER_IMAGE,
                "RUNNER_ID": leftovers.runner_id("flags"),
                "METRICS_PORT": str(runner_port),
            },
        )
        runner.wait_log("pulling with concurrency", timeout=120)
        setup = Setup(
            stack=s,
            runner=runner,
            gateway_metrics=f"{s.base_url}/metrics",
            runner_metrics=f"http://127.0.0.1:{runner_port}/metrics",
            grading_metrics=f"http://127.0.0.1:{grading_port}/metrics",
            redis_url=flag_redis,
            nats_url=nats_url,
        )
        yield setup
        print("\n" + "\n".join(setup.figures))
    finally:
        for app in reversed(s.apps):
            app.stop()


def flag_cli(s: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "flag", *args], env=s.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def set_flag(setup: Setup, name: str, value: str) -> float:
    """``coderunner flag set``; the moment it returned (time.time: compared with events' times)."""
    began = time.time()
    out = flag_cli(setup.stack, "set", name, value, "--reason", "tests/test_flags.py")
    assert out.returncode == 0, out.stdout + out.stderr
    done = time.time()
    setup.figures.append(f"flag set {name} {value}: the command took {done - began:.2f} s")
    return done


def flag_value(url: str, name: str) -> float | None:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(f'coderunner_flag_value{{flag="{name}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def took_effect(setup: Setup, url: str, who: str, name: str, value: float, since: float) -> float:
    """Poll a process's /metrics until it holds the flag's new value: when it did (time.time)."""
    wait_for(lambda: flag_value(url, name) == value, WITHIN, 0.02, what=f"{who} to see {name}={value}")
    at = time.time()
    setup.figures.append(f"  {who} saw {name}={value:g} {at - since:.2f} s after the command returned")
    return at


# --- the load ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    job_id: str
    mode: str  # "run" | "grade"
    sent: float  # time.time() when its request went out (a request sent later met the flag's new value)


class Load(threading.Thread):
    """Submissions at a steady pace until stopped: what was accepted, what was refused."""

    def __init__(self, s: Stack, tokens: list[str]) -> None:
        super().__init__(daemon=True, name="flags-load")
        self.stack = s
        self.tokens = tokens
        self.accepted: list[Accepted] = []
        self.refused: list[tuple[float, httpx.Response]] = []
        self.unexpected: list[str] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        clients = [self.stack.client(t) for t in self.tokens]
        try:
            n = 0
            while not self.halt.is_set():
                n += 1
                c = clients[n % len(clients)]
                sent = time.time()
                try:
                    if n % GRADE_EVERY == 0:
                        res = c.post("/execution/submit/grade", json={"code": NEAR_MISS_CODE, "problemId": HELLO})
                        mode = "grade"
                    else:
                        res = c.post("/execution/submit", json={"code": f"print({n})"})
                        mode = "run"
                except httpx.HTTPError as exc:
                    self.unexpected.append(f"{type(exc).__name__}: {exc}")
                else:
                    with self.lock:
                        if res.status_code == 202:
                            self.accepted.append(Accepted(res.json()["jobId"], mode, sent))
                        elif res.status_code == 503:
                            self.refused.append((sent, res))
                        else:
                            self.unexpected.append(f"{res.status_code} {res.text[:200]}")
                self.halt.wait(LOAD_INTERVAL)
        finally:
            for c in clients:
                c.close()

    def refused_since(self, at: float) -> list[httpx.Response]:
        with self.lock:
            return [res for sent, res in self.refused if sent > at]

    def since(self, at: float, mode: str | None = None) -> list[Accepted]:
        with self.lock:
            return [a for a in self.accepted if a.sent > at and (mode is None or a.mode == mode)]


@pytest.fixture(scope="module")
def load(setup: Setup) -> Iterator[Load]:
    running = Load(setup.stack, [setup.stack.new_user() for _ in range(STUDENTS)])
    running.start()
    yield running
    running.halt.set()
    running.join(30)


# --- what the bus says about jobs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    sandbox: str | None = None  # the backend of its last started attempt
    finished: bool = False
    graded: Graded | None = None


async def _observe(nats_url: str, job_ids: list[str]) -> dict[str, Seen]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def last(subject: str) -> Any:
        try:
            raw = await js.get_msg(streams.EXECUTIONS, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return execution_decoder.decode(raw.data or b"")

    seen = {}
    try:
        for job_id in job_ids:
            started = await last(subjects.of_kind(job_id, ExecutionStarted))
            finished = await last(subjects.finished_of(job_id))
            graded = await last(subjects.graded_of(job_id))
            seen[job_id] = Seen(started.sandbox if started else None, finished is not None, graded)
    finally:
        await nc.close()
    return seen


def observe(setup: Setup, jobs: list[Accepted]) -> dict[str, Seen]:
    return asyncio.run(_observe(setup.nats_url, [j.job_id for j in jobs]))


def settled(setup: Setup, jobs: list[Accepted], *, graded: bool = False) -> dict[str, Seen]:
    """Wait until every job has finished (and been graded, for graded ones when ``graded``)."""

    def done() -> dict[str, Seen] | None:
        seen = observe(setup, jobs)
        ok = all(seen[j.job_id].finished and (not graded or j.mode != "grade" or seen[j.job_id].graded) for j in jobs)
        return seen if ok else None

    result = wait_for(done, 90, 0.5, what=f"{len(jobs)} jobs to finish")
    assert isinstance(result, dict)
    return result


def wrong_backends(jobs: list[Accepted], seen: dict[str, Seen], share: int) -> list[str]:
    """Jobs that did not run where the sandbox-docker flag at ``share`` % puts them."""
    want = {j.job_id: "docker" if on_for(SANDBOX_DOCKER, share, j.job_id) else "bwrap" for j in jobs}
    return [f"{j}: {seen[j].sandbox}, not {w}" for j, w in want.items() if seen[j].sandbox != w]


def without_near_miss(jobs: list[Accepted], seen: dict[str, Seen]) -> list[str]:
    """Graded jobs whose grade lacks the near-miss feedback (with the verdict and score unchanged)."""
    missing = []
    for j in jobs:
        graded = seen[j.job_id].graded
        assert graded is not None and graded.grade.verdict == "WRONG_ANSWER" and graded.grade.score == 0
        kind = graded.grade.feedback.kind if graded.grade.feedback else None
        if kind != "NEAR_MISS_CASE":
            missing.append(f"{j.job_id}: feedback {kind}")
    return missing


def some(load: Load, since: float, n: int, mode: str | None = None) -> list[Accepted]:
    """At least ``n`` jobs accepted after ``since`` (the load keeps submitting)."""
    found = wait_for(lambda: (lambda a: a if len(a) >= n else None)(load.since(since, mode)), 60, 0.1)
    assert isinstance(found, list)
    return found


# --- no servers needed --------------------------------------------------------------------------------


def test_the_cli_refuses_a_bad_name_or_value_in_one_line() -> None:
    s = SimpleNamespace(env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    for args, named in (
        (("set", "read-olny", "on"), "'read-olny'"),
        (("set", "read-only", "50"), "'50'"),
        (("set", "sandbox-docker", "101"), "'101'"),
        (("set", "sandbox-docker", "half"), "'half'"),
        (("history", "nope"), "'nope'"),
    ):
        out = flag_cli(s, *args)  # type: ignore[arg-type]
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, (args, out.returncode, out.stderr)
        assert lines[0].startswith(f"coderunner flag {args[0]}: ") and named in lines[0], lines[0]


def test_shares_are_decided_by_a_stable_hash_that_grows_with_the_share() -> None:
    keys = [f"job-{i:06d}" for i in range(4000)]
    at = {p: {k for k in keys if on_for(SANDBOX_DOCKER, p, k)} for p in (0, 10, 20, 50, 100)}
    assert not at[0] and at[100] == set(keys)
    assert at[10] <= at[20] <= at[50]  # raising a share only adds keys
    for p in (10, 20, 50):
        assert abs(len(at[p]) / len(keys) - p / 100) < 0.03, (p, len(at[p]))
    assert at[50] == {k for k in keys if on_for(SANDBOX_DOCKER, 50, k)}  # the same answer every time
    # Another flag at the same share picks other keys (a student is not in every roll-out at once).
    assert at[50] != {k for k in keys if on_for(GRADING_NEAR_MISS, 50, k)}


class _Source:
    where = "a test source"

    def __init__(self) -> None:
        self.values = {"read-only": "on", "sandbox-docker": "30"}
        self.down = True

    async def read(self) -> dict[str, str]:
        if self.down:
            raise ConnectionError("unreachable")
        return dict(self.values)


def test_a_reader_starts_on_the_defaults_and_keeps_the_last_values_while_its_source_fails() -> None:
    async def scenario() -> None:
        source = _Source()
        reader = FlagReader(source, refresh_seconds=0.02)
        await reader.start()  # the first read fails: the declared defaults
        assert not reader.enabled(READ_ONLY) and reader.value(SANDBOX_DOCKER) == 0
        source.down = False
        await asyncio.sleep(0.1)
        assert reader.enabled(READ_ONLY) and reader.value(SANDBOX_DOCKER) == 30
        source.down = True
        source.values = {}
        await asyncio.sleep(0.1)  # several failed reads: the last values stay
        assert reader.enabled(READ_ONLY) and reader.value(SANDBOX_DOCKER) == 30
        source.down = False
        source.values = {"read-only": "sideways"}  # nonsense in the store: that flag's default
        await asyncio.sleep(0.1)
        assert not reader.enabled(READ_ONLY) and reader.value(SANDBOX_DOCKER) == 0
        await reader.stop()

    asyncio.run(scenario())


def test_a_runner_without_the_chosen_backend_runs_the_job_in_its_own_and_counts_it() -> None:
    async def scenario() -> None:
        source = _Source()
        source.down, source.values = False, {"sandbox-docker": "on"}
        reader = FlagReader(source)
        await reader.refresh()
        settings = load_settings(RunnerSettings, {"NATS_URL": "nats://127.0.0.1:1"})
        bwrap, docker = SimpleNamespace(name="bwrap"), SimpleNamespace(name="docker")
        fallback = metrics.SANDBOX_JOBS.labels("bwrap", "fallback")
        before = fallback._value.get()
        only_bwrap = Runner(None, bwrap, settings, flags=reader)  # type: ignore[arg-type]
        assert only_bwrap._sandbox_for("job-00000001") is bwrap
        assert fallback._value.get() == before + 1
        both = Runner(None, bwrap, settings, sandboxes={"bwrap": bwrap, "docker": docker}, flags=reader)  # type: ignore[arg-type]
        assert both._sandbox_for("job-00000001") is docker

    asyncio.run(scenario())


# --- against the stack, under load ----------------------------------------------------------------------


def test_set_stores_the_value_lists_it_and_leaves_an_audit_event(setup: Setup) -> None:
    s = setup.stack
    out = flag_cli(s, "set", "grading-near-miss", "25%", "--reason", "audit check", "--by", "ops-ada")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("grading-near-miss: off -> 25 (by ops-ada on "), out.stdout
    assert redis.Redis.from_url(setup.redis_url).hget(REDIS_KEY, "grading-near-miss") == b"25"

    async def last_change() -> bytes:
        nc = await nats.connect(setup.nats_url)
        try:
            msg = await nc.jetstream().get_msg(
                streams.FLAGS, subject=subjects.flag_changed("grading-near-miss"), direct=True
            )
            return msg.data or b""
        finally:
            await nc.close()

    event = flag_event_decoder.decode(asyncio.run(last_change()))
    assert (event.flag, event.old, event.new, event.changed_by, event.reason) == (
        "grading-near-miss",
        "off",
        "25",
        "ops-ada",
        "audit check",
    )
    assert event.host == socket.gethostname() and (datetime.now(UTC) - event.changed_at).total_seconds() < 60
    listed = flag_cli(s, "list").stdout.splitlines()
    assert any(line.split()[:2] == ["grading-near-miss", "25"] for line in listed), listed
    assert any(line.split()[:3] == ["read-only", "off", "(default)"] for line in listed), listed
    trail = flag_cli(s, "history", "grading-near-miss").stdout.strip().splitlines()
    assert "off -> 25" in trail[-1] and "ops-ada@" in trail[-1] and "audit check" in trail[-1], trail
    set_flag(setup, "grading-near-miss", "off")
    assert "25 -> off" in flag_cli(s, "history").stdout.strip().splitlines()[-1]


def test_sandbox_docker_moves_each_job_to_the_backend_its_share_says_without_a_restart(
    setup: Setup, load: Load
) -> None:
    start = time.time()
    try:
        # Off (the default): every job in bubblewrap. The check for "in Docker" fails on them.
        off = some(load, start, 4, "run")
        seen = settled(setup, off)
        assert not wrong_backends(off, seen, 0)
        assert len(wrong_backends(off, seen, 100)) == len(off)

        for share in (100, 50, 0):
            changed = set_flag(setup, "sandbox-docker", str(share))
            effect = took_effect(setup, setup.runner_metrics, "the runner", "sandbox-docker", share, changed)
            jobs = some(load, effect, 8)
            seen = settled(setup, jobs)
            assert not wrong_backends(jobs, seen, share), share
            if share == 50:
                assert {s.sandbox for s in seen.values()} == {"bwrap", "docker"}, seen
        setup.figures.append(f"  runner pid {setup.runner.proc.pid if setup.runner.proc else '?'}: never restarted")
        assert setup.runner.proc is not None and setup.runner.proc.poll() is None
    finally:
        set_flag(setup, "sandbox-docker", "off")


def test_grading_near_miss_changes_the_feedback_of_new_grades_within_seconds(setup: Setup, load: Load) -> None:
    start = time.time()
    try:
        off = some(load, start, 2, "grade")
        seen = settled(setup, off, graded=True)
        assert len(without_near_miss(off, seen)) == len(off)  # the check fails without the flag

        changed = set_flag(setup, "grading-near-miss", "on")
        effect = took_effect(setup, setup.grading_metrics, "the grading consumer", "grading-near-miss", 100, changed)
        on = some(load, effect, 3, "grade")
        seen = settled(setup, on, graded=True)
        assert not without_near_miss(on, seen)
        feedback = next(iter(seen.values())).graded.grade.feedback  # type: ignore[union-attr]
        assert feedback is not None and feedback.title.startswith("Almost!")

        changed = set_flag(setup, "grading-near-miss", "off")
        effect = took_effect(setup, setup.grading_metrics, "the grading consumer", "grading-near-miss", 0, changed)
        after = some(load, effect, 2, "grade")
        seen = settled(setup, after, graded=True)
        assert len(without_near_miss(after, seen)) == len(after)
    finally:
        set_flag(setup, "grading-near-miss", "off")


def assert_read_only(res: httpx.Response) -> None:
    assert res.status_code == 503, (res.status_code, res.text)
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.headers["retry-after"] == "30"
    body = res.json()
    assert body["type"] == "https://coderunner.dev/problems/read-only"
    assert body["status"] == 503 and body["title"] == "Read-only mode"
    assert "read-only mode" in body["detail"]


def runner_backlog(setup: Setup) -> int:
    async def read() -> int:
        nc = await nats.connect(setup.nats_url)
        try:
            info = await nc.jetstream().consumer_info(streams.SUBMISSIONS, streams.RUNNER_CONSUMER)
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_read_only_answers_503_problems_keeps_reads_working_and_the_queue_drains(setup: Setup, load: Load) -> None:
    s = setup.stack
    with s.client() as c:
        try:
            # Work in the queue when the switch goes on: it must still run.
            queued = [
                c.post("/execution/submit", json={"code": "import time\ntime.sleep(0.4)\nprint('queued')"})
                for _ in range(12)
            ]
            assert all(r.status_code == 202 for r in queued), [r.text for r in queued]
            changed = set_flag(setup, "read-only", "on")
            effect = took_effect(setup, setup.gateway_metrics, "the gateway", "read-only", 100, changed)
            backlog = runner_backlog(setup)
            setup.figures.append(f"  {backlog} submissions were queued or running when the gateway saw it")

            assert_read_only(c.post("/execution/submit", json={"code": "print(1)"}))
            assert_read_only(c.post("/execution/submit/grade", json={"code": NEAR_MISS_CODE, "problemId": HELLO}))
            assert_read_only(c.post("/progress/attempt", json={"problemId": HELLO, "code": "print(1)"}))
            # The load meets the same answer, and nothing it sent after the switch was queued.
            refused = wait_for(lambda: (lambda r: r if len(r) >= 3 else None)(load.refused_since(effect)), 10, 0.1)
            assert isinstance(refused, list)
            for res in refused:
                assert_read_only(res)
            assert not load.since(effect)

            # Reads and event streams keep working; the queued jobs run and the queue drains.
            last = queued[-1].json()
            assert c.get(last["resultUrl"]).status_code == 200
            assert c.get("/execution/history").status_code == 200
            assert c.get("/progress/summary").status_code == 200
            events = read_events(c, last["eventsUrl"])
            assert events[-1].event == "done" and events[-1].data["stdout"] == "queued\n", events[-1]
            wait_for(lambda: runner_backlog(setup) == 0, 60, 0.1, what="the queue to drain")
            setup.figures.append(f"  the queue drained {time.time() - effect:.2f} s after the gateway saw read-only")
            jobs = [Accepted(r.json()["jobId"], "run", changed) for r in queued]
            assert all(seen.finished for seen in settled(setup, jobs).values())
        finally:
            changed = set_flag(setup, "read-only", "off")
        took_effect(setup, setup.gateway_metrics, "the gateway", "read-only", 0, changed)
        res = c.post("/execution/submit", json={"code": "print('open again')"})
        assert res.status_code == 202, res.text
        with pytest.raises(AssertionError):  # the check above fails with the switch off
            assert_read_only(res)
        some(load, time.time(), 2)  # the load is accepted again


def test_no_accepted_job_was_lost_and_nothing_restarted(setup: Setup, load: Load) -> None:
    load.halt.set()
    load.join(30)
    assert not load.unexpected, load.unexpected[:5]
    with load.lock:
        accepted = list(load.accepted)
    seen = settled(setup, accepted, graded=True)
    lost = [j.job_id for j in accepted if not seen[j.job_id].finished]
    assert not lost and len(accepted) > 40, (len(accepted), lost)
    for app in setup.stack.apps:
        assert app.proc is not None and app.proc.poll() is None, f"{app.args} exited"
    refused = len(load.refused)
    setup.figures.append(
        f"load: {len(accepted)} jobs accepted and finished ({sum(a.mode == 'grade' for a in accepted)} graded), "
        f"{refused} refused while read-only, none lost; no process restarted"
    )
