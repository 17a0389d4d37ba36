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

RUNNER_CONSUMER = "runner"
# Durable consumers of the EXECUTIONS stream, one per consumer process.
CONSUMERS: dict[str, str] = {
    "caching": subjects.EXECUTIONS_FINISHED,
    "progress": subjects.EXECUTIONS_FINISHED,
    "grading": subjects.EXECUTIONS_FINISHED,
}


@dataclass(frozen=True, slots=True)
class BusLimits:
    """The operator's knobs for streams and the runner consumer."""

    retention_seconds: float
    duplicate_window_seconds: float
    runner_ack_wait_seconds: float
    runner_max_deliver: int
    consumer_ack_wait_seconds: float = 30.0
    consumer_max_deliver: int = 10


def stream_configs(limits: BusLimits) -> list[StreamConfig]:
    common = dict(
        retention=RetentionPolicy.LIMITS,  # replay for incident analysis needs limits, not work-queue
        storage=StorageType.FILE,
        max_age=limits.retention_seconds,
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
            name=DEADLETTER,
            description="Messages the pipeline gave up on, with the reason",
            subjects=[subjects.DEADLETTER_ALL],
            duplicate_window=limits.duplicate_window_seconds,
            **common,  # type: ignore[arg-type]
        ),
    ]


def runner_consumer(limits: BusLimits) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=RUNNER_CONSUMER,
        description="Shared by every runner process",
        filter_subject=subjects.SUBMISSIONS_ALL,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=limits.runner_ack_wait_seconds,
        max_deliver=limits.runner_max_deliver,
        max_ack_pending=10_000,
    )


def execution_consumer(name: str, limits: BusLimits) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=name,
        filter_subject=CONSUMERS[name],
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=limits.consumer_ack_wait_seconds,
        max_deliver=limits.consumer_max_deliver,
        max_ack_pending=1_000,
    )


async def provision(js: JetStreamContext, limits: BusLimits) -> None:
    """Create or update every stream. Safe to run from every process, concurrently.

    Each durable consumer is provisioned by the process that owns it (:func:`ensure_runner_consumer`,
    :func:`ensure_consumer`), so only that process's settings decide its AckWait and MaxDeliver.
    """
    for config in stream_configs(limits):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def ensure_runner_consumer(js: JetStreamContext, limits: BusLimits) -> None:
    # add_consumer with an existing durable name updates its mutable settings.
    await js.add_consumer(SUBMISSIONS, runner_consumer(limits))


async def ensure_consumer(js: JetStreamContext, name: str, limits: BusLimits) -> None:
    await js.add_consumer(EXECUTIONS, execution_consumer(name, limits))
