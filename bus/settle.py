"""The one rule that says what happens to a bus message, and the one function that applies it.

The runner and every durable consumer hand each message to :func:`settle` with their handler:

- the handler returned: ``ack`` it, and wait for the server's confirmation (double ack, so a
  message whose effects are done is not redelivered after a lost ack);
- it raised :class:`Permanent` (bad payload, impossible request): a dead-letter record with the
  typed reason, then ``term``; a retry cannot help;
- it raised anything else (:class:`Transient`, a server briefly down, a timeout): ``nak`` with a
  back-off, so a later delivery tries again, up to the consumer's MaxDeliver;
- it was cancelled (the process is stopping): nothing, so the message comes back after AckWait.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus import deadletters
from schemas.deadletter import DeadLetterReason
from telemetry import metrics

log = logging.getLogger(__name__)


class CodeRunnerError(Exception):
    """Base of every error raised by Code Runner's plumbing."""


class Permanent(CodeRunnerError):
    """Retrying cannot fix this message."""

    def __init__(self, reason: DeadLetterReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class Transient(CodeRunnerError):
    """Retrying later may succeed."""


class Disposition(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    TERM = "term"


def disposition(exc: BaseException | None) -> Disposition:
    if exc is None:
        return Disposition.ACK
    if isinstance(exc, Permanent):
        return Disposition.TERM
    return Disposition.NAK


# Delay before a nak'd message is redelivered, by delivery attempt (1-based).
NAK_DELAYS_SECONDS = (0.5, 2.0, 5.0, 15.0)


def nak_delay(num_delivered: int) -> float:
    return NAK_DELAYS_SECONDS[min(max(num_delivered, 1), len(NAK_DELAYS_SECONDS)) - 1]


async def settle(js: JetStreamContext, msg: Msg, handle: Callable[[], Awaitable[None]], *, who: str) -> Disposition:
    """Run ``handle`` for ``msg`` and settle the message by the rule above; returns what was done."""
    error: Exception | None = None
    consumer = msg.metadata.consumer or "unknown"
    if msg.metadata.num_delivered > 1:
        metrics.REDELIVERIES.labels(consumer).inc()
    began = time.monotonic()
    try:
        await handle()
    except asyncio.CancelledError:
        raise  # stopping: the caller naks it or leaves it to come back after AckWait
    except Exception as exc:  # the rule decides
        error = exc
    finally:
        metrics.MESSAGE_SECONDS.labels(consumer).observe(time.monotonic() - began)
    action = disposition(error)
    metrics.MESSAGES.labels(consumer, action.value).inc()
    if action is not Disposition.ACK:
        metrics.error(action.value)
    try:
        if action is Disposition.ACK:
            await msg.ack_sync()
        elif action is Disposition.TERM:
            assert isinstance(error, Permanent)
            log.error("%s terminating %s: %s", who, msg.subject, error)
            await deadletters.record(js, msg, reason=error.reason, detail=error.detail)
            await msg.term()
        else:
            delay = nak_delay(msg.metadata.num_delivered)
            log.warning("%s nak %s (retry in %.1fs): %s", who, msg.subject, delay, error)
            await msg.nak(delay=delay)
    except Exception as exc:  # unsettled messages come back after AckWait
        log.warning("%s could not %s %s: %s", who, action.value, msg.subject, exc)
    return action
