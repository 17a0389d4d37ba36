"""Progress consumer: the projection of the streams into stored results and each student's progress
(:mod:`progress.projection`), applied exactly once per event.

Two durables, both in stream order (``in_order``): ``progress`` on EXECUTIONS (``finished`` and
``graded``: stored results, and grades into progress) and ``progress-inputs`` on PROGRESS (attempts
and completions students record). After each applied event it announces ``progress.changed`` for
the user, so caches of their summary are dropped (the caching consumer) at once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js import JetStreamContext

from bus import client, history, streams
from consumers.base import Delivery, Deps, Handler
from progress.projection import Projection
from schemas import subjects
from schemas.executions import ExecutionFinished
from schemas.grades import Graded
from schemas.progress import AttemptRecorded, ItemCompleted, ProgressChanged

DATABASE = "coderunner"


async def announce(js: JetStreamContext, user_id: str, item: str, source: str) -> None:
    event = ProgressChanged(user_id=user_id, event_id=source, at=datetime.now(UTC), item=item, source=source)
    # One announcement per applied event, however often it is redelivered.
    await client.publish(js, subjects.progress(user_id, "changed"), event, msg_id=f"progress-changed-{source}")


class ResultsAndGrades:
    def __init__(self, deps: Deps, projection: Projection) -> None:
        self.deps = deps
        self.projection = projection

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, ExecutionFinished | Graded):
            return
        job = await self.deps.submission(event.job_id)
        result = await history.fold_job(self.deps.js, event.job_id)
        at = event.finished_at if isinstance(event, ExecutionFinished) else event.graded_at
        await self.projection.result(job, result, delivery.stream_seq, at)
        if isinstance(event, Graded):
            item = await self.projection.graded(job, event, delivery.stream_seq)
            if item is not None:
                await announce(self.deps.js, job.user_id, item, f"{streams.EXECUTIONS}-{delivery.stream_seq}")


class Inputs:
    def __init__(self, deps: Deps, projection: Projection) -> None:
        self.deps = deps
        self.projection = projection

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, AttemptRecorded):
            item = await self.projection.attempt(event, delivery.stream_seq)
        elif isinstance(event, ItemCompleted):
            item = await self.projection.complete(event, delivery.stream_seq)
        else:
            return
        if item is not None:
            await announce(self.deps.js, event.user_id, item, f"{streams.PROGRESS}-{delivery.stream_seq}")


async def _projection(deps: Deps) -> Projection:
    projection = Projection(deps.mongo.get_default_database(DATABASE))
    await projection.ensure_indexes()
    return projection


async def build(deps: Deps) -> Handler:
    return ResultsAndGrades(deps, await _projection(deps))


async def build_inputs(deps: Deps) -> Handler:
    return Inputs(deps, await _projection(deps))
