"""The gateway process, built in one place: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import File
from pymongo import AsyncMongoClient

from deploy import bus
from deploy.config import load
from deploy.telemetry import setup_logging, setup_tracing
from gateway.errors import GatewayError, to_problem
from gateway.routes import ExecutionController, health, ready
from gateway.services import ExecutionService
from gateway.settings import GatewaySettings
from schemas import streams

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@get("/", include_in_schema=False)
async def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html")


def create_app(settings: GatewaySettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tracing = setup_tracing("gateway", settings.otel_exporter_otlp_endpoint)
        nc, js = await bus.connect(settings.nats_url, "gateway")
        redis = aioredis.from_url(settings.redis_url)
        mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000)
        try:
            await streams.provision(js, settings.bus_limits())
            app.state.update(nc=nc, js=js, redis=redis, mongo=mongo, service=ExecutionService(js, redis, settings))
            yield
        finally:
            await bus.close(nc)
            await redis.aclose()
            await mongo.close()
            tracing.shutdown()

    def provide_service(state: State) -> ExecutionService:
        service: ExecutionService = state.service
        return service

    class Metrics(PrometheusController):
        path = "/metrics"

    prometheus = PrometheusConfig(
        app_name="coderunner_gateway",
        prefix="coderunner",
        group_path=True,
        exclude_opt_key="skip_metrics",  # SSE streams would skew request-duration histograms
    )
    return Litestar(
        route_handlers=[ExecutionController, health, ready, index, Metrics],
        dependencies={"service": Provide(provide_service, sync_to_thread=False)},
        lifespan=[lifespan],
        plugins=[
            ProblemDetailsPlugin(
                ProblemDetailsConfig(
                    enable_for_all_http_exceptions=True,
                    exception_to_problem_detail_map={GatewayError: to_problem},
                )
            ),
            OpenTelemetryPlugin(OpenTelemetryConfig(exclude_spans=["send"])),
        ],
        middleware=[prometheus.middleware],
        openapi_config=OpenAPIConfig(title="Code Runner", version="1.0.0", path="/schema"),
        request_max_body_size=settings.max_code_bytes + settings.max_stdin_bytes + 16 * 1024,
        debug=False,
    )


def main() -> None:
    settings = load(GatewaySettings)
    setup_logging(settings.log_level, "gateway")
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    asyncio.run(uvicorn.Server(config).serve())
