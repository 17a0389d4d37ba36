"""Dead-letter records: a copy of a message the pipeline gave up on, with a named reason.

The original stays in its stream; the record (with the payload as lenient text) goes to the
DEADLETTER stream on ``coderunner.v1.deadletter.<stream>``, once per original message
(``Nats-Msg-Id``), whichever process writes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus import client
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason

log = logging.getLogger(__name__)
DETAIL_LIMIT = 2000


def job_id_of(subject: str) -> str | None:
    """The job id inside a submission or execution subject, if it is one."""
    parts = subject.split(".")
    if len(parts) >= 4 and f"{parts[0]}.{parts[1]}" == subjects.PREFIX and parts[2] in ("submissions", "executions"):
        return parts[3] if subjects.JOB_ID_RE.fullmatch(parts[3]) else None
    return None


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
    )
    await client.publish(
        js, subjects.deadletter(stream.lower()), record, msg_id=f"dlq.{stream}.{consumer}.{stream_seq}"
    )
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
    )
