"""Quotas shared by every gateway replica: fixed windows in Redis, checked and counted atomically.

One Lua script checks every window of a request first and counts it in all of them only if none
is full, so concurrent requests cannot race past a limit and rejected requests use up nothing.
Answers carry the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Policy: "exec-minute";q=10;w=60`` and ``RateLimit: "exec-minute";r=9;t=42``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.errors import TooManyRequests

# KEYS: one counter per window. ARGV: now, then (limit, window) per key.
# Returns {allowed, index of the first full window or 0, remaining..., reset...}.
_SCRIPT = """
local now = tonumber(ARGV[1])
local n = #KEYS
local counts = {}
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  counts[i] = count
  if count >= limit then
    local ttl = redis.call('PTTL', KEYS[i])
    return {0, i, ttl}
  end
end
local out = {1, 0}
for i = 1, n do
  local window = tonumber(ARGV[2 * i + 1])
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then
    redis.call('PEXPIRE', KEYS[i], window * 1000)
  end
  table.insert(out, tonumber(ARGV[2 * i]) - count)
  table.insert(out, redis.call('PTTL', KEYS[i]))
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


class Quotas:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_SCRIPT)

    async def take(self, subject: str, policies: list[Policy]) -> Decision:
        """Count one request for ``subject`` against every policy, or raise 429 without counting."""
        now = int(time.time())
        keys = [f"coderunner:quota:{p.name}:{subject}:{now // p.window}" for p in policies]
        args: list[int] = [now]
        for p in policies:
            args += [p.limit, p.window]
        result = [int(x) for x in await self._script(keys=keys, args=args)]
        policy_header = ", ".join(p.header() for p in policies)
        if result[0] == 0:
            full = policies[result[1] - 1]
            retry = max(1, -(-result[2] // 1000)) if result[2] > 0 else full.window
            raise TooManyRequests(
                f"{full.name} quota of {full.limit} per {full.window} s reached",
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": policy_header,
                    "RateLimit": f'"{full.name}";r=0;t={retry}',
                },
            )
        # Report the tightest window (least remaining) in RateLimit.
        pairs = [(result[2 + 2 * i], result[3 + 2 * i], p) for i, p in enumerate(policies)]
        remaining, reset_ms, tightest = min(pairs, key=lambda x: x[0])
        return Decision(
            headers={
                "RateLimit-Policy": policy_header,
                "RateLimit": f'"{tightest.name}";r={remaining};t={max(0, -(-reset_ms // 1000))}',
            }
        )
