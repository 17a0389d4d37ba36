"""Progress consumer: the projection of the streams into stored results and each student's progress
(:mod:`progress.projection`), applied exactly once per event.

Two durables, both in stream order (``in_order``): ``progress`` on EXECUTIONS (``finished`` and
``graded``: stored results, and grades into progress) and ``progress-inputs`` on PROGRESS (attempts
and completions students record). After each applied event it announces ``progress.changed`` for
the user, so caches of their summary are dropped (the caching consumer) at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.js import JetStreamContext

from bus import client, streams
from bus.settle import Transient
from consumers.base import Delivery, Deps, Handler
from progress.apply import apply
from progress.projection import Projection, pointer
from schemas import subjects
from schemas.progress import ProgressChanged

DATABASE = "coderunner"
# How long an event waits for a rebuild's swap to finish before it is handed back (well under AckWait).
SWAP_WAIT_SECONDS = 10.0


async def announce(js: JetStreamContext, user_id: str, item: str, source: str) -> None:
    event = ProgressChanged(user_id=user_id, event_id=source, at=datetime.now(UTC), item=item, source=source)
    # One announcement per applied event, however often it is redelivered.
    await client.publish(js, subjects.progress(user_id, "changed"), event, msg_id=f"progress-changed-{source}")


class ProgressConsumer:
    """Both durables' handler: applies each event to the live collections (the pointer says which;
    while a rebuild swaps them in, events are handed back and come again a moment later)."""

    def __init__(self, deps: Deps, stream: str) -> None:
        self.deps = deps
        self.stream = stream
        self.db = deps.mongo.get_default_database(DATABASE)
        self.projection = Projection(self.db)

    async def __call__(self, delivery: Delivery) -> None:
        current = await pointer(self.db)
        # A swap takes a moment: wait for it with the event in hand (a nak's back-off would delay
        # every event behind it by seconds), up to a bound, then hand it back.
        waited = 0.0
        while current.switching and waited < SWAP_WAIT_SECONDS:
            await asyncio.sleep(0.05)
            waited += 0.05
            current = await pointer(self.db)
        if current.switching:
            raise Transient("the progress projection is being swapped; retrying")
        if current.names != self.projection.names:
            self.projection = Projection(self.db, current.names)
        applied = await apply(self.deps.js, self.projection, delivery.event, delivery.stream_seq, self.deps.submission)
        if applied is not None and applied[1]:
            await announce(self.deps.js, applied[0], applied[1], f"{self.stream}-{delivery.stream_seq}")


async def _consumer(deps: Deps, stream: str) -> ProgressConsumer:
    consumer = ProgressConsumer(deps, stream)
    await consumer.projection.ensure_indexes()
    return consumer


async def build(deps: Deps) -> Handler:
    return await _consumer(deps, streams.EXECUTIONS)


async def build_inputs(deps: Deps) -> Handler:
    return await _consumer(deps, streams.PROGRESS)
