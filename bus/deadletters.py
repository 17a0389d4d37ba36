"""Dead-letter records: a copy of a message the pipeline gave up on, with a named reason.

The original stays in its stream; the record (with the payload as lenient text) goes to the
DEADLETTER stream on ``coderunner.v1.deadletter.<stream>``, once per original message
(``Nats-Msg-Id``), whichever process writes it. :func:`redrive` publishes a record's original payload to its
original subject again (``coderunner redrive``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from bus import client
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from telemetry import metrics

log = logging.getLogger(__name__)
DETAIL_LIMIT = 2000
# A redriven message's header naming the record it came from.
REDRIVEN_FROM = "Coderunner-Redriven-From"


def job_id_of(subject: str) -> str | None:
    """The job id inside a submission or execution subject, if it is one."""
    parts = subject.split(".")
    if len(parts) >= 4 and f"{parts[0]}.{parts[1]}" == subjects.PREFIX and parts[2] in ("submissions", "executions"):
        return parts[3] if subjects.JOB_ID_RE.fullmatch(parts[3]) else None
    return None


def msg_id(stream: str, consumer: str, stream_seq: int) -> str:
    """One record per original message and consumer: the settle path and the advisory path (or two
    processes racing) that give up on the same delivery write it once."""
    return f"dlq.{stream}.{consumer}.{stream_seq}"


async def store(
    js: JetStreamContext,
    *,
    reason: DeadLetterReason,
    stream: str,
    consumer: str,
    stream_seq: int,
    subject: str,
    payload: bytes,
    detail: str,
    attempts: int = 0,
) -> None:
    record = DeadLetter(
        reason=reason,
        stream=stream,
        stream_seq=stream_seq,
        subject=subject,
        consumer=consumer,
        recorded_at=datetime.now(UTC),
        job_id=job_id_of(subject),
        detail=detail[:DETAIL_LIMIT],
        payload=payload.decode("utf-8", errors="replace"),
        attempts=attempts,
    )
    await client.publish(js, subjects.deadletter(stream.lower()), record, msg_id=msg_id(stream, consumer, stream_seq))
    metrics.DEAD_LETTERS.labels(reason.value).inc()
    log.error("dead-lettered %s seq %d (%s): %s %s", subject, stream_seq, consumer, reason.value, detail)


async def record(js: JetStreamContext, msg: Msg, *, reason: DeadLetterReason, detail: str) -> None:
    """Dead-letter a message being handled: its stream, consumer and sequence come from its metadata."""
    meta = msg.metadata
    await store(
        js,
        reason=reason,
        stream=meta.stream,
        consumer=meta.consumer or "",
        stream_seq=meta.sequence.stream,
        subject=msg.subject,
        payload=msg.data,
        detail=detail,
        attempts=meta.num_delivered,
    )


def redrive_msg_id(letter: DeadLetter) -> str:
    """Names the original message, so redriving a letter twice, or the letters two consumers wrote
    about the same message, publishes it once (within the stream's duplicate window)."""
    return f"redrive.{letter.stream}.{letter.stream_seq}"


async def redrive(js: JetStreamContext, letter: DeadLetter, *, source: str) -> PubAck:
    """Publish a dead letter's original payload to its original subject again; ``source`` (the
    record's ``DEADLETTER:<seq>``) goes along in a header so the copy can be traced back."""
    headers = client.trace_headers({"Nats-Msg-Id": redrive_msg_id(letter), REDRIVEN_FROM: source})
    ack: PubAck = await js.publish(letter.subject, letter.payload.encode(), headers=headers)
    log.warning(
        "redrove %s to %s as %s seq %d (duplicate: %s)", source, letter.subject, ack.stream, ack.seq, ack.duplicate
    )
    return ack
