"""What every event on the EXECUTIONS stream has in common."""

from __future__ import annotations

from msgspec import Struct


class ExecutionBase(Struct, frozen=True, kw_only=True, tag_field="type", rename="camel"):
    job_id: str
    # Delivery attempt of the submission that produced this event (1 on the first run). A newer
    # attempt supersedes the output of older ones: a runner that died mid-job leaves partial output.
    attempt: int = 1
    v: int = 1
