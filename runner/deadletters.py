"""Dead-lettering submissions whose runner died (or hung) on every attempt.

The runner's own give-ups (undecodable, the sandbox failed on the last attempt) go through
:func:`bus.settle.settle` like every consumer's. This is the other path: JetStream's
MAX_DELIVERIES advisory. The record goes to the DEADLETTER stream (the original stays in
SUBMISSIONS), and the job is finished with SANDBOX_ERROR so nobody waits forever.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bus import client, deadletters, history, streams
from schemas import subjects
from schemas.deadletter import DeadLetterReason
from schemas.executions import ExecutionFinished, Verdict
from schemas.submissions import submission_decoder

log = logging.getLogger(__name__)

MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{streams.SUBMISSIONS}.{streams.RUNNER_CONSUMER}"


async def _on_max_deliveries(js: JetStreamContext, advisory: Msg) -> None:
    info = json.loads(advisory.data)
    stream_seq = int(info["stream_seq"])
    raw = await js.get_msg(streams.SUBMISSIONS, seq=stream_seq, direct=True)
    assert raw.subject is not None
    payload = raw.data or b""
    await deadletters.store(
        js,
        reason=DeadLetterReason.MAX_DELIVERIES,
        stream=streams.SUBMISSIONS,
        consumer=streams.RUNNER_CONSUMER,
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
