"""Live execution events, read once per gateway process and fanned out to its open event streams.

One ordered JetStream consumer per gateway process (not one per open stream): creating and
deleting a consumer per stream is two server round trips and server-side state per job, and
made NATS and the gateway spend more per job than the sandbox did. The ordered consumer keeps
the stream sequence (each SSE ``id``, for ``Last-Event-ID``) and re-creates itself from the last
sequence it saw when it misses a message or its heartbeats, so no live event is skipped.

An open stream registers its job here *before* reading what is already stored (direct gets by
subject, :func:`bus.history.job_messages`): an event stored before the registration is found by
that read, one delivered after it is queued; the overlap is dropped by sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus import streams
from schemas import subjects

log = logging.getLogger(__name__)

# How operators (and `consumers_info`) tell a gateway's live-events consumer from others.
DESCRIPTION = "coderunner gateway: live execution events for open event streams"

# (stream sequence, raw event) as stored in EXECUTIONS.
Delivery = tuple[int, bytes]


class LiveEvents:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._listeners: dict[str, set[asyncio.Queue[Delivery]]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        first = (await self.js.stream_info(streams.EXECUTIONS)).state.last_seq + 1
        sub = await self.js.subscribe(
            subjects.EXECUTIONS_ALL,
            stream=streams.EXECUTIONS,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            cb=self._deliver,
            # Gone within a minute of this process dying (an ordered consumer is ephemeral).
            config=ConsumerConfig(opt_start_seq=first, inactive_threshold=60.0, description=DESCRIPTION),
            # Its own buffer, not the nats-py default: a burst of output must not become slow-consumer drops.
            pending_msgs_limit=100_000,
        )
        # nats-py re-creates an ordered consumer from the last sequence it delivered + 1; before the
        # first delivery that is 0 + 1, the whole stream. Start its count where we started.
        jsi = getattr(sub, "_jsi", None)
        if jsi is not None and getattr(jsi, "_sseq", None) == 0:
            jsi._sseq = first - 1
        self._sub = sub

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _deliver(self, msg: Msg) -> None:
        job_id = subjects.job_of_execution(msg.subject)
        listeners = self._listeners.get(job_id) if job_id else None
        if not listeners:
            return
        delivery = (msg.metadata.sequence.stream, msg.data)
        for queue in listeners:
            queue.put_nowait(delivery)

    def listen(self, job_id: str) -> asyncio.Queue[Delivery]:
        """A queue that receives the job's live events from now until :meth:`forget`."""
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._listeners.setdefault(job_id, set()).add(queue)
        return queue

    def forget(self, job_id: str, queue: asyncio.Queue[Delivery]) -> None:
        listeners = self._listeners.get(job_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[job_id]
