"""Execution routes: parse, call the service, shape the response (URLs by route name)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import HeaderParameter, Parameter
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_202_ACCEPTED

from gateway.dependencies import AUTHENTICATED, MAYBE_AUTHENTICATED, IdempotencyKey, services_of
from gateway.executions.models import GradeRequest, JobPage, QueueStats, SubmitAccepted, SubmitRequest
from gateway.executions.service import ExecutionService, Queued, StreamItem
from gateway.tokens import Principal
from schemas.results import JobResult
from schemas.subjects import JOB_ID_RE

SSE_RETRY_MS = 1000
RESULT = "execution:result"
EVENTS = "execution:events"


def provide_executions(state: State) -> ExecutionService:
    return services_of(state).executions


# Parameters as Litestar checks them (400 otherwise) and the OpenAPI document shows them.
JobId = Annotated[str, Parameter(pattern=JOB_ID_RE.pattern, description="From `jobId` of the submit answer")]
# ASCII digits only (str.isdigit() also accepts "²"); empty is "from the start", as EventSource may send.
LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        pattern=r"^[0-9]{0,19}$",
        description="Resume after this event: a stream sequence number from this stream's `id:` lines",
    ),
]
Ticket = Annotated[
    str | None,
    Parameter(
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        max_length=2048,
        description="From `eventsUrl` of the submit answer: for EventSource, which cannot send headers",
    ),
]


RECONNECT_RETRY_MS = 500
RECONNECT_DATA = '{"reason":"the server is restarting: reconnect to resume"}'


async def _to_sse(items: AsyncIterator[StreamItem]) -> AsyncIterator[ServerSentEventMessage]:
    retry: int | None = SSE_RETRY_MS  # sent once, with the first data-carrying event
    async for item in items:
        if item.kind == "heartbeat":
            # A comment only: never dispatched as an event by clients.
            yield ServerSentEventMessage(data=None, comment="keep-alive")
            continue
        if item.kind == "reconnect":
            # Not the end of the job: this server is stopping. EventSource reconnects by itself
            # after `retry` ms, with Last-Event-ID, to a replica that is not.
            yield ServerSentEventMessage(event="reconnect", data=RECONNECT_DATA, retry=RECONNECT_RETRY_MS)
            continue
        if item.kind == "done":
            yield ServerSentEventMessage(event="done", data=item.data.decode(), retry=retry)
        else:
            yield ServerSentEventMessage(id=item.seq, event=item.name, data=item.data.decode(), retry=retry)
        retry = None


def _accepted(request: Request[Any, Any, Any], queued: Queued) -> Response[SubmitAccepted]:
    result_url = request.app.route_reverse(RESULT, job_id=queued.job_id)
    events_url = request.app.route_reverse(EVENTS, job_id=queued.job_id) + "?" + urlencode({"ticket": queued.ticket})
    accepted = SubmitAccepted(job_id=queued.job_id, status="queued", events_url=events_url, result_url=result_url)
    return Response(accepted, status_code=HTTP_202_ACCEPTED, headers={"Location": result_url, **queued.headers})


class ExecutionController(Controller):
    path = "/execution"
    tags = ["execution"]
    dependencies = {"executions": Provide(provide_executions, sync_to_thread=False)}

    @post(
        "/submit",
        status_code=HTTP_202_ACCEPTED,
        summary="Queue code for execution",
        dependencies={"principal": AUTHENTICATED},
    )
    async def submit(
        self,
        data: SubmitRequest,
        executions: ExecutionService,
        principal: Principal,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SubmitAccepted]:
        queued = await executions.submit(
            data, user_id=principal.user_id, idempotency_key=idempotency_key, family_id=principal.family_id
        )
        return _accepted(request, queued)

    @post(
        "/submit/grade",
        status_code=HTTP_202_ACCEPTED,
        summary="Submit a solution to a problem: every test, public and hidden, graded",
        description="Answered like `/execution/submit`; the event stream then carries a `test` event per "
        "test as it is decided and a `graded` event, and `done` comes after the grade.",
        dependencies={"principal": AUTHENTICATED},
    )
    async def submit_grade(
        self,
        data: GradeRequest,
        executions: ExecutionService,
        principal: Principal,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SubmitAccepted]:
        queued = await executions.submit(
            data, user_id=principal.user_id, idempotency_key=idempotency_key, family_id=principal.family_id
        )
        return _accepted(request, queued)

    @get(
        "/result/{job_id:str}",
        name=RESULT,
        summary="A job's current state",
        dependencies={"principal": AUTHENTICATED},
    )
    async def result(self, job_id: JobId, executions: ExecutionService, principal: Principal) -> JobResult:
        return await executions.result(job_id, principal)

    @get(
        "/result/{job_id:str}/events",
        name=EVENTS,
        summary="A job's events as server-sent events, ending with `done`",
        description="Authenticate with a bearer token, or with the `ticket` from `eventsUrl` (EventSource "
        "cannot send headers); the ticket is valid for this one job for 10 minutes.",
        opt={"skip_metrics": True},
        dependencies={"principal": MAYBE_AUTHENTICATED},
    )
    async def events(
        self,
        job_id: JobId,
        executions: ExecutionService,
        principal: Principal | None,
        ticket: Ticket = None,
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        after = int(last_event_id or 0)
        reader = await executions.authorize_stream(job_id, principal, ticket)
        events = await executions.open_events(job_id, after, reader=reader)
        return ServerSentEvent(
            _to_sse(events),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @get(
        "/history",
        summary="The signed-in user's finished jobs, newest first",
        dependencies={"principal": AUTHENTICATED},
    )
    async def history(
        self,
        executions: ExecutionService,
        principal: Principal,
        page: Annotated[int, Parameter(ge=1, le=10_000)] = 1,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=100)] = 20,
    ) -> JobPage:
        return await executions.history(principal.user_id, page=page, page_size=page_size)

    @get("/queue/stats", summary="The runners' backlog: depth, in flight, capacity, estimated wait")
    async def queue_stats(self, executions: ExecutionService) -> QueueStats:
        return executions.backlog.stats()
