"""A job's history as the streams hold it: its submission, its execution events, and their fold
into the :class:`~schemas.results.JobResult` document (the result route, the SSE ``done`` event and
the caching consumer all use this one fold).

Reads are direct gets by subject: stateless, no consumer is created.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec
from msgspec import structs
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import streams
from schemas import subjects
from schemas.executions import (
    ExecutionEvent,
    ExecutionFinished,
    ExecutionStarted,
    OutputChunk,
    Verdict,
    execution_decoder,
)
from schemas.grades import Graded, GradeVerdict, TestGraded
from schemas.results import JobResult
from schemas.submissions import SubmissionRequested, submission_decoder

log = logging.getLogger(__name__)


async def job_messages(js: JetStreamContext, job_id: str, after_seq: int = 0) -> AsyncIterator[tuple[int, bytes]]:
    """Stored execution events of one job, raw, in order, read with direct gets by subject.

    Stateless (no consumer is created), so it suits one-off reads such as ``GET /result``.
    """
    subject = subjects.executions_of(job_id)
    seq = after_seq + 1
    while True:
        try:
            raw = await js.get_msg(streams.EXECUTIONS, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return
        assert raw.seq is not None and raw.data is not None
        yield raw.seq, raw.data
        seq = raw.seq + 1


async def job_events(
    js: JetStreamContext, job_id: str, after_seq: int = 0
) -> AsyncIterator[tuple[int, ExecutionEvent]]:
    """Stored execution events of one job, decoded (see :func:`job_messages`)."""
    async for seq, data in job_messages(js, job_id, after_seq):
        try:
            yield seq, execution_decoder.decode(data)
        except msgspec.DecodeError:
            log.error("undecodable event at %s seq %s skipped", streams.EXECUTIONS, seq)


async def fold_job(js: JetStreamContext, job_id: str) -> JobResult:
    result = JobResult(job_id=job_id)
    async for seq, event in job_events(js, job_id):
        result = apply(result, event, seq)
    return result


async def submission_of(js: JetStreamContext, job_id: str) -> SubmissionRequested | None:
    try:
        raw = await js.get_msg(streams.SUBMISSIONS, subject=subjects.submission(job_id), direct=True)
    except NotFoundError:
        return None
    return submission_decoder.decode(raw.data or b"")


async def job_finished(js: JetStreamContext, job_id: str) -> bool:
    return await _exists(js, subjects.finished_of(job_id))


async def job_graded(js: JetStreamContext, job_id: str) -> bool:
    return await _exists(js, subjects.graded_of(job_id))


async def _exists(js: JetStreamContext, subject: str) -> bool:
    try:
        await js.get_msg(streams.EXECUTIONS, subject=subject, direct=True)
    except NotFoundError:
        return False
    return True


def apply(result: JobResult, event: ExecutionEvent, seq: int) -> JobResult:
    """Fold one event into the result. Pure, so replays give the same answer."""
    if result.terminal:
        return result
    if event.attempt < result.attempt:
        # Late output of an attempt that was superseded by a redelivery.
        return structs.replace(result, last_seq=seq)
    if event.attempt > result.attempt:
        # A new attempt restarts the output: what the dead runner printed is discarded.
        result = JobResult(job_id=result.job_id, status="running", attempt=event.attempt)
    match event:
        case ExecutionStarted():
            return structs.replace(result, status="running", last_seq=seq)
        case OutputChunk(stream="stdout", text=text):
            return structs.replace(result, stdout=result.stdout + text, last_seq=seq)
        case OutputChunk(text=text):
            return structs.replace(result, stderr=result.stderr + text, last_seq=seq)
        case TestGraded(result=test):
            tests = [t for t in result.tests if t.test_id != test.test_id] + [test]
            return structs.replace(result, tests=sorted(tests, key=lambda t: t.index), last_seq=seq)
        case Graded(grade=grade):
            return structs.replace(
                result,
                status="failed" if grade.verdict is GradeVerdict.SANDBOX_ERROR else "completed",
                tests=grade.tests,
                grade=grade,
                last_seq=seq,
            )
        case ExecutionFinished():
            failed = event.verdict is Verdict.SANDBOX_ERROR
            return structs.replace(
                result,
                # A graded job ends with its grade, not with its run.
                status="grading" if event.graded else ("failed" if failed else "completed"),
                exit_code=event.exit_code,
                verdict=event.verdict,
                duration_ms=event.duration_ms,
                stdout_truncated=event.stdout_truncated,
                stderr_truncated=event.stderr_truncated,
                signal=event.signal,
                message=event.message,
                last_seq=seq,
            )
    return result
