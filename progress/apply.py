"""One event into the projection: the same code for the live consumer and for a rebuild."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from bus import history
from progress.projection import Projection
from schemas.executions import ExecutionFinished
from schemas.grades import Graded
from schemas.progress import AttemptRecorded, ItemCompleted
from schemas.submissions import SubmissionRequested

SubmissionOf = Callable[[str], Awaitable[SubmissionRequested]]


async def apply(
    js: JetStreamContext,
    projection: Projection,
    event: object,
    seq: int,
    submission_of: SubmissionOf,
) -> tuple[str, str] | None:
    """Apply ``event`` (at stream sequence ``seq``; any other event is ignored); returns the (user,
    item) whose progress it concerns."""
    match event:
        case ExecutionFinished() | Graded():
            job = await submission_of(event.job_id)
            result = await history.fold_job(js, event.job_id)
            at = event.finished_at if isinstance(event, ExecutionFinished) else event.graded_at
            await projection.result(job, result, seq, at)
            if isinstance(event, Graded):
                item = await projection.graded(job, event, seq)
                return (job.user_id, item) if item else None
        case AttemptRecorded():
            return event.user_id, await projection.attempt(event, seq) or ""
        case ItemCompleted():
            return event.user_id, await projection.complete(event, seq) or ""
    return None
