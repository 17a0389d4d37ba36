"""End-to-end latency: POST /execution/submit → SSE `done`, for a trivial program.

Starts the whole stack (embedded NATS, Redis, MongoDB-wire, gateway, runner, consumers) in a temp
folder, submits N programs one after another, and prints p50/p95/max, next to the start time of a
bare `python3 -I -S -c pass` measured in the same run.

    .venv/bin/python bench/e2e_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from deploy import embedded
from deploy.supervisor import Stack
from sandbox.bwrap import find_python


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(name: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"{name:<44} n={len(ms):<4} p50={percentile(ms, 50):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
        f"max={max(ms):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )


def bare_python(runs: int) -> list[float]:
    python = find_python("auto")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return times


def one_job(client: httpx.Client, code: str) -> tuple[float, dict]:
    t = time.perf_counter()
    res = client.post("/execution/submit", json={"code": code})
    res.raise_for_status()
    job = res.json()
    done: dict = {}
    with connect_sse(client, "GET", job["eventsUrl"]) as source:
        for sse in source.iter_sse():
            if sse.event == "done":
                done = json.loads(sse.data)
                break
    return time.perf_counter() - t, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded.free_port()
        stack = Stack(Path(tmp), "127.0.0.1", port)
        try:
            stack.start()
            if not stack.wait_ready():
                raise SystemExit("stack did not become ready")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for _ in range(5):  # warm-up: imports, JIT-free caches, connections
                    one_job(client, "print('warm')")
                latencies = []
                for i in range(args.runs):
                    elapsed, done = one_job(client, f"print('hello {i}')")
                    assert done.get("stdout") == f"hello {i}\n", done
                    latencies.append(elapsed)
            bare = bare_python(max(50, args.runs // 2))
        finally:
            stack.stop()
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={__import__('os').cpu_count()} "
        f"python={platform.python_version()}"
    )
    print(summary("POST /execution/submit -> SSE done (print)", latencies))
    print(summary("bare `python3 -I -S -c pass`", bare))


if __name__ == "__main__":
    main()
