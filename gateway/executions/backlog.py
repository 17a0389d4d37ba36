"""The runners' backlog, cached: submissions read it without a JetStream call per request.

JetStream's figures are refreshed once a second; between refreshes this replica counts its own
admissions, so a burst cannot overshoot the cap: a slot is reserved (synchronously, with the
check) before the publish, released if the publish fails, and counted as published until a refresh
that started after its ack has read it back from the consumer. The cap holds exactly for one
replica (admissions acked during a refresh may be counted twice for up to a second, which only
errs on the side of refusing). Replicas do not see each other's admissions until their next
refresh: with R replicas the backlog may overshoot by up to (R - 1) times the free room within one
refresh interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import streams
from gateway.errors import QueueFull
from gateway.executions.models import QueueStats
from telemetry import metrics

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class Backlog:
    def __init__(self, js: JetStreamContext, capacity: int, max_wait: float | None = None) -> None:
        self.js = js
        self.capacity = capacity
        # Refuse, too, when the jobs waiting would take longer than this to start at the rate the
        # runners are finishing them: a fixed depth cap alone let waits reach a minute on a busy
        # small machine (200 jobs at 4.6 jobs/s, docs/benchmarks.md "Load scenarios").
        self.max_wait = max_wait
        self.pending = 0
        self.in_flight = 0
        self.rate = 0.0  # jobs acknowledged per second, smoothed
        # The same, counted only over intervals that began with jobs waiting: what the runners can
        # do, not what was asked of them (after a quiet spell ``rate`` is near 0 and would make
        # the first burst look hours long).
        self.service_rate = 0.0
        self._busy = False
        self.updated_at = datetime.now(UTC)
        self._last_floor: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reserved = 0  # admitted here, publish not yet acked
        self.published = 0  # acked here, not yet read back by a refresh

    @property
    def depth(self) -> int:
        """The backlog as JetStream last reported it."""
        return self.pending + self.in_flight

    @property
    def admission_depth(self) -> int:
        """The backlog including this replica's admissions since the last refresh."""
        return self.depth + self.reserved + self.published

    @property
    def full(self) -> bool:
        return self.admission_depth >= self.capacity or self.too_slow

    @property
    def too_slow(self) -> bool:
        """The estimated wait is over ``max_wait`` (known only once the runners have finished jobs)."""
        return (
            self.max_wait is not None
            and self.service_rate > 0
            and self.admission_depth / self.service_rate > self.max_wait
        )

    def admit(self) -> None:
        """Reserve room for one submission, or raise 503 with an estimate of the wait."""
        if self.full:
            wait = self.estimated_wait()
            raise QueueFull(
                f"the runners are busy ({self.admission_depth} jobs waiting); estimated wait {wait:.0f} s",
                headers={"Retry-After": str(max(1, min(300, round(wait))))},
            )
        self.reserved += 1

    def published_one(self) -> None:
        """The reserved submission was stored: it counts until a refresh sees it."""
        self.reserved = max(0, self.reserved - 1)
        self.published += 1

    def release(self) -> None:
        """The reserved submission was not stored (or was a duplicate)."""
        self.reserved = max(0, self.reserved - 1)

    def estimated_wait(self) -> float:
        depth = self.admission_depth
        return round(depth / self.rate, 1) if self.rate > 0 else float(depth)

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
        seen = self.published  # acked before this read: the consumer's figures include them
        try:
            info = await self.js.consumer_info(streams.SUBMISSIONS, streams.RUNNER_CONSUMER)
        except NotFoundError:
            # No runner has made its consumer yet, so there is no figure: count from zero again
            # each interval, as before (a burst is still held to the cap within one interval).
            self.published = max(0, self.published - seen)
            raise
        self.published = max(0, self.published - seen)
        self.pending = info.num_pending or 0
        self.in_flight = info.num_ack_pending or 0
        metrics.QUEUE_DEPTH.set(self.pending)
        metrics.QUEUE_IN_FLIGHT.set(self.in_flight)
        self.observe(time.monotonic(), info.ack_floor.stream_seq if info.ack_floor else 0)
        self.updated_at = datetime.now(UTC)

    def observe(self, now: float, floor: int) -> None:
        """Fold in the runner consumer's ack floor read at ``now`` (``pending`` already updated)."""
        if self._last_floor is not None and now > self._last_floor[0]:
            instant = (floor - self._last_floor[1]) / (now - self._last_floor[0])
            self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
            if self._busy:
                self.service_rate = instant if self.service_rate == 0 else 0.8 * self.service_rate + 0.2 * instant
        self._last_floor = (now, floor)
        self._busy = self.pending > 0

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
