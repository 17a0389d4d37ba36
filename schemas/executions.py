"""Execution events: what a runner publishes while and after it runs a job."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal, get_args

import msgspec
from msgspec import Struct

from schemas.base import ExecutionBase
from schemas.grades import Graded, TestGraded

StreamName = Literal["stdout", "stderr"]


class Verdict(enum.StrEnum):
    OK = "OK"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIME_LIMIT = "TIME_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    # The sandbox itself failed: retried by the runner, never blamed on the student.
    SANDBOX_ERROR = "SANDBOX_ERROR"


class ExecutionStarted(ExecutionBase, frozen=True, kw_only=True, tag="execution.started"):
    runner_id: str
    started_at: datetime
    # The sandbox backend this attempt runs in: "bwrap" or "docker" (v2; "" from older runners).
    sandbox: str = ""
    v: int = 2


class OutputChunk(ExecutionBase, frozen=True, tag="execution.output"):
    stream: StreamName
    # Position of this chunk among the attempt's chunks, from 0.
    seq: int
    text: str


class ExecutionFinished(ExecutionBase, frozen=True, kw_only=True, tag="execution.finished"):
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
    # A grade follows (the job ran a problem's tests): the job ends with its ``graded`` event.
    graded: bool = False
    v: int = 2


class TestError(Struct, frozen=True, kw_only=True, rename="camel"):
    __test__ = False

    type: str
    message: str = ""
    # Where it was raised: compiling or running the program, calling the tested function, the
    # test script, or the harness (the test did not report).
    phase: Literal["program", "call", "script", "compile", "harness"] = "program"


class TestObserved(ExecutionBase, frozen=True, tag="execution.observed"):
    """What one test case did, as the sandbox reported it. Never an expectation.

    INTERNAL: a hidden test's output can repeat its input, so students never see this event (the
    gateway streams only :data:`STUDENT_KINDS`); the grading consumer turns it into a ``test`` event.
    """

    __test__ = False

    test_id: str
    index: int
    # Tests in this attempt: the last observation has index == count - 1.
    count: int
    stdout: str = ""
    stderr: str = ""
    # Function tests: the return value as JSON text (untrusted: parsed by the grader).
    return_json: str | None = None
    error: TestError | None = None
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_truncated: bool = False
    time_ms: int = 0


ExecutionEvent = ExecutionStarted | OutputChunk | TestObserved | ExecutionFinished | TestGraded | Graded
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

STUDENT_KINDS = frozenset({"started", "output", "finished", "test", "graded"})
"""The kinds a student's event stream carries (an allow-list: a new kind is internal until added)."""
