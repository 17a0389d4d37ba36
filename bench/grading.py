"""Grading the whole curriculum through the pipeline: every reference solution, submitted with
POST /execution/submit/grade and followed over SSE to `done` (which comes after the grade).

Starts the whole stack in a temp folder (`coderunner up` seeds the curriculum), then
1. grades each reference solution one after another: per-submission p50/p95/max;
2. submits all of them at once and waits for every grade: the curriculum's total time;
and prints, from the same run, the start time of a bare `python3 -I -S -c pass`.

    .venv/bin/python bench/grading.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from bench.common import bare_python, summary
from bench.e2e_latency import sign_in
from curriculum import files
from curriculum.model import Problem
from local import embedded
from local.stackenv import NO_QUOTAS
from local.supervisor import Stack


def grade(client: httpx.Client, code: str, problem_id: int) -> tuple[float, dict]:
    t = time.perf_counter()
    res = client.post("/execution/submit/grade", json={"code": code, "problemId": problem_id})
    res.raise_for_status()
    done: dict = {}
    with connect_sse(client, "GET", res.json()["eventsUrl"]) as source:
        for sse in source.iter_sse():
            if sse.event == "done":
                done = json.loads(sse.data)
                break
    return time.perf_counter() - t, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="sequential passes over the curriculum")
    args = parser.parse_args()
    os.environ.update(NO_QUOTAS)
    # One benchmark user follows every submission of the curriculum at once.
    os.environ.update(SSE_MAX_STREAMS_PER_USER="1000")
    problems = files.load().problems
    tests = sum(len(p.tests) for p in problems)
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded.free_port()
        stack = Stack(Path(tmp), "127.0.0.1", port)
        try:
            stack.start()
            if not stack.wait_ready():
                raise SystemExit("stack did not become ready")
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=120) as client:
                sign_in(client)
                for p in problems[:3]:  # warm-up
                    grade(client, p.solution, p.id)
                latencies = []
                for _ in range(args.rounds):
                    for p in problems:
                        elapsed, done = grade(client, p.solution, p.id)
                        assert done["grade"]["verdict"] == "ACCEPTED", (p.slug, done["grade"])
                        latencies.append(elapsed)

                def one(p: Problem) -> float:
                    with httpx.Client(base_url=base, timeout=300, headers=client.headers) as c:
                        elapsed, done = grade(c, p.solution, p.id)
                    assert done["grade"]["verdict"] == "ACCEPTED", (p.slug, done["grade"])
                    return elapsed

                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=len(problems)) as pool:
                    concurrent = list(pool.map(one, problems))
                total = time.perf_counter() - started
            bare = bare_python(100)
        finally:
            stack.stop()
    print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    print(f"curriculum: {len(problems)} problems, {tests} tests")
    print(summary("one graded submission, sequential (submit -> SSE done)", latencies))
    print(f"whole curriculum one by one: {sum(latencies) / args.rounds:.2f} s per pass (mean of {args.rounds})")
    print(
        f"whole curriculum at once: {total:.2f} s "
        f"({len(problems) / total:.1f} submissions/s, {tests / total:.0f} tests/s)"
    )
    print(summary("  per submission while all were queued", concurrent))
    print(summary("bare `python3 -I -S -c pass`", bare))


if __name__ == "__main__":
    main()
