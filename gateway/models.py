"""HTTP request and response bodies (camelCase JSON). Separate from bus events and storage."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct


class SubmitRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    code: str
    stdin: str = ""
    problem_id: str | None = None


class SubmitAccepted(Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    status: Literal["queued", "running", "completed", "failed"]
    events_url: str
    result_url: str


class Health(Struct, frozen=True):
    status: str


class Readiness(Struct, frozen=True):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
