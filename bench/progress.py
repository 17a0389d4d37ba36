"""The progress projection: its throughput, and the lag from a grade to the student's summary.

Starts the whole stack in a temp folder (`coderunner up` seeds the curriculum), then
1. lag: a student submits every reference solution of the curriculum one after another; for each,
   the time from the `graded` event (its `gradedAt`) until `GET /progress/summary` (cached in Redis
   for a minute) shows one more solved problem, polled every 5 ms;
2. throughput: N attempt events published straight to the PROGRESS stream, timed until the
   `progress-inputs` durable (in order, one in flight) has acknowledged the last one.

    .venv/bin/python bench/progress.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import nats

from bench.common import summary
from bench.e2e_latency import sign_in
from bench.grading import grade
from bus import client, streams
from curriculum import files
from local import embedded
from local.stackenv import NO_QUOTAS
from local.supervisor import Stack
from schemas import subjects
from schemas.grades import Graded
from schemas.progress import AttemptRecorded


def lag(base: str, nats_url: str) -> list[float]:
    problems = files.load().problems
    lags = []
    with httpx.Client(base_url=base, timeout=120) as c:
        sign_in(c)
        for solved, problem in enumerate(problems, start=1):
            _, done = grade(c, problem.solution, problem.id)
            graded_at = asyncio.run(_graded_at(nats_url, done["jobId"]))
            while c.get("/progress/summary").json()["solved"] < solved:
                time.sleep(0.005)
            lags.append((datetime.now(UTC) - graded_at).total_seconds())
    return lags


async def _graded_at(nats_url: str, job_id: str) -> datetime:
    nc = await nats.connect(nats_url)
    try:
        raw = await nc.jetstream().get_msg(streams.EXECUTIONS, subject=subjects.graded_of(job_id), direct=True)
        return msgspec.json.decode(raw.data or b"", type=Graded).graded_at
    finally:
        await nc.close()


async def throughput(nats_url: str, count: int) -> float:
    nc, js = await client.connect(nats_url, "bench-progress")
    try:
        user = "bench-user-000001"
        started = time.perf_counter()
        last = 0
        for i in range(count):
            event = AttemptRecorded(user_id=user, event_id=f"bench-{i}", at=datetime.now(UTC), problem_id="101")
            ack = await client.publish(js, subjects.progress(user, "attempt"), event, msg_id=f"bench-attempt-{i}")
            last = ack.seq
        while True:
            info = await js.consumer_info(streams.PROGRESS, "progress-inputs")
            if info.ack_floor.stream_seq >= last:
                return count / (time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        await client.close(nc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    os.environ.update(NO_QUOTAS)
    with tempfile.TemporaryDirectory() as tmp:
        port = embedded.free_port()
        stack = Stack(Path(tmp), "127.0.0.1", port)
        try:
            stack.start()
            if not stack.wait_ready():
                raise SystemExit("stack did not become ready")
            nats_url = next(s.url for s, _ in stack.servers if s.name == "nats")
            lags = lag(f"http://127.0.0.1:{port}", nats_url)
            rate = asyncio.run(throughput(nats_url, args.events))
        finally:
            stack.stop()
    print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    print(summary("graded -> summary shows it (cached summary)", lags))
    print(f"progress consumer (attempt events, in order): {rate:.0f} events/s over {args.events} events")


if __name__ == "__main__":
    main()
