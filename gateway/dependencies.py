"""What route handlers are given: the gateway's services, typed, and the signed-in user.

The lifespan (``gateway.app``) opens the clients, builds one frozen :class:`Services` and stores it
once; everything else reads it through :func:`services_of`. Each feature's controller provides its
own service from it (``provide_accounts``, ``provide_executions``): a handler is given the service
it needs, never the whole of :class:`Services` (whose feature fields are only known to the type
checker here, see below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import redis.asyncio as aioredis
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import HeaderParameter
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

from gateway.errors import Unauthorized
from gateway.quotas import Quotas
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService, bearer_token

if TYPE_CHECKING:  # not at run time: the services use gateway.guards, which uses principal_of
    from gateway.accounts.service import AccountService
    from gateway.executions.service import ExecutionService
    from gateway.problems.service import ProblemService
    from gateway.progress.service import ProgressService

_SERVICES = "services"

# draft-ietf-httpapi-idempotency-key-header: an sf-string, so visible ASCII and inner spaces (an
# HTTP parser strips outer ones). Litestar checks the pattern (400); the OpenAPI document shows it.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="1 to 255 visible ASCII characters, scoped to the route: a request sent again with "
        "the same key is the same request (the same job or event id). A run or submission sent again "
        "with other code under the key is 422.",
    ),
]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the gateway opened at start-up, for the lifetime of the process."""

    settings: GatewaySettings
    nc: NATS
    js: JetStreamContext
    redis: aioredis.Redis
    mongo: AsyncMongoClient
    tokens: TokenService
    quotas: Quotas
    accounts: AccountService
    problems: ProblemService
    executions: ExecutionService
    progress: ProgressService


def store_services(state: State, services: Services) -> None:
    state[_SERVICES] = services


def services_of(state: State) -> Services:
    services = state.get(_SERVICES)
    if not isinstance(services, Services):
        raise RuntimeError("the gateway's services are not set up: its lifespan has not run")
    return services


def provide_settings(state: State) -> GatewaySettings:
    return services_of(state).settings


async def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The signed-in user of a request (for handlers and guards alike), or 401."""
    token = bearer_token(connection.headers)
    if token is None:
        raise Unauthorized("sign in and send `Authorization: Bearer <accessToken>`")
    return await services_of(connection.app.state).tokens.principal(token)


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return await principal_of(request)


async def provide_optional_principal(request: Request[Any, Any, Any]) -> Principal | None:
    """The signed-in user, or None for a request that brings a job's ticket (checked by the route)."""
    tokens = services_of(request.app.state).tokens
    token = bearer_token(request.headers)
    if token:
        return await tokens.principal(token)
    ticket = request.query_params.get("ticket")
    if ticket:
        await tokens.check_ticket(ticket)  # a signed-out login's tickets stop working too
    return None


AUTHENTICATED = Provide(provide_principal)
MAYBE_AUTHENTICATED = Provide(provide_optional_principal)
