"""The quotas' windows slide (gateway/quotas.py), checked on a real Redis with a 2 s window.

A fixed window (a counter per calendar window) admits a full allowance on each side of a window
boundary: twice the limit within a moment. The sliding log admits the limit in any window's length.
Tested across a boundary of the same clock a fixed window would use (Redis's), with a short window
so that the test waits at most 2 s for a boundary instead of up to a minute.
"""

from __future__ import annotations

import asyncio
import secrets

import redis.asyncio as aioredis

from gateway.errors import TooManyRequests
from gateway.quotas import Policy, Quotas

WINDOW = 2


async def _redis_time(redis: aioredis.Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + micros / 1e6


async def _burst(quotas: Quotas, subject: str, policy: Policy, n: int) -> list[bool]:
    admitted = []
    for _ in range(n):
        try:
            await quotas.take(subject, [policy])
            admitted.append(True)
        except TooManyRequests:
            admitted.append(False)
    return admitted


def test_a_burst_on_each_side_of_a_window_boundary_gets_one_allowance(shared_servers: dict[str, str]) -> None:
    async def scenario() -> tuple[list[bool], list[bool]]:
        redis = aioredis.from_url(shared_servers["redis"])
        try:
            quotas = Quotas(redis)
            policy = Policy("slide-test", 10, WINDOW)
            subject = f"user:{secrets.token_hex(6)}"
            now = await _redis_time(redis)
            # 150 ms before the next boundary a fixed window would have (a multiple of WINDOW).
            await asyncio.sleep((WINDOW - now % WINDOW - 0.15) % WINDOW)
            before = await _burst(quotas, subject, policy, 10)
            ended = await _redis_time(redis)
            assert ended % WINDOW > WINDOW / 2, "the first burst crossed the boundary: rerun"
            await asyncio.sleep(WINDOW - ended % WINDOW + 0.05)  # just past the boundary
            after = await _burst(quotas, subject, policy, 10)
            return before, after
        finally:
            await redis.aclose()

    before, after = asyncio.run(scenario())
    assert before.count(True) == 10
    assert after.count(True) == 0, after  # a fixed window would have admitted 10 more here
