"""Execution service: the gateway's logic behind the thin route handlers.

No code ever runs here: the only way to execute is to publish a submission to JetStream.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import Error as JsError

from deploy import bus
from gateway.errors import BusUnavailable, CodeTooLarge, InvalidRequest, JobNotFound
from gateway.models import SubmitAccepted, SubmitRequest
from gateway.settings import GatewaySettings
from schemas import streams, subjects
from schemas.executions import ExecutionEvent, ExecutionFinished, ExecutionStarted, execution_decoder
from schemas.results import JobResult, apply, cache_key
from schemas.submissions import Limits, MiB, SubmissionRequested

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY_MAX = 255
_EVENT_NAMES = {ExecutionStarted: "started", ExecutionFinished: "finished"}


def event_name(event: ExecutionEvent) -> str:
    return _EVENT_NAMES.get(type(event), "output")


def job_id_for(user_id: str, idempotency_key: str | None) -> str:
    """A fresh id, or one derived from (user, key) so a retried request maps to the same job."""
    if idempotency_key is None:
        return secrets.token_urlsafe(16)
    digest = hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One SSE item: an execution event, the final result, or a keep-alive."""

    kind: str  # "event" | "done" | "heartbeat"
    seq: int = 0
    name: str = ""
    data: bytes = b""


class ExecutionService:
    def __init__(self, js: JetStreamContext, redis: aioredis.Redis, settings: GatewaySettings) -> None:
        self.js = js
        self.redis = redis
        self.settings = settings
        self.run_limits = Limits(
            wall_time_ms=settings.run_wall_time_ms,
            cpu_time_ms=settings.run_wall_time_ms,
            memory_bytes=settings.run_memory_mb * MiB,
            output_bytes=settings.run_output_bytes,
        )

    async def submit(self, request: SubmitRequest, *, user_id: str, idempotency_key: str | None) -> SubmitAccepted:
        if len(request.code.encode()) > self.settings.max_code_bytes:
            raise CodeTooLarge(f"code is larger than {self.settings.max_code_bytes} bytes")
        if len(request.stdin.encode()) > self.settings.max_stdin_bytes:
            raise CodeTooLarge(f"stdin is larger than {self.settings.max_stdin_bytes} bytes")
        if not request.code.strip():
            raise InvalidRequest("code is empty")
        if idempotency_key is not None and not (
            0 < len(idempotency_key) <= _IDEMPOTENCY_KEY_MAX and idempotency_key.isprintable()
        ):
            raise InvalidRequest(f"Idempotency-Key must be 1 to {_IDEMPOTENCY_KEY_MAX} printable characters")
        job_id = job_id_for(user_id, idempotency_key)
        accepted = SubmitAccepted(
            job_id=job_id,
            status="queued",
            events_url=f"/execution/result/{job_id}/events",
            result_url=f"/execution/result/{job_id}",
        )
        event = SubmissionRequested(
            job_id=job_id,
            mode="run",  # graded submissions arrive with problems and tests
            code=request.code,
            stdin=request.stdin,
            problem_id=request.problem_id,
            user_id=user_id,
            limits=self.run_limits,
            submitted_at=datetime.now(UTC),
        )
        try:
            # Past JetStream's duplicate window a retried key must still not run twice.
            if idempotency_key is not None and await bus.submission_exists(self.js, job_id):
                return accepted
            # Nats-Msg-Id makes concurrent retries inside the window collapse into one message.
            ack = await bus.publish(self.js, subjects.submission(job_id), event, msg_id=job_id)
        except (TimeoutError, NatsError, JsError, NatsTimeoutError) as exc:
            log.warning("publish failed for job %s: %s", job_id, exc)
            raise BusUnavailable(
                "the submission queue is unavailable; try again shortly", headers={"Retry-After": "2"}
            ) from exc
        log.info("job %s queued (seq %s%s)", job_id, ack.seq, ", duplicate" if ack.duplicate else "")
        return accepted

    async def result(self, job_id: str) -> JobResult:
        if not subjects.JOB_ID_RE.fullmatch(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        cached = await self.redis.get(cache_key(job_id))
        if cached is not None:
            return msgspec.json.decode(cached, type=JobResult)
        result = await bus.fold_job(self.js, job_id)
        if result.last_seq == 0 and not await bus.submission_exists(self.js, job_id):
            raise JobNotFound(f"no job {job_id!r}")
        return result

    async def ensure_exists(self, job_id: str) -> None:
        if not subjects.JOB_ID_RE.fullmatch(job_id) or not await bus.submission_exists(self.js, job_id):
            raise JobNotFound(f"no job {job_id!r}")

    async def events(self, job_id: str, after_seq: int) -> AsyncIterator[StreamItem]:
        """The job's events after ``after_seq``, live, then its final result.

        An ordered consumer replays the job's subject from the start: events up to ``after_seq`` are
        folded (so ``done`` is complete after a resume) but not sent again.
        """
        sub = await self.js.subscribe(
            subjects.executions_of(job_id),
            stream=streams.EXECUTIONS,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            config=ConsumerConfig(inactive_threshold=60.0),
        )
        result = JobResult(job_id=job_id)
        try:
            while not result.terminal:
                try:
                    msg = await sub.next_msg(timeout=self.settings.sse_heartbeat_seconds)
                except NatsTimeoutError:
                    yield StreamItem(kind="heartbeat")
                    continue
                seq = msg.metadata.sequence.stream
                try:
                    event = execution_decoder.decode(msg.data)
                except msgspec.DecodeError:
                    log.error("undecodable event %s seq %d skipped", msg.subject, seq)
                    continue
                result = apply(result, event, seq)
                if seq > after_seq:
                    yield StreamItem(kind="event", seq=seq, name=event_name(event), data=msg.data)
            yield StreamItem(kind="done", data=msgspec.json.encode(result))
        finally:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the ephemeral consumer expires on its own
                log.debug("unsubscribe failed: %s", exc)
