"""Publishing curriculum changes (``ProblemChanged``) after a write, and seeding from the files."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.js import JetStreamContext

from bus import client
from curriculum.files import Curriculum
from curriculum.model import Problem
from curriculum.store import Change, CurriculumStore
from schemas import subjects
from schemas.problems import ProblemChanged

log = logging.getLogger(__name__)


async def publish_change(js: JetStreamContext, problem: Problem, change: Change, revision: int, *, by: str) -> None:
    event = ProblemChanged(
        problem_id=str(problem.id),
        revision=revision,
        change=change,
        level=problem.level,
        session=problem.session,
        changed_at=datetime.now(UTC),
        changed_by=by,
    )
    # One message per revision, however often a retry publishes it.
    await client.publish(
        js, subjects.problem_changed(event.problem_id), event, msg_id=f"problem-{problem.id}-{revision}"
    )


@dataclass
class SeedReport:
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: int = 0
    levels_changed: int = 0
    sessions_changed: int = 0

    def __str__(self) -> str:
        return (
            f"{len(self.created)} problems created, {len(self.updated)} updated, {self.unchanged} unchanged; "
            f"{self.levels_changed} levels and {self.sessions_changed} sessions changed"
        )


async def seed(js: JetStreamContext, store: CurriculumStore, curriculum: Curriculum) -> SeedReport:
    """Load the files into MongoDB, idempotently: running it again changes nothing; an edited file
    updates that problem (a new revision) and publishes its change event."""
    report = SeedReport()
    for level in curriculum.levels:
        report.levels_changed += await store.put_level(level)
    for session in curriculum.sessions:
        report.sessions_changed += await store.put_session(session)
    for problem in curriculum.problems:
        outcome = await store.put_problem(problem, by="seed", source="files")
        if outcome is None:
            report.unchanged += 1
            continue
        change, revision = outcome
        (report.created if change == "created" else report.updated).append(problem.id)
        await publish_change(js, problem, change, revision, by="seed")
    return report
