"""A durable JetStream consumer loop shared by the caching, progress and grading processes.

Each handler receives typed events from one reusable decoder. What happens to a message follows
the one rule in :mod:`bus.settle`: ack on success, term (with a log line naming the reason) on
:class:`~bus.settle.Permanent`, nak with a back-off on anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError

from bus import streams
from bus.settle import Disposition, Permanent, disposition, nak_delay
from schemas.executions import ExecutionEvent, execution_decoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    event: ExecutionEvent
    stream_seq: int
    num_delivered: int


Handler = Callable[[Delivery], Awaitable[None]]


async def consume(js: JetStreamContext, name: str, handler: Handler, stop: asyncio.Event) -> None:
    sub = await js.pull_subscribe_bind(durable=name, stream=streams.EXECUTIONS)
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
            await _settle(name, msg, handler)


async def _settle(name: str, msg: Msg, handler: Handler) -> None:
    error: BaseException | None = None
    try:
        try:
            event = execution_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise Permanent("undecodable", str(exc)) from exc
        meta = msg.metadata
        await handler(Delivery(event, meta.sequence.stream, meta.num_delivered))
    except Exception as exc:  # the disposition rule decides
        error = exc
    action = disposition(error)
    try:
        if action is Disposition.ACK:
            await msg.ack()
        elif action is Disposition.TERM:
            log.error("%s terminated %s: %s", name, msg.subject, error)
            await msg.term()
        else:
            log.warning("%s nak %s: %s", name, msg.subject, error)
            await msg.nak(delay=nak_delay(msg.metadata.num_delivered))
    except Exception as exc:  # unsettled messages come back after AckWait
        log.warning("%s could not %s %s: %s", name, action.value, msg.subject, exc)
