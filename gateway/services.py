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
from gateway.backlog import Backlog
from gateway.errors import BusUnavailable, CodeTooLarge, InvalidRequest, JobNotFound, QueueFull, Unauthorized
from gateway.models import SubmitAccepted, SubmitRequest
from gateway.quotas import Policy, Quotas
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService
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
    def __init__(
        self,
        js: JetStreamContext,
        redis: aioredis.Redis,
        settings: GatewaySettings,
        *,
        tokens: TokenService,
        quotas: Quotas,
        backlog: Backlog,
    ) -> None:
        self.js = js
        self.redis = redis
        self.settings = settings
        self.tokens = tokens
        self.quotas = quotas
        self.backlog = backlog
        self.exec_policies = [
            Policy("exec-minute", settings.exec_limit_per_minute, 60),
            Policy("exec-day", settings.exec_limit_per_day, 86_400),
        ]
        self.run_limits = Limits(
            wall_time_ms=settings.run_wall_time_ms,
            cpu_time_ms=settings.run_wall_time_ms,
            memory_bytes=settings.run_memory_mb * MiB,
            output_bytes=settings.run_output_bytes,
        )

    async def submit(
        self, request: SubmitRequest, *, user_id: str, idempotency_key: str | None
    ) -> tuple[SubmitAccepted, dict[str, str]]:
        """Queue a submission; returns the answer and the quota headers that go with it."""
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
        if self.backlog.full:
            wait = self.backlog.estimated_wait()
            raise QueueFull(
                f"the runners are busy ({self.backlog.depth} jobs waiting); estimated wait {wait:.0f} s",
                headers={"Retry-After": str(max(1, min(300, round(wait))))},
            )
        job_id = job_id_for(user_id, idempotency_key)
        ticket = self.tokens.sse_ticket(user_id, job_id)
        accepted = SubmitAccepted(
            job_id=job_id,
            status="queued",
            events_url=f"/execution/result/{job_id}/events?ticket={ticket}",
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
            # Past JetStream's duplicate window a retried key must still not run twice (and a
            # retry does not count against the quota).
            if idempotency_key is not None and await bus.submission_of(self.js, job_id) is not None:
                return accepted, {}
        except (TimeoutError, NatsError, JsError, NatsTimeoutError) as exc:
            raise BusUnavailable("the submission queue is unavailable", headers={"Retry-After": "2"}) from exc
        decision = await self.quotas.take(f"user:{user_id}", self.exec_policies)
        try:
            # Nats-Msg-Id makes concurrent retries inside the window collapse into one message.
            ack = await bus.publish(self.js, subjects.submission(job_id), event, msg_id=job_id)
        except (TimeoutError, NatsError, JsError, NatsTimeoutError) as exc:
            log.warning("publish failed for job %s: %s", job_id, exc)
            raise BusUnavailable(
                "the submission queue is unavailable; try again shortly", headers={"Retry-After": "2"}
            ) from exc
        log.info("job %s queued (seq %s%s)", job_id, ack.seq, ", duplicate" if ack.duplicate else "")
        return accepted, decision.headers

    async def _authorize(self, job_id: str, principal: Principal) -> None:
        """A job is visible to its owner and to staff; anyone else gets the same 404 as for no job."""
        if not subjects.JOB_ID_RE.fullmatch(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        submission = await bus.submission_of(self.js, job_id)
        if submission is None or (submission.user_id != principal.user_id and not principal.is_staff):
            raise JobNotFound(f"no job {job_id!r}")

    async def result(self, job_id: str, principal: Principal) -> JobResult:
        await self._authorize(job_id, principal)
        cached = await self.redis.get(cache_key(job_id))
        if cached is not None:
            return msgspec.json.decode(cached, type=JobResult)
        return await bus.fold_job(self.js, job_id)

    async def authorize_stream(self, job_id: str, principal: Principal | None, ticket: str | None) -> None:
        if principal is None:
            if not ticket:
                raise Unauthorized("send a bearer token, or the ticket from eventsUrl")
            principal = Principal(user_id=self.tokens.ticket_job(ticket, job_id), role="student")
        await self._authorize(job_id, principal)

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
