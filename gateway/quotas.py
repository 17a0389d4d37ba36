"""Quotas shared by every gateway replica: sliding windows in Redis, checked and counted atomically.

Each policy keeps a sliding log (a sorted set of the admitted requests' times) per subject, so a
limit holds over *every* window of its length, not per calendar minute: 10 per minute admits 10
in any 60 s, never 20 across a minute boundary. One Lua script checks every policy of a request
first and counts it in all of them only if none is full, so concurrent requests cannot race past
a limit and rejected requests use up nothing. A request that is admitted and then fails before
doing anything (the queue is unavailable) is given back with :meth:`Quotas.refund`.
The clock is Redis's, so replicas with skewed clocks still share one window. (Open event streams
are capped the same way: ``gateway.executions.slots``.)

Answers carry the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Policy: "exec-minute";q=10;w=60`` and ``RateLimit: "exec-minute";r=9;t=42``, where
``t`` is when the oldest counted request leaves the window (one more unit comes back then).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.errors import TooManyRequests
from telemetry import metrics

# KEYS: one sorted set per policy. ARGV: member, then (limit, window ms) per key.
# Returns {1, 0, remaining, reset ms, ...} or {0, index of the first full policy, retry ms}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local counts = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  counts[i] = count
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local retry = window
    if oldest[2] then retry = tonumber(oldest[2]) + window - now end
    return {0, i, retry}
  end
end
local out = {1, 0}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], window)
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  table.insert(out, limit - counts[i] - 1)
  table.insert(out, tonumber(oldest[2]) + window - now)
end
return out
"""


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    limit: int
    window: int  # seconds

    def header(self) -> str:
        return f'"{self.name}";q={self.limit};w={self.window}'


@dataclass(frozen=True, slots=True)
class Decision:
    headers: dict[str, str]
    # What refund() needs to give the request back.
    keys: tuple[str, ...] = ()
    member: str = ""


def _seconds(ms: int) -> int:
    return max(0, -(-ms // 1000))


class Quotas:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)

    async def take(self, subject: str, policies: list[Policy]) -> Decision:
        """Count one request for ``subject`` against every policy, or raise 429 without counting."""
        return await self.take_each([(subject, p) for p in policies])

    async def take_each(self, counted: list[tuple[str, Policy]]) -> Decision:
        """Count one request against each (subject, policy) pair, or raise 429 without counting any."""
        policies = [p for _, p in counted]
        keys = [f"coderunner:quota:{p.name}:{subject}" for subject, p in counted]
        member = secrets.token_hex(8)
        args: list[str | int] = [member]
        for p in policies:
            args += [p.limit, p.window * 1000]
        result = [int(x) for x in await self._take(keys=keys, args=args)]
        policy_header = ", ".join(p.header() for p in policies)
        if result[0] == 0:
            full = policies[result[1] - 1]
            metrics.QUOTA_REFUSALS.labels(full.name).inc()
            retry = max(1, _seconds(result[2]))
            raise TooManyRequests(
                f"{full.name} quota of {full.limit} per {full.window} s reached",
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": policy_header,
                    "RateLimit": f'"{full.name}";r=0;t={retry}',
                },
            )
        # Report the tightest policy (least remaining) in RateLimit.
        pairs = [(result[2 + 2 * i], result[3 + 2 * i], p) for i, p in enumerate(policies)]
        remaining, reset_ms, tightest = min(pairs, key=lambda x: x[0])
        return Decision(
            headers={
                "RateLimit-Policy": policy_header,
                "RateLimit": f'"{tightest.name}";r={remaining};t={_seconds(reset_ms)}',
            },
            keys=tuple(keys),
            member=member,
        )

    async def refund(self, decision: Decision) -> None:
        """Give back a request that was counted but did nothing (e.g. it was not queued)."""
        if decision.keys:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in decision.keys:
                    pipe.zrem(key, decision.member)
                await pipe.execute()
