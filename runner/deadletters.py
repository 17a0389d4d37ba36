"""Dead-lettering submissions whose runner died (or hung) on every attempt.

The runner's own give-ups (undecodable, the sandbox failed on the last attempt) go through
:func:`bus.settle.settle` like every consumer's. This is the other path: JetStream's
MAX_DELIVERIES advisory, which the ADVISORIES stream keeps until a runner reads it from the
runners' shared durable (``advisories-runner``), so it is not lost when no runner was up as the
server announced it. The record goes to the DEADLETTER stream (the original stays in
SUBMISSIONS), and the job is finished with SANDBOX_ERROR so nobody waits forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError

from bus import advisories, client, history, streams
from bus.settle import Permanent, settle
from schemas import subjects
from schemas.deadletter import DeadLetterReason
from schemas.executions import ExecutionFinished, Verdict
from schemas.submissions import submission_decoder

log = logging.getLogger(__name__)

# The runners' durable on ADVISORIES (bus.streams.DURABLES), shared like ``runner`` itself.
DURABLE = streams.advisories_durable(next(d.owner for d in streams.DURABLES if d.name == streams.RUNNER_CONSUMER))


async def on_advisory(js: JetStreamContext, advisory: advisories.MaxDeliveries) -> None:
    payload = await advisories.dead_letter(js, advisory)
    if advisory.stream != streams.SUBMISSIONS or payload is None:
        return  # the advisory durable's own give-ups: the record is all there is to do
    try:
        job = submission_decoder.decode(payload)
    except msgspec.DecodeError:  # an undecodable job has nobody waiting on it
        return
    if not await history.job_finished(js, job.job_id):
        await client.publish(
            js,
            subjects.finished_of(job.job_id),
            ExecutionFinished(
                job_id=job.job_id,
                attempt=advisory.deliveries + 1,
                verdict=Verdict.SANDBOX_ERROR,
                exit_code=None,
                duration_ms=0,
                finished_at=datetime.now(UTC),
                message="the job could not be run; this was not caused by your program",
            ),
            msg_id=f"{job.job_id}.finished",
        )


async def _handle(js: JetStreamContext, msg: Msg) -> None:
    try:
        advisory = advisories.decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise Permanent(DeadLetterReason.UNDECODABLE, str(exc)) from exc
    await on_advisory(js, advisory)


async def consume(js: JetStreamContext, stop: asyncio.Event) -> None:
    """Pull the runners' advisories until ``stop``; each is settled by the one rule (bus.settle)."""
    sub = await js.pull_subscribe_bind(durable=DURABLE.name, stream=DURABLE.stream)
    log.info("consumer %s started", DURABLE.name)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(10, timeout=1.0)
        except (FetchTimeoutError, TimeoutError):
            continue
        except Exception as exc:  # the bus may be briefly away; keep pulling
            log.warning("%s fetch failed: %s", DURABLE.name, exc)
            await asyncio.sleep(0.5)
            continue
        for msg in msgs:
            await settle(js, msg, functools.partial(_handle, js, msg), who=f"runner {DURABLE.name}")
