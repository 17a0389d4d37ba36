"""Grading consumer: turns finished graded jobs into scores.

Graded submissions need problems with public and hidden tests, which do not exist yet; until then
this process consumes finished events, skips run-mode jobs, and acks. It exists as its own process
with its own durable consumer so that its position in the stream is kept from day one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from consumers.base import Delivery, Deps
from schemas.executions import ExecutionFinished

log = logging.getLogger(__name__)


class Grader:
    def __init__(self, mode_of_job: Callable[[str], Awaitable[str]]) -> None:
        self.mode_of_job = mode_of_job

    async def __call__(self, delivery: Delivery) -> None:
        if not isinstance(delivery.event, ExecutionFinished):
            return
        if await self.mode_of_job(delivery.event.job_id) != "grade":
            return
        log.info("graded job %s finished; scoring arrives with problems", delivery.event.job_id)


async def build(deps: Deps) -> Grader:
    async def mode_of(job_id: str) -> str:
        return (await deps.submission(job_id)).mode

    return Grader(mode_of)
