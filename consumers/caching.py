"""Caching consumer: stores each finished job's result in Redis.

Finished results never change, so ``GET /execution/result/{jobId}`` serves them from Redis instead
of re-reading the job's events from JetStream. Writing the same value twice is harmless, which
makes the consumer idempotent.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis
from nats.js import JetStreamContext

from bus import history
from consumers.base import Delivery, Deps
from schemas.executions import ExecutionFinished


def cache_key(job_id: str) -> str:
    """Redis key under which this consumer keeps a finished job's :class:`JobResult`."""
    return f"coderunner:result:{job_id}"


class ResultCache:
    def __init__(self, js: JetStreamContext, redis: aioredis.Redis, ttl_seconds: float) -> None:
        self.js = js
        self.redis = redis
        self.ttl = max(1, int(ttl_seconds))

    async def __call__(self, delivery: Delivery) -> None:
        if not isinstance(delivery.event, ExecutionFinished):
            return
        result = await history.fold_job(self.js, delivery.event.job_id)
        if result.terminal:
            await self.redis.set(cache_key(result.job_id), msgspec.json.encode(result), ex=self.ttl)


async def build(deps: Deps) -> ResultCache:
    return ResultCache(deps.js, deps.redis, deps.settings.stream_retention_seconds)
