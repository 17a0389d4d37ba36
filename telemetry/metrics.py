"""Every metric Code Runner exports, declared once (Prometheus naming: one prefix, base units,
``_total`` on counters, no user, job or problem id in any label).

The gateway's HTTP metrics come from Litestar's PrometheusMiddleware under the same prefix
(``coderunner_requests_total``, ``coderunner_request_duration_seconds``,
``coderunner_requests_in_progress``); the dashboards and alert rules under ``deploy/`` name only
metrics listed here or there (a test checks it against a live scrape).

Gauges that describe shared state (queue depth, consumer lag, daily users) are sampled from the
system that holds the state (JetStream consumer info, Redis), never counted in a process, so they
cannot drift; every gateway replica exports the same figure and queries take ``max``.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.registry import Collector

PREFIX = "coderunner"

# Buckets in seconds: executions and waits run from milliseconds to the longest wall limit.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

BUILD = Info(f"{PREFIX}_build", "The process and version serving these metrics", ["process"], registry=None)

# -- every process ----------------------------------------------------------------------------
ERRORS = Counter(
    f"{PREFIX}_errors_total",
    "Errors by process and kind (nak, dead_letter, fetch, publish, sandbox, http_5xx, dependency)",
    ["process", "kind"],
    registry=None,
)
MESSAGES = Counter(
    f"{PREFIX}_messages_total",
    "Bus messages settled by a durable consumer, by outcome (ack, nak, term)",
    ["consumer", "outcome"],
    registry=None,
)
MESSAGE_SECONDS = Histogram(
    f"{PREFIX}_message_duration_seconds",
    "Time to handle one bus message",
    ["consumer"],
    buckets=_SECONDS,
    registry=None,
)
REDELIVERIES = Counter(
    f"{PREFIX}_redeliveries_total", "Messages handled again after an earlier delivery", ["consumer"], registry=None
)
DEAD_LETTERS = Counter(
    f"{PREFIX}_dead_letters_total", "Dead-letter records written, by reason", ["reason"], registry=None
)
FLAG_VALUE = Gauge(
    f"{PREFIX}_flag_value",
    "Each feature flag's value as this process sees it (a share in percent; a switch: 0 off, 100 on)",
    ["flag"],
    registry=None,
)

# -- JetStream, sampled by the gateway from consumer info -------------------------------------
QUEUE_DEPTH = Gauge(
    f"{PREFIX}_queue_depth", "Submissions waiting for a runner (runner consumer's pending)", registry=None
)
QUEUE_IN_FLIGHT = Gauge(
    f"{PREFIX}_queue_in_flight", "Submissions a runner holds and has not acknowledged", registry=None
)
CONSUMER_PENDING = Gauge(
    f"{PREFIX}_consumer_pending",
    "Messages not yet delivered to a durable consumer",
    ["stream", "consumer"],
    registry=None,
)
CONSUMER_ACK_PENDING = Gauge(
    f"{PREFIX}_consumer_ack_pending",
    "Messages delivered and not yet acknowledged",
    ["stream", "consumer"],
    registry=None,
)
CONSUMER_REDELIVERED = Gauge(
    f"{PREFIX}_consumer_redelivered",
    "Messages delivered more than once and still unacknowledged",
    ["stream", "consumer"],
    registry=None,
)

# -- gateway ----------------------------------------------------------------------------------
SUBMISSIONS = Counter(f"{PREFIX}_submissions_total", "Submissions accepted (202), by mode", ["mode"], registry=None)
QUOTA_REFUSALS = Counter(
    f"{PREFIX}_quota_refusals_total", "Requests refused with 429, by quota", ["quota"], registry=None
)
UNAVAILABLE = Counter(
    f"{PREFIX}_unavailable_total",
    "Requests answered 503, by cause (queue_full, sign_in_busy, read_only, nats, redis, mongodb)",
    ["cause"],
    registry=None,
)
SSE_CONNECTIONS = Gauge(f"{PREFIX}_sse_connections", "Open server-sent event streams", registry=None)
CACHE = Counter(
    f"{PREFIX}_cache_requests_total",
    "Cache look-ups by cache and result (hit, miss)",
    ["cache", "result"],
    registry=None,
)
DAILY_ACTIVE_USERS = Gauge(
    f"{PREFIX}_daily_active_users", "Distinct users who submitted today (UTC), from a Redis HyperLogLog", registry=None
)
DAILY_SUBMISSIONS = Gauge(f"{PREFIX}_daily_submissions", "Submissions accepted today (UTC), from Redis", registry=None)

# -- runner -----------------------------------------------------------------------------------
QUEUE_WAIT = Histogram(
    f"{PREFIX}_queue_wait_seconds", "From submission accepted to a runner starting it", buckets=_SECONDS, registry=None
)
EXECUTION_SECONDS = Histogram(
    f"{PREFIX}_execution_duration_seconds",
    "One execution in its sandbox, by mode and verdict",
    ["mode", "verdict"],
    buckets=_SECONDS,
    registry=None,
)
RUNNER_SLOTS = Gauge(f"{PREFIX}_runner_slots", "Jobs this runner may run at once", registry=None)
RUNNER_BUSY = Gauge(f"{PREFIX}_runner_busy", "Jobs this runner is running", registry=None)
POOL_SIZE = Gauge(
    f"{PREFIX}_sandbox_pool_size", "Sandboxes the warm pool holds (idle and in use)", ["backend"], registry=None
)
POOL_AVAILABLE = Gauge(
    f"{PREFIX}_sandbox_pool_available", "Warm sandboxes ready to take a job", ["backend"], registry=None
)
SANDBOX_JOBS = Counter(
    f"{PREFIX}_sandbox_jobs_total",
    "Jobs by the sandbox backend that ran them and why (flag: the sandbox-docker flag chose it; "
    "fallback: the flag chose a backend this runner lacks)",
    ["backend", "choice"],
    registry=None,
)
SANDBOX_START = Histogram(
    f"{PREFIX}_sandbox_start_seconds", "Time to start one sandbox", ["backend"], buckets=_SECONDS, registry=None
)

# -- grading ----------------------------------------------------------------------------------
GRADES = Counter(f"{PREFIX}_grades_total", "Submissions graded, by verdict", ["verdict"], registry=None)


# Which metrics each kind of process exports (a metric without labels would otherwise show a
# misleading 0 from every process: the queue depth from a consumer, slots from the gateway).
COMMON: tuple[Collector, ...] = (BUILD, ERRORS, MESSAGES, MESSAGE_SECONDS, REDELIVERIES, DEAD_LETTERS, FLAG_VALUE)
BY_KIND: dict[str, tuple[Collector, ...]] = {
    "gateway": (
        QUEUE_DEPTH,
        QUEUE_IN_FLIGHT,
        CONSUMER_PENDING,
        CONSUMER_ACK_PENDING,
        CONSUMER_REDELIVERED,
        SUBMISSIONS,
        QUOTA_REFUSALS,
        UNAVAILABLE,
        SSE_CONNECTIONS,
        CACHE,
        DAILY_ACTIVE_USERS,
        DAILY_SUBMISSIONS,
    ),
    "runner": (
        QUEUE_WAIT,
        EXECUTION_SECONDS,
        RUNNER_SLOTS,
        RUNNER_BUSY,
        POOL_SIZE,
        POOL_AVAILABLE,
        SANDBOX_START,
        SANDBOX_JOBS,
    ),
    "consumer": (GRADES,),
}

_process = "unknown"


def set_process(name: str) -> None:
    """Register this process's metrics and name it in ``coderunner_build`` and
    ``coderunner_errors_total`` (once, in its start-up)."""
    global _process
    if _process != "unknown":
        return
    _process = name
    disable_created_metrics()  # the *_created series only double what Prometheus tracks itself
    kind = "consumer" if name.startswith("consumer-") else name
    for collector in (*COMMON, *BY_KIND.get(kind, ())):
        REGISTRY.register(collector)
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("coderunner")
    except PackageNotFoundError:
        release = "unknown"
    BUILD.labels(name).info({"version": release})
    export_known_labels(name, kind)


def export_known_labels(name: str, kind: str) -> None:
    """Export every label value this process can count at 0 from the start: a labelled series
    that appears at its first increment hides that increment from rate() and increase(), so the
    first dead letter (or refusal, or redelivery) of a process would never show or alert."""
    from bus import streams
    from bus.settle import Disposition
    from schemas.deadletter import DeadLetterReason

    for error_kind in ERROR_KINDS:
        ERRORS.labels(name, error_kind)
    for reason in DeadLetterReason:
        DEAD_LETTERS.labels(reason.value)
    durables: tuple[str, ...] = (streams.RUNNER_CONSUMER,) if kind == "runner" else ()
    if kind == "consumer":
        durables = tuple(d.name for d in streams.CONSUMERS.get(name.removeprefix("consumer-"), ()))
    for durable in durables:
        REDELIVERIES.labels(durable)
        for outcome in Disposition:
            MESSAGES.labels(durable, outcome.value)
    if kind == "gateway":
        for quota in ("exec-minute", "exec-day", "api", "event_streams", "sign_in"):
            QUOTA_REFUSALS.labels(quota)
        for cause in ("queue_full", "sign_in_busy", "read_only", "nats", "redis", "mongodb", "other"):
            UNAVAILABLE.labels(cause)


# The kinds of coderunner_errors_total (each counted where it happens).
ERROR_KINDS = ("nak", "term", "fetch", "sandbox", "http_5xx", "dependency", "queue_full")


def error(kind: str) -> None:
    ERRORS.labels(_process, kind).inc()


# The gateway's HTTP metrics, made by Litestar's PrometheusMiddleware with this prefix.
HTTP_METRICS = (
    f"{PREFIX}_requests_total",
    f"{PREFIX}_request_duration_seconds",
    f"{PREFIX}_requests_in_progress",
    f"{PREFIX}_requests_error_total",
)


def declared_names() -> set[str]:
    """Every metric family name a Code Runner process can export (dashboards and alerts may name
    only these, plus prometheus_client's process_* and Prometheus's own ``up``)."""
    suffix = {"counter": "_total", "info": "_info"}
    names = set(HTTP_METRICS)
    for collector in (*COMMON, *(c for group in BY_KIND.values() for c in group)):
        for family in collector.describe():  # type: ignore[attr-defined]
            names.add(family.name + suffix.get(family.type, ""))
    return names
