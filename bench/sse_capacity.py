"""Open event streams held by one gateway process: how many, at what memory, and whether a job's
``done`` still arrives quickly while they are open.

Starts the whole stack in a temporary folder with the stream limits raised (this measures the
gateway, not the per-user and per-job stream quotas) and the default 15 s heartbeats. One job that sleeps for
ten minutes is the job every held stream follows. A separate process opens ``--streams``
connections to its event stream (plain sockets, a few at a time) and counts the heartbeats each
one receives. While they are open, this process submits trivial jobs one after another and times
POST → ``done``; the same is measured before the streams are opened, as the reference.

    .venv/bin/python bench/sse_capacity.py [--streams 5000] [--jobs 100]

Prints: streams connected and refused, the fewest heartbeats any stream received, the gateway's
RSS before and at its peak, and POST → ``done`` p50/p95 without and with the streams open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from httpx_sse import connect_sse

from bench.common import running_stack, summary
from bench.e2e_latency import sign_in
from local.lifetimes import die_with_parent
from local.stackenv import NO_QUOTAS

HEARTBEAT_SECONDS = 15  # the default: what production streams get


# --- the client process ----------------------------------------------------------------------------


async def hold_streams(url: str, count: int) -> None:
    """Open ``count`` streams to ``url``, report when they are open, hold them until stdin says stop."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path}?{parts.query}"
    heartbeats = [0] * count
    status: list[str] = [""] * count
    writers: list[asyncio.StreamWriter] = []
    samples: list[str] = []  # the first refusal's answer, as it came

    async def open_one(i: int) -> asyncio.StreamReader | None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            status[i] = f"connect: {exc.strerror}"
            return None
        writers.append(writer)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        first = await reader.readline()
        status[i] = first.decode(errors="replace").split(" ", 2)[1] if first else "closed"
        if status[i] != "200":
            if not samples:
                samples.append((await reader.read(2000)).decode(errors="replace"))
            return None
        return reader

    async def count_heartbeats(i: int, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            if line.startswith(b": keep-alive"):
                heartbeats[i] += 1

    tasks = []
    for start in range(0, count, 100):  # a hundred at a time: the listen backlog is finite
        batch = range(start, min(count, start + 100))
        readers = await asyncio.gather(*(open_one(i) for i in batch))
        tasks += [asyncio.create_task(count_heartbeats(i, r)) for i, r in zip(batch, readers, strict=True) if r]
    print(json.dumps({"open": sum(1 for s in status if s == "200")}), flush=True)
    # Hold until told to stop (a line on stdin).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in writers:
        writer.close()
    for task in tasks:
        task.cancel()
    ok = [h for h, s in zip(heartbeats, status, strict=True) if s == "200"]
    refused: dict[str, int] = {}
    for s in status:
        if s != "200":
            refused[s] = refused.get(s, 0) + 1
    summary = {"open": len(ok), "refused": refused, "min_heartbeats": min(ok, default=0), "sample": samples[:1]}
    print(json.dumps(summary), flush=True)


# --- the measuring process -------------------------------------------------------------------------


def done_latencies(client: httpx.Client, jobs: int) -> list[float]:
    times = []
    for i in range(jobs):
        t = time.perf_counter()
        res = client.post("/execution/submit", json={"code": f"print({i})"})
        res.raise_for_status()
        with connect_sse(client, "GET", res.json()["eventsUrl"]) as source:
            if source.response.status_code != 200:
                source.response.read()
                raise SystemExit(f"event stream refused: {source.response.status_code} {source.response.text}")
            for sse in source.iter_sse():
                if sse.event == "done":
                    break
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--hold", help=argparse.SUPPRESS)  # the client process: the URL to hold
    args = parser.parse_args()
    if args.hold:
        asyncio.run(hold_streams(args.hold, args.streams))
        return
    os.environ.update(
        **NO_QUOTAS,
        SSE_MAX_STREAMS_PER_USER="1000000",
        SSE_MAX_STREAMS_PER_JOB="1000000",
        SSE_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        RUN_WALL_TIME_MS="600000",
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with running_stack(Path(tmp)) as (stack, base):
                gateway = psutil.Process(next(a.proc.pid for a in stack.apps if a.name == "gateway" and a.proc))
                with httpx.Client(base_url=base, timeout=60) as client:
                    sign_in(client)
                    done_latencies(client, 5)  # warm-up
                    before = done_latencies(client, args.jobs)
                    rss_before = gateway.memory_info().rss
                    held = client.post("/execution/submit", json={"code": "import time\ntime.sleep(600)\n"}).json()
                    holder = subprocess.Popen(
                        [sys.executable, __file__, "--streams", str(args.streams), "--hold", base + held["eventsUrl"]],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        preexec_fn=die_with_parent(),
                    )
                    assert holder.stdout is not None and holder.stdin is not None
                    began = time.monotonic()
                    opened = json.loads(holder.stdout.readline())
                    open_seconds = time.monotonic() - began
                    rss_open = gateway.memory_info().rss
                    during = done_latencies(client, args.jobs)
                    # At least two heartbeat periods with every stream open.
                    time.sleep(max(0.0, 2.5 * HEARTBEAT_SECONDS - (time.monotonic() - began - open_seconds)))
                    rss_peak = max(rss_open, gateway.memory_info().rss)
                    holder.stdin.write("stop\n")
                    holder.stdin.flush()
                    final = json.loads(holder.stdout.readline())
                    holder.wait(30)
        finally:
            log = Path(tmp) / "logs" / "gateway.log"
            warnings = [line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line]
            if warnings:
                print(f"gateway warnings: {len(warnings)}; the last: {warnings[-1][:800]}")
    print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    print(
        f"streams: {opened['open']} of {args.streams} open after {open_seconds:.1f} s; refused {final['refused']}; "
        f"fewest heartbeats on a stream: {final['min_heartbeats']} (every {HEARTBEAT_SECONDS} s)"
    )
    if final["sample"]:
        print(f"a refusal: {final['sample'][0][-600:]}")
    print(
        f"gateway RSS: {rss_before >> 20} MiB before, {rss_open >> 20} MiB with the streams open, "
        f"peak seen {rss_peak >> 20} MiB"
    )
    print(summary("POST -> done, no streams open", before))
    print(summary(f"POST -> done, {opened['open']} streams open", during))


if __name__ == "__main__":
    main()
