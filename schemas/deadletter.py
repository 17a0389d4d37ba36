"""Dead-letter records: a message the pipeline gave up on, with a named reason."""

from __future__ import annotations

import enum
from datetime import datetime

from msgspec import Struct


class DeadLetterReason(enum.StrEnum):
    # The payload did not decode as the stream's union: no retry can fix it.
    UNDECODABLE = "undecodable"
    # Every delivery failed or timed out (MaxDeliver reached).
    MAX_DELIVERIES = "max_deliveries"
    # The sandbox kept failing on every attempt.
    SANDBOX_FAILED = "sandbox_failed"
    # An execution event names a job that has no submission (added in v1.1).
    UNKNOWN_JOB = "unknown_job"
    # A submission that cannot be run as asked, e.g. a grade without tests (added in v1.2).
    INVALID = "invalid"


class DeadLetter(Struct, frozen=True, kw_only=True, tag="deadletter", tag_field="type", rename="camel"):
    reason: DeadLetterReason
    stream: str
    stream_seq: int
    subject: str
    consumer: str
    recorded_at: datetime
    job_id: str | None = None
    detail: str = ""
    # The original payload, as text (lenient UTF-8), so nothing is lost.
    payload: str = ""
    # How many times the message had been delivered to ``consumer`` when it was given up on (0:
    # unknown, a v1 record) (added in v2).
    attempts: int = 0
    v: int = 2
