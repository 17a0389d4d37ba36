"""Dead-lettering submissions the runners gave up on.

Two paths lead here: the runner terminates a message it can never process (undecodable, or the
sandbox failed on the last attempt), and JetStream's MAX_DELIVERIES advisory for messages whose
runner died (or hung) on every attempt. Either way a :class:`DeadLetter` record with a named reason
is stored on the DEADLETTER stream (the original stays in SUBMISSIONS), and the job is finished
with SANDBOX_ERROR so nobody waits forever.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bus import client, history, streams
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import ExecutionFinished, Verdict
from schemas.submissions import submission_decoder

log = logging.getLogger(__name__)

MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{streams.SUBMISSIONS}.{streams.RUNNER_CONSUMER}"


def _job_id(subject: str) -> str | None:
    prefix = subjects.submission("x" * 8)[:-8]
    return subject[len(prefix) :] if subject.startswith(prefix) else None


async def _store(
    js: JetStreamContext,
    *,
    reason: DeadLetterReason,
    stream_seq: int,
    subject: str,
    payload: bytes,
    detail: str,
) -> None:
    job_id = _job_id(subject)
    record = DeadLetter(
        reason=reason,
        stream=streams.SUBMISSIONS,
        stream_seq=stream_seq,
        subject=subject,
        consumer=streams.RUNNER_CONSUMER,
        recorded_at=datetime.now(UTC),
        job_id=job_id,
        detail=detail[:2000],
        payload=payload.decode("utf-8", errors="replace"),
    )
    await client.publish(
        js, subjects.deadletter("submissions"), record, msg_id=f"dlq.{streams.SUBMISSIONS}.{stream_seq}"
    )
    log.error("dead-lettered %s seq %d: %s %s", subject, stream_seq, reason.value, detail)


async def record_deadletter(js: JetStreamContext, msg: Msg, *, reason: DeadLetterReason, detail: str) -> None:
    await _store(
        js,
        reason=reason,
        stream_seq=msg.metadata.sequence.stream,
        subject=msg.subject,
        payload=msg.data,
        detail=detail,
    )


async def _on_max_deliveries(js: JetStreamContext, advisory: Msg) -> None:
    info = json.loads(advisory.data)
    stream_seq = int(info["stream_seq"])
    raw = await js.get_msg(streams.SUBMISSIONS, seq=stream_seq, direct=True)
    assert raw.subject is not None
    payload = raw.data or b""
    await _store(
        js,
        reason=DeadLetterReason.MAX_DELIVERIES,
        stream_seq=stream_seq,
        subject=raw.subject,
        payload=payload,
        detail=f"delivered {info.get('deliveries')} times without being acknowledged",
    )
    try:
        job = submission_decoder.decode(payload)
    except Exception:  # an undecodable job has nobody waiting on it
        return
    if not await history.job_finished(js, job.job_id):
        await client.publish(
            js,
            subjects.finished_of(job.job_id),
            ExecutionFinished(
                job_id=job.job_id,
                attempt=int(info.get("deliveries", 0)) + 1,
                verdict=Verdict.SANDBOX_ERROR,
                exit_code=None,
                duration_ms=0,
                finished_at=datetime.now(UTC),
                message="the job could not be run; this was not caused by your program",
            ),
            msg_id=f"{job.job_id}.finished",
        )


async def listen(nc: NATS, js: JetStreamContext) -> Subscription:
    """Every runner listens; the queue group makes one of them handle each advisory."""

    async def handler(advisory: Msg) -> None:
        try:
            await _on_max_deliveries(js, advisory)
        except Exception:  # one bad advisory must not stop the listener
            log.exception("could not dead-letter from advisory %s", advisory.data[:500])

    return await nc.subscribe(MAX_DELIVERIES_ADVISORY, queue="runner-deadletters", cb=handler)
