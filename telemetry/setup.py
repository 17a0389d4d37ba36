"""Logging and tracing set-up, done once per process in its ``main()``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Literal, TextIO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from telemetry.logs import JsonFormatter, RedactionFilter, TextFormatter


def setup_logging(
    level: str,
    process: str,
    *,
    request_ids: logging.Filter | None = None,
    fmt: Literal["auto", "json", "text"] = "auto",
    stream: TextIO | None = None,
) -> logging.Handler:
    """One log handler for every logger of the process, on stderr: JSON lines, or text on a terminal.

    ``fmt="auto"`` writes text when ``stream`` (stderr) is a terminal and JSON otherwise. Secrets
    are scrubbed on the handler (``telemetry.logs.RedactionFilter``): register the process's own
    with ``telemetry.logs.register_settings_secrets(settings)``. The gateway adds each line's
    request id (``request_ids``); runners and consumers bind the job id (``telemetry.logs.bind_job``).
    uvicorn's loggers lose their own handlers and propagate here; uncaught exceptions and warnings
    are logged too, so nothing reaches stderr unformatted or unscrubbed.
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        try:
            fmt = "text" if out.isatty() else "json"
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            fmt = "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter(process) if fmt == "text" else JsonFormatter(process))
    if request_ids is not None:
        handler.addFilter(request_ids)
    handler.addFilter(RedactionFilter())

    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own dictConfig gives these loggers handlers and stops propagation; the gateway
    # passes ``log_config=None`` to uvicorn so that this stays.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True
    logging.captureWarnings(True)

    crashed = logging.getLogger(process)

    def log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        crashed.critical("uncaught exception", exc_info=(kind, exc, tb))

    def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not issubclass(args.exc_type, SystemExit):
            name = args.thread.name if args.thread else "?"
            crashed.critical(
                "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            )

    sys.excepthook = log_uncaught
    threading.excepthook = log_uncaught_in_thread
    return handler


def setup_tracing(service: str, endpoint: str | None, *, fork_hooks: bool = True) -> TracerProvider:
    """A tracer provider that exports over OTLP/HTTP when an endpoint is configured.

    Without an endpoint spans are still created (trace ids propagate across the bus) but not sent.

    ``fork_hooks=False`` is for a process whose forks only ever exec (the runner starting bwrap,
    with a ``preexec_fn``): the SDK's after-fork hooks would start a new export thread in each such
    child just before its exec, which cost the runner about 10 % of its throughput
    (bench/observability.py). Such a child never runs the SDK, so it needs no hook.
    """
    with contextlib.nullcontext() if fork_hooks else _without_fork_hooks():
        provider = TracerProvider(resource=Resource.create({"service.name": f"coderunner-{service}"}))
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


@contextlib.contextmanager
def _without_fork_hooks() -> Iterator[None]:
    register = os.register_at_fork
    os.register_at_fork = lambda **_: None
    try:
        yield
    finally:
        os.register_at_fork = register
