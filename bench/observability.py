"""Observability overhead: end-to-end throughput with metrics and tracing on, against off, same run.

Starts two complete stacks side by side, each with its own embedded NATS, Redis and MongoDB-wire
and its own gateway, consumer processes (every one of ``bus.streams.CONSUMERS``) and one runner
with RUNNER_CONCURRENCY=2:

- ``off``: no METRICS_PORT for the runner and consumers, no OTEL_EXPORTER_OTLP_ENDPOINT (spans are
  still created, as always, but not exported; the gateway's own /metrics exists but is not read);
- ``on``: the runner and every consumer serve /metrics on their own METRICS_PORT, and every process
  exports its spans over OTLP/HTTP (BatchSpanProcessor) to a small receiver in this process, which
  decodes each request and counts the spans; a scraper thread GETs every /metrics endpoint of the
  stack (the gateway's too) every ``--scrape-interval`` seconds (default 5, what
  deploy/prometheus/local.yml does; compose scrapes every 15 s; 1 s is the harshest case). The
  span exporter keeps its defaults (a batch every 5 s).

Then rounds alternate between the two stacks, off, on, on, off, off, on, ... (ABBA), so that the
load of everything else on the machine, and its drift, hits both modes alike; the idle other stack
is there in both. In a round ``--clients`` threads submit ``--jobs`` runs of
``print(sum(range(1000)))`` in total to one stack, each following its job over SSE to ``done``
(fresh users per stack; quotas lifted). Throughput is jobs / (last ``done`` - first submit). Before
the next round the stack's durable consumers must have drained (nothing pending, nothing unacked),
and a round waits out the exporter's 5 s batch delay after its last job, so no work crosses into
the next round; the scraper scrapes only during "on" rounds, so its cost is charged to "on" alone.
The spans of a round's last seconds are therefore exported after its throughput window (the
report says which share was exported within it); the CPU figures cover them. Each process's CPU per
job (over the jobs, the drain and the wait) and the CPU used meanwhile by everything else on the
machine are printed too, to tell a real cost from a noisy neighbour.

The figures are reported, not asserted: the exit status is non-zero only on errors (a failed job,
a process that died, an "on" round that received no span or made no scrape).

    .venv/bin/python bench/observability.py [--jobs 120] [--clients 4] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import nats
from httpx_sse import connect_sse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench.common import percentile
from bus import streams
from local import embedded
from local.lifetimes import die_with_parent
from local.stackenv import NO_QUOTAS

ROOT = Path(__file__).resolve().parent.parent
CODE = "print(sum(range(1000)))"
EXPECTED = f"{sum(range(1000))}\n"
ORDER = ("off", "on", "on", "off")  # ABBA, repeated
MODES = ("off", "on")
TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"  # the whole machine's busy CPU, in a round's CPU figures
# After each round: the batch span processor's delay (OTEL_BSP_SCHEDULE_DELAY, 5 s by default) and a margin.
EXPORT_WAIT = 5.5


# --- the OTLP/HTTP receiver -------------------------------------------------------------------


class SpanReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf): decodes each export and counts its spans by service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.requests = 0
        self.failures = 0
        self.by_service: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?", 1)[0] != "/v1/traces":
                    self._answer(404, b"")
                    return
                try:
                    encoding = (self.headers.get("Content-Encoding") or "").lower()
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    request = ExportTraceServiceRequest.FromString(body)
                except Exception:
                    with receiver.lock:
                        receiver.failures += 1
                    self._answer(400, b"")
                    return
                counts: Counter[str] = Counter()
                for resource_spans in request.resource_spans:
                    service = next(
                        (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                        "?",
                    )
                    counts[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())
                with receiver.lock:
                    receiver.requests += 1
                    receiver.spans += sum(counts.values())
                    receiver.by_service.update(counts)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    def __enter__(self) -> SpanReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        with self.lock:
            return self.spans, self.failures, Counter(self.by_service)


# --- the scraper ------------------------------------------------------------------------------


class Scraper(threading.Thread):
    """GETs every /metrics endpoint once a second while active (``resume``/``pause``)."""

    def __init__(self, urls: list[str], interval: float = 1.0) -> None:
        super().__init__(name="scraper", daemon=True)
        self.urls = urls
        self.interval = interval
        self.active = threading.Event()
        self.stopping = False
        self.scrapes = 0
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while True:
                self.active.wait()
                if self.stopping:
                    return
                next_at = time.monotonic() + self.interval
                for url in self.urls:
                    try:
                        client.get(url).raise_for_status()
                        self.scrapes += 1
                    except httpx.HTTPError:
                        self.failures += 1
                time.sleep(max(0.0, next_at - time.monotonic()))

    def resume(self) -> None:
        self.active.set()

    def pause(self) -> None:
        self.active.clear()

    def stop(self) -> None:
        self.stopping = True
        self.active.set()
        self.join(10)


# --- the application processes ----------------------------------------------------------------


@dataclass
class App:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready_lines: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def ready(self) -> bool:
        self.check_alive()
        text = self.log_path.read_text(errors="replace")
        return all(line in text for line in self.ready_lines)


@dataclass
class Processes:
    apps: list[App] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)

    def start(self, base_env: dict[str, str], logs: Path, label: str, *, on: bool, otlp: str, port: int) -> None:
        gateway_env = dict(base_env, GATEWAY_PORT=str(port))
        if on:
            gateway_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
        self.metrics_urls = [f"http://127.0.0.1:{port}/metrics"]

        def env_for() -> dict[str, str]:
            env = dict(base_env)
            if on:
                metrics_port = embedded.free_port()
                env.update(
                    OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
                    METRICS_HOST="127.0.0.1",
                    METRICS_PORT=str(metrics_port),
                )
                self.metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
            return env

        self.apps = [App("gateway", ["gateway"], gateway_env, logs / f"{label}-gateway.log")]
        for name, durables in streams.CONSUMERS.items():
            lines = tuple(f"consumer {d.name} started" for d in durables)
            self.apps.append(App(f"consumer-{name}", ["consume", name], env_for(), logs / f"{label}-{name}.log", lines))
        runner_env = env_for()
        self.apps.append(App("runner", ["runner"], runner_env, logs / f"{label}-runner.log", ("pulling with",)))
        for app in self.apps:
            app.start()

    def wait_ready(self, base_url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.apps)
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout:.0f}s: {[a.name for a in waiting]}")
            still = []
            for app in waiting:
                if app.name == "gateway":
                    app.check_alive()
                    try:
                        ok = httpx.get(f"{base_url}/ready", timeout=2).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                else:
                    ok = app.ready()
                if not ok:
                    still.append(app)
            waiting = still
            time.sleep(0.1)

    def check_alive(self) -> None:
        for app in self.apps:
            app.check_alive()

    def pids(self) -> dict[str, int]:
        return {app.name: app.proc.pid for app in self.apps if app.proc is not None}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to all at once (they drain and flush their spans); SIGKILL after ``timeout``."""
        running = [a.proc for a in self.apps if a.proc is not None and a.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        until = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has waited for (a runner's sandboxes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


# --- the load ---------------------------------------------------------------------------------


def sign_in(base_url: str) -> dict[str, str]:
    email = f"bench-obs-{secrets.token_hex(6)}@example.org"
    account = {"email": email, "password": "benchmark password", "displayName": "Bench", "level": "adults"}
    with httpx.Client(base_url=base_url, timeout=30) as c:
        c.post("/auth/register", json=account).raise_for_status()
        res = c.post("/auth/login", json={"email": email, "password": account["password"]})
        res.raise_for_status()
        return {"Authorization": f"Bearer {res.json()['accessToken']}"}


def one_job(client: httpx.Client) -> float:
    started = time.perf_counter()
    res = client.post("/execution/submit", json={"code": CODE})
    res.raise_for_status()
    done: dict = {}
    with connect_sse(client, "GET", res.json()["eventsUrl"]) as source:
        for sse in source.iter_sse():
            if sse.event == "done":
                done = json.loads(sse.data)
                break
    if done.get("stdout") != EXPECTED:
        raise RuntimeError(f"unexpected result: {done}")
    return time.perf_counter() - started


def load(base_url: str, headers: dict[str, str], jobs: int, clients: int) -> tuple[float, list[float]]:
    """``jobs`` jobs from ``clients`` threads; returns (first submit -> last done, latencies)."""
    lock = threading.Lock()
    left = [jobs]
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, timeout=60, headers=headers) as c:
            while True:
                with lock:
                    if left[0] == 0 or errors:
                        return
                    left[0] -= 1
                try:
                    elapsed = one_job(c)
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client_loop, name=f"client-{i}") for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"a job failed: {errors[0]!r}") from errors[0]
    return elapsed, latencies


async def _drained(nats_url: str, within: float) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within
        while True:
            infos = [await js.consumer_info(d.stream, d.name) for d in streams.DURABLES]
            if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                return
            if time.monotonic() > deadline:
                busy = {i.name: (i.num_pending, i.num_ack_pending) for i in infos if i.num_pending or i.num_ack_pending}
                raise RuntimeError(f"consumers not drained within {within:.0f}s: {busy}")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


# --- a stack, one round, and the run ---------------------------------------------------------


class Stack:
    """Embedded servers and the application processes of one mode, in a folder of their own."""

    def __init__(self, mode: str, folder: Path) -> None:
        self.mode = mode
        self.folder = folder
        self.logs = folder / "logs"
        self.servers: list[subprocess.Popen[bytes]] = []
        self.server_pids: dict[str, int] = {}
        self.procs = Processes()
        self.port = 0
        self.base_url = ""
        self.env: dict[str, str] = {}
        self.headers: dict[str, str] = {}

    def start(self, otlp: str) -> None:
        urls = {}
        for spec in embedded.specs(self.folder, persistent=False):
            proc = embedded.start(spec)
            self.servers.append(proc)  # tracked before the wait: a server that never listens is stopped too
            embedded.wait_listening(spec, proc)
            urls[spec.name] = spec.url
            self.server_pids[spec.name] = proc.pid
        self.env = base_env(urls)
        # Picked once the servers listen, so that none of them takes it meanwhile.
        self.port = embedded.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.procs.start(self.env, self.logs, self.mode, on=self.mode == "on", otlp=otlp, port=self.port)

    def wait_ready(self, warmup: int, clients: int) -> None:
        self.procs.wait_ready(self.base_url)
        self.headers = sign_in(self.base_url)
        load(self.base_url, self.headers, warmup, clients)  # imports, connections, the warm pool
        self.drained()

    def drained(self) -> None:
        asyncio.run(_drained(self.env["NATS_URL"], 60))

    def pids(self) -> dict[str, int]:
        return {f"{self.mode}:{name}": pid for name, pid in {**self.procs.pids(), **self.server_pids}.items()}

    def stop(self) -> None:
        self.procs.stop()  # each process flushes its spans as it stops
        for proc in self.servers:
            embedded.stop(proc)


@dataclass
class Round:
    number: int
    mode: str
    jobs: int
    seconds: float
    latencies: list[float]
    drain_seconds: float
    spans: int = 0
    spans_in_window: int = 0  # exported before the round's last `done`
    scrapes: int = 0
    scrape_failures: int = 0
    # CPU seconds over the measured jobs (and the drain after them), by process of this round's stack.
    cpu: dict[str, float] = field(default_factory=dict)
    # Cores kept busy meanwhile by everything else on the machine (other users' work).
    others_cores: float = 0.0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def line(self) -> str:
        ms = [s * 1000 for s in self.latencies]
        text = (
            f"round {self.number:<2} {self.mode:<3}  {self.jobs} jobs in {self.seconds:6.2f} s"
            f" = {self.rate:6.2f} jobs/s  per job p50 {percentile(ms, 50):6.1f} ms, p95 {percentile(ms, 95):6.1f} ms;"
            f" CPU {sum(self.cpu.values()) * 1000 / self.jobs:5.1f} ms/job; others {self.others_cores:.2f} cores"
        )
        if self.mode == "on":
            failed = f" ({self.scrape_failures} failed)" if self.scrape_failures else ""
            text += f"; {self.spans} spans, {self.scrapes} scrapes{failed}"
        return text


def base_env(urls: dict[str, str]) -> dict[str, str]:
    prefixes = ("NATS_", "REDIS_", "MONGODB_", "OTEL_", "METRICS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        NATS_URL=urls["nats"],
        REDIS_URL=urls["redis"],
        MONGODB_URI=urls["mongodb"],
        PYTHONPATH=str(ROOT),
        APP_ENV="development",
        LOG_LEVEL="INFO",
        JWT_SECRET=secrets.token_urlsafe(48),
        RUNNER_CONCURRENCY="2",
        # The benchmark measures throughput, not the quotas or the back-pressure.
        **NO_QUOTAS,
        SSE_MAX_STREAMS_PER_USER="1000",
        MAX_QUEUE_DEPTH="100000",
    )
    return env


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    times = os.times()
    return {
        **{name: cpu_seconds(pid) for name, pid in pids.items()},
        "bench": times.user + times.system,
        MACHINE: machine_busy_seconds(),
    }


def run_round(
    number: int,
    stack: Stack,
    all_pids: dict[str, int],
    receiver: SpanReceiver,
    scraper: Scraper,
    args: argparse.Namespace,
) -> Round:
    on = stack.mode == "on"
    spans_before, failures_before, _ = receiver.snapshot()
    scrapes_before, scrape_failures_before = scraper.scrapes, scraper.failures
    cpu_before = cpu_snapshot(all_pids)
    started = time.perf_counter()
    if on:
        scraper.resume()
    try:
        seconds, latencies = load(stack.base_url, stack.headers, args.jobs, args.clients)
    finally:
        scraper.pause()
    finished = time.perf_counter()
    spans_in_window = receiver.snapshot()[0] - spans_before
    stack.drained()
    drain = time.perf_counter() - finished
    # The last batch of spans ("on"); the same wait in both modes keeps their CPU windows alike.
    time.sleep(max(0.0, finished + EXPORT_WAIT - time.perf_counter()))
    if on:
        _wait_stable(receiver)
    window = time.perf_counter() - started
    cpu_after = cpu_snapshot(all_pids)
    stack.procs.check_alive()
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    machine = cpu.pop(MACHINE)
    result = Round(number, stack.mode, args.jobs, seconds, latencies, drain)
    result.others_cores = max(0.0, machine - sum(cpu.values())) / window
    prefix = f"{stack.mode}:"
    result.cpu = {name.removeprefix(prefix): v for name, v in cpu.items() if name.startswith(prefix) or name == "bench"}
    if on:
        spans_after, failures_after, _ = receiver.snapshot()
        if failures_after != failures_before:
            raise RuntimeError(f"the receiver could not decode {failures_after - failures_before} exports")
        result.spans = spans_after - spans_before
        result.spans_in_window = spans_in_window
        result.scrapes = scraper.scrapes - scrapes_before
        result.scrape_failures = scraper.failures - scrape_failures_before
        if result.spans == 0 or result.scrapes == 0:
            raise RuntimeError(f"'on' round {number} received {result.spans} spans and made {result.scrapes} scrapes")
    return result


def _wait_stable(receiver: SpanReceiver, quiet: float = 0.5, limit: float = 10.0) -> None:
    """Until no span has arrived for ``quiet`` seconds (an export may be on its way)."""
    deadline = time.monotonic() + limit
    last = receiver.snapshot()[0]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = receiver.snapshot()[0]
        if now == last:
            return
        last = now


def report(rounds: list[Round], receiver: SpanReceiver, endpoints: int, args: argparse.Namespace) -> None:
    rates = {m: [r.rate for r in rounds if r.mode == m] for m in MODES}
    median = {m: statistics.median(rates[m]) for m in MODES}
    overall = {
        m: sum(r.jobs for r in rounds if r.mode == m) / sum(r.seconds for r in rounds if r.mode == m) for m in MODES
    }
    on_rounds = [r for r in rounds if r.mode == "on"]
    print()
    print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(
        f"{args.rounds} rounds per mode, {args.jobs} jobs of `{CODE}` per round from {args.clients} clients, "
        "one runner (concurrency 2) per stack"
    )
    for m in MODES:
        listed = ", ".join(f"{x:.2f}" for x in rates[m])
        print(f"{m + ':':<4} median {median[m]:6.2f} jobs/s, all rounds together {overall[m]:6.2f} jobs/s  ({listed})")
    print(
        f"on is {100 * median['on'] / median['off']:.1f} % of off ({100 * (median['on'] / median['off'] - 1):+.1f} %); "
        f"all rounds together {100 * overall['on'] / overall['off']:.1f} %"
    )
    print("CPU per job, ms (median of the rounds; runner includes its sandboxes; bench is this process):")
    for name in rounds[0].cpu:
        per = {m: statistics.median(r.cpu[name] * 1000 / r.jobs for r in rounds if r.mode == m) for m in MODES}
        print(f"  {name:<18} off {per['off']:7.2f}  on {per['on']:7.2f}  ({per['on'] - per['off']:+6.2f})")
    total = {m: statistics.median(sum(r.cpu.values()) * 1000 / r.jobs for r in rounds if r.mode == m) for m in MODES}
    change = 100 * (total["on"] / total["off"] - 1)
    print(
        f"  {'total':<18} off {total['off']:7.2f}  on {total['on']:7.2f}"
        f"  ({total['on'] - total['off']:+6.2f}, {change:+.1f} %)"
    )
    _, _, by_service = receiver.snapshot()
    services = ", ".join(f"{name.removeprefix('coderunner-')} {n}" for name, n in sorted(by_service.items()))
    in_window = 100 * sum(r.spans_in_window for r in on_rounds) / max(1, sum(r.spans for r in on_rounds))
    print(
        f"on: {sum(r.spans for r in on_rounds)} spans received in the rounds, {in_window:.0f} % of them before"
        f" each round's last job finished ({by_service.total()} in all, by process: {services})"
    )
    print(
        f"on: {sum(r.scrapes for r in on_rounds)} scrapes of {endpoints} /metrics endpoints"
        f" ({sum(r.scrape_failures for r in on_rounds)} failed)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120, help="measured jobs per round")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (threads)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per mode")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured jobs per stack before the rounds")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--keep-logs", type=Path, help="on an error, copy the processes' logs to this folder")
    args = parser.parse_args()
    modes = [ORDER[i % len(ORDER)] for i in range(2 * args.rounds)]
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp, SpanReceiver() as receiver:
        stacks = {m: Stack(m, Path(tmp) / m) for m in MODES}
        scraper: Scraper | None = None
        try:
            for stack in stacks.values():
                stack.start(receiver.url)
            for stack in stacks.values():
                stack.wait_ready(args.warmup, args.clients)
            scraper = Scraper(stacks["on"].procs.metrics_urls, args.scrape_interval)
            scraper.start()
            all_pids = {**stacks["off"].pids(), **stacks["on"].pids()}
            for number, mode in enumerate(modes, start=1):
                r = run_round(number, stacks[mode], all_pids, receiver, scraper, args)
                rounds.append(r)
                print(r.line(), flush=True)
        except Exception as exc:
            print(f"error: {exc}", file=sys.stderr)
            if args.keep_logs:
                shutil.copytree(
                    tmp, args.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("nats", "mongo", "redis")
                )
                print(f"the processes' logs are in {args.keep_logs}", file=sys.stderr)
            return 1
        finally:
            if scraper is not None:
                scraper.stop()
            for stack in stacks.values():
                stack.stop()
        report(rounds, receiver, len(stacks["on"].procs.metrics_urls), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
