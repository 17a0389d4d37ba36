"""Executions' HTTP request and response bodies (camelCase JSON). Separate from bus events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

# Code that is empty or only whitespace is refused: it would run nothing.
# \s widened so that Python's re and ECMA-262 (JSON Schema's dialect) agree on what a space is.
Code = Annotated[
    str, Meta(pattern=r"[^\s\x1c-\x1f\x85\xa0\ufeff]", description="Python source: at least one non-space character")
]


class SubmitRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Run code. With a ``problemId`` (the Run button on a problem): the problem's public tests."""

    code: Code
    stdin: str = ""
    problem_id: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None


class GradeRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Submit a solution to a problem: every test, public and hidden, graded."""

    code: Code
    problem_id: Annotated[int, Meta(ge=1, le=2**31 - 1)]


class SubmitAccepted(Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    status: Literal["queued", "running", "grading", "completed", "failed"]
    events_url: str
    result_url: str


class QueueStats(Struct, frozen=True, kw_only=True, rename="camel"):
    depth: int
    pending: int
    in_flight: int
    capacity: int
    estimated_wait_seconds: float
    updated_at: str


class JobSummary(Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    mode: str
    status: str
    scope: str | None = None
    problem_id: str | None = None
    verdict: str | None = None
    score: float | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None


class JobPage(Struct, frozen=True, kw_only=True, rename="camel"):
    items: list[JobSummary]
    page: int
    page_size: int
    total: int
