"""A job's current state, folded from its execution events.

This is the document ``GET /execution/result/{jobId}`` returns and the data of the SSE ``done``
event, so it is part of the public contract too.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from schemas.executions import Verdict
from schemas.grades import Grade, TestResult

# "grading": the run finished and its grade is coming (v1.1).
Status = Literal["queued", "running", "grading", "completed", "failed"]


class JobResult(Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    status: Status = "queued"
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    verdict: Verdict | None = None
    duration_ms: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    signal: int | None = None
    message: str | None = None
    attempt: int = 0
    # Graded jobs (v1.1): each test's result as it was decided, then the grade.
    tests: list[TestResult] = []
    grade: Grade | None = None
    # Stream sequence of the last event folded in: the SSE ``id`` to resume after.
    last_seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed")
