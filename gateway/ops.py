"""Routes for operators: liveness, readiness, metrics, and the endpoints that moved."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from litestar import get, post
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusController
from litestar.response import Response
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from msgspec import Struct

from gateway.dependencies import Services, services_of
from gateway.errors import Gone
from gateway.guards import metrics_token_only

CHECK_TIMEOUT = 2.0


class Health(Struct, frozen=True):
    status: str


class Readiness(Struct, frozen=True):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


async def _check(name: str, probe: Callable[[], Awaitable[object]]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(), timeout=CHECK_TIMEOUT)
    except Exception as exc:  # report, don't raise
        return name, f"unavailable: {type(exc).__name__}"
    return name, "ok"


async def check_readiness(services: Services) -> Readiness:
    async def nats() -> None:
        if not services.nc.is_connected:
            raise ConnectionError("not connected")
        await services.js.account_info()

    async def redis() -> None:
        await services.redis.ping()

    async def mongo() -> None:
        await services.mongo.admin.command("ping")

    checks = dict(await asyncio.gather(_check("nats", nats), _check("redis", redis), _check("mongodb", mongo)))
    ok = all(v == "ok" for v in checks.values())
    return Readiness(status="ready" if ok else "unavailable", checks=checks)


@get("/health", summary="Alive", tags=["ops"])
async def health() -> Health:
    return Health(status="ok")


@get("/ready", summary="NATS, Redis and MongoDB reachable", tags=["ops"])
async def ready(state: State) -> Response[Readiness]:
    readiness = await check_readiness(services_of(state))
    status = 200 if readiness.status == "ready" else HTTP_503_SERVICE_UNAVAILABLE
    return Response(readiness, status_code=status)


class Metrics(PrometheusController):
    path = "/metrics"
    include_in_schema = False
    guards = [metrics_token_only]


@post(["/api/run", "/api/submit"], include_in_schema=False)
async def moved() -> None:
    raise Gone("this endpoint moved: POST /execution/submit (then GET /execution/result/{jobId})")
