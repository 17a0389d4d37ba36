"""A durable JetStream consumer loop shared by every consumer process (bus.streams.CONSUMERS).

Each handler receives typed events from one reusable decoder. What happens to a message is
decided in one place, :func:`bus.settle.settle` (the runner uses it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from pymongo import AsyncMongoClient

from bus import advisories, client, deadletters, history, streams
from bus.settle import Permanent, settle
from consumers.settings import ConsumerSettings
from schemas.deadletter import DeadLetterReason
from schemas.executions import ExecutionEvent, execution_decoder
from schemas.problems import ProblemEvent, problem_event_decoder
from schemas.progress import ProgressEvent, progress_decoder
from schemas.submissions import SubmissionRequested
from telemetry import metrics
from telemetry.logs import bind_job

log = logging.getLogger(__name__)


# One reusable typed decoder per stream a consumer process reads.
AnyEvent = ExecutionEvent | ProblemEvent | ProgressEvent | advisories.MaxDeliveries
DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    streams.EXECUTIONS: execution_decoder,
    streams.PROBLEMS: problem_event_decoder,
    streams.PROGRESS: progress_decoder,
    streams.ADVISORIES: advisories.decoder,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    event: AnyEvent
    stream_seq: int
    num_delivered: int
    stream: str = ""


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


async def build_advisories(deps: Deps) -> Handler:
    """Every consumer process's ``advisories-<process>`` durable: each MAX_DELIVERIES advisory of
    one of its durables becomes a dead-letter record (bus/advisories.py)."""

    async def handle(delivery: Delivery) -> None:
        assert isinstance(delivery.event, advisories.MaxDeliveries)
        await advisories.dead_letter(deps.js, delivery.event)

    return handle


async def consume(js: JetStreamContext, durable: streams.Durable, handler: Handler, stop: asyncio.Event) -> None:
    name = durable.name
    decoder = DECODERS[durable.stream]
    sub = await js.pull_subscribe_bind(durable=name, stream=durable.stream)
    log.info("consumer %s started", name)
    # An in-order durable has one message in flight: a batch request would wait out its timeout
    # for messages the server holds back until the one in hand is acked.
    batch = 1 if durable.in_order else 50
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except (FetchTimeoutError, TimeoutError):
            continue
        except Exception as exc:  # the bus may be briefly away; keep pulling
            log.warning("%s fetch failed: %s", name, exc)
            metrics.error("fetch")
            await asyncio.sleep(0.5)
            continue
        for msg in msgs:
            if stop.is_set():
                # Stopping (SIGTERM): the message in hand was finished; the rest of the batch goes
                # back now, for another instance, instead of after AckWait.
                with contextlib.suppress(Exception):
                    await msg.nak()
                continue
            with bind_job(deadletters.job_id_of(msg.subject)), client.processing(msg, name):
                await settle(js, msg, functools.partial(_handle, msg, decoder, handler), who=f"consumer {name}")
    log.info("consumer %s stopped", name)


async def _handle(msg: Msg, decoder: msgspec.json.Decoder[Any], handler: Handler) -> None:
    try:
        event = decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise Permanent(DeadLetterReason.UNDECODABLE, str(exc)) from exc
    meta = msg.metadata
    await handler(Delivery(event, meta.sequence.stream, meta.num_delivered, meta.stream))
