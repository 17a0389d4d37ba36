"""Caching consumer: stores each finished (or graded) job's result in Redis, and invalidates the curriculum cache.

Finished results never change, so ``GET /execution/result/{jobId}`` serves them from Redis instead
of re-reading the job's events from JetStream. Writing the same value twice is harmless, which
makes the consumer idempotent.

The gateway caches curriculum reads under keys that include a generation number
(:data:`CURRICULUM_GEN_KEY`); each ``ProblemChanged`` bumps it, which makes them all obsolete at
once. A redelivered event bumps it again: harmless (one more cache miss).
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis
from nats.js import JetStreamContext

from bus import history
from consumers.base import Delivery, Deps, Handler
from schemas.executions import ExecutionFinished
from schemas.grades import Graded
from schemas.problems import ProblemChanged
from schemas.progress import ProgressChanged

# The curriculum cache's generation: part of every cached curriculum key (gateway.problems.service).
CURRICULUM_GEN_KEY = "coderunner:curriculum:gen"


def cache_key(job_id: str) -> str:
    """Redis key under which this consumer keeps a finished job's :class:`JobResult`."""
    return f"coderunner:result:{job_id}"


class ResultCache:
    def __init__(self, js: JetStreamContext, redis: aioredis.Redis, ttl_seconds: float) -> None:
        self.js = js
        self.redis = redis
        self.ttl = max(1, int(ttl_seconds))

    async def __call__(self, delivery: Delivery) -> None:
        # A run ends with finished, a graded job with graded: fold_job says when it is terminal.
        if not isinstance(delivery.event, ExecutionFinished | Graded):
            return
        result = await history.fold_job(self.js, delivery.event.job_id)
        if result.terminal:
            await self.redis.set(cache_key(result.job_id), msgspec.json.encode(result), ex=self.ttl)


async def build(deps: Deps) -> ResultCache:
    return ResultCache(deps.js, deps.redis, deps.settings.stream_retention_seconds)


class CurriculumInvalidator:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def __call__(self, delivery: Delivery) -> None:
        if isinstance(delivery.event, ProblemChanged):
            # A Redis error raises: the event is redelivered (bus.settle), the edit shows later.
            await self.redis.incr(CURRICULUM_GEN_KEY)


async def build_problems(deps: Deps) -> Handler:
    return CurriculumInvalidator(deps.redis)


def progress_generation_key(user_id: str) -> str:
    """A user's progress generation: part of their summary's cache key (gateway.progress.service)."""
    return f"coderunner:progress:gen:{user_id}"


def progress_summary_key(user_id: str, generation: int) -> str:
    """Redis key of a user's cached progress summary at one generation."""
    return f"coderunner:progress:summary:{user_id}:{generation}"


class ProgressInvalidator:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def __call__(self, delivery: Delivery) -> None:
        # Announced by the progress consumer after its write. A new generation, not a delete: a
        # summary computed from the old state and stored after this lands under the old
        # generation's key, which nobody reads any more.
        if isinstance(delivery.event, ProgressChanged):
            key = progress_generation_key(delivery.event.user_id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 7 * 86_400)
                await pipe.execute()


async def build_progress(deps: Deps) -> Handler:
    return ProgressInvalidator(deps.redis)
