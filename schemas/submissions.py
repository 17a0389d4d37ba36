"""Submission events: what the gateway publishes and the runners consume."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Mode = Literal["run", "grade"]

KiB = 1024
MiB = 1024 * KiB


class Limits(Struct, frozen=True, kw_only=True, rename="camel"):
    """Resource limits for one execution. Defaults are the seed plan's."""

    wall_time_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5_000
    cpu_time_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5_000
    memory_bytes: Annotated[int, Meta(ge=16 * MiB, le=16 * 1024 * MiB)] = 128 * MiB
    output_bytes: Annotated[int, Meta(ge=1 * KiB, le=64 * MiB)] = 64 * KiB
    max_processes: Annotated[int, Meta(ge=1, le=4096)] = 50
    file_size_bytes: Annotated[int, Meta(ge=0, le=1024 * MiB)] = 50 * MiB
    open_files: Annotated[int, Meta(ge=16, le=65536)] = 256


class TestInput(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """One test's input as the runner needs it: never its expected output.

    A hidden test's input enters the sandbox only inside the one process that runs that test.
    """

    __test__ = False

    id: str
    stdin: str = ""
    # Function tests: call this function of the program with these JSON arguments.
    function: str | None = None
    args: list[Any] | None = None
    # Script tests: a teacher's test program, run after the program in the same module.
    script: str | None = None
    # This test's own wall-clock limit.
    wall_ms: Annotated[int, Meta(ge=100, le=60_000)] = 2_000


class SubmissionRequested(
    Struct, frozen=True, kw_only=True, tag="submission.requested", tag_field="type", rename="camel"
):
    """A student pressed Run (``mode="run"``) or Submit (``mode="grade"``).

    Run on a problem is ``mode="grade"`` with ``scope="public"``: the public tests, graded.
    """

    job_id: str
    mode: Mode
    code: str
    user_id: str
    limits: Limits
    submitted_at: datetime
    stdin: str = ""
    problem_id: str | None = None
    # Grade mode (v1.1): the problem's revision, which tests, and their inputs.
    problem_revision: int | None = None
    scope: Literal["all", "public"] = "all"
    tests: list[TestInput] = []
    # Minor version of this payload: bumped when a field with a default is added (2: tests).
    v: int = 2


SubmissionEvent = SubmissionRequested
"""The union of everything on the SUBMISSIONS stream (one member so far)."""

submission_decoder: msgspec.json.Decoder[SubmissionRequested] = msgspec.json.Decoder(SubmissionRequested)
