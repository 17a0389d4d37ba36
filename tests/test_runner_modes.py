"""The runner dispatches on a submission's mode: a run streams the program's output; a graded job
goes through the test pipeline (the program is loaded once; tests run in children)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import nats
import pytest

from bus import client, streams
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import ExecutionEvent, ExecutionFinished, OutputChunk, TestObserved, Verdict
from schemas.submissions import Limits, Mode, SubmissionRequested, TestInput
from tests.conftest import App, Stack, wait_for
from tests.helpers import stored_messages

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runner(stack: Stack) -> Iterator[App]:
    app = stack.runner()
    yield app
    app.stop()


def _submit(nats_url: str, mode: Mode, code: str, tests: list[TestInput] | None = None) -> str:
    job_id = f"mode-{secrets.token_hex(8)}"
    job = SubmissionRequested(
        job_id=job_id,
        mode=mode,
        code=code,
        user_id="u1",
        limits=Limits(),
        submitted_at=datetime.now(UTC),
        tests=tests or [],
    )

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        await client.publish(nc.jetstream(), subjects.submission(job_id), job, msg_id=job_id)
        await nc.close()

    asyncio.run(publish())
    return job_id


def _events(nats_url: str, job_id: str) -> list[ExecutionEvent]:
    raw = stored_messages(nats_url, streams.EXECUTIONS, subjects.executions_of(job_id))
    return [msgspec.json.decode(r, type=ExecutionEvent) for r in raw]


def _finished(nats_url: str, job_id: str) -> list[ExecutionEvent]:
    return wait_for(
        lambda: (e := _events(nats_url, job_id)) and isinstance(e[-1], ExecutionFinished) and e,
        30,
        what=f"{job_id} finished",
    )  # type: ignore[return-value]


def test_run_mode_streams_output_and_grade_mode_does_not(stack: Stack, runner: App, nats_url: str) -> None:
    ran = _finished(nats_url, _submit(nats_url, "run", "print('visible')"))
    assert [e.text for e in ran if isinstance(e, OutputChunk)] == ["visible\n"]
    tests = [TestInput(id="a", stdin="one\n"), TestInput(id="b", stdin="two\n")]
    graded = _finished(nats_url, _submit(nats_url, "grade", "print(input())", tests))
    # The test pipeline: nothing streamed (test children write to the harness's pipes); one
    # observation per test, in order, then the run's end, which says a grade follows.
    assert not [e for e in graded if isinstance(e, OutputChunk)]
    observed = [e for e in graded if isinstance(e, TestObserved)]
    assert [(o.test_id, o.index, o.count, o.stdout) for o in observed] == [("a", 0, 2, "one\n"), ("b", 1, 2, "two\n")]
    finished = graded[-1]
    assert isinstance(finished, ExecutionFinished) and finished.verdict is Verdict.OK and finished.graded


def test_grade_mode_reports_a_program_that_does_not_compile(stack: Stack, runner: App, nats_url: str) -> None:
    graded = _finished(nats_url, _submit(nats_url, "grade", "def broken(:\n", [TestInput(id="a")]))
    [observed] = [e for e in graded if isinstance(e, TestObserved)]
    assert observed.error is not None and observed.error.type == "SyntaxError" and observed.error.phase == "compile"
    assert "main.py" in observed.stderr and "harness" not in observed.stderr


def test_a_grade_without_tests_is_dead_lettered(stack: Stack, runner: App, nats_url: str) -> None:
    job_id = _submit(nats_url, "grade", "print(1)")

    def dead() -> list[bytes]:
        return [
            raw
            for raw in stored_messages(nats_url, streams.DEADLETTER, subjects.deadletter("submissions"))
            if job_id.encode() in raw
        ]

    [raw] = wait_for(dead, 30, what="dead letter")  # type: ignore[misc]
    letter = msgspec.json.decode(raw, type=DeadLetter)
    assert letter.reason is DeadLetterReason.INVALID and not _events(nats_url, job_id)
