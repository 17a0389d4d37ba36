"""A consumer process (``coderunner consume NAME``), built in one place."""

from __future__ import annotations

import asyncio
import logging
import signal

import redis.asyncio as aioredis
from beanie import init_beanie
from pymongo import AsyncMongoClient

from bus import client, history, streams
from bus.settle import Permanent
from config.loader import load
from consumers import base
from consumers.caching import ResultCache
from consumers.grading import Grader
from consumers.progress import DOCUMENTS, ProgressRecorder
from consumers.settings import ConsumerSettings
from schemas.submissions import SubmissionRequested
from telemetry.setup import setup_logging, setup_tracing

log = logging.getLogger(__name__)

NAMES = tuple(streams.CONSUMERS)
DATABASE = "coderunner"


async def serve(name: str, settings: ConsumerSettings) -> None:
    tracing = setup_tracing(f"consumer-{name}", settings.otel_exporter_otlp_endpoint)
    nc, js = await client.connect(settings.nats_url, f"consumer-{name}")
    redis = aioredis.from_url(settings.redis_url)
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        await streams.provision(js, settings.bus_limits())
        await streams.ensure_consumer(js, name, settings.bus_limits())

        async def submission(job_id: str) -> SubmissionRequested:
            job = await history.submission_of(js, job_id)
            if job is None:
                raise Permanent("unknown_job", f"no submission for job {job_id}")
            return job

        handler: base.Handler
        if name == "caching":
            handler = ResultCache(js, redis, settings.stream_retention_seconds)
        elif name == "progress":
            await init_beanie(database=mongo[DATABASE], document_models=DOCUMENTS)

            async def user_of(job_id: str) -> str:
                return (await submission(job_id)).user_id

            handler = ProgressRecorder(user_of)
        else:

            async def mode_of(job_id: str) -> str:
                return (await submission(job_id)).mode

            handler = Grader(mode_of)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await base.consume(js, name, handler, stop)
    finally:
        await client.close(nc)
        await redis.aclose()
        await mongo.close()
        tracing.shutdown()


def main(name: str) -> None:
    if name not in NAMES:
        raise SystemExit(f"unknown consumer {name!r}: choose one of {', '.join(NAMES)}")
    settings = load(ConsumerSettings)
    setup_logging(settings.log_level, f"consumer-{name}")
    asyncio.run(serve(name, settings))
