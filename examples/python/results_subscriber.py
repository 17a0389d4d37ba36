#!/usr/bin/env python3
"""Follow Code Runner's results from another service: one line per finished run and per grade.

It reads ``coderunner.v1.executions.*.finished`` and ``coderunner.v1.executions.*.graded`` from the
EXECUTIONS stream through its own durable consumer, and acks each message once it has handled it.
Needs only nats-py; payloads are plain JSON (schemas/json/executions.schema.json describes them).

    NATS_URL=nats://127.0.0.1:4222 python results_subscriber.py [--once N] [--durable NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

STREAM = "EXECUTIONS"
SUBJECTS = ["coderunner.v1.executions.*.finished", "coderunner.v1.executions.*.graded"]


def describe(event: dict) -> str:
    """One line for a result: the job, what happened, the verdict."""
    if event["type"] == "execution.finished":
        line = f"{event['jobId']} finished {event['verdict']} exit={event['exitCode']} {event['durationMs']}ms"
        return line + (" (a grade follows)" if event.get("graded") else "")
    grade = event["grade"]
    return f"{event['jobId']} graded {grade['verdict']} score={grade['score']} ({grade['passed']}/{grade['total']})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", type=int, default=0, metavar="N", help="exit after N results")
    parser.add_argument("--durable", default="example-results", help="this service's durable consumer")
    args = parser.parse_args()

    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"), name=args.durable)
    js = nc.jetstream()
    # One durable per service: JetStream remembers what it acked, so a restart resumes where it
    # stopped and nothing is lost while it is down. Created on the first run from new results
    # (DeliverPolicy.ALL would replay everything the stream still keeps); the same call on later
    # runs leaves it as it is.
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=args.durable,
            filter_subjects=SUBJECTS,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
        ),
    )
    sub = await js.pull_subscribe_bind(durable=args.durable, stream=STREAM)
    print(f"listening on {', '.join(SUBJECTS)} as durable {args.durable}", file=sys.stderr, flush=True)
    seen = 0
    try:
        while not args.once or seen < args.once:
            try:
                msgs = await sub.fetch(min(10, args.once - seen) if args.once else 10, timeout=5)
            except (FetchTimeoutError, TimeoutError):
                continue
            for msg in msgs:
                # Delivery is at least once: a redelivered result prints again, so a real service
                # makes this step idempotent (e.g. keyed by jobId and type).
                print(describe(json.loads(msg.data)), flush=True)
                await msg.ack()
                seen += 1
    finally:
        await nc.flush()  # the acks reach the server before we go
        await nc.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
        asyncio.run(main())
