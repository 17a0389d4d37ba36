"""NATS connection and the few bus operations every process shares."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from opentelemetry import propagate, trace

from schemas.codec import encode

log = logging.getLogger(__name__)
tracer = trace.get_tracer("coderunner.bus")


class NotPublished(NatsError):
    """The message was certainly not stored, and will not be later."""


async def connect(
    url: str, name: str, *, buffer_while_reconnecting: bool = True, one_shot: bool = False
) -> tuple[NATS, JetStreamContext]:
    """Connect, reconnecting forever (a service waits for the bus, however long it is away).

    ``one_shot`` is for commands (``coderunner events``, ``seed``, ``replay``...): they give up after
    a few tries and say so, instead of waiting forever for a server that is not there (nats-py
    retries even the first connection forever when reconnects are unlimited).

    With ``buffer_while_reconnecting=False`` a publish while disconnected fails at once instead of
    waiting in the client's reconnect buffer and going out after the reconnect: the gateway needs
    that, because it has already told its client "not queued" by then.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    nc = await nats.connect(
        servers(url),
        name=name,
        max_reconnect_attempts=3 if one_shot else -1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        **({} if buffer_while_reconnecting else {"pending_size": 0}),
    )
    return nc, nc.jetstream(timeout=5)


def servers(url: str) -> list[str]:
    """``NATS_URL`` may list a cluster's nodes, comma-separated: a process that (re)starts while
    one of them is down connects to another (once connected, the client also learns the others)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def subject_template(subject: str) -> str:
    """The subject with its job or user id replaced by ``*`` (span names must not carry ids)."""
    tokens = subject.split(".")
    if len(tokens) >= 4 and tokens[0] == "coderunner":
        tokens[3] = "*"
    return ".".join(tokens)


def _messaging(subject: str, operation: str) -> dict[str, Any]:
    # OpenTelemetry messaging conventions; "nats" is not a well-known system value, so it is custom.
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.destination.template": subject_template(subject),
        "messaging.operation.type": operation,
    }


@contextlib.contextmanager
def processing(msg: Msg, consumer: str) -> Iterator[trace.Span]:
    """A CONSUMER span for handling ``msg``, child of the span that published it (its headers)."""
    ctx = propagate.extract(dict(msg.headers or {}))
    attributes = _messaging(msg.subject, "process")
    attributes["messaging.consumer.group.name"] = consumer
    meta = msg.metadata
    attributes["messaging.nats.stream.sequence"] = meta.sequence.stream
    attributes["messaging.nats.delivery_count"] = meta.num_delivered
    with tracer.start_as_current_span(
        f"process {subject_template(msg.subject)}", context=ctx, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def trace_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context (W3C traceparent) across the bus."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


async def publish(js: JetStreamContext, subject: str, event: Any, *, msg_id: str | None = None) -> Any:
    """Publish to JetStream and wait for its ack.

    Raises :class:`NotPublished` when the message certainly was not stored: the client refused to
    buffer it while disconnected (see ``connect``), the connection is closed, no stream took it, or
    JetStream answered with an error.
    Any other error (an ack timeout above all) leaves it unknown whether the message was stored.
    """
    attributes = _messaging(subject, "send")
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    with tracer.start_as_current_span(
        f"send {subject_template(subject)}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        headers = trace_headers({"Nats-Msg-Id": msg_id} if msg_id else None)
        try:
            return await js.publish(subject, encode(event), headers=headers or None)
        except (OutboundBufferLimitError, ConnectionClosedError, NoRespondersError, NoStreamResponseError) as exc:
            # No responders: no stream took the message (JetStream unavailable), so nothing was stored.
            raise NotPublished(str(exc) or type(exc).__name__) from exc
        except APIError as exc:
            # JetStream answered with an error (the stream is full, has no quorum, refuses it): an
            # answer, so the message was certainly not stored.
            raise NotPublished(f"{type(exc).__name__}: {exc.description or exc.code}") from exc


async def close(nc: NATS) -> None:
    """Flush what we published (acks included), then close. (``drain`` waits on idle pull
    subscriptions for its whole timeout, which made every shutdown take seconds.)"""
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await nc.flush(timeout=1)
    await nc.close()
