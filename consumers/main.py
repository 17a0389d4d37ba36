"""A consumer process (``coderunner consume NAME``), built in one place.

Which consumers exist, what they read and how each handler is built come from the one registry,
:data:`bus.streams.CONSUMERS`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from bus import client, streams
from config.loader import load
from consumers import base
from consumers.base import Deps, HandlerFactory
from consumers.settings import ConsumerSettings
from telemetry import metrics
from telemetry.exposition import start_metrics
from telemetry.logs import register_settings_secrets
from telemetry.setup import setup_logging, setup_tracing

log = logging.getLogger(__name__)


def handler_factory(durable: streams.Durable) -> HandlerFactory:
    module, _, function = durable.handler_factory.partition(":")
    factory: HandlerFactory = getattr(importlib.import_module(module), function)
    return factory


async def serve(name: str, settings: ConsumerSettings) -> None:
    tracing = setup_tracing(f"consumer-{name}", settings.otel_exporter_otlp_endpoint)
    metrics.set_process(f"consumer-{name}")
    exposition = await start_metrics(settings)
    nc, js = await client.connect(settings.nats_url, f"consumer-{name}")
    redis = aioredis.from_url(settings.redis_url)
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        await streams.provision(js, settings.bus_limits())
        deps = Deps(js=js, redis=redis, mongo=mongo, settings=settings)
        loops = []
        stop = asyncio.Event()
        for durable in streams.CONSUMERS[name]:
            await streams.ensure_consumer(js, durable.name, settings.bus_limits())
            handler = await handler_factory(durable)(deps)
            loops.append(base.consume(js, durable, handler, stop))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.gather(*loops)
    finally:
        await client.close(nc)
        await redis.aclose()
        await mongo.close()
        if exposition:
            await exposition.stop()
        tracing.shutdown()


def main(name: str) -> None:
    if name not in streams.CONSUMERS:
        raise SystemExit(f"unknown consumer {name!r}: choose one of {', '.join(streams.CONSUMERS)}")
    settings = load(ConsumerSettings)
    setup_logging(settings.log_level, f"consumer-{name}", fmt=settings.log_format)
    register_settings_secrets(settings)
    asyncio.run(serve(name, settings))
