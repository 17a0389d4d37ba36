"""The catalogue of channels: every subject another service may publish to or read, in one place.

Each :class:`Channel` names its subject pattern, its stream, its payload type (or union), who
publishes and who consumes it, its delivery guarantee with the ``Nats-Msg-Id`` of each message (the
dedup key), and its ordering. The JSON Schemas under ``schemas/json/`` and the AsyncAPI document
``schemas/asyncapi.yaml`` are generated from it (``coderunner schema --write``,
``coderunner asyncapi``), and tests fail when either drifts from the code.

A new channel is one more :data:`CHANNELS` entry; its payload's JSON Schema file (its ``family``)
and its AsyncAPI channel, messages and operations follow from it.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

import msgspec
from msgspec import Struct

from schemas import subjects
from schemas.deadletter import DeadLetter
from schemas.executions import KINDS, ExecutionEvent
from schemas.flags import FlagEvent
from schemas.ops import RunnerStats
from schemas.problems import ProblemEvent
from schemas.progress import ProgressEvent, ProgressKind
from schemas.results import JobResult
from schemas.submissions import SubmissionEvent


class Parameter(Struct, frozen=True, kw_only=True):
    """One ``{name}`` token of a channel's subject pattern."""

    name: str
    description: str
    # Every value the token takes, when the set is closed (e.g. an execution event's kind).
    enum: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()


class Channel(Struct, frozen=True, kw_only=True):
    id: str
    # The subject, with ``{parameter}`` for each variable token (NATS wildcard: ``*``).
    address: str
    parameters: tuple[Parameter, ...]
    # The JetStream stream that stores it; None for core NATS request/reply (nothing is stored).
    stream: str | None
    # The payload: one msgspec type, or a union tagged by ``type``.
    payload: Any
    # The file its JSON Schema is written to: ``schemas/json/<family>.schema.json``.
    family: str
    publishers: tuple[str, ...]
    consumers: tuple[str, ...]
    # Code Runner's own durable consumers on this channel, by name (``bus/streams.py: DURABLES``).
    durables: tuple[str, ...] = ()
    delivery: str
    # ``Nats-Msg-Id`` of each message, by its tag: ``{field}`` stands for the payload's (camelCase)
    # field, ``{a.b}`` for a nested one. JetStream drops a repeat inside DUPLICATE_WINDOW_SECONDS.
    msg_ids: dict[str, str] = {}
    ordering: str
    description: str
    # Messages by tag that other services must not be shown (and should not rely on).
    internal: frozenset[str] = frozenset()
    pattern: Literal["stream", "request-reply"] = "stream"


JOB_ID = Parameter(
    name="jobId",
    description=f"A job's id, always one subject token: {subjects.JOB_ID_RE.pattern}",
    examples=("Vn2w0h8qQ3m9bZ1c",),
)
AT_LEAST_ONCE = (
    "At least once: JetStream stores every message (limits retention, kept STREAM_RETENTION_SECONDS, "
    "nothing is deleted on ack); read it with your own durable consumer and explicit acks. A publisher "
    "that retries sends the same Nats-Msg-Id, so JetStream keeps one copy inside DUPLICATE_WINDOW_SECONDS; "
    "a redelivery to you is still possible, so handle each message idempotently."
)

CHANNELS: tuple[Channel, ...] = (
    Channel(
        id="submissions",
        address="coderunner.v1.submissions.{jobId}",
        parameters=(JOB_ID,),
        stream="SUBMISSIONS",
        payload=SubmissionEvent,
        family="submissions",
        publishers=("gateway (POST /execution/submit)",),
        consumers=("runners (the shared durable `runner`: each job goes to one runner)",),
        durables=("runner",),
        delivery=AT_LEAST_ONCE,
        # The job id is derived from (user, Idempotency-Key) when the client sends one, so a retried
        # request is the same message (gateway/executions/service.py).
        msg_ids={"submission.requested": "{jobId}"},
        ordering="One message per job. Runners take jobs in stream order, but jobs finish in any order.",
        description=(
            "A student pressed Run or Submit. Carries the code and, for grading, the tests' inputs (never "
            "their expected outputs): hidden tests' inputs are here, so restrict it with NATS permissions."
        ),
    ),
    Channel(
        id="executions",
        address="coderunner.v1.executions.{jobId}.{kind}",
        parameters=(
            JOB_ID,
            Parameter(
                name="kind",
                description="The event's kind: the last part of its `type` (`observed` is internal).",
                enum=tuple(KINDS),
            ),
        ),
        stream="EXECUTIONS",
        payload=ExecutionEvent,
        family="executions",
        publishers=(
            "runners (started, output, observed, finished)",
            "the grading consumer (test, graded)",
        ),
        consumers=(
            "durables `grading` (observed, finished), `caching` and `progress` (finished, graded)",
            "gateway (one job's subject with an ordered consumer for SSE; direct gets for results)",
        ),
        durables=("caching", "progress", "grading"),
        delivery=AT_LEAST_ONCE + " Exactly one `finished` and at most one `graded` per job.",
        msg_ids={
            "execution.started": "{jobId}.started.{attempt}",
            "execution.output": "{jobId}.{attempt}.{seq}",
            "execution.observed": "{jobId}.{attempt}.observed.{testId}",
            "execution.finished": "{jobId}.finished",
            "grading.test": "{jobId}.{attempt}.test.{result.testId}",
            "grading.graded": "{jobId}.graded",
        },
        ordering=(
            "Per job, in publish order: started, output (seq 0, 1, ... within an attempt), observed and "
            "test, finished, then test and graded. A redelivery (nak, AckWait) can come after newer "
            "messages, and a job that was run again has a higher `attempt` whose output replaces the "
            "older ones' (bus/history.py: apply). No order across jobs."
        ),
        description=(
            "Everything that happens to a job after its submission, one subject tree per job. Filter "
            "`coderunner.v1.executions.*.finished` for every result, `*.graded` for every grade."
        ),
        # A hidden test's output can repeat its input: students never see it (STUDENT_KINDS).
        internal=frozenset({"execution.observed"}),
    ),
    Channel(
        id="problems",
        address="coderunner.v1.problems.{problemId}.changed",
        parameters=(Parameter(name="problemId", description="A problem's id: digits.", examples=("101",)),),
        stream="PROBLEMS",
        payload=ProblemEvent,
        family="problems",
        publishers=("gateway (teachers' edits)", "coderunner seed (the curriculum files)"),
        consumers=("durable `caching-problems` (drops cached problems, sessions and levels)",),
        durables=("caching-problems",),
        delivery=AT_LEAST_ONCE,
        msg_ids={"problem.changed": "problem-{problemId}-{revision}"},
        ordering="Per problem by `revision`: a higher revision supersedes a lower one.",
        description="A problem was created, edited or deleted. It names the change, never the content.",
    ),
    Channel(
        id="progress",
        address="coderunner.v1.progress.{userId}.{kind}",
        parameters=(
            Parameter(
                name="userId",
                description=f"A user's id, one subject token: {subjects.JOB_ID_RE.pattern}",
                examples=("665f1c2ab9d4e3f0a1b2c3d4",),
            ),
            Parameter(name="kind", description="The event's kind.", enum=get_args(ProgressKind)),
        ),
        stream="PROGRESS",
        payload=ProgressEvent,
        family="progress",
        publishers=(
            "gateway (attempt, complete: POST /progress/attempt, /progress/complete)",
            "the progress consumer (changed)",
        ),
        consumers=(
            "durable `progress-inputs` (attempt, complete: into each student's progress)",
            "durable `caching-progress` (changed: drops the user's cached summary)",
        ),
        durables=("caching-progress", "progress-inputs"),
        delivery=AT_LEAST_ONCE,
        msg_ids={
            # eventId comes from the client's Idempotency-Key when it sends one.
            "progress.attempt": "progress-{eventId}",
            "progress.complete": "progress-{eventId}",
            "progress.changed": "progress-changed-{source}",
        },
        ordering="Per user in stream order; the progress consumer applies them one at a time, in order.",
        description=(
            "What a student did that counts towards their progress, and the projection's announcement "
            "that a user's progress changed. Grades count through `grading.graded` on EXECUTIONS."
        ),
    ),
    Channel(
        id="deadletter",
        address="coderunner.v1.deadletter.{stream}",
        parameters=(
            Parameter(
                name="stream",
                description="The original message's stream, in lower case.",
                examples=("submissions", "executions"),
            ),
        ),
        stream="DEADLETTER",
        payload=DeadLetter,
        family="deadletter",
        publishers=("runners and every durable consumer, when they give up on a message (bus/settle.py)",),
        consumers=("operators (nothing in Code Runner reads it)",),
        delivery=AT_LEAST_ONCE + " One record per original message and consumer.",
        # `stream` is the record's field: the stream's name as JetStream spells it (SUBMISSIONS).
        msg_ids={"deadletter": "dlq.{stream}.{consumer}.{streamSeq}"},
        ordering="None: records come in the order the pipeline gave up.",
        description="A message the pipeline gave up on, with a named reason. The original stays in its stream.",
    ),
    Channel(
        id="flags",
        address="coderunner.v1.flags.{flag}.changed",
        parameters=(
            Parameter(
                name="flag",
                description=f"A feature flag's name, one subject token: {subjects.FLAG_NAME_RE.pattern}",
                examples=("read-only", "sandbox-docker"),
            ),
        ),
        stream="FLAGS",
        payload=FlagEvent,
        family="flags",
        publishers=("coderunner flag set (operators)",),
        consumers=(
            "runners (the last change of each flag is its value for them: direct gets by subject)",
            "gateways and the grading consumer (a change makes them read the flags from Redis again at once)",
            "operators: the audit trail (coderunner flag history)",
        ),
        delivery=(
            "At least once, kept without an age limit (the audit trail, and the runners' flag values). "
            "A retried publish sends the same Nats-Msg-Id."
        ),
        msg_ids={"flag.changed": "flag-{changeId}"},
        ordering="Per flag, in the order they were set: the last one is the flag's value.",
        description=(
            "An operator set a feature flag: its value before and after, who, where, when and why. "
            "Filter `coderunner.v1.flags.*.changed` for every flag."
        ),
    ),
    Channel(
        id="runnerStats",
        address=subjects.RUNNER_STATS,
        parameters=(),
        stream=None,
        payload=RunnerStats,
        family="ops",
        publishers=("Every runner answers each request (no queue group): gather replies until a timeout",),
        consumers=("operators and dashboards (core NATS request with an empty body)",),
        delivery="At most once: core NATS request/reply, nothing is stored.",
        ordering="None.",
        description="Each runner's concurrency, running jobs, sandbox pool and limit enforcement.",
        pattern="request-reply",
    ),
)
"""Every public channel. Internal plumbing (the ADVISORIES stream of JetStream's own advisories) is not."""

DOCUMENTS: dict[str, Any] = {"results": JobResult}
"""Payloads that travel outside the bus, by family: the result document of ``GET
/execution/result/{jobId}`` and of the SSE ``done`` event."""


def families() -> dict[str, Any]:
    """Every JSON Schema file's payload, by family (file stem), channels first."""
    return {**{c.family: c.payload for c in CHANNELS}, **DOCUMENTS}


def messages(channel: Channel) -> tuple[type[Struct], ...]:
    """The message types a channel carries: its union's members, or its one type."""
    return get_args(channel.payload) or (channel.payload,)


def tag(message: type[Struct]) -> str:
    value = message.__struct_config__.tag
    assert isinstance(value, str)
    return value


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


def msg_id(channel: Channel, event: Struct) -> str | None:
    """The ``Nats-Msg-Id`` the catalogue says ``event`` is published with (None: not deduplicated)."""
    pattern = channel.msg_ids.get(tag(type(event)))
    if pattern is None:
        return None
    doc = msgspec.to_builtins(event)

    def field(match: re.Match[str]) -> str:
        value: Any = doc
        for part in match.group(1).split("."):
            value = value[part]
        return str(value)

    return _PLACEHOLDER.sub(field, pattern)


def channel_of(stream: str) -> Channel:
    return next(c for c in CHANNELS if c.stream == stream)
