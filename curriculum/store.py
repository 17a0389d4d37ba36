"""The curriculum in MongoDB: beanie documents and the one service that writes them.

Owner: the curriculum (this package). Writers: the gateway's problem routes (teachers) and
``coderunner seed`` (the files), both through :class:`CurriculumStore`; every write of a problem is
one document write (tests are embedded: nothing partial is ever stored) followed by a
``ProblemChanged`` event. The grading consumer only reads (:meth:`CurriculumStore.problem`).

Problems are never removed: a deleted problem is marked so (its id is never reused, and a job
submitted before the deletion is still graded).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from beanie import Document, SortDirection
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from curriculum.model import Level, Problem, Session, check

log = logging.getLogger(__name__)
UP = SortDirection.ASCENDING

DATABASE = "coderunner"
# Problems created through the API get ids from here up; the files use ids below it.
FIRST_API_ID = 10_000


class LevelDocument(Document):
    slug: str
    body: dict[str, Any]

    class Settings:
        name = "curriculum_levels"
        indexes = [IndexModel([("slug", ASCENDING)], unique=True)]


class SessionDocument(Document):
    session_id: str
    level: str
    order: int
    body: dict[str, Any]

    class Settings:
        name = "curriculum_sessions"
        indexes = [IndexModel([("session_id", ASCENDING)], unique=True), IndexModel([("level", ASCENDING)])]


class ProblemDocument(Document):
    problem_id: int
    level: str
    session: str
    order: int
    revision: int
    digest: str
    source: Literal["files", "api"]
    deleted: bool = False
    updated_at: datetime
    updated_by: str
    # The :class:`curriculum.model.Problem`, as msgspec encodes it.
    body: dict[str, Any]

    class Settings:
        name = "problems"
        indexes = [
            IndexModel([("problem_id", ASCENDING)], unique=True),
            IndexModel([("level", ASCENDING), ("session", ASCENDING), ("order", ASCENDING)]),
        ]

    def problem(self) -> Problem:
        return msgspec.convert(self.body, Problem)


DOCUMENTS: list[type[Document]] = [LevelDocument, SessionDocument, ProblemDocument]

Change = Literal["created", "updated", "deleted"]


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    """A problem as stored: the problem and its revision."""

    problem: Problem
    revision: int


def _body(problem: Problem) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(problem)
    return body


class CurriculumStore:
    """Reads and writes of the curriculum. Needs ``init_beanie`` with :data:`DOCUMENTS` first."""

    # --- reads -------------------------------------------------------------------------------------

    async def problem(self, problem_id: int, *, include_deleted: bool = False) -> Stored | None:
        doc = await ProblemDocument.find_one(ProblemDocument.problem_id == problem_id)
        if doc is None or (doc.deleted and not include_deleted):
            return None
        return Stored(problem=doc.problem(), revision=doc.revision)

    async def problems(
        self, *, level: str | None = None, session: str | None = None, skip: int = 0, limit: int = 20
    ) -> tuple[list[Stored], int]:
        query: dict[str, Any] = {"deleted": False}
        if level is not None:
            query["level"] = level
        if session is not None:
            query["session"] = session
        total = await ProblemDocument.find(query).count()
        docs = (
            await ProblemDocument.find(query)
            .sort([("level", UP), ("session", UP), ("order", UP), ("problem_id", UP)])
            .skip(skip)
            .limit(limit)
            .to_list()
        )
        return [Stored(problem=d.problem(), revision=d.revision) for d in docs], total

    async def levels(self) -> list[Level]:
        docs = await LevelDocument.find_all().to_list()
        levels = [msgspec.convert(d.body, Level) for d in docs]
        return sorted(levels, key=lambda level: level.min_age)

    async def session(self, session_id: str) -> Session | None:
        doc = await SessionDocument.find_one(SessionDocument.session_id == session_id)
        return None if doc is None else msgspec.convert(doc.body, Session)

    async def sessions(self, level: str | None = None) -> list[Session]:
        query: dict[str, Any] = {} if level is None else {"level": level}
        docs = await SessionDocument.find(query).sort([("level", UP), ("order", UP)]).to_list()
        return [msgspec.convert(d.body, Session) for d in docs]

    async def is_empty(self) -> bool:
        return await ProblemDocument.find_all().count() == 0

    # --- writes (each returns what changed, for the caller to publish) ------------------------------

    async def put_level(self, level: Level) -> bool:
        return await _put(LevelDocument, {"slug": level.slug}, {"slug": level.slug, "body": msgspec.to_builtins(level)})

    async def put_session(self, session: Session) -> bool:
        fields = {
            "session_id": session.id,
            "level": session.level,
            "order": session.order,
            "body": msgspec.to_builtins(session),
        }
        return await _put(SessionDocument, {"session_id": session.id}, fields)

    async def put_problem(
        self,
        problem: Problem,
        *,
        by: str,
        source: Literal["files", "api"],
        expected_revision: int | None = None,
    ) -> tuple[Change, int] | None:
        """Create or replace ``problem`` (by id). Returns (change, revision), or None if unchanged.

        With ``expected_revision`` (an edit of what the editor read), the write happens only if the
        problem is still at that revision, so no concurrent edit or deletion is silently undone.
        """
        check(problem)
        digest = problem.digest()
        doc = await ProblemDocument.find_one(ProblemDocument.problem_id == problem.id)
        if expected_revision is not None and (doc is None or doc.revision != expected_revision):
            current = "gone" if doc is None else f"at revision {doc.revision}"
            raise EditConflict(
                f"problem {problem.id} is {current}, not at revision {expected_revision}: it was changed meanwhile; "
                "reload and retry"
            )
        now = datetime.now(UTC)
        if doc is None:
            await ProblemDocument(
                problem_id=problem.id,
                level=problem.level,
                session=problem.session,
                order=problem.order,
                revision=1,
                digest=digest,
                source=source,
                updated_at=now,
                updated_by=by,
                body=_body(problem),
            ).insert()
            return "created", 1
        if doc.digest == digest and not doc.deleted:
            return None
        # Guarded by the revision read: a concurrent edit makes this match nothing (then: conflict).
        revision = doc.revision + 1
        result = await ProblemDocument.get_pymongo_collection().update_one(
            {"problem_id": problem.id, "revision": doc.revision},
            {
                "$set": {
                    "level": problem.level,
                    "session": problem.session,
                    "order": problem.order,
                    "revision": revision,
                    "digest": digest,
                    "deleted": False,
                    "updated_at": now,
                    "updated_by": by,
                    "body": _body(problem),
                }
            },
        )
        if result.matched_count != 1:
            raise EditConflict(f"problem {problem.id} was changed by someone else meanwhile; reload and retry")
        return ("created" if doc.deleted else "updated"), revision

    async def delete_problem(self, problem_id: int, *, by: str, expected_revision: int | None = None) -> int | None:
        """Mark a problem deleted; returns its new revision, or None if there was none."""
        doc = await ProblemDocument.find_one(ProblemDocument.problem_id == problem_id)
        if doc is None or doc.deleted:
            return None
        if expected_revision is not None and doc.revision != expected_revision:
            raise EditConflict(f"problem {problem_id} is at revision {doc.revision}, not {expected_revision}")
        revision = doc.revision + 1
        result = await ProblemDocument.get_pymongo_collection().update_one(
            {"problem_id": problem_id, "revision": doc.revision},
            {"$set": {"deleted": True, "revision": revision, "updated_at": datetime.now(UTC), "updated_by": by}},
        )
        if result.matched_count != 1:
            raise EditConflict(f"problem {problem_id} was changed by someone else meanwhile; reload and retry")
        return revision

    async def next_problem_id(self) -> int:
        """An id for a problem created through the API (above every existing one)."""
        last = await ProblemDocument.find_all().sort([("problem_id", SortDirection.DESCENDING)]).limit(1).to_list()
        return max(FIRST_API_ID, (last[0].problem_id + 1) if last else 0)

    async def create_problem(self, problem: Problem, *, by: str) -> tuple[Problem, int]:
        """Insert a new problem under a fresh id (retrying if another writer took it)."""
        for _ in range(5):
            candidate = msgspec.structs.replace(problem, id=await self.next_problem_id())
            try:
                change = await self.put_problem(candidate, by=by, source="api")
            except DuplicateKeyError:
                continue
            assert change is not None
            return candidate, change[1]
        raise EditConflict("could not allocate a problem id; retry")


class EditConflict(Exception):
    """Someone else changed the problem between our read and our write."""


async def _put(doc_type: type[Document], key: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Upsert a document; True if it changed."""
    collection = doc_type.get_pymongo_collection()
    current = await collection.find_one(key)
    if current is not None and all(current.get(k) == v for k, v in fields.items()):
        return False
    await collection.update_one(key, {"$set": fields}, upsert=True)
    return True
