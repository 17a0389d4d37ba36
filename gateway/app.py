"""The gateway process, built in one place: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import redis.asyncio as aioredis
from beanie import init_beanie
from litestar import Litestar, Request, get
from litestar.config.cors import CORSConfig
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import File
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send
from opentelemetry import trace
from pymongo import AsyncMongoClient

from bus import client, streams
from config.loader import load
from curriculum.store import DOCUMENTS as CURRICULUM_DOCUMENTS
from curriculum.store import CurriculumStore
from flags.store import FlagReader, RedisSource
from gateway import openapi
from gateway.accounts.controller import AuthController
from gateway.accounts.service import DOCUMENTS as ACCOUNT_DOCUMENTS
from gateway.accounts.service import AccountService
from gateway.activity import Sampler
from gateway.dependencies import Services, store_services
from gateway.errors import EXCEPTION_HANDLERS, InvalidRequest
from gateway.executions.backlog import Backlog
from gateway.executions.controller import ExecutionController
from gateway.executions.live import LiveEvents
from gateway.executions.service import ExecutionService
from gateway.ops import Metrics, health, moved, ready
from gateway.problems.controller import ProblemController
from gateway.problems.service import ProblemService
from gateway.progress.controller import ProgressController
from gateway.progress.service import ProgressService
from gateway.quotas import Quotas
from gateway.security import ApiQuotaMiddleware, RequestIdFilter, with_request_id
from gateway.settings import GatewaySettings
from gateway.tokens import TokenService
from telemetry import metrics
from telemetry.logs import register_settings_secrets
from telemetry.setup import setup_logging, setup_tracing

log = logging.getLogger(__name__)

# Connections to Redis per gateway process: quotas, slots and caches share them.
REDIS_CONNECTIONS = 200
STATIC = Path(__file__).parent / "static"
DATABASE = "coderunner"


@get("/", include_in_schema=False)
async def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html")


static_files = create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False)


class Gateway(Litestar):
    """The application, with request ids and security headers around everything it answers.

    Around, not inside: Litestar's middleware runs only once a route matched, so its 404 and 405
    answers (and anything failing in middleware) went without them.
    """

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await with_request_id(scope, receive, send, super().__call__)  # type: ignore[arg-type]


class GatewayRequest(Request):
    """Bodies that are not JSON at all are the client's error (400), not ours (500)."""

    async def json(self) -> object:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise InvalidRequest("the body is not valid UTF-8 JSON") from None
        except RecursionError:
            raise InvalidRequest("the body's JSON is nested too deeply") from None


def route_span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The server span's name when it starts, before routing: the method alone (semantic
    conventions, when the route is not known). Litestar's default is the raw path, which would
    put job and problem ids in span names; :func:`name_span_after_route` names it once routed."""
    return str(scope.get("method", "HTTP")), {}


async def name_span_after_route(request: Request) -> None:
    """``{method} {route template}``, e.g. ``GET /execution/result/{job_id:str}/events``."""
    route = request.scope.get("path_template")
    if route:
        span = trace.get_current_span()
        span.update_name(f"{request.method} {route}")
        span.set_attribute("http.route", route)


def _integral(value: Any) -> Any:
    """JSON Schema's integers: ``5.0`` is one (an integer field takes it, as the document says)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


async def strict_body(request: Request) -> None:
    """Check a JSON body against its type as the OpenAPI document (JSON Schema) states it.

    Litestar converts bodies leniently (``strict=False``): ``0`` would pass for ``false`` and
    ``"5"`` for ``5``, which the document refuses. Those get the 400 Litestar answers for any
    invalid body; what both accept goes on to Litestar's own conversion.
    """
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    body = await request.body()  # Litestar keeps it for the handler
    try:
        decoded = msgspec.json.decode(body) if body.strip() else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return  # not JSON (or too deep): Litestar's and GatewayRequest's own answers name it
    if decoded is None:
        return  # an optional body's absence (or null) is Litestar's to judge
    try:
        msgspec.convert(_integral(decoded), data.annotation, strict=True)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        key = where.rstrip("`").removeprefix("$").removeprefix(".") or "data"
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message, "key": key, "source": "body"}],
        ) from None


async def before_each_request(request: Request) -> None:
    await name_span_after_route(request)
    await strict_body(request)


def create_app(settings: GatewaySettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tracing = setup_tracing("gateway", settings.otel_exporter_otlp_endpoint)
        metrics.set_process("gateway")
        # No reconnect buffer: a submission refused while NATS is down must not go out later.
        nc, js = await client.connect(settings.nats_url, "gateway", buffer_while_reconnecting=False)
        # Timeouts: a hung Redis is an outage answered 503 (gateway.errors), not a stalled request.
        # A blocking pool: redis-py's default pool refuses the 101st concurrent command at once
        # ("Too many connections"), which thousands of open event streams renewing their slots
        # reached (bench/sse_capacity.py); this one waits up to 5 s for a free connection.
        redis = aioredis.Redis.from_pool(  # (from_pool: closing the client closes the pool)
            aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=5,
                socket_connect_timeout=2,
                socket_timeout=5,
            )
        )
        mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000)
        backlog = Backlog(js, settings.max_queue_depth, settings.max_queue_wait_seconds)
        sampler = Sampler(js, redis)
        live = LiveEvents(js)
        # Feature flags from Redis, re-read every second and at once on a flag.changed event.
        flags = FlagReader(RedisSource(redis))
        services: Services | None = None
        try:
            await streams.provision(js, settings.bus_limits())
            # The URI may name the database; "coderunner" otherwise (as `coderunner seed` does).
            await init_beanie(
                database=mongo.get_default_database(DATABASE),
                document_models=[*ACCOUNT_DOCUMENTS, *CURRICULUM_DOCUMENTS],
            )
            tokens = TokenService(settings, redis)
            quotas = Quotas(redis)
            problems = ProblemService(js, redis)
            db = mongo.get_default_database(DATABASE)
            backlog.start()
            sampler.start()
            await live.start()
            await flags.start(nc)
            # In field order: settings, the clients, then the services built on them.
            services = Services(
                settings,
                nc,
                js,
                redis,
                mongo,
                tokens,
                quotas,
                AccountService(settings, tokens, redis),
                problems,
                ExecutionService(
                    js,
                    redis,
                    settings,
                    tokens=tokens,
                    quotas=quotas,
                    backlog=backlog,
                    problems=problems,
                    db=db,
                    live=live,
                    flags=flags,
                ),
                ProgressService(js, redis, db, CurriculumStore(), flags=flags),
            )
            store_services(app.state, services)
            services.executions.stream_slots.start()
            loop = asyncio.get_running_loop()
            # Called from the signal handler (gateway.app.main): open event streams end with a
            # `reconnect` so that the server's graceful shutdown is not held up by them.
            app.state.drain = lambda: loop.call_soon_threadsafe(services.executions.draining.set)
            yield
        finally:
            if services is not None:
                await services.executions.stream_slots.stop()
                services.accounts.hashing.close()
            await flags.stop()
            await live.stop()
            await sampler.stop()
            await backlog.stop()
            await client.close(nc)
            await redis.aclose()
            await mongo.close()
            tracing.shutdown()

    prometheus = PrometheusConfig(
        app_name="coderunner_gateway",
        prefix="coderunner",
        group_path=True,
        exclude_opt_key="skip_metrics",  # SSE streams would skew request-duration histograms
    )
    app = Gateway(
        route_handlers=[
            AuthController,
            ProblemController,
            ExecutionController,
            ProgressController,
            health,
            ready,
            index,
            static_files,
            moved,
            Metrics,
        ],
        lifespan=[lifespan],
        on_startup=[openapi.finish],
        before_request=before_each_request,
        # No span per SSE chunk or body read, nor per scrape or probe (they would be most spans).
        plugins=[
            OpenTelemetryPlugin(
                OpenTelemetryConfig(
                    exclude_spans=["send", "receive"],
                    exclude=["^/metrics$", "^/health$", "^/ready$"],
                    scope_span_details_extractor=route_span_details,
                )
            )
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=GatewayRequest,
        middleware=[ApiQuotaMiddleware(settings), prometheus.middleware],
        cors_config=CORSConfig(allow_origins=[settings.cors_origin], allow_credentials=False)
        if settings.cors_origin
        else None,
        openapi_config=OpenAPIConfig(title="Code Runner", version="1.0.0", path="/schema"),
        # JSON may escape every character of code and stdin as \u00XX (6 bytes for 1): the body may
        # be that much larger; services check the limits on the decoded text.
        request_max_body_size=6 * (settings.max_code_bytes + settings.max_stdin_bytes) + 16 * 1024,
        debug=False,
        logging_config=None,  # telemetry.setup.setup_logging configured it (with request ids)
    )
    allow_every_method(app)
    return app


def allow_every_method(app: Litestar) -> None:
    """OPTIONS answers ``Allow`` with every method of its path.

    Litestar (2.25) registers a controller's handlers one at a time; a path's OPTIONS handler is
    made with its first route, and routes merged after it keep that handler, which lists the first
    route's methods only (``Allow: DELETE, OPTIONS`` for GET, PUT and DELETE). Its one closure
    variable is the route it reads: point it at the merged route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = handler.fn
            if getattr(fn, "__name__", "") == "options_handler" and fn.__closure__:
                fn.__closure__[0].cell_contents = route


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol plus the header timeout it lacks.

    uvicorn (0.54) arms no timer until a first response is sent: a connection that sends nothing,
    or half a request head, is held for ever (slowloris). This closes a connection whose request
    head is not complete ``seconds`` after it opened or after its previous response. Bodies are
    not timed: they are small (request_max_body_size) and only read by handlers that want them.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def main() -> None:
    settings = load(GatewaySettings)
    setup_logging(settings.log_level, "gateway", request_ids=RequestIdFilter(), fmt=settings.log_format)
    register_settings_secrets(settings)
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's loggers go through telemetry.setup's handler (JSON, redaction)
        # Forwarded headers are honoured only from TRUSTED_PROXIES, by gateway.security; uvicorn
        # would otherwise trust them from 127.0.0.1 and let any local client pick its address.
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=settings.http_keep_alive_seconds,  # type: ignore[arg-type]  # a float works
        http=header_timeout_protocol(settings.http_header_timeout_seconds),
    )

    class Server(uvicorn.Server):
        """uvicorn's SIGTERM handling (stop accepting, finish in-flight requests), plus telling
        open event streams to reconnect elsewhere first."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            drain = getattr(config.app.state, "drain", None)  # type: ignore[union-attr]
            if drain is not None and not self.should_exit:
                log.info("stopping: no new connections; open event streams are told to reconnect")
                drain()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn raises the signal again once it has stopped, so the process "dies of"
            # SIGTERM; a shutdown that drained as asked exits 0 instead.
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    # run(), not asyncio.run(serve()): uvicorn then picks its loop (uvloop, installed with
    # litestar[standard]); asyncio.run() gave the default loop, whose socket writes led the profile.
    Server(config).run()
