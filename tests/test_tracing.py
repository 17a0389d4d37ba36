"""One submission is one trace: from the HTTP request through JetStream headers to the runner, the
sandbox run and each consumer, collected by a real OTLP/HTTP receiver that this test starts."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bus import streams
from local import embedded
from tests.conftest import ROOT, Stack, stack_env, wait_for, wait_ready
from tests.helpers import read_events

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, object]


class Receiver:
    """An OTLP/HTTP trace receiver (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes: dict[str, object] = {}
                    for a in s.attributes:
                        kind = a.value.WhichOneof("value")
                        attributes[a.key] = getattr(a.value, kind) if kind else None
                    span = Span(
                        service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind, attributes
                    )
                    with self.lock:
                        self.spans.append(span)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def traced(
    nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("traced")
    port = embedded.free_port()
    env = stack_env(
        nats_url,
        shared_servers,
        GATEWAY_PORT=str(port),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # export spans within 0.1 s (default 5 s)
    )
    s = Stack(env=env, base_url=f"http://127.0.0.1:{port}", tmp=tmp)
    try:
        gateway = s.spawn("gateway")
        for name in streams.CONSUMERS:
            s.spawn("consume", name).wait_log(f"consumer {name} started")
        s.runner()
        wait_ready(gateway, s.base_url)
        subprocess.run(
            [sys.executable, "-m", "cli", "seed"], env=s.env, cwd=ROOT, check=True, capture_output=True, timeout=120
        )
        yield s
    finally:
        for app in reversed(s.apps):
            app.stop()


CONSUMER, PRODUCER, SERVER = 5, 4, 2  # OTLP SpanKind values


def _chain(spans: list[Span], leaf: Span) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    chain = [leaf]
    while chain[-1].parent_id:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None:
            break
        chain.append(parent)
    return list(reversed(chain))


def test_one_graded_submission_is_one_trace_across_processes(traced: Stack, receiver: Receiver) -> None:
    with traced.client(anonymous=True) as c:
        problem_id = c.get("/problems", params={"pageSize": 1}).json()["items"][0]["id"]
    with traced.client() as c:
        res = c.post("/execution/submit/grade", json={"code": "print('hi')", "problemId": problem_id})
        assert res.status_code == 202, res.text
        accepted = res.json()
        traceparent = res.headers.get("traceparent")
        events = read_events(c, accepted["eventsUrl"])
    assert events[-1].event == "done"

    # The gateway's server span for this request (found by the job id its publish carried).
    def submission_span() -> Span | None:
        with receiver.lock:
            return next(
                (
                    s
                    for s in receiver.spans
                    if s.kind == PRODUCER and s.attributes.get("messaging.message.id") == accepted["jobId"]
                ),
                None,
            )

    send = wait_for(submission_span, 20, what="the gateway's publish span")
    assert isinstance(send, Span)
    trace_id = send.trace_id
    if traceparent:
        assert trace_id in traceparent

    def complete() -> bool:
        # A parent span ends (and is exported) after its children: wait until every span the
        # checks below use has arrived, each process's batch on its own schedule.
        spans = receiver.trace(trace_id)
        services = {s.service for s in spans}
        everyone = {
            "coderunner-gateway",
            "coderunner-runner",
            "coderunner-consumer-grading",
            "coderunner-consumer-caching",
            "coderunner-consumer-progress",
        }
        cached = [
            s
            for s in spans
            if s.service == "coderunner-consumer-caching" and s.name == "process coderunner.v1.executions.*.graded"
        ]
        return (
            everyone <= services
            and any(s.service == "coderunner-runner" and s.kind == CONSUMER for s in spans)
            and any(s.name == "sandbox run" for s in spans)
            and bool(cached)
            and _chain(spans, cached[0])[0].kind == SERVER
        )

    wait_for(complete, 30, what="spans from every process in the trace")
    spans = receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}

    # Messaging conventions: `{operation} {destination}`, no ids in names, nats as a custom system.
    for s in spans:
        if s.kind in (PRODUCER, CONSUMER):
            assert s.attributes["messaging.system"] == "nats"
            assert s.name.split(" ", 1)[0] in ("send", "process")
            assert accepted["jobId"] not in s.name

    # The runner's handling is a child of the gateway's publish; the sandbox run is inside it.
    runner = next(s for s in spans if s.service == "coderunner-runner" and s.kind == CONSUMER)
    assert runner.parent_id == send.span_id
    assert by_id[send.parent_id].service == "coderunner-gateway"
    sandbox = next(s for s in spans if s.name == "sandbox run")
    assert sandbox.parent_id == runner.span_id

    # The caching consumer's handling of `graded` descends from the grader's publish, which
    # descends from the runner's publish of `finished`, which descends from the HTTP request.
    cached = next(
        s
        for s in spans
        if s.service == "coderunner-consumer-caching" and s.name == "process coderunner.v1.executions.*.graded"
    )
    chain = _chain(spans, cached)
    assert chain[0].kind == SERVER and chain[0].service == "coderunner-gateway", [c.name for c in chain]
    assert [c.service for c in chain if c.kind == CONSUMER] == [
        "coderunner-runner",
        "coderunner-consumer-grading",
        "coderunner-consumer-caching",
    ], [(c.service, c.name) for c in chain]
    assert len({c.service for c in chain}) >= 4

    # No span anywhere is named after the job: HTTP spans use the route template (the event
    # stream's span ends, and is exported, when the stream does).
    def stream_span() -> bool:
        with receiver.lock:
            return any(s.kind == SERVER and s.name == "GET /execution/result/{job_id}/events" for s in receiver.spans)

    wait_for(stream_span, 20, what="the event stream's server span")
    with receiver.lock:
        named = [s.name for s in receiver.spans if accepted["jobId"] in s.name]
    assert named == [], named


def test_without_an_endpoint_nothing_is_exported(traced: Stack, receiver: Receiver, tmp_path) -> None:
    """The receiver sees spans only from processes given the endpoint: a gateway without it sends
    none (so the test above cannot pass on spans that came from elsewhere)."""
    port = embedded.free_port()
    env = {k: v for k, v in traced.env.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    env["GATEWAY_PORT"] = str(port)
    s = Stack(env=env, base_url=f"http://127.0.0.1:{port}", tmp=tmp_path)
    gateway = s.spawn("gateway")
    try:
        wait_ready(gateway, s.base_url)
        before = len(receiver.spans)
        for _ in range(5):
            assert httpx.get(f"{s.base_url}/health", timeout=5).status_code == 200
        with s.client() as c:
            assert c.get("/progress").status_code == 200
    finally:
        gateway.stop()
    with receiver.lock:
        late = [x for x in receiver.spans[before:] if x.service == "coderunner-gateway"]
    assert late == []
