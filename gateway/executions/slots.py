"""Open event streams, capped per user and per job across replicas (429 beyond the caps).

Each cap is a sorted set in Redis of the open streams, scored by their lease's expiry and renewed
while a stream is open, so a replica that dies without closing its streams frees their slots when
the leases run out. Opening checks both caps and takes both slots in one script, on Redis's clock.

Leases are renewed for every stream a process holds at once, one pipeline every third of a lease:
a command per stream at its own pace was thousands of commands a second with thousands of streams
open, and more concurrent commands than the connection pool had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.errors import TooManyRequests
from telemetry import metrics

log = logging.getLogger(__name__)

# KEYS: the user's and the job's sets of open streams. ARGV: member, lease ms, user limit, job limit.
# Returns {1, 0} when admitted, else {0, 1 (user full) or 2 (job full)}.
_OPEN_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then
    return {0, i}
  end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return {1, 0}
"""

# KEYS: the same two sets. ARGV: member, lease ms. Extends the lease of a stream still open.
_RENEW_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return 1
"""


@dataclass(slots=True)
class StreamSlot:
    keys: tuple[str, str]
    member: str
    lease_ms: int


class StreamSlots:
    """At most ``per_user`` open event streams per user and ``per_job`` per job, across replicas."""

    def __init__(self, redis: aioredis.Redis, *, per_user: int, per_job: int, lease_seconds: float) -> None:
        self.redis = redis
        self.per_user = per_user
        self.per_job = per_job
        self.lease_ms = int(lease_seconds * 1000)
        self._open = redis.register_script(_OPEN_STREAM)
        self._renew = redis.register_script(_RENEW_STREAM)
        self._held: dict[str, StreamSlot] = {}  # this process's open streams, by member
        self._renewing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._renewing = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew_all()
            except Exception as exc:  # a lapsed lease only frees a slot early
                log.warning("renewing %d stream slots failed: %s", len(self._held), exc)

    async def renew_all(self) -> None:
        """Extend the lease of every stream this process holds, in one round trip."""
        held = list(self._held.values())
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for slot in held:
                await self._renew(keys=list(slot.keys), args=[slot.member, slot.lease_ms], client=pipe)
            await pipe.execute()

    async def acquire(self, user_id: str, job_id: str) -> StreamSlot:
        keys = (f"coderunner:streams:user:{user_id}", f"coderunner:streams:job:{job_id}")
        member = secrets.token_hex(8)
        ok, which = (
            int(x) for x in await self._open(keys=list(keys), args=[member, self.lease_ms, self.per_user, self.per_job])
        )
        if not ok:
            detail = (
                f"you have {self.per_user} event streams open already; close one first"
                if which == 1
                else f"this job has {self.per_job} event streams open already; close one first"
            )
            metrics.QUOTA_REFUSALS.labels("event_streams").inc()
            raise TooManyRequests(detail, headers={"Retry-After": "5"})
        slot = self._held[member] = StreamSlot(keys=keys, member=member, lease_ms=self.lease_ms)
        return slot

    async def release(self, slot: StreamSlot) -> None:
        self._held.pop(slot.member, None)
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in slot.keys:
                pipe.zrem(key, slot.member)
            await pipe.execute()
