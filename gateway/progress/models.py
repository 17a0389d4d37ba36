"""Progress's HTTP request and response bodies (camelCase JSON). Separate from bus events and from
the projection's documents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct


class ProgressItem(Struct, frozen=True, kw_only=True, rename="camel"):
    item: str  # "problem:<id>" or "reading:<sessionId>"
    level: str = ""
    session: str = ""
    problem_id: str | None = None
    attempts: int = 0
    best_score: float | None = None
    solved: bool = False
    completed: bool = False
    first_solved_at: datetime | None = None
    completed_at: datetime | None = None
    last_submitted_at: datetime | None = None
    last_verdict: str | None = None
    last_code: str | None = None


class ProgressList(Struct, frozen=True, kw_only=True, rename="camel"):
    user_id: str
    items: list[ProgressItem]


class Count(Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    solved: int
    total: int
    level: str | None = None


class Summary(Struct, frozen=True, kw_only=True, rename="camel"):
    user_id: str
    solved: int
    attempted: int
    attempts: int
    readings_completed: int
    levels: list[Count]
    sessions: list[Count]
    # Consecutive UTC days with activity, ending today or yesterday.
    streak_days: int
    last_active_day: str | None = None


class AttemptRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    problem_id: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    code: Annotated[str, Meta(max_length=65536)] = ""


class CompleteRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Exactly one: a problem without tests, or a session's reading."""

    problem_id: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    session_id: Annotated[str, Meta(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)] | None = None


class Recorded(Struct, frozen=True, kw_only=True, rename="camel"):
    event_id: str
    item: str
