"""What operators watch that lives outside the gateway: daily activity (Redis) and the durable
consumers' backlogs (JetStream), sampled into gauges (telemetry.metrics) by one background task.

Daily activity is kept without personal data in any metric: each accepted submission adds its
user to a HyperLogLog of the UTC day (an estimate of distinct users, ~0.8 % error) and increments
the day's count. Every replica samples the same keys, so every replica exports the same figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from bus import streams
from telemetry import metrics

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
KEEP_DAYS = 3


def _day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


def users_key(day: str) -> str:
    return f"coderunner:activity:users:{day}"


def submissions_key(day: str) -> str:
    return f"coderunner:activity:submissions:{day}"


async def record_submission(redis: aioredis.Redis, user_id: str, mode: str) -> None:
    """Count one accepted submission (best effort: a failed count never fails a submission)."""
    metrics.SUBMISSIONS.labels(mode).inc()
    day = _day()
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.pfadd(users_key(day), user_id)
            pipe.expire(users_key(day), KEEP_DAYS * 86_400)
            pipe.incr(submissions_key(day))
            pipe.expire(submissions_key(day), KEEP_DAYS * 86_400)
            await pipe.execute()
    except RedisError as exc:
        log.warning("daily activity not counted: %s", exc)


class Sampler:
    """Refreshes the shared-state gauges every ``SAMPLE_SECONDS`` (the queue depth itself is
    refreshed by the backlog, every second)."""

    def __init__(self, js: JetStreamContext, redis: aioredis.Redis) -> None:
        self.js = js
        self.redis = redis
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        for durable in streams.DURABLES:
            try:
                info = await self.js.consumer_info(durable.stream, durable.name)
            except Exception as exc:  # not created yet by its owner, or the bus is away
                log.debug("no consumer info for %s: %s", durable.name, exc)
                continue
            labels = (durable.stream, durable.name)
            metrics.CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)
            metrics.CONSUMER_REDELIVERED.labels(*labels).set(info.num_redelivered or 0)
        day = _day()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.pfcount(users_key(day))
                pipe.get(submissions_key(day))
                users, submissions = await pipe.execute()
        except RedisError as exc:
            log.debug("daily activity not sampled: %s", exc)
            return
        metrics.DAILY_ACTIVE_USERS.set(int(users or 0))
        metrics.DAILY_SUBMISSIONS.set(int(submissions or 0))

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception as exc:  # a sampling failure must never stop the gateway
                log.warning("metrics sampling failed: %s", exc)
            await asyncio.sleep(SAMPLE_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
