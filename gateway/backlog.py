"""The runners' backlog, cached: submissions read it without a JetStream call per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from nats.js import JetStreamContext

from gateway.models import QueueStats
from schemas import streams

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class Backlog:
    def __init__(self, js: JetStreamContext, capacity: int) -> None:
        self.js = js
        self.capacity = capacity
        self.pending = 0
        self.in_flight = 0
        self.rate = 0.0  # jobs acknowledged per second, smoothed
        self.updated_at = datetime.now(UTC)
        self._last_floor: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self.pending + self.in_flight

    @property
    def full(self) -> bool:
        return self.depth >= self.capacity

    def estimated_wait(self) -> float:
        return round(self.depth / self.rate, 1) if self.rate > 0 else float(self.depth)

    def stats(self) -> QueueStats:
        return QueueStats(
            depth=self.depth,
            pending=self.pending,
            in_flight=self.in_flight,
            capacity=self.capacity,
            estimated_wait_seconds=self.estimated_wait(),
            updated_at=self.updated_at.isoformat(),
        )

    async def refresh(self) -> None:
        info = await self.js.consumer_info(streams.SUBMISSIONS, streams.RUNNER_CONSUMER)
        self.pending = info.num_pending or 0
        self.in_flight = info.num_ack_pending or 0
        now = time.monotonic()
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        if self._last_floor is not None and now > self._last_floor[0]:
            instant = (floor - self._last_floor[1]) / (now - self._last_floor[0])
            self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
        self._last_floor = (now, floor)
        self.updated_at = datetime.now(UTC)

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the runner consumer may not exist yet; keep the last figure
                log.debug("backlog refresh failed: %s", exc)
            await asyncio.sleep(POLL_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
