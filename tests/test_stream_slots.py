"""Event-stream slots: leases renewed together while streams are open, and only while they are."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis

from gateway.errors import TooManyRequests
from gateway.executions.slots import StreamSlots


async def _refused(slots: StreamSlots, user: str) -> bool:
    try:
        extra = await slots.acquire(user, f"job-{secrets.token_hex(4)}")
    except TooManyRequests:
        return True
    await slots.release(extra)
    return False


async def test_open_streams_keep_their_slots_past_the_lease(shared_servers: dict[str, str]) -> None:
    redis = aioredis.from_url(shared_servers["redis"])
    slots = StreamSlots(redis, per_user=1, per_job=5, lease_seconds=0.6)  # renewed every 0.2 s
    user = f"user-{secrets.token_hex(4)}"
    try:
        slots.start()
        held = await slots.acquire(user, f"job-{secrets.token_hex(4)}")
        await asyncio.sleep(1.5)  # more than two leases: only renewal keeps the slot taken
        assert await _refused(slots, user)
        # Renewal off (a replica that died): the lease runs out and the slot is free again.
        await slots.stop()
        for _ in range(50):
            if not await _refused(slots, user):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the slot of a stream nobody renews was never freed")
        await slots.release(held)
    finally:
        await slots.stop()
        await redis.aclose()


async def test_a_released_slot_is_no_longer_renewed(shared_servers: dict[str, str]) -> None:
    redis = aioredis.from_url(shared_servers["redis"])
    slots = StreamSlots(redis, per_user=1, per_job=5, lease_seconds=0.6)
    user = f"user-{secrets.token_hex(4)}"
    try:
        slots.start()
        held = await slots.acquire(user, f"job-{secrets.token_hex(4)}")
        await slots.release(held)
        await slots.renew_all()  # must not bring the released stream back
        assert not await _refused(slots, user)
    finally:
        await slots.stop()
        await redis.aclose()
