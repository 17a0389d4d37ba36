"""Problem events: a problem was created, edited or deleted (by a teacher or by ``coderunner seed``).

Published on ``coderunner.v1.problems.<problemId>.changed`` (stream PROBLEMS). The caching consumer
invalidates what it cached of the problem; other services may follow the curriculum with them. The
event names the change, never a test's content.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec import Struct


class ProblemChanged(Struct, frozen=True, kw_only=True, tag="problem.changed", tag_field="type", rename="camel"):
    problem_id: str
    # The problem's revision after the change (1 when created).
    revision: int
    change: Literal["created", "updated", "deleted"]
    level: str
    session: str
    changed_at: datetime
    # Who: a user id, or "seed" for the curriculum files.
    changed_by: str
    v: int = 1


ProblemEvent = ProblemChanged
"""The union of everything on the PROBLEMS stream (one member so far)."""

problem_event_decoder: msgspec.json.Decoder[ProblemChanged] = msgspec.json.Decoder(ProblemChanged)
