"""Drives one job through one warm sandbox instance; the same for every backend.

The wall clock starts when the job is handed over (a warm sandbox's start-up is not the student's
time). Verdicts come from what the host observed: its own timers and caps, the exit status the
backend reports, and the memory controller's OOM count where there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec

from sandbox.base import (
    Applied,
    Execution,
    ExitInfo,
    Instance,
    ObservationSink,
    Outcome,
    OutputSink,
    SandboxFailure,
    TestCase,
    TestObservation,
    TestRun,
)
from sandbox.output import CappedStream
from schemas.executions import StreamName, Verdict
from schemas.submissions import Limits, MiB

# What the harness prints on stdout once it is ready for a job (before any user code exists).
READY = b"\x00coderunner-harness-ready\n"
DRAIN_SECONDS = 2.0
# Extra time for the harness itself around a test run's own per-test limits.
TESTS_MARGIN_SECONDS = 3.0
REPORT_LINE_LIMIT = 2 * MiB
# How the harness ends a job whose CPU budget (every process together) or file budget is spent.
_SIGXCPU_EXIT = 128 + signal.SIGXCPU
_SIGXFSZ_EXIT = 128 + signal.SIGXFSZ


@functools.cache
def harness_source() -> str:
    return (Path(__file__).parent / "harness.py").read_text()


# Where a backend that can place a file in the sandbox puts the compiled harness (read-only).
HARNESS_PYC = "/harness.pyc"
_COMPILE = (
    "import importlib._bootstrap_external as b, sys\n"
    "code = compile(sys.stdin.read(), '<harness>', 'exec', dont_inherit=True)\n"
    "sys.stdout.buffer.write(b._code_to_timestamp_pyc(code, 0, 0))\n"
)


@functools.cache
def compiled_harness(python: str) -> bytes | None:
    """The harness compiled by the sandbox's own interpreter (so the .pyc's magic number is its
    own), once per runner: compiling 900 lines cost every sandbox start ~13 ms of CPU, a tenth of
    a trivial job's whole cost. None if that interpreter cannot do it (the source is used)."""
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-B", "-c", _COMPILE],
            input=harness_source().encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and len(done.stdout) > 16 else None


def harness_argv(python: str, *, compiled: bool = False) -> list[str]:
    # -I: no PYTHON* variables, no user site, no cwd on sys.path; -S: stdlib only; -u: live output.
    if compiled:
        return [python, "-I", "-S", "-B", "-u", HARNESS_PYC]
    return [python, "-I", "-S", "-B", "-u", "-c", harness_source()]


def _job_limits(applied: Applied) -> dict[str, int]:
    limits = applied.limits
    return {
        "cpuMs": limits.cpu_time_ms,
        "cpuSeconds": max(1, math.ceil(limits.cpu_time_ms / 1000)),
        "fileSizeBytes": limits.file_size_bytes,
        "openFiles": limits.open_files,
        **applied.harness,
    }


def frame(job: dict[str, Any]) -> bytes:
    data = json.dumps(job).encode()
    return b"%d\n" % len(data) + data


def _memory_error(stderr_tail: str) -> bool:
    lines = stderr_tail.rstrip().splitlines()
    return bool(lines) and lines[-1].startswith("MemoryError")


def classify(
    exit: ExitInfo,
    *,
    timed_out: bool,
    output_limited: bool,
    stderr_tail: str,
    limits: Limits,
    files: int | None = None,
) -> tuple[Verdict, str | None]:
    if output_limited:
        return Verdict.OUTPUT_LIMIT, f"output exceeded {limits.output_bytes} bytes"
    if timed_out:
        return Verdict.TIME_LIMIT, f"wall-clock limit of {limits.wall_time_ms} ms exceeded"
    if exit.oom_killed:
        return Verdict.MEMORY_LIMIT, f"memory limit of {limits.memory_bytes // MiB} MiB exceeded"
    if exit.exit_code == _SIGXCPU_EXIT:
        return Verdict.TIME_LIMIT, f"CPU limit of {limits.cpu_time_ms} ms exceeded"
    if exit.exit_code == 0:
        return Verdict.OK, None
    if exit.exit_code == _SIGXFSZ_EXIT and files:
        return Verdict.RUNTIME_ERROR, f"more than {files} files in /tmp and /dev/shm"
    if _memory_error(stderr_tail):
        return Verdict.MEMORY_LIMIT, f"memory limit of {limits.memory_bytes // MiB} MiB exceeded"
    return Verdict.RUNTIME_ERROR, None


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def run_program(
    instance: Instance, execution: Execution, sink: OutputSink, *, seccomp_hex: str | None
) -> Outcome:
    applied = await instance.apply(execution.limits)
    limits = applied.limits
    job = {"mode": "run", "code": execution.code, "limits": _job_limits(applied), "seccomp": seccomp_hex}
    out = CappedStream("stdout", limits.output_bytes, sink)
    err = CappedStream("stderr", limits.output_bytes, sink, keep_tail=4096)
    streams: dict[StreamName, CappedStream] = {"stdout": out, "stderr": err}

    async def pump() -> None:
        async for stream, data in instance.output():
            await streams[stream].feed(data)
        await out.finish()
        await err.finish()

    started = time.monotonic()
    await instance.send(frame(job) + execution.stdin.encode("utf-8", errors="replace"))
    pumping = asyncio.create_task(pump())
    waiter = asyncio.create_task(instance.wait())
    limit_hit = asyncio.create_task(_first(out.exceeded, err.exceeded))
    timed_out = output_limited = False
    try:
        done, _ = await asyncio.wait(
            {waiter, limit_hit}, timeout=limits.wall_time_ms / 1000, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            output_limited = limit_hit in done
            timed_out = not output_limited
            await instance.kill()
        exit = await waiter
        duration_ms = int((time.monotonic() - started) * 1000)
        await asyncio.wait({pumping}, timeout=DRAIN_SECONDS)
    finally:
        for task in (pumping, waiter, limit_hit):
            task.cancel()
        await asyncio.gather(pumping, waiter, limit_hit, return_exceptions=True)
    if not exit.started:
        raise SandboxFailure("the sandbox failed before the program started")
    output_limited = output_limited or out.truncated or err.truncated
    verdict, message = classify(
        exit,
        timed_out=timed_out,
        output_limited=output_limited,
        stderr_tail=err.tail,
        limits=limits,
        files=applied.harness.get("tmpInodes"),
    )
    killed = timed_out or output_limited
    code = None if killed else exit.exit_code
    return Outcome(
        verdict=verdict,
        exit_code=code,
        signal=signal.SIGKILL if killed else (code - 128 if code is not None and code > 128 else None),
        duration_ms=duration_ms,
        message=message,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
    )


_observation_decoder = msgspec.json.Decoder(TestObservation)


async def run_tests(
    instance: Instance,
    code: str,
    tests: list[TestCase],
    limits: Limits,
    *,
    seccomp_hex: str | None,
    on_observation: ObservationSink | None = None,
) -> TestRun:
    applied = await instance.apply(limits)
    job = {
        "mode": "tests",
        "code": code,
        "limits": _job_limits(applied),
        "seccomp": seccomp_hex,
        "scratch": list(applied.scratch),
        "outputBytes": limits.output_bytes,
        "tests": [msgspec.to_builtins(t) for t in tests],
    }
    wanted = {t.id for t in tests}
    observations: dict[str, TestObservation] = {}
    finished = asyncio.Event()
    report = bytearray()
    report_cap = REPORT_LINE_LIMIT + len(tests) * 3 * limits.output_bytes

    async def pump() -> None:
        async for stream, data in instance.output():
            if stream != "stdout" or len(report) >= report_cap:
                continue  # the harness's own stderr is not part of the report
            report.extend(data[: report_cap - len(report)])
            while (newline := report.find(b"\n")) >= 0:
                line = bytes(report[:newline])
                del report[: newline + 1]
                obs = _accept(line)
                if obs is not None and on_observation is not None:
                    await on_observation(obs)

    def _accept(line: bytes) -> TestObservation | None:
        if line == b'{"done": true}':
            finished.set()
            return None
        with contextlib.suppress(msgspec.DecodeError):
            obs = _observation_decoder.decode(line)
            if obs.id in wanted and obs.id not in observations:
                observations[obs.id] = obs
                return obs
        return None

    started = time.monotonic()
    await instance.send(frame(job))
    pumping = asyncio.create_task(pump())
    waiter = asyncio.create_task(instance.wait())
    budget = sum(t.wall_ms for t in tests) / 1000 + TESTS_MARGIN_SECONDS
    timed_out = False
    try:
        done, _ = await asyncio.wait({waiter}, timeout=budget)
        if waiter not in done:
            timed_out = True
            await instance.kill()
        exit = await waiter
        await asyncio.wait({pumping}, timeout=DRAIN_SECONDS)
    finally:
        pumping.cancel()
        waiter.cancel()
        await asyncio.gather(pumping, waiter, return_exceptions=True)
    duration_ms = int((time.monotonic() - started) * 1000)
    if not exit.started:
        raise SandboxFailure("the sandbox failed before the tests started")
    complete = finished.is_set()
    ordered = []
    for t in tests:
        obs = observations.get(t.id)
        if obs is None:
            # The run ended before this test reported (the time budget ran out, or the sandbox
            # died): say so, as the test's observation.
            obs = TestObservation(
                id=t.id,
                error={"type": "NoObservation", "message": "the test did not report", "phase": "harness"},
                timed_out=timed_out,
            )
            if on_observation is not None:
                await on_observation(obs)
        ordered.append(obs)
    if complete:
        verdict, message = Verdict.OK, None
    elif timed_out:
        verdict, message = Verdict.TIME_LIMIT, "the test run exceeded its total time"
    else:
        verdict, message = Verdict.RUNTIME_ERROR, "the test run ended before every test reported"
    return TestRun(
        observations=ordered,
        outcome=Outcome(verdict=verdict, exit_code=exit.exit_code, duration_ms=duration_ms, message=message),
    )
