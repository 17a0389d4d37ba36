"""Submission events: what the gateway publishes and the runners consume."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

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


class SubmissionRequested(
    Struct, frozen=True, kw_only=True, tag="submission.requested", tag_field="type", rename="camel"
):
    """A student pressed Run (``mode="run"``) or Submit (``mode="grade"``)."""

    job_id: str
    mode: Mode
    code: str
    user_id: str
    limits: Limits
    submitted_at: datetime
    stdin: str = ""
    problem_id: str | None = None
    # Minor version of this payload: bumped when a field with a default is added.
    v: int = 1


SubmissionEvent = SubmissionRequested
"""The union of everything on the SUBMISSIONS stream (one member so far)."""

submission_decoder: msgspec.json.Decoder[SubmissionRequested] = msgspec.json.Decoder(SubmissionRequested)
