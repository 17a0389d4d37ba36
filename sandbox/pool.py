"""A warm pool of sandboxes, and the :class:`PooledSandbox` the runner uses.

Each sandbox serves exactly one job and is then destroyed, so nothing leaks from one student to
the next; the pool refills in the background so that the next job finds a sandbox whose
interpreter is already running. Health is checked on acquire (still alive, younger than
``max_age``); an unhealthy one is destroyed and the next is tried, and an empty pool falls back to a
cold start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time

from sandbox.base import (
    Backend,
    Execution,
    Instance,
    ObservationSink,
    Outcome,
    OutputSink,
    SandboxError,
    SandboxFailure,
    SandboxUnavailable,
    TestCase,
    TestRun,
)
from sandbox.executor import run_program, run_tests
from schemas.ops import PoolStats
from schemas.submissions import Limits
from telemetry import metrics

log = logging.getLogger(__name__)

SPAWN_RETRY_SECONDS = 1.0


@dataclasses.dataclass
class _Counters:
    created: int = 0
    destroyed: int = 0
    warm_hits: int = 0
    cold_starts: int = 0
    failed_health_checks: int = 0
    spawn_failures: int = 0
    expired: int = 0


class WarmPool:
    def __init__(self, backend: Backend, *, min_size: int, max_size: int, max_age: float) -> None:
        if max_size < 1 or min_size < 0 or min_size > max_size:
            raise ValueError(f"pool sizes must satisfy 0 <= min ({min_size}) <= max ({max_size}), max >= 1")
        self.backend = backend
        self.min_size = min_size
        self.max_size = max_size
        self.max_age = max_age
        self._idle: collections.deque[Instance] = collections.deque()
        self._busy = 0
        self._spawning = 0
        self._wake = asyncio.Event()
        self._capacity = asyncio.Condition()
        self._refiller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._stats = _Counters()

    def stats(self) -> PoolStats:
        return PoolStats(
            backend=self.backend.name,
            min_size=self.min_size,
            max_size=self.max_size,
            idle=len(self._idle),
            busy=self._busy,
            **dataclasses.asdict(self._stats),
        )

    @property
    def _alive(self) -> int:
        return len(self._idle) + self._busy + self._spawning

    async def start(self) -> None:
        self._refiller = asyncio.create_task(self._refill_forever())
        self._wake.set()

    async def wait_warm(self, within: float = 30.0) -> None:
        """Wait until ``min_size`` sandboxes are idle (start-up and benchmarks)."""
        deadline = time.monotonic() + within
        while len(self._idle) < self.min_size:
            if time.monotonic() > deadline:
                raise SandboxError(f"pool not warm after {within}s: {self.stats()}")
            await asyncio.sleep(0.01)

    async def settle(self) -> None:
        """Wait for background destruction to finish (tests and benchmarks)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def idle_instances(self) -> list[Instance]:
        return list(self._idle)

    async def _spawn(self) -> Instance:
        self._spawning += 1
        began = time.monotonic()
        try:
            instance = await self.backend.spawn()
        except BaseException:
            self._stats.spawn_failures += 1
            raise
        finally:
            self._spawning -= 1
        self._stats.created += 1
        metrics.SANDBOX_START.labels(self.backend.name).observe(time.monotonic() - began)
        return instance

    async def _refill_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._idle) + self._spawning < self.min_size and self._alive < self.max_size:
                try:
                    self._idle.append(await self._spawn())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("could not start a warm %s sandbox: %s", self.backend.name, exc)
                    await asyncio.sleep(SPAWN_RETRY_SECONDS)

    def _healthy(self, instance: Instance) -> bool:
        if time.monotonic() - instance.created_at > self.max_age:
            self._stats.expired += 1
            return False
        if not instance.alive():
            self._stats.failed_health_checks += 1
            return False
        return True

    async def acquire(self) -> Instance:
        while self._idle:
            instance = self._idle.popleft()
            if self._healthy(instance):
                # The refill waits for release: starting a sandbox now would compete for the CPU
                # with the job that just got this one.
                self._busy += 1
                self._stats.warm_hits += 1
                return instance
            self._destroy_later(instance)
        async with self._capacity:
            await self._capacity.wait_for(lambda: self._alive < self.max_size)
        self._stats.cold_starts += 1
        self._busy += 1
        try:
            instance = await self._spawn()
        except BaseException:
            self._busy -= 1
            raise
        finally:
            self._wake.set()
        return instance

    async def release(self, instance: Instance) -> None:
        """A used sandbox is never reused: destroy it and let the pool refill."""
        self._busy -= 1
        self._destroy_later(instance)
        self._wake.set()

    def _destroy_later(self, instance: Instance) -> None:
        task = asyncio.create_task(self._destroy(instance))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _destroy(self, instance: Instance) -> None:
        try:
            await instance.destroy()
        except Exception as exc:
            log.warning("destroying a %s sandbox failed: %s", self.backend.name, exc)
        self._stats.destroyed += 1
        async with self._capacity:
            self._capacity.notify_all()

    async def close(self) -> None:
        if self._refiller is not None:
            self._refiller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refiller
        while self._idle:
            self._destroy_later(self._idle.popleft())
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


class PooledSandbox:
    """The :class:`~sandbox.base.Sandbox` the runner uses: a backend behind a warm pool."""

    def __init__(self, backend: Backend, pool: WarmPool, *, seccomp: bytes | None) -> None:
        self.backend = backend
        self.pool = pool
        self.name = backend.name
        self._seccomp_hex = seccomp.hex() if seccomp else None

    async def check(self) -> None:
        await self.backend.check()
        await self.pool.start()
        chunks: list[str] = []

        async def sink(_stream: str, text: str) -> None:
            chunks.append(text)

        try:
            outcome = await self.run(Execution(code="print('ok')", limits=Limits()), sink)
        except SandboxFailure as exc:
            raise SandboxUnavailable(f"{self.name} sandbox self-test failed: {exc}") from exc
        if outcome.verdict.value != "OK" or "".join(chunks) != "ok\n":
            raise SandboxUnavailable(f"{self.name} sandbox self-test failed: {outcome} {''.join(chunks)!r}")

    async def run(self, execution: Execution, sink: OutputSink) -> Outcome:
        instance = await self._acquire()
        try:
            return await run_program(instance, execution, sink, seccomp_hex=self._seccomp_hex)
        finally:
            await self.pool.release(instance)

    async def run_tests(
        self, code: str, tests: list[TestCase], limits: Limits, on_observation: ObservationSink | None = None
    ) -> TestRun:
        instance = await self._acquire()
        try:
            return await run_tests(
                instance, code, tests, limits, seccomp_hex=self._seccomp_hex, on_observation=on_observation
            )
        finally:
            await self.pool.release(instance)

    async def _acquire(self) -> Instance:
        try:
            return await self.pool.acquire()
        except SandboxError:
            raise
        except Exception as exc:
            raise SandboxFailure(f"could not start a {self.name} sandbox: {exc}") from exc

    def stats(self) -> PoolStats:
        return self.pool.stats()

    async def close(self) -> None:
        await self.pool.close()
        await self.backend.close()
