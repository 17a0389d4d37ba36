"""Grading events: what the grading consumer publishes after comparing a job's observations with the
problem's expectations (outside the sandbox). They travel on the EXECUTIONS stream, after the run's
own events, so one job's history stays one subject tree (``coderunner.v1.executions.<jobId>.*``).

What a student may see: a public test's input, expected and actual output; of a hidden test only
whether it passed and its verdict. Nothing else about a hidden test is ever in these events.
"""

from __future__ import annotations

import enum
from datetime import datetime

from msgspec import Struct

from schemas.base import ExecutionBase


class GradeVerdict(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    WRONG_ANSWER = "WRONG_ANSWER"
    TIME_LIMIT = "TIME_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    # The program does not compile (a SyntaxError): no test could run it.
    COMPILE_ERROR = "COMPILE_ERROR"
    # The sandbox failed on every attempt: nothing is blamed on the student.
    SANDBOX_ERROR = "SANDBOX_ERROR"


class Feedback(Struct, frozen=True, kw_only=True, rename="camel"):
    """Plain-language help for a failed test (grading/explanations.toml)."""

    kind: str  # the exception's name, or TIME_LIMIT / MEMORY_LIMIT / OUTPUT_LIMIT
    title: str
    explanation: str
    # The line of the student's own code, and its text.
    line: int | None = None
    code: str | None = None
    # The exception's own message: public tests only (a hidden test's message could show its input).
    message: str | None = None


class TestResult(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """One test's result. Fields past ``weight`` are filled for public tests only."""

    __test__ = False

    test_id: str
    index: int
    public: bool
    verdict: GradeVerdict
    weight: int = 1
    time_ms: int | None = None
    # Public tests: what went in (stdin, the call, or the test script), what was expected, what came out.
    input: str | None = None
    expected: str | None = None
    actual: str | None = None
    diff: str | None = None
    stderr: str | None = None
    feedback: Feedback | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is GradeVerdict.ACCEPTED


class Grade(Struct, frozen=True, kw_only=True, rename="camel"):
    problem_id: str
    # Revision of the problem the expectations came from.
    revision: int
    verdict: GradeVerdict
    # Passed tests' weight over all tests' weight, in percent (0-100, two decimals).
    score: float
    passed: int
    total: int
    tests: list[TestResult]
    # "all": a submission (every test); "public": the Run button on a problem (public tests only).
    scope: str = "all"
    # Help for the first failing test, if any.
    feedback: Feedback | None = None


class TestGraded(ExecutionBase, frozen=True, tag="grading.test"):
    """One test decided, published as soon as its observation arrives (live per-test results)."""

    __test__ = False

    result: TestResult


class Graded(ExecutionBase, frozen=True, tag="grading.graded"):
    """The job's grade: published once per job (a redelivery never yields another)."""

    grade: Grade
    graded_at: datetime
