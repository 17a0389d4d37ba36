"""A job's current state, folded from its execution events.

This is the document ``GET /execution/result/{jobId}`` returns and the data of the SSE ``done``
event, so it is part of the public contract too.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, structs

from schemas.executions import ExecutionEvent, ExecutionFinished, ExecutionStarted, OutputChunk, Verdict

Status = Literal["queued", "running", "completed", "failed"]


def cache_key(job_id: str) -> str:
    """Redis key under which the caching consumer keeps a finished job's :class:`JobResult`."""
    return f"coderunner:result:{job_id}"


class JobResult(Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    status: Status = "queued"
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    verdict: Verdict | None = None
    duration_ms: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    signal: int | None = None
    message: str | None = None
    attempt: int = 0
    # Stream sequence of the last event folded in: the SSE ``id`` to resume after.
    last_seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed")


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
        case ExecutionFinished():
            return structs.replace(
                result,
                status="failed" if event.verdict is Verdict.SANDBOX_ERROR else "completed",
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
