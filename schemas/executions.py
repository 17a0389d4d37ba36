"""Execution events: what a runner publishes while and after it runs a job."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal, get_args

import msgspec
from msgspec import Struct

StreamName = Literal["stdout", "stderr"]


class Verdict(enum.StrEnum):
    OK = "OK"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIME_LIMIT = "TIME_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    # The sandbox itself failed: retried by the runner, never blamed on the student.
    SANDBOX_ERROR = "SANDBOX_ERROR"


class _ExecutionBase(Struct, frozen=True, kw_only=True, tag_field="type", rename="camel"):
    job_id: str
    # Delivery attempt of the submission that produced this event (1 on the first run). A newer
    # attempt supersedes the output of older ones: a runner that died mid-job leaves partial output.
    attempt: int = 1
    v: int = 1


class ExecutionStarted(_ExecutionBase, frozen=True, tag="execution.started"):
    runner_id: str
    started_at: datetime


class OutputChunk(_ExecutionBase, frozen=True, tag="execution.output"):
    stream: StreamName
    # Position of this chunk among the attempt's chunks, from 0.
    seq: int
    text: str


class ExecutionFinished(_ExecutionBase, frozen=True, tag="execution.finished"):
    verdict: Verdict
    exit_code: int | None
    duration_ms: int
    finished_at: datetime
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # Signal number when the program was killed by one (e.g. 9 after a limit).
    signal: int | None = None
    # Human-readable reason for SANDBOX_ERROR or a limit; never contains host details.
    message: str | None = None


ExecutionEvent = ExecutionStarted | OutputChunk | ExecutionFinished
"""The union of everything on the EXECUTIONS stream."""

execution_decoder: msgspec.json.Decoder[ExecutionEvent] = msgspec.json.Decoder(ExecutionEvent)


def kind(event: ExecutionEvent | type[ExecutionEvent]) -> str:
    """An event's one name: the last part of its tag (``execution.started`` → ``started``).

    It is also the event's subject suffix (``coderunner.v1.executions.<jobId>.started``) and its
    SSE event name (``event: started``), so the three can never disagree.
    """
    cls = event if isinstance(event, type) else type(event)
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag.rsplit(".", 1)[1]


KINDS: dict[str, type[ExecutionEvent]] = {kind(t): t for t in get_args(ExecutionEvent)}
"""Every execution event type by its kind."""
