"""The runner process, built in one place."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from typing import Any

from nats.aio.msg import Msg

from bus import client, streams
from config.loader import load
from flags.store import FlagReader, StreamSource
from runner import deadletters
from runner.settings import RunnerSettings
from runner.worker import Runner
from sandbox import seccomp
from sandbox.base import Backend, SandboxUnavailable
from sandbox.bwrap import BwrapBackend, BwrapConfig
from sandbox.docker import DockerBackend, DockerConfig
from sandbox.pool import PooledSandbox, WarmPool
from schemas import subjects
from schemas.codec import encode
from schemas.ops import RunnerStats
from schemas.submissions import MiB
from telemetry import metrics
from telemetry.exposition import start_metrics
from telemetry.logs import register_settings_secrets
from telemetry.setup import setup_logging, setup_tracing

log = logging.getLogger(__name__)


def build_sandbox(settings: RunnerSettings, name: str | None = None) -> PooledSandbox:
    """The pooled sandbox of backend ``name`` (default: SANDBOX_BACKEND), from the settings."""
    limits: dict[str, Any] = dict(
        memory_bytes=settings.sandbox_memory_mb * MiB,
        cpus=settings.sandbox_cpus,
        pids=settings.sandbox_pids,
        tmp_bytes=settings.sandbox_tmp_mb * MiB,
        open_files=settings.sandbox_open_files,
        file_size_bytes=settings.sandbox_file_size_mb * MiB,
    )
    backend: Backend
    if (name or settings.sandbox_backend) == "docker":
        backend = DockerBackend(
            DockerConfig(
                image=settings.sandbox_image, base_url=settings.docker_host, runner_id=settings.runner_id, **limits
            )
        )
    else:
        backend = BwrapBackend(
            BwrapConfig(
                python=settings.sandbox_python,
                host_uid_base=settings.sandbox_host_uid_base,
                cgroups=settings.sandbox_cgroups,
                **limits,
            ),
            instance_name=settings.runner_id,
        )
    pool = WarmPool(
        backend,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        max_age=settings.sandbox_pool_max_age_seconds,
    )
    return PooledSandbox(backend, pool, seccomp=seccomp.program("harness"))


def check_enforcement(settings: RunnerSettings, enforcement: dict[str, str]) -> None:
    """Production needs memory and process limits that a program cannot dodge."""
    weak = [k for k in ("memory", "pids") if enforcement.get(k, "rlimit").startswith("rlimit")]
    if weak and settings.app_env == "production" and not settings.sandbox_allow_weak_limits:
        raise SandboxUnavailable(
            f"{' and '.join(weak)} would be enforced by rlimits only (no usable cgroups). Give the runner "
            "cgroups (v1 controllers, or a delegated v2 subtree: systemd Delegate=yes), use "
            "SANDBOX_BACKEND=docker, or set SANDBOX_ALLOW_WEAK_LIMITS=true to accept it."
        )


def export_gauges(settings: RunnerSettings, sandboxes: dict[str, PooledSandbox], runner: Runner) -> None:
    """Pool and slot gauges read at scrape time, from the objects that hold the figures."""
    metrics.RUNNER_SLOTS.set(settings.runner_concurrency)
    metrics.RUNNER_BUSY.set_function(lambda: runner.running)
    for name, sandbox in sandboxes.items():
        metrics.POOL_SIZE.labels(name).set_function(functools.partial(_pool_size, sandbox))
        metrics.POOL_AVAILABLE.labels(name).set_function(functools.partial(_pool_idle, sandbox))
        for choice in ("flag", "fallback"):
            metrics.SANDBOX_JOBS.labels(name, choice)


def _pool_size(sandbox: PooledSandbox) -> float:
    stats = sandbox.stats()
    return stats.idle + stats.busy


def _pool_idle(sandbox: PooledSandbox) -> float:
    return sandbox.stats().idle


async def serve(settings: RunnerSettings) -> None:
    # Its only forks exec bwrap at once: no after-fork hooks (see setup_tracing).
    tracing = setup_tracing("runner", settings.otel_exporter_otlp_endpoint, fork_hooks=False)
    metrics.set_process("runner")
    # SANDBOX_BACKEND, and SANDBOX_SECOND_BACKEND when set (the sandbox-docker flag picks per job).
    sandboxes = {name: build_sandbox(settings, name) for name in settings.backends}
    sandbox = sandboxes[settings.sandbox_backend]
    # Refuse to start without a working sandbox: there is no unsandboxed mode.
    try:
        for each in sandboxes.values():
            await each.check()
            checked = each.backend.enforcement()
            log.info("%s sandbox limits enforced by: %s", each.name, ", ".join(f"{k}={v}" for k, v in checked.items()))
            check_enforcement(settings, checked)
        enforcement = sandbox.backend.enforcement()
        nc, js = await client.connect(settings.nats_url, f"runner-{settings.runner_id}")
    except BaseException:
        # The check started warm sandboxes: a refusing runner must not leave them behind (bwrap's
        # own parent-death signal does not survive its change of credentials).
        for each in sandboxes.values():
            await each.close()
        tracing.shutdown()
        raise
    # Feature flags from the FLAGS stream (a runner gets no database URL), re-read every second and
    # at once on a flag.changed event.
    flags = FlagReader(StreamSource(js))
    try:
        await streams.provision(js, settings.bus_limits())
        await streams.ensure_consumer(js, streams.RUNNER_CONSUMER, settings.bus_limits())
        await streams.ensure_consumer(js, deadletters.DURABLE.name, settings.bus_limits())
        await flags.start(nc)
        runner = Runner(js, sandbox, settings, sandboxes=sandboxes, flags=flags)
        export_gauges(settings, sandboxes, runner)
        exposition = await start_metrics(settings)

        async def answer_stats(msg: Msg) -> None:
            stats = RunnerStats(
                runner_id=settings.runner_id,
                concurrency=settings.runner_concurrency,
                running=runner.running,
                pool=sandbox.stats(),
                enforcement=enforcement,
            )
            await msg.respond(encode(stats))

        stats_sub = await nc.subscribe(subjects.RUNNER_STATS, cb=answer_stats)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pulling = asyncio.create_task(runner.run())
        advisories = asyncio.create_task(deadletters.consume(js, stop))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({pulling, advisories, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pulling, advisories):
            if task.done():
                task.result()  # surface the error
        log.info("runner stopping: no new jobs; running ones get %.0f s", settings.runner_shutdown_grace_seconds)
        await runner.stop(settings.runner_shutdown_grace_seconds)
        pulling.cancel()
        advisories.cancel()
        await stats_sub.unsubscribe()
        if exposition:
            await exposition.stop()
    finally:
        await flags.stop()
        await client.close(nc)
        for each in sandboxes.values():
            await each.close()
        tracing.shutdown()


def main() -> None:
    settings = load(RunnerSettings)
    setup_logging(settings.log_level, "runner", fmt=settings.log_format)
    register_settings_secrets(settings)
    try:
        asyncio.run(serve(settings))
    except SandboxUnavailable as exc:
        print(f"coderunner runner: refusing to start, no sandbox can run here: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
