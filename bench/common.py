"""Shared by the benchmark scripts: percentiles, one summary line, a bare interpreter's start, the
whole stack started for a benchmark."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from local import embedded
from local.supervisor import Stack
from sandbox.bwrap import find_python


@contextlib.contextmanager
def running_stack(folder: Path) -> Iterator[tuple[Stack, str]]:
    """The whole stack with its data in ``folder``, ready, and its gateway's URL; stopped after."""
    port = embedded.free_port()
    stack = Stack(folder, "127.0.0.1", port)
    try:
        stack.start()
        if not stack.wait_ready():
            raise SystemExit("stack did not become ready")
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        stack.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float], width: int = 44) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name:<{width}} n={len(ms):<4} p50={percentile(ms, 50):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
        f"max={max(ms):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )


def bare_python(runs: int) -> list[float]:
    """Start times of `python3 -I -S -c pass` with the sandbox's interpreter."""
    python = find_python("auto")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return times
