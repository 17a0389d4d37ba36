"""The password-hashing queue's wait rule (gateway.accounts.service.HashingQueue), without a stack."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.accounts.service import HashingQueue
from gateway.errors import SignInBusy


def test_a_hash_is_refused_once_the_queue_ahead_of_it_is_longer_than_the_wait_allowed() -> None:
    """One thread, 50 ms a hash, 0.1 s allowed: three queued hashes fit (0, 0.05, 0.1 s ahead), a
    fourth (0.15 s) is refused at once with a Retry-After; once the queue drains, hashes run again."""

    async def scenario() -> None:
        queue = HashingQueue(max_wait=0.1, workers=1)
        queue.mean_seconds = 0.05
        release = threading.Event()
        held = [asyncio.create_task(queue.run(release.wait, 30)) for _ in range(3)]
        await asyncio.sleep(0)  # each task runs up to its hash's await
        assert queue.in_flight == 3
        with pytest.raises(SignInBusy) as refused:
            await queue.run(release.wait, 30)
        assert refused.value.headers == {"Retry-After": "1"}
        release.set()
        assert await asyncio.gather(*held) == [True, True, True]
        assert queue.in_flight == 0
        assert await queue.run(lambda: "hashed") == "hashed"
        queue.close()

    asyncio.run(scenario())
