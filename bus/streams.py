"""Stream and durable-consumer definitions, each defined once, provisioned idempotently."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from schemas import subjects

SUBMISSIONS = "SUBMISSIONS"
EXECUTIONS = "EXECUTIONS"
DEADLETTER = "DEADLETTER"
PROBLEMS = "PROBLEMS"

RUNNER_CONSUMER = "runner"


@dataclass(frozen=True, slots=True)
class Durable:
    """A durable consumer: what it reads, which process owns (and provisions) it, and, for the
    consumer processes, the process it runs in (``coderunner consume PROCESS``) and the
    ``module:function`` that builds its handler (imported by its owner only)."""

    name: str
    stream: str
    filter_subjects: tuple[str, ...]
    owner: str
    description: str
    handler_factory: str = ""
    process: str = ""


# The one list of durable consumers. Stream setup, the CLI, `coderunner up`, compose.yaml (checked
# by a test) and the test fixtures all read it.
DURABLES: tuple[Durable, ...] = (
    Durable(
        RUNNER_CONSUMER,
        SUBMISSIONS,
        (subjects.SUBMISSIONS_ALL,),
        "coderunner runner",
        "Shared by every runner process",
    ),
    Durable(
        "caching",
        EXECUTIONS,
        (subjects.EXECUTIONS_FINISHED, subjects.EXECUTIONS_GRADED),
        "coderunner consume caching",
        "Finished and graded results into Redis",
        "consumers.caching:build",
        process="caching",
    ),
    Durable(
        "caching-problems",
        PROBLEMS,
        (subjects.PROBLEMS_ALL,),
        "coderunner consume caching",
        "Invalidates cached problems, sessions and levels when a problem changes",
        "consumers.caching:build_problems",
        process="caching",
    ),
    Durable(
        "progress",
        EXECUTIONS,
        (subjects.EXECUTIONS_FINISHED,),
        "coderunner consume progress",
        "Finished jobs into each student's history (MongoDB)",
        "consumers.progress:build",
        process="progress",
    ),
    Durable(
        "grading",
        EXECUTIONS,
        (subjects.EXECUTIONS_OBSERVED, subjects.EXECUTIONS_FINISHED),
        "coderunner consume grading",
        "Observations compared with the problem's expectations: per-test results, then the grade",
        "consumers.grading:build",
        process="grading",
    ),
)
# The consumer processes (`coderunner consume PROCESS`), each with the durables it runs.
CONSUMERS: dict[str, tuple[Durable, ...]] = {
    p: tuple(d for d in DURABLES if d.process == p) for p in dict.fromkeys(d.process for d in DURABLES if d.process)
}


@dataclass(frozen=True, slots=True)
class BusLimits:
    """The operator's knobs for streams and the runner consumer."""

    stream_retention_seconds: float
    duplicate_window_seconds: float
    runner_ack_wait_seconds: float
    runner_max_deliver: int
    consumer_ack_wait_seconds: float = 30.0
    consumer_max_deliver: int = 10


def stream_configs(limits: BusLimits) -> list[StreamConfig]:
    common = dict(
        retention=RetentionPolicy.LIMITS,  # replay for incident analysis needs limits, not work-queue
        storage=StorageType.FILE,
        max_age=limits.stream_retention_seconds,
        discard=DiscardPolicy.OLD,
        allow_direct=True,  # results are read by subject with direct gets
    )
    return [
        StreamConfig(
            name=SUBMISSIONS,
            description="Code Runner submissions (coderunner.v1.submissions.<jobId>)",
            subjects=[subjects.SUBMISSIONS_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=EXECUTIONS,
            description="Code Runner execution events (coderunner.v1.executions.<jobId>.<kind>)",
            subjects=[subjects.EXECUTIONS_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=PROBLEMS,
            description="Code Runner curriculum changes (coderunner.v1.problems.<problemId>.changed)",
            subjects=[subjects.PROBLEMS_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=DEADLETTER,
            description="Messages the pipeline gave up on, with the reason",
            subjects=[subjects.DEADLETTER_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
    ]


def consumer_config(durable: Durable, limits: BusLimits) -> ConsumerConfig:
    runner = durable.name == RUNNER_CONSUMER
    return ConsumerConfig(
        durable_name=durable.name,
        description=durable.description,
        # One subject as filter_subject: servers before 2.10 know no filter_subjects.
        filter_subject=durable.filter_subjects[0] if len(durable.filter_subjects) == 1 else None,
        filter_subjects=list(durable.filter_subjects) if len(durable.filter_subjects) > 1 else None,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=limits.runner_ack_wait_seconds if runner else limits.consumer_ack_wait_seconds,
        max_deliver=limits.runner_max_deliver if runner else limits.consumer_max_deliver,
        max_ack_pending=10_000 if runner else 1_000,
    )


async def provision(js: JetStreamContext, limits: BusLimits) -> None:
    """Create or update every stream. Safe to run from every process, concurrently.

    Each durable consumer is provisioned by the process that owns it (:func:`ensure_consumer`), so
    only that process's settings decide its AckWait and MaxDeliver.
    """
    for config in stream_configs(limits):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, name: str, limits: BusLimits) -> None:
    """Create or update the durable consumer ``name`` (called by its owner only)."""
    durable = next(d for d in DURABLES if d.name == name)
    # add_consumer with an existing durable name updates its mutable settings.
    await js.add_consumer(durable.stream, consumer_config(durable, limits))
