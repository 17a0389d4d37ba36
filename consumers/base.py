"""A durable JetStream consumer loop shared by every consumer process (bus.streams.CONSUMERS).

Each handler receives typed events from one reusable decoder. What happens to a message is
decided in one place, :func:`bus.settle.settle` (the runner uses it too).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from pymongo import AsyncMongoClient

from bus import history, streams
from bus.settle import Permanent, settle
from consumers.settings import ConsumerSettings
from schemas.deadletter import DeadLetterReason
from schemas.executions import ExecutionEvent, execution_decoder
from schemas.problems import ProblemEvent, problem_event_decoder
from schemas.submissions import SubmissionRequested

log = logging.getLogger(__name__)


# One reusable typed decoder per stream a consumer process reads.
DECODERS: dict[str, msgspec.json.Decoder[ExecutionEvent] | msgspec.json.Decoder[ProblemEvent]] = {
    streams.EXECUTIONS: execution_decoder,
    streams.PROBLEMS: problem_event_decoder,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    event: ExecutionEvent | ProblemEvent
    stream_seq: int
    num_delivered: int


Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Deps:
    """The clients a consumer process opened, passed to its handler factory."""

    js: JetStreamContext
    redis: aioredis.Redis
    mongo: AsyncMongoClient
    settings: ConsumerSettings

    async def submission(self, job_id: str) -> SubmissionRequested:
        """A job's submission (execution events do not repeat it); an unknown job is permanent."""
        job = await history.submission_of(self.js, job_id)
        if job is None:
            raise Permanent(DeadLetterReason.UNKNOWN_JOB, f"no submission for job {job_id}")
        return job


# Each consumer module's ``build(deps)``, named in the registry (bus.streams.CONSUMERS).
HandlerFactory = Callable[[Deps], Awaitable[Handler]]


async def consume(js: JetStreamContext, durable: streams.Durable, handler: Handler, stop: asyncio.Event) -> None:
    name = durable.name
    decoder = DECODERS[durable.stream]
    sub = await js.pull_subscribe_bind(durable=name, stream=durable.stream)
    log.info("consumer %s started", name)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(50, timeout=1.0)
        except (FetchTimeoutError, TimeoutError):
            continue
        except Exception as exc:  # the bus may be briefly away; keep pulling
            log.warning("%s fetch failed: %s", name, exc)
            await asyncio.sleep(0.5)
            continue
        for msg in msgs:
            await settle(js, msg, functools.partial(_handle, msg, decoder, handler), who=f"consumer {name}")


async def _handle(
    msg: Msg, decoder: msgspec.json.Decoder[ExecutionEvent] | msgspec.json.Decoder[ProblemEvent], handler: Handler
) -> None:
    try:
        event = decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise Permanent(DeadLetterReason.UNDECODABLE, str(exc)) from exc
    meta = msg.metadata
    await handler(Delivery(event, meta.sequence.stream, meta.num_delivered))
