"""Executions' HTTP request and response bodies (camelCase JSON). Separate from bus events."""

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


class QueueStats(Struct, frozen=True, kw_only=True, rename="camel"):
    depth: int
    pending: int
    in_flight: int
    capacity: int
    estimated_wait_seconds: float
    updated_at: str
