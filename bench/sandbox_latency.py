"""Sandbox latency and throughput, for every backend, in one run.

Prints, for `print(1)` and for a 10-test graded job:
- the start time of a bare `python3 -I -S -c pass`;
- each backend's latency cold (a sandbox started for the job) and from the warm pool (p50, p95);
- each backend's sustained jobs per second with a warm pool, `--concurrency` jobs at a time.

    .venv/bin/python bench/sandbox_latency.py [--runs 100] [--backends bwrap,docker] [--concurrency 2]

The docker backend needs DOCKER_HOST (default: the podman socket `.ci/podman.sh` starts) and
SANDBOX_IMAGE (default coderunner-sandbox:test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time

from bench.common import bare_python, summary
from sandbox import seccomp
from sandbox.base import Execution, TestCase
from sandbox.pool import PooledSandbox, WarmPool
from schemas.executions import Verdict
from schemas.submissions import Limits
from tests.sandboxes import make_backend

PRINT = "print(1)"
GRADED = "def add(a, b):\n    return a + b\n"
TESTS = [TestCase(id=f"t{i}", function="add", args=[i, i]) for i in range(10)]
LIMITS = Limits()


def line(name: str, seconds: list[float]) -> str:
    return "  " + summary(name, seconds, width=38)


async def job(sandbox: PooledSandbox, kind: str) -> None:
    if kind == "print(1)":
        out: list[str] = []

        async def sink(_s: str, text: str) -> None:
            out.append(text)

        outcome = await sandbox.run(Execution(code=PRINT, limits=LIMITS), sink)
        assert outcome.verdict is Verdict.OK and "".join(out) == "1\n", (outcome, out)
    else:
        result = await sandbox.run_tests(GRADED, TESTS, LIMITS)
        assert [o.return_json for o in result.observations] == [str(2 * i) for i in range(10)], result


async def latency(backend_name: str, kind: str, *, warm: bool, runs: int) -> list[float]:
    backend = make_backend(backend_name)
    pool = WarmPool(backend, min_size=1 if warm else 0, max_size=2, max_age=3600)
    sandbox = PooledSandbox(backend, pool, seccomp=seccomp.program("harness"))
    await sandbox.check()
    times = []
    try:
        for _ in range(runs):
            await pool.settle()
            if warm:
                await pool.wait_warm()  # the job finds a started sandbox, as at rest
            t = time.perf_counter()
            await job(sandbox, kind)
            times.append(time.perf_counter() - t)
        stats = sandbox.stats()
        if warm:
            assert stats.warm_hits >= runs, stats
        else:
            assert stats.cold_starts >= runs, stats
    finally:
        await sandbox.close()
    return times


async def throughput(backend_name: str, kind: str, *, jobs: int, concurrency: int) -> float:
    backend = make_backend(backend_name)
    pool = WarmPool(backend, min_size=concurrency, max_size=2 * concurrency, max_age=3600)
    sandbox = PooledSandbox(backend, pool, seccomp=seccomp.program("harness"))
    await sandbox.check()
    await pool.wait_warm()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await job(sandbox, kind)

    try:
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return jobs / (time.perf_counter() - t)
    finally:
        await sandbox.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--backends", default="bwrap,docker")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--throughput-jobs", type=int, default=0, help="default: 3 x runs")
    args = parser.parse_args()
    jobs = args.throughput_jobs or 3 * args.runs
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()} runs={args.runs}")
    print(line("bare `python3 -I -S -c pass`", bare_python(args.runs)))
    for name in args.backends.split(","):
        for kind in ("print(1)", "10-test graded job"):
            print(f"{name} / {kind}")
            print(line("cold (sandbox started for the job)", await latency(name, kind, warm=False, runs=args.runs)))
            print(line("warm (from the pool)", await latency(name, kind, warm=True, runs=args.runs)))
            rate = await throughput(name, kind, jobs=jobs, concurrency=args.concurrency)
            print(f"  {'sustained, warm pool':<38} {jobs} jobs, {args.concurrency} at a time: {rate:8.1f} jobs/s")


if __name__ == "__main__":
    asyncio.run(main())
