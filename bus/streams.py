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

from bus import advisories
from schemas import subjects

SUBMISSIONS = "SUBMISSIONS"
EXECUTIONS = "EXECUTIONS"
DEADLETTER = "DEADLETTER"
PROBLEMS = "PROBLEMS"
ADVISORIES = "ADVISORIES"
PROGRESS = "PROGRESS"
FLAGS = "FLAGS"

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
    # One message in flight at a time, so events are applied in stream order (a projection that
    # guards its writes with the last applied sequence needs it: a later event never overtakes an
    # earlier one that was nak'd).
    in_order: bool = False


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
        "caching-progress",
        PROGRESS,
        (subjects.PROGRESS_CHANGED,),
        "coderunner consume caching",
        "Drops a user's cached progress summary when their progress changes",
        "consumers.caching:build_progress",
        process="caching",
    ),
    Durable(
        "progress",
        EXECUTIONS,
        (subjects.EXECUTIONS_FINISHED, subjects.EXECUTIONS_GRADED),
        "coderunner consume progress",
        "Finished and graded jobs: stored results, and each student's progress (MongoDB)",
        "consumers.progress:build",
        process="progress",
        in_order=True,
    ),
    Durable(
        "progress-inputs",
        PROGRESS,
        subjects.PROGRESS_INPUTS,
        "coderunner consume progress",
        "Attempts and completions students record, into their progress (MongoDB)",
        "consumers.progress:build_inputs",
        process="progress",
        in_order=True,
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


def _advisories_durable(owner: str, owned: list[Durable]) -> Durable:
    name = f"advisories-{owner.split()[-1]}"
    # Its own give-ups too: an advisory it cannot handle is still recorded.
    watched = [*((d.stream, d.name) for d in owned), (ADVISORIES, name)]
    return Durable(
        name,
        ADVISORIES,
        tuple(advisories.max_deliveries_of(stream, consumer) for stream, consumer in watched),
        owner,
        f"MAX_DELIVERIES advisories of {', '.join(d.name for d in owned)} (and its own) into dead letters",
        "consumers.base:build_advisories" if owned[0].process else "",
        process=owned[0].process,
    )


# Each owner also reads the MAX_DELIVERIES advisories of its durables from the ADVISORIES stream
# (``advisories-<process>``), so a give-up is dead-lettered even when none of its processes was
# listening as the server announced it (bus/advisories.py).
DURABLES += tuple(
    _advisories_durable(owner, [d for d in DURABLES if d.owner == owner])
    for owner in dict.fromkeys(d.owner for d in DURABLES)
)


def advisories_durable(owner: str) -> Durable:
    """The durable through which ``owner`` dead-letters its durables' MAX_DELIVERIES advisories."""
    return next(d for d in DURABLES if d.stream == ADVISORIES and d.owner == owner)


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
    stream_replicas: int = 1


def stream_configs(limits: BusLimits) -> list[StreamConfig]:
    common = dict(
        retention=RetentionPolicy.LIMITS,  # replay for incident analysis needs limits, not work-queue
        storage=StorageType.FILE,
        max_age=limits.stream_retention_seconds,
        discard=DiscardPolicy.OLD,
        allow_direct=True,  # results are read by subject with direct gets
        num_replicas=limits.stream_replicas,  # durable consumers inherit it (their replicas: 0)
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
            name=PROGRESS,
            description="Code Runner progress inputs and changes (coderunner.v1.progress.<userId>.<kind>)",
            subjects=[subjects.PROGRESS_ALL],
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
        StreamConfig(
            name=FLAGS,
            description="Feature-flag changes, the audit trail (coderunner.v1.flags.<flag>.changed)",
            subjects=[subjects.FLAGS_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            # Kept for ever (a few records a week): the last change of each flag is its value for
            # the runners (flags/store.py), and the audit trail must outlive the other streams.
            **{**common, "max_age": 0},  # type: ignore[arg-type]
        ),
        StreamConfig(
            name=ADVISORIES,
            description="JetStream's MAX_DELIVERIES advisories, kept until their owner dead-letters them",
            subjects=[advisories.MAX_DELIVERIES_ALL],
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
        max_ack_pending=10_000 if runner else (1 if durable.in_order else 1_000),
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
