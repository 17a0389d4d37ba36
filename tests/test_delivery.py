"""Delivery guarantees: a runner killed mid-job loses nothing, give-ups are dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import nats
import pytest

from bus import streams
from sandbox.executor import HARNESS_PYC, READY
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import ExecutionFinished, execution_decoder
from tests import leftovers
from tests.conftest import Stack, wait_for
from tests.helpers import read_events, stored_messages, submit
from tests.sandboxes import descendants

pytestmark = pytest.mark.e2e

SLOW = "import time\nprint('start', flush=True)\ntime.sleep(2.5)\nprint('end')"


def _publish_raw(nats_url: str, subject: str, payload: bytes) -> None:
    async def pub() -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().publish(subject, payload)
        await nc.close()

    asyncio.run(pub())


def _sandbox_processes(runner_pid: int) -> dict[int, str]:
    """The runner's sandbox processes: pid -> start time (so that a reused pid is not mistaken).

    Every bwrap sandbox is a descendant of its runner: bwrap itself, and inside it the harness and
    the program's processes, which all carry the compiled harness's path (or, without it, the
    harness source) in their command line.
    """
    found: dict[int, str] = {}
    for pid in descendants(runner_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            continue
        joined = b" ".join(argv)
        if (
            Path(argv[0].decode(errors="replace")).name == "bwrap"
            or HARNESS_PYC.encode() in argv
            or READY.strip(b"\0\n") in joined
        ):
            found[pid] = start
    return found


def _still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` that still run (a zombie has ended: its new parent reaps it)."""
    running = []
    for pid, start in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] not in ("Z", "X"):
            running.append(pid)
    return running


def _running_with_output(stack: Stack, job_id: str, attempt: int) -> bool:
    with stack.client() as client:
        r = client.get(f"/execution/result/{job_id}").json()
    return r["status"] == "running" and r["attempt"] == attempt and r["stdout"] == "start\n"


def test_runner_killed_mid_job_is_redelivered_and_completes_once(stack: Stack, nats_url: str) -> None:
    first = stack.runner(RUNNER_CONCURRENCY="1")
    with stack.client() as client:
        job = submit(client, SLOW)
    wait_for(lambda: _running_with_output(stack, job["jobId"], 1), what="first attempt running")
    assert first.proc is not None
    sandboxes = _sandbox_processes(first.proc.pid)
    # The running job's sandbox: bwrap, the harness and the program (at least).
    assert len(sandboxes) >= 2, sandboxes
    first.kill()
    # --die-with-parent: the sandbox does not outlive its runner.
    wait_for(lambda: not _still_running(sandboxes), timeout=5, what="sandbox gone with its runner")
    second = stack.runner(RUNNER_CONCURRENCY="1")
    try:
        with stack.client() as client:
            events = read_events(client, job["eventsUrl"])
        done = events[-1].data
        assert done["status"] == "completed"
        assert done["verdict"] == "OK"
        assert done["attempt"] == 2
        # Output of the dead attempt is superseded, not duplicated.
        assert done["stdout"] == "start\nend\n"
        finished = stored_messages(nats_url, streams.EXECUTIONS, subjects.finished_of(job["jobId"]))
        assert len(finished) == 1
        event = execution_decoder.decode(finished[0])
        assert isinstance(event, ExecutionFinished) and event.attempt == 2
    finally:
        second.stop()


def test_undecodable_submission_is_dead_lettered(stack: Stack, nats_url: str) -> None:
    runner = stack.runner()
    try:
        job_id = "garbage-job-0001"
        _publish_raw(nats_url, subjects.submission(job_id), b'{"type": "submission.requested", "code": 5}')

        def recorded() -> list[DeadLetter]:
            raw = stored_messages(nats_url, streams.DEADLETTER, subjects.deadletter("submissions"))
            letters = [msgspec.json.decode(r, type=DeadLetter) for r in raw]
            return [d for d in letters if d.job_id == job_id]

        letters = wait_for(recorded, what="dead letter")
        assert isinstance(letters, list) and len(letters) == 1
        assert letters[0].reason is DeadLetterReason.UNDECODABLE
        assert letters[0].payload == '{"type": "submission.requested", "code": 5}'
        # The runner carries on with the next job.
        with stack.client() as client:
            ok = submit(client, "print('still fine')")
            assert read_events(client, ok["eventsUrl"])[-1].data["stdout"] == "still fine\n"
    finally:
        runner.stop()


def test_job_whose_runners_keep_dying_is_dead_lettered_and_finished(stack: Stack, nats_url: str) -> None:
    env = {"RUNNER_CONCURRENCY": "1", "RUNNER_MAX_DELIVER": "2"}
    runner = stack.runner(**env)
    with stack.client() as client:
        job = submit(client, SLOW)
    for attempt in (1, 2):
        wait_for(lambda a=attempt: _running_with_output(stack, job["jobId"], a), what=f"attempt {attempt}")
        runner.kill()
        runner = stack.runner(**env)
    try:
        with stack.client() as client:
            done = read_events(client, job["eventsUrl"])[-1].data
        assert done["status"] == "failed"
        assert done["verdict"] == "SANDBOX_ERROR"
        raw = stored_messages(nats_url, streams.DEADLETTER, subjects.deadletter("submissions"))
        letters = [msgspec.json.decode(r, type=DeadLetter) for r in raw]
        mine = [d for d in letters if d.job_id == job["jobId"]]
        assert [d.reason for d in mine] == [DeadLetterReason.MAX_DELIVERIES]
    finally:
        runner.stop()


def test_runner_refuses_to_start_without_a_sandbox(stack: Stack) -> None:
    app = stack.spawn("runner", env={"SANDBOX_PYTHON": "/nonexistent/python3"}, name="nosandbox")
    assert app.proc is not None
    assert app.proc.wait(30) == 1
    assert "refusing to start" in app.log()
    assert "SANDBOX_PYTHON" in app.log()


def test_runner_refuses_to_start_without_docker(stack: Stack, tmp_path) -> None:
    app = stack.spawn(
        "runner",
        env={"SANDBOX_BACKEND": "docker", "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"},
        name="nodocker",
    )
    assert app.proc is not None
    assert app.proc.wait(60) == 1
    assert "refusing to start" in app.log()
    assert "DOCKER_HOST" in app.log()


def test_docker_backed_runner_end_to_end(stack: Stack) -> None:
    from tests.sandboxes import DOCKER_HOST, DOCKER_IMAGE

    runner = stack.runner(
        SANDBOX_BACKEND="docker", DOCKER_HOST=DOCKER_HOST, SANDBOX_IMAGE=DOCKER_IMAGE, RUNNER_ID=leftovers.runner_id()
    )
    try:
        with stack.client() as client:
            job = submit(client, "import sys\nprint('from a container')\nprint(input(), file=sys.stderr)", stdin="hi\n")
            done = read_events(client, job["eventsUrl"])[-1].data
        assert done["verdict"] == "OK"
        assert done["stdout"] == "from a container\n"
        assert done["stderr"] == "hi\n"
    finally:
        runner.stop()
