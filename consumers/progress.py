"""Progress consumer: keeps every finished job as a record of the student's history in MongoDB.

Idempotent by construction: one upsert per job keyed by a unique ``job_id`` with
``$setOnInsert``, so a redelivered event writes nothing new.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from beanie import Document, init_beanie
from pymongo import ASCENDING, IndexModel

from consumers.base import Delivery, Deps
from schemas.executions import ExecutionFinished


class ExecutionRecord(Document):
    """One finished job. Written only by the progress process."""

    job_id: str
    user_id: str
    verdict: str
    exit_code: int | None = None
    duration_ms: int
    attempt: int
    finished_at: datetime
    stream_seq: int

    class Settings:
        name = "execution_records"
        indexes = [
            IndexModel([("job_id", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("finished_at", ASCENDING)]),
        ]


DOCUMENTS = [ExecutionRecord]
DATABASE = "coderunner"


class ProgressRecorder:
    def __init__(self, user_of_job: Callable[[str], Awaitable[str]]) -> None:
        # Finished events do not repeat the submission; the owner is read from SUBMISSIONS.
        self.user_of_job = user_of_job

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, ExecutionFinished):
            return
        user_id = await self.user_of_job(event.job_id)
        record = ExecutionRecord(
            job_id=event.job_id,
            user_id=user_id,
            verdict=event.verdict.value,
            exit_code=event.exit_code,
            duration_ms=event.duration_ms,
            attempt=event.attempt,
            finished_at=event.finished_at,
            stream_seq=delivery.stream_seq,
        )
        collection = ExecutionRecord.get_pymongo_collection()
        await collection.update_one(
            {"job_id": event.job_id},
            {"$setOnInsert": record.model_dump(exclude={"id", "revision_id"})},
            upsert=True,
        )


async def build(deps: Deps) -> ProgressRecorder:
    await init_beanie(database=deps.mongo.get_default_database(DATABASE), document_models=DOCUMENTS)

    async def user_of(job_id: str) -> str:
        return (await deps.submission(job_id)).user_id

    return ProgressRecorder(user_of)
