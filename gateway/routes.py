"""Thin route handlers: parse, call a service, shape the response."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT, HTTP_503_SERVICE_UNAVAILABLE

from gateway.accounts import AccountService
from gateway.errors import Gone, InvalidRequest, Unauthorized
from gateway.health import check_readiness
from gateway.models import (
    Health,
    LoginRequest,
    QueueStats,
    Readiness,
    RefreshRequest,
    RegisterRequest,
    SubmitAccepted,
    SubmitRequest,
    TokenPair,
    UserOut,
)
from gateway.security import client_address
from gateway.services import ExecutionService, StreamItem
from gateway.tokens import Principal, TokenService
from schemas.results import JobResult

SSE_RETRY_MS = 1000


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def provide_principal(request: Request, tokens: TokenService) -> Principal:
    token = bearer(request)
    if token is None:
        raise Unauthorized("sign in and send `Authorization: Bearer <accessToken>`")
    return await tokens.principal(token)


async def provide_optional_principal(request: Request, tokens: TokenService) -> Principal | None:
    token = bearer(request)
    if token:
        return await tokens.principal(token)
    ticket = request.query_params.get("ticket")
    if ticket:
        await tokens.check_ticket(ticket)  # a signed-out login's tickets stop working too
    return None


AUTHENTICATED = Provide(provide_principal)
MAYBE_AUTHENTICATED = Provide(provide_optional_principal)


_SEQUENCE_RE = re.compile(r"[0-9]{1,19}")


def _last_event_id(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not _SEQUENCE_RE.fullmatch(raw):
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


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED, summary="Create an account")
    async def register(self, data: RegisterRequest, accounts: AccountService) -> UserOut:
        return await accounts.register(data)

    @post("/login", status_code=200, summary="Sign in: an access token (15 min) and a refresh token")
    async def login(self, data: LoginRequest, accounts: AccountService, request: Request, state: State) -> TokenPair:
        return await accounts.login(data, client_address(request.scope, state.settings.trusted_proxy_set))

    @post("/refresh", status_code=200, summary="Rotate a refresh token for a new pair")
    async def refresh(self, data: RefreshRequest, accounts: AccountService) -> TokenPair:
        return await accounts.refresh(data.refresh_token)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, summary="Revoke this login (its whole token family)")
    async def logout(self, data: RefreshRequest, accounts: AccountService) -> None:
        await accounts.logout(data.refresh_token)

    @get("/me", summary="The signed-in user", dependencies={"principal": AUTHENTICATED})
    async def me(self, principal: Principal, accounts: AccountService) -> UserOut:
        return await accounts.me(principal.user_id)


class ExecutionController(Controller):
    path = "/execution"
    tags = ["execution"]

    @post(
        "/submit",
        status_code=HTTP_202_ACCEPTED,
        summary="Queue code for execution",
        dependencies={"principal": AUTHENTICATED},
    )
    async def submit(
        self,
        data: SubmitRequest,
        service: ExecutionService,
        principal: Principal,
        idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> Response[SubmitAccepted]:
        accepted, headers = await service.submit(
            data, user_id=principal.user_id, idempotency_key=idempotency_key, family_id=principal.family_id
        )
        return Response(accepted, status_code=HTTP_202_ACCEPTED, headers={"Location": accepted.result_url, **headers})

    @get(
        "/result/{job_id:str}",
        summary="A job's current state",
        dependencies={"principal": AUTHENTICATED},
    )
    async def result(self, job_id: str, service: ExecutionService, principal: Principal) -> JobResult:
        return await service.result(job_id, principal)

    @get(
        "/result/{job_id:str}/events",
        summary="A job's events as server-sent events, ending with `done`",
        description="Authenticate with a bearer token, or with the `ticket` from `eventsUrl` (EventSource "
        "cannot send headers); the ticket is valid for this one job for 10 minutes.",
        opt={"skip_metrics": True},
        dependencies={"principal": MAYBE_AUTHENTICATED},
    )
    async def events(
        self,
        job_id: str,
        service: ExecutionService,
        principal: Principal | None,
        ticket: str | None = None,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        after = _last_event_id(last_event_id)
        reader = await service.authorize_stream(job_id, principal, ticket)
        events = await service.open_events(job_id, after, reader=reader)
        return ServerSentEvent(
            _to_sse(events),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @get("/queue/stats", summary="The runners' backlog: depth, in flight, capacity, estimated wait")
    async def queue_stats(self, state: State) -> QueueStats:
        stats: QueueStats = state.backlog.stats()
        return stats


@post(["/api/run", "/api/submit"], include_in_schema=False)
async def moved() -> None:
    raise Gone("this endpoint moved: POST /execution/submit (then GET /execution/result/{jobId})")


@get("/health", summary="Alive", tags=["ops"])
async def health() -> Health:
    return Health(status="ok")


@get("/ready", summary="NATS, Redis and MongoDB reachable", tags=["ops"])
async def ready(request: Request, state: State) -> Response[Readiness]:
    readiness = await check_readiness(state)
    status = 200 if readiness.status == "ready" else HTTP_503_SERVICE_UNAVAILABLE
    return Response(readiness, status_code=status)
