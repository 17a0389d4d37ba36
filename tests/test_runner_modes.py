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
from schemas.executions import ExecutionEvent, ExecutionFinished, OutputChunk, Verdict
from schemas.submissions import Limits, Mode, SubmissionRequested
from tests.conftest import App, Stack, wait_for
from tests.helpers import stored_messages

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runner(stack: Stack) -> Iterator[App]:
    app = stack.runner()
    yield app
    app.stop()


def _submit(nats_url: str, mode: Mode, code: str) -> str:
    job_id = f"mode-{secrets.token_hex(8)}"
    job = SubmissionRequested(
        job_id=job_id, mode=mode, code=code, user_id="u1", limits=Limits(), submitted_at=datetime.now(UTC)
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
    graded = _finished(nats_url, _submit(nats_url, "grade", "print('not streamed')"))
    # The test pipeline: nothing streamed (test children write to the harness's pipes).
    assert not [e for e in graded if isinstance(e, OutputChunk)]
    finished = graded[-1]
    assert isinstance(finished, ExecutionFinished) and finished.verdict is Verdict.OK


def test_grade_mode_reports_a_program_that_does_not_load(stack: Stack, runner: App, nats_url: str) -> None:
    graded = _finished(nats_url, _submit(nats_url, "grade", "def broken(:\n"))
    finished = graded[-1]
    assert isinstance(finished, ExecutionFinished) and finished.verdict is Verdict.RUNTIME_ERROR
