"""End-to-end latency: POST /execution/submit → SSE `done`, for a trivial program.

Starts the whole stack (embedded NATS, Redis, MongoDB-wire, gateway, runner, consumers) in a temp
folder, submits N programs one after another, and prints p50/p95/max, next to the start time of a
bare `python3 -I -S -c pass` measured in the same run.

    .venv/bin/python bench/e2e_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from bench.common import bare_python, running_stack, summary
from local.stackenv import NO_QUOTAS


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


def sign_in(client: httpx.Client) -> None:
    email = f"bench-{secrets.token_hex(4)}@example.org"
    account = {"email": email, "password": "benchmark password", "displayName": "Bench", "level": "adults"}
    client.post("/auth/register", json=account).raise_for_status()
    res = client.post("/auth/login", json={"email": email, "password": account["password"]})
    res.raise_for_status()
    client.headers["Authorization"] = f"Bearer {res.json()['accessToken']}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    # The benchmark measures latency, not the per-user quotas (10 runs a minute by default).
    os.environ.update(NO_QUOTAS)
    with tempfile.TemporaryDirectory() as tmp:
        with running_stack(Path(tmp)) as (_, base), httpx.Client(base_url=base, timeout=30) as client:
            sign_in(client)
            for _ in range(5):  # warm-up: imports, JIT-free caches, connections
                one_job(client, "print('warm')")
            latencies = []
            for i in range(args.runs):
                elapsed, done = one_job(client, f"print('hello {i}')")
                assert done.get("stdout") == f"hello {i}\n", done
                latencies.append(elapsed)
        bare = bare_python(max(50, args.runs // 2))
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={__import__('os').cpu_count()} "
        f"python={platform.python_version()}"
    )
    print(summary("POST /execution/submit -> SSE done (print)", latencies))
    print(summary("bare `python3 -I -S -c pass`", bare))


if __name__ == "__main__":
    main()
