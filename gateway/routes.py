"""Thin route handlers: parse, call the service, shape the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from gateway.errors import InvalidRequest
from gateway.health import check_readiness
from gateway.models import Health, Readiness, SubmitAccepted, SubmitRequest
from gateway.services import ExecutionService, StreamItem
from schemas.results import JobResult

# Until accounts arrive every request acts for one anonymous user.
ANONYMOUS = "anonymous"
SSE_RETRY_MS = 1000


def _last_event_id(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or len(raw) > 19:
        raise InvalidRequest("Last-Event-ID must be a stream sequence number from this stream's `id:` lines")
    return int(raw)


async def _to_sse(items: AsyncIterator[StreamItem]) -> AsyncIterator[ServerSentEventMessage]:
    retry: int | None = SSE_RETRY_MS  # sent once, with the first data-carrying event
    async for item in items:
        if item.kind == "heartbeat":
            # A comment only: never dispatched as an event by clients.
            yield ServerSentEventMessage(data=None, comment="keep-alive")
            continue
        if item.kind == "done":
            yield ServerSentEventMessage(event="done", data=item.data.decode(), retry=retry)
        else:
            yield ServerSentEventMessage(id=item.seq, event=item.name, data=item.data.decode(), retry=retry)
        retry = None


class ExecutionController(Controller):
    path = "/execution"
    tags = ["execution"]

    @post("/submit", status_code=HTTP_202_ACCEPTED, summary="Queue code for execution")
    async def submit(
        self,
        data: SubmitRequest,
        service: ExecutionService,
        idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> Response[SubmitAccepted]:
        accepted = await service.submit(data, user_id=ANONYMOUS, idempotency_key=idempotency_key)
        return Response(accepted, status_code=HTTP_202_ACCEPTED, headers={"Location": accepted.result_url})

    @get("/result/{job_id:str}", summary="A job's current state")
    async def result(self, job_id: str, service: ExecutionService) -> JobResult:
        return await service.result(job_id)

    @get(
        "/result/{job_id:str}/events",
        summary="A job's events as server-sent events, ending with `done`",
        opt={"skip_metrics": True},
    )
    async def events(
        self,
        job_id: str,
        service: ExecutionService,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        after = _last_event_id(last_event_id)
        await service.ensure_exists(job_id)
        return ServerSentEvent(
            _to_sse(service.events(job_id, after)),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


@get("/health", summary="Alive", tags=["ops"])
async def health() -> Health:
    return Health(status="ok")


@get("/ready", summary="NATS, Redis and MongoDB reachable", tags=["ops"])
async def ready(request: Request, state: State) -> Response[Readiness]:
    readiness = await check_readiness(state)
    status = 200 if readiness.status == "ready" else HTTP_503_SERVICE_UNAVAILABLE
    return Response(readiness, status_code=status)
