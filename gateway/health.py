from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from litestar.datastructures import State

from gateway.models import Readiness

CHECK_TIMEOUT = 2.0


async def _check(name: str, probe: Callable[[], Awaitable[object]]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(), timeout=CHECK_TIMEOUT)
    except Exception as exc:  # report, don't raise
        return name, f"unavailable: {type(exc).__name__}"
    return name, "ok"


async def check_readiness(state: State) -> Readiness:
    async def nats() -> None:
        if not state.nc.is_connected:
            raise ConnectionError("not connected")
        await state.js.account_info()

    async def redis() -> None:
        await state.redis.ping()

    async def mongo() -> None:
        await state.mongo.admin.command("ping")

    checks = dict(await asyncio.gather(_check("nats", nats), _check("redis", redis), _check("mongodb", mongo)))
    ok = all(v == "ok" for v in checks.values())
    return Readiness(status="ready" if ok else "unavailable", checks=checks)
