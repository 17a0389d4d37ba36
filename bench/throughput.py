"""Sustained end-to-end throughput: trivial jobs, then graded jobs, with the bare interpreter as reference.

Starts the whole stack in a temporary folder (quotas raised: this measures the pipeline, not the
per-user limits), then, for ``--seconds`` each:

1. ``--clients`` threads each submit ``print(i)`` and read the SSE stream to ``done``, again and
   again: jobs per second and POST → ``done`` p50/p95;
2. the same with a graded submission of problem 341 (10 tests, the reference solution): graded
   jobs per second;
3. the reference: the same number of threads starting a bare ``python3 -I -S -c 'print(1)'``
   again and again: starts per second. The ratio pipeline/bare says how much of the machine the
   pipeline around the interpreter takes.

    .venv/bin/python bench/throughput.py [--clients 8] [--seconds 30] [--runners 1]

``--runners 2`` starts a second runner process beside the stack's (the capacity model's check).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from bench.common import percentile, running_stack
from bench.e2e_latency import sign_in
from curriculum.files import load as load_curriculum
from load.run import Sampler
from local import embedded
from local.stackenv import NO_QUOTAS
from local.supervisor import Supervised
from sandbox.bwrap import find_python

GRADED_PROBLEM = 341


def one_job(client: httpx.Client, path: str, body: dict) -> dict:
    res = client.post(path, json=body)
    res.raise_for_status()
    with connect_sse(client, "GET", res.json()["eventsUrl"]) as source:
        for sse in source.iter_sse():
            if sse.event == "done":
                return sse.json()
    raise RuntimeError("the stream ended without done")


def sustain(clients: int, seconds: float, work: Callable[[int], None]) -> tuple[int, float, list[float]]:
    """Run ``work`` in ``clients`` threads until ``seconds`` have passed: count, elapsed, latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            work(n * 1_000_000 + i)
            with lock:
                latencies.append(time.perf_counter() - t)
            i += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), time.perf_counter() - began, latencies


def line(name: str, count: int, elapsed: float, latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"{name:<44} {count / elapsed:6.1f} /s  n={count:<5} p50={percentile(ms, 50):6.0f} ms  "
        f"p95={percentile(ms, 95):6.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runners", type=int, default=1, help="runner processes (the stack starts one)")
    args = parser.parse_args()
    os.environ.update(NO_QUOTAS)
    solution = next(p.solution for p in load_curriculum().problems if p.id == GRADED_PROBLEM)
    with tempfile.TemporaryDirectory() as tmp:
        with running_stack(Path(tmp)) as (stack, base):
            runner = next(a for a in stack.apps if a.name == "runner")
            for n in range(2, args.runners + 1):
                # Its own id, metrics port and sandbox uids (two runners must not share a uid).
                env = dict(runner.env, METRICS_PORT=str(embedded.free_port()), RUNNER_ID=f"bench-runner-{n}")
                env["SANDBOX_HOST_UID_BASE"] = str(60_000 + 100 * (n - 1))
                extra = Supervised(f"runner-{n}", runner.argv, env, Path(tmp) / "logs" / f"runner-{n}.log")
                stack.apps.append(extra)  # stopped with the stack
                extra.start()
            http = [httpx.Client(base_url=base, timeout=60) for _ in range(args.clients)]
            for client in http:
                sign_in(client)

            def trivial(i: int) -> None:
                done = one_job(http[i // 1_000_000], "/execution/submit", {"code": f"print({i})"})
                assert done["stdout"] == f"{i}\n", done

            def graded(i: int) -> None:
                body = {"code": solution, "problemId": GRADED_PROBLEM}
                done = one_job(http[i // 1_000_000], "/execution/submit/grade", body)
                assert done["grade"]["verdict"] == "ACCEPTED", done

            sustain(args.clients, 3, trivial)  # warm-up: imports, caches, connections
            pids = {spec.name: sup.proc.pid for spec, sup in stack.servers if sup.proc}
            pids |= {app.name: app.proc.pid for app in stack.apps if app.proc}
            results, usage = [], []
            for name, work in (
                ("trivial `print(i)`: POST -> done", trivial),
                ("graded, 10 tests: POST -> done", graded),
            ):
                sampler = Sampler(pids, every=5)
                sampler.start()
                results.append((name, *sustain(args.clients, args.seconds, work)))
                sampler.stop()
                usage.append(sampler.usage)
            for client in http:
                client.close()
        python = find_python("auto")

        def bare(_i: int) -> None:
            subprocess.run([python, "-I", "-S", "-c", "print(1)"], check=True, capture_output=True)

        results.append(("bare `python3 -I -S -c 'print(1)'`", *sustain(args.clients, args.seconds, bare)))
    print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    print(f"{args.clients} clients, {args.seconds:.0f} s each, {args.runners} runner process(es)")
    for name, count, elapsed, latencies in results:
        print(line(name, count, elapsed, latencies))
    trivial_rate = results[0][1] / results[0][2]
    bare_rate = results[2][1] / results[2][2]
    print(f"pipeline/bare ratio: {trivial_rate / bare_rate:.2f}")
    # CPU per job, by process (the runner's includes its sandboxes): where the machine goes.
    for (name, count, _, _), used in zip(results, usage, strict=False):
        total = sum(u.cpu_seconds for u in used.values())
        parts = ", ".join(f"{p} {u.cpu_seconds / count * 1000:.0f}" for p, u in used.items())
        print(f"CPU ms per job, {name.split(':')[0]}: {total / count * 1000:.0f} = {parts}")


if __name__ == "__main__":
    main()
