"""Logging and tracing set-up, done once per process in its ``main()``."""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def setup_logging(level: str, process: str, *, request_ids: logging.Filter | None = None) -> None:
    """One log format for every process; the gateway adds each line's request id."""
    rid = " [%(request_id)s]" if request_ids else ""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {process}{rid} %(name)s: %(message)s",
        force=True,
    )
    if request_ids:
        for handler in logging.getLogger().handlers:
            handler.addFilter(request_ids)


def setup_tracing(service: str, endpoint: str | None) -> TracerProvider:
    """A tracer provider that exports over OTLP/HTTP when an endpoint is configured.

    Without an endpoint spans are still created (trace ids propagate across the bus) but not sent.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": f"coderunner-{service}"}))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider
