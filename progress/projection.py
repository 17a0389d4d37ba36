"""The progress projection: stored results and each student's progress, folded from the streams.

Owned and written by the progress process only (``coderunner consume progress``); ``coderunner
rebuild progress`` writes the same projection into fresh collections. The gateway only reads.

Collections (names in :class:`Names`, so a rebuild can write beside the live ones):

- ``execution_records``: one per job (who, what, when, mode, problem, verdict, score, the result
  document with output and per-test results). Guarded by ``result_seq``.
- ``progress_items``: one per (user, item), item ``problem:<id>`` or ``reading:<sessionId>``:
  attempts, best score, solved, first-solved time, last code. Guarded by ``exec_seq`` (EXECUTIONS)
  and ``progress_seq`` (PROGRESS).
- ``progress_days``: one per (user, UTC day) with activity: the streak.

Exactly once: every write of an event carries the event's stream sequence and matches only a
document whose recorded sequence is lower (``$lt``), in the same write as the change. An event
applied before matches nothing; its upsert then hits the unique index, and that is the answer
"already applied". The durables deliver in order (``in_order``), so a lower sequence never
arrives after a higher one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schemas.grades import Graded, GradeVerdict
from schemas.progress import AttemptRecorded, ItemCompleted
from schemas.results import JobResult
from schemas.submissions import SubmissionRequested

CODE_KEPT = 20_000


@dataclass(frozen=True, slots=True)
class Names:
    records: str = "execution_records"
    items: str = "progress_items"
    days: str = "progress_days"

    def suffixed(self, suffix: str) -> Names:
        return Names(f"{self.records}_{suffix}", f"{self.items}_{suffix}", f"{self.days}_{suffix}")


LIVE = Names()


def problem_item(problem_id: str) -> str:
    return f"problem:{problem_id}"


def reading_item(session_id: str) -> str:
    return f"reading:{session_id}"


def read_stamp(value: str | datetime | None) -> datetime | None:
    """A time the projection stored (:func:`stamp`), as an aware datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def stamp(at: datetime) -> str:
    """A time as the projection stores it: fixed-width ISO 8601 UTC text, which sorts and compares
    (``$min``, ``sort``) like the time itself. Not a BSON date: the MongoDB-wire server used locally
    turns a date into text when ``$set`` updates an existing document (real MongoDB does not), and a
    field must not hold both."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Projection:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], names: Names = LIVE) -> None:
        self.db = db
        self.names = names
        self.records = db[names.records]
        self.items = db[names.items]
        self.days = db[names.days]
        # A problem's level and session (read from the curriculum; they rarely change).
        self._places: dict[str, tuple[str, str]] = {}

    async def ensure_indexes(self) -> None:
        await self.records.create_indexes(
            [
                IndexModel([("job_id", ASCENDING)], unique=True),
                IndexModel([("user_id", ASCENDING), ("finished_at", DESCENDING)]),
            ]
        )
        await self.items.create_indexes([IndexModel([("user_id", ASCENDING), ("item", ASCENDING)], unique=True)])
        await self.days.create_indexes([IndexModel([("user_id", ASCENDING), ("day", ASCENDING)], unique=True)])

    async def _upsert(self, collection: Any, key: dict[str, Any], guard: str, seq: int, update: dict[str, Any]) -> bool:
        """Apply ``update`` unless the event (``seq``) was applied already. True if it changed."""
        try:
            result = await collection.update_one({**key, guard: {"$lt": seq}}, update, upsert=True)
        except DuplicateKeyError:
            return False  # the document exists with this sequence or a later one: applied before
        return bool(result.modified_count or result.upserted_id is not None)

    async def _place(self, problem_id: str | None) -> tuple[str, str]:
        if problem_id is None:
            return "", ""
        if problem_id not in self._places and problem_id.isdigit():
            doc = await self.db["problems"].find_one({"problem_id": int(problem_id)}, {"level": 1, "session": 1})
            if doc is not None:
                self._places[problem_id] = (doc.get("level", ""), doc.get("session", ""))
        return self._places.get(problem_id, ("", ""))

    # --- stored results -----------------------------------------------------------------------------

    async def result(self, job: SubmissionRequested, result: JobResult, seq: int, at: datetime) -> bool:
        """The job's result as the stream says it is now (after ``finished``, again after ``graded``)."""
        grade = result.grade
        fields = {
            "status": result.status,
            "verdict": (grade.verdict.value if grade else (result.verdict.value if result.verdict else None)),
            "score": grade.score if grade else None,
            "finished_at": stamp(at),
            "result": msgspec.to_builtins(result),
            "result_seq": seq,
        }
        base = {
            "user_id": job.user_id,
            "mode": job.mode,
            "scope": job.scope if job.mode == "grade" else None,
            "problem_id": job.problem_id,
            "code": job.code[:CODE_KEPT],
            "submitted_at": stamp(job.submitted_at),
        }
        return await self._upsert(
            self.records, {"job_id": job.job_id}, "result_seq", seq, {"$set": fields, "$setOnInsert": base}
        )

    # --- progress -------------------------------------------------------------------------------------

    async def graded(self, job: SubmissionRequested, event: Graded, seq: int) -> str | None:
        """A submission's grade (Run on a problem does not count). Returns the item it concerns
        (whether applied now or before: its change is announced either way, idempotently)."""
        grade = event.grade
        if grade.scope != "all" or job.problem_id is None:
            return None
        level, session = await self._place(job.problem_id)
        item = problem_item(job.problem_id)
        sets: dict[str, Any] = {
            "exec_seq": seq,
            "problem_id": job.problem_id,
            "level": level,
            "session": session,
            "last_code": job.code[:CODE_KEPT],
            "last_verdict": grade.verdict.value,
            "last_submitted_at": stamp(event.graded_at),
        }
        update: dict[str, Any] = {
            "$inc": {"attempts": 1},
            "$max": {"best_score": grade.score},
            "$set": sets,
            "$setOnInsert": {"progress_seq": 0},
        }
        if grade.verdict is GradeVerdict.ACCEPTED:
            sets.update(solved=True, completed=True)
            update["$min"] = {"first_solved_at": stamp(event.graded_at)}
        await self._upsert(self.items, {"user_id": job.user_id, "item": item}, "exec_seq", seq, update)
        await self._active(job.user_id, event.graded_at)
        return item

    async def attempt(self, event: AttemptRecorded, seq: int) -> str | None:
        level, session = await self._place(event.problem_id)
        item = problem_item(event.problem_id)
        sets: dict[str, Any] = {
            "progress_seq": seq,
            "problem_id": event.problem_id,
            "level": level,
            "session": session,
            "last_submitted_at": stamp(event.at),
        }
        if event.code:
            sets["last_code"] = event.code[:CODE_KEPT]
        update = {"$inc": {"attempts": 1}, "$set": sets, "$setOnInsert": {"exec_seq": 0}}
        await self._upsert(self.items, {"user_id": event.user_id, "item": item}, "progress_seq", seq, update)
        await self._active(event.user_id, event.at)
        return item

    async def complete(self, event: ItemCompleted, seq: int) -> str | None:
        kind, _, name = event.item.partition(":")
        if kind == "problem":
            level, session = await self._place(name)
        else:
            doc = await self.db["curriculum_sessions"].find_one({"session_id": name}, {"level": 1})
            level, session = (doc or {}).get("level", ""), name
        sets: dict[str, Any] = {"progress_seq": seq, "completed": True, "level": level, "session": session}
        if kind == "problem":
            sets["problem_id"] = name
        update = {
            "$set": sets,
            "$min": {"completed_at": stamp(event.at)},
            "$setOnInsert": {"exec_seq": 0, "attempts": 0},
        }
        key = {"user_id": event.user_id, "item": event.item}
        await self._upsert(self.items, key, "progress_seq", seq, update)
        await self._active(event.user_id, event.at)
        return event.item

    async def _active(self, user_id: str, at: datetime) -> None:
        await self.days.update_one(
            {"user_id": user_id, "day": _day(at)}, {"$setOnInsert": {"user_id": user_id, "day": _day(at)}}, upsert=True
        )


# --- which collections are live (a rebuild swaps them) ------------------------------------------------

POINTERS = "projection_pointers"
POINTER_ID = "progress"


class Pointer(msgspec.Struct, frozen=True, kw_only=True):
    """The live collections' suffix ("" for the original names), and whether a rebuild is swapping
    them in right now (the consumer then holds its writes back: redelivered a moment later)."""

    suffix: str = ""
    switching: bool = False

    @property
    def names(self) -> Names:
        return LIVE.suffixed(self.suffix) if self.suffix else LIVE


async def pointer(db: AsyncDatabase[dict[str, Any]]) -> Pointer:
    doc = await db[POINTERS].find_one({"_id": POINTER_ID})
    if doc is None:
        return Pointer()
    return Pointer(suffix=doc.get("suffix", ""), switching=bool(doc.get("switching", False)))


async def set_pointer(db: AsyncDatabase[dict[str, Any]], value: Pointer) -> None:
    await db[POINTERS].update_one(
        {"_id": POINTER_ID}, {"$set": {"suffix": value.suffix, "switching": value.switching}}, upsert=True
    )
