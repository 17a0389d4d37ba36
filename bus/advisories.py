"""JetStream's MAX_DELIVERIES advisories, kept in the ADVISORIES stream and turned into dead letters.

The server publishes ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`` when a
message has been delivered MaxDeliver times without an ack. A core subscription would miss it
whenever no process listens at that moment, so the ADVISORIES stream stores every one of them, and
each process reads the advisories of the durables it owns (its own advisory durable included)
from its own durable on that stream (``bus.streams.DURABLES``: ``advisories-<process>``), when
it next runs. Each advisory becomes a dead-letter record (``max_deliveries``) with the original
message read back from its stream; the record's ``Nats-Msg-Id`` makes a repeated advisory, or two
processes racing on it, write one record.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import deadletters
from schemas.deadletter import DeadLetterReason

log = logging.getLogger(__name__)

MAX_DELIVERIES_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MAX_DELIVERIES_ALL = f"{MAX_DELIVERIES_PREFIX}.>"


def max_deliveries_of(stream: str, consumer: str) -> str:
    """The subject of one durable's MAX_DELIVERIES advisories."""
    return f"{MAX_DELIVERIES_PREFIX}.{stream}.{consumer}"


class MaxDeliveries(msgspec.Struct, frozen=True):
    """``io.nats.jetstream.advisory.v1.max_deliver`` (the server's format, not our contract)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    type: str = ""
    id: str = ""
    timestamp: str = ""


decoder = msgspec.json.Decoder(MaxDeliveries)


async def dead_letter(js: JetStreamContext, advisory: MaxDeliveries) -> bytes | None:
    """Record the message the advisory names as a ``max_deliveries`` dead letter; returns its
    payload, or None when the stream no longer holds it (the record is written anyway)."""
    detail = f"delivered {advisory.deliveries} times without being acknowledged"
    subject, payload = "", None
    try:
        raw = await js.get_msg(advisory.stream, seq=advisory.stream_seq, direct=True)
    except NotFoundError:
        detail += "; the message is no longer in its stream"
    else:
        subject, payload = raw.subject or "", raw.data or b""
    await deadletters.store(
        js,
        reason=DeadLetterReason.MAX_DELIVERIES,
        stream=advisory.stream,
        consumer=advisory.consumer,
        stream_seq=advisory.stream_seq,
        subject=subject,
        payload=payload or b"",
        detail=detail,
        attempts=advisory.deliveries,
    )
    return payload
