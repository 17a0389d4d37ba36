"""Problems: the curriculum for everyone to read, cached in Redis, and teachers' edits.

Reads are cached as the response bodies (JSON) for :data:`CACHE_TTL_SECONDS`, under keys that
include a generation number (``coderunner:curriculum:<gen>:...``). Any change to a problem bumps
the generation (the caching consumer, on each ``ProblemChanged``), so every cached body of the
curriculum is obsolete at once: nothing has to know which lists a problem appeared in. Hidden tests
are never cached. Redis is an optimisation only: when it fails, the request is served from MongoDB.

Writes go to MongoDB through :class:`curriculum.store.CurriculumStore` (one whole document each,
so nothing partial is stored), then a ``ProblemChanged`` is published.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from consumers.caching import CURRICULUM_GEN_KEY
from curriculum.changes import publish_change
from curriculum.model import Problem, ProblemInvalid, TestCase, check
from curriculum.store import FIRST_API_ID, Change, CurriculumStore, EditConflict, Stored
from gateway.errors import Conflict, GatewayError, InvalidRequest
from gateway.guards import is_staff
from gateway.problems.models import (
    LevelOut,
    ProblemIn,
    ProblemOut,
    ProblemPage,
    ProblemSummary,
    ProblemTest,
    PublicTest,
    ReplacedTest,
    SessionDetail,
    SessionOut,
    TeacherProblem,
)
from gateway.tokens import Principal
from telemetry import metrics

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 300
CACHE_PREFIX = "coderunner:curriculum"
MAX_PROBLEM_ID = 2**31 - 1
PAGE_SIZE_MAX = 100
PAGE_MAX = 100_000  # skip stays a small number for MongoDB
SESSION_PROBLEMS_MAX = 999  # a session's orders are 1..999
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


T = TypeVar("T")


class ProblemNotFound(GatewayError, status=404, title="Problem not found", slug="problem-not-found"): ...


class ProblemTestNotFound(GatewayError, status=404, title="Test not found", slug="test-not-found"): ...


class SessionNotFound(GatewayError, status=404, title="Session not found", slug="session-not-found"): ...


class ProblemRejected(GatewayError, status=422, title="Invalid problem", slug="invalid-problem"): ...


def _not_found(problem_id: int) -> ProblemNotFound:
    # One detail for "does not exist", "deleted" and "not yours to see": ids reveal nothing.
    return ProblemNotFound(f"no problem {problem_id}")


# The model's messages name its (snake_case) fields; the API's bodies spell them in camelCase.
_CAMEL = {name: re.sub(r"_([a-z])", lambda m: m[1].upper(), name) for name in Problem.__struct_fields__ if "_" in name}


def _rejected(exc: Exception) -> ProblemRejected:
    detail = str(exc)
    for snake, camel in _CAMEL.items():
        detail = detail.replace(snake, camel)
    return ProblemRejected(detail)


# --- views ---------------------------------------------------------------------------------------


def summary(problem: Problem) -> ProblemSummary:
    return msgspec.convert(problem, ProblemSummary, from_attributes=True)


def student_view(stored: Stored) -> ProblemOut:
    problem = stored.problem
    public = len(problem.public_tests())
    # Field by field (never a copy of the whole problem): a field added to the model later stays
    # out of students' answers until someone decides it belongs there.
    return ProblemOut(
        id=problem.id,
        slug=problem.slug,
        title=problem.title,
        level=problem.level,
        session=problem.session,
        order=problem.order,
        tags=list(problem.tags),
        statement=problem.statement,
        starter_code=problem.starter_code,
        hint=problem.hint,
        grading=problem.grading,
        function=problem.function,
        comparison=problem.comparison,
        time_limit_ms=problem.time_limit_ms,
        memory_limit_mb=problem.memory_limit_mb,
        revision=stored.revision,
        public_test_count=public,
        hidden_test_count=len(problem.tests) - public,
    )


def public_tests(problem: Problem) -> list[PublicTest]:
    return [
        PublicTest(
            id=t.id,
            stdin=t.stdin,
            args=t.args,
            expected=t.expected,
            script=t.script,
            comparison=problem.comparison_of(t),
            weight=t.weight,
        )
        for t in problem.public_tests()
    ]


def teacher_view(stored: Stored) -> TeacherProblem:
    fields = SimpleNamespace(**msgspec.structs.asdict(stored.problem), revision=stored.revision)
    return msgspec.convert(fields, TeacherProblem, from_attributes=True)


def to_problem(body: ProblemIn, problem_id: int) -> Problem:
    """The curriculum's problem from a teacher's body; converting checks every constraint again."""
    fields: dict[str, Any] = {name: getattr(body, name) for name in body.__struct_fields__}
    try:
        return msgspec.convert({**fields, "id": problem_id}, Problem, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise _rejected(exc) from None


def to_case(test: ProblemTest) -> TestCase:
    try:
        return msgspec.convert(test, TestCase, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise _rejected(exc) from None


class ProblemService:
    def __init__(self, js: JetStreamContext, redis: aioredis.Redis, store: CurriculumStore | None = None) -> None:
        self.js = js
        self.redis = redis
        self.store = store or CurriculumStore()

    # --- the cache -------------------------------------------------------------------------------

    async def _cached(self, name: str, type_: Any, load: Callable[[], Awaitable[T]]) -> T:
        """``name``'s body from the cache, else from ``load`` (then cached). Errors are not cached."""
        key: str | None = None
        raw: bytes | str | None = None
        try:
            # The generation is read before MongoDB is: a body read before a change is stored under
            # the old generation, which nobody reads once the change has bumped it.
            generation = int(await self.redis.get(CURRICULUM_GEN_KEY) or 0)
            key = f"{CACHE_PREFIX}:{generation}:{name}"
            raw = await self.redis.get(key)
        except (RedisError, ValueError) as exc:
            log.warning("curriculum cache unavailable for %s (%s); reading MongoDB", name, exc)
        if raw is not None:
            try:
                value: T = msgspec.json.decode(raw, type=type_)
            except msgspec.DecodeError as exc:  # written by another version of the gateway
                log.warning("curriculum cache entry %s unreadable (%s); reading MongoDB", key, exc)
            else:
                metrics.CACHE.labels("curriculum", "hit").inc()
                return value
        metrics.CACHE.labels("curriculum", "miss").inc()
        value = await load()
        if key is not None:
            try:
                await self.redis.set(key, msgspec.json.encode(value), ex=CACHE_TTL_SECONDS)
            except RedisError as exc:
                log.warning("curriculum cache write of %s failed: %s", key, exc)
        return value

    async def invalidate(self) -> None:
        """Make every cached body obsolete (best effort: the TTL bounds staleness otherwise)."""
        try:
            await self.redis.incr(CURRICULUM_GEN_KEY)
        except RedisError as exc:
            log.warning(
                "curriculum cache invalidation failed: %s (cached bodies expire within %ss)", exc, CACHE_TTL_SECONDS
            )

    # --- reads -----------------------------------------------------------------------------------

    async def _stored(self, problem_id: int) -> Stored:
        # Ids beyond the model's range exist nowhere (and would overflow MongoDB's integers).
        if not 1 <= problem_id <= MAX_PROBLEM_ID:
            raise _not_found(problem_id)
        stored = await self.store.problem(problem_id)
        if stored is None:
            raise _not_found(problem_id)
        return stored

    async def problems(self, *, level: str | None, session: str | None, page: int, page_size: int) -> ProblemPage:
        if not 1 <= page <= PAGE_MAX:
            raise InvalidRequest(f"page must be an integer from 1 to {PAGE_MAX}")
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise InvalidRequest(f"pageSize must be an integer from 1 to {PAGE_SIZE_MAX}")

        async def load() -> ProblemPage:
            found, total = await self.store.problems(
                level=level, session=session, skip=(page - 1) * page_size, limit=page_size
            )
            return ProblemPage(items=[summary(s.problem) for s in found], page=page, page_size=page_size, total=total)

        return await self._cached(f"list:{level or '*'}:{session or '*'}:{page}:{page_size}", ProblemPage, load)

    async def problem(self, problem_id: int) -> ProblemOut:
        async def load() -> ProblemOut:
            return student_view(await self._stored(problem_id))

        return await self._cached(f"problem:{problem_id}", ProblemOut, load)

    async def public_tests(self, problem_id: int) -> list[PublicTest]:
        async def load() -> list[PublicTest]:
            return public_tests((await self._stored(problem_id)).problem)

        return await self._cached(f"tests:{problem_id}", list[PublicTest], load)

    async def all_tests(self, problem_id: int, principal: Principal | None) -> list[ProblemTest]:
        """Every test, hidden ones included: staff only; anyone else is told there is no such problem."""
        if principal is None or not is_staff(principal):
            raise _not_found(problem_id)
        problem = (await self._stored(problem_id)).problem
        return [msgspec.convert(t, ProblemTest, from_attributes=True) for t in problem.tests]

    async def edit_view(self, problem_id: int, principal: Principal | None) -> TeacherProblem:
        """The whole problem (solutions and hidden tests included): staff only, as ``all_tests``."""
        if principal is None or not is_staff(principal):
            raise _not_found(problem_id)
        return teacher_view(await self._stored(problem_id))

    async def levels(self) -> list[LevelOut]:
        async def load() -> list[LevelOut]:
            return [msgspec.convert(level, LevelOut, from_attributes=True) for level in await self.store.levels()]

        return await self._cached("levels", list[LevelOut], load)

    async def levels_for_age(self, age: int) -> list[LevelOut]:
        if not 0 <= age <= 150:
            raise InvalidRequest("age must be an integer from 0 to 150")
        return [level for level in await self.levels() if level.min_age <= age <= level.max_age]

    async def sessions(self, level: str | None) -> list[SessionOut]:
        async def load() -> list[SessionOut]:
            return [msgspec.convert(s, SessionOut, from_attributes=True) for s in await self.store.sessions(level)]

        return await self._cached(f"sessions:{level or '*'}", list[SessionOut], load)

    async def session(self, session_id: str) -> SessionDetail:
        # Only slugs are session ids; anything else is not looked up (nor becomes a cache key).
        if len(session_id) > 64 or not _SLUG.fullmatch(session_id):
            raise SessionNotFound(f"no session {session_id!r}")

        async def load() -> SessionDetail:
            session = await self.store.session(session_id)
            if session is None:
                raise SessionNotFound(f"no session {session_id!r}")
            found, _ = await self.store.problems(session=session_id, limit=SESSION_PROBLEMS_MAX)
            return SessionDetail(
                id=session.id,
                level=session.level,
                order=session.order,
                title=session.title,
                introduction=session.introduction,
                problems=[summary(s.problem) for s in found],
            )

        return await self._cached(f"session:{session_id}", SessionDetail, load)

    async def problem_for_grading(self, problem_id: int) -> Stored:
        """The whole problem, hidden tests included, for building a submission's test inputs.

        Straight from MongoDB: a submission must be graded against the current revision.
        """
        return await self._stored(problem_id)

    # --- writes (teachers and admins: the routes' guard) -----------------------------------------

    async def create(self, body: ProblemIn, *, by: str) -> TeacherProblem:
        problem = await self._valid(to_problem(body, FIRST_API_ID))  # the store allocates the id
        try:
            created, revision = await self.store.create_problem(problem, by=by)
        except ProblemInvalid as exc:
            raise _rejected(exc) from None
        except EditConflict as exc:
            raise Conflict(str(exc)) from None
        await self._announce(created, "created", revision, by)
        return teacher_view(Stored(problem=created, revision=revision))

    async def replace(
        self, problem_id: int, body: ProblemIn, *, by: str, if_match: int | None = None
    ) -> TeacherProblem:
        current = await self._stored(problem_id)  # 404 for a problem that does not exist (or was deleted)
        _check_precondition(current, if_match)
        return await self._put(await self._valid(to_problem(body, problem_id)), by, current.revision)

    async def delete(self, problem_id: int, *, by: str, if_match: int | None = None) -> None:
        current = await self._stored(problem_id)
        _check_precondition(current, if_match)
        try:
            revision = await self.store.delete_problem(problem_id, by=by, expected_revision=current.revision)
        except EditConflict as exc:
            raise Conflict(str(exc)) from None
        if revision is None:  # deleted by someone else meanwhile
            raise _not_found(problem_id)
        await self._announce(current.problem, "deleted", revision, by)

    async def add_test(self, problem_id: int, test: ProblemTest, *, by: str) -> TeacherProblem:
        stored = await self._stored(problem_id)
        problem = stored.problem
        if any(t.id == test.id for t in problem.tests):
            raise Conflict(f"problem {problem_id} already has a test {test.id!r}")
        tests = [*problem.tests, to_case(test)]
        return await self._put(msgspec.structs.replace(problem, tests=tests), by, stored.revision)

    async def replace_test(self, problem_id: int, test_id: str, body: ReplacedTest, *, by: str) -> TeacherProblem:
        fields = msgspec.structs.asdict(body)
        test = ProblemTest(**{**fields, "id": body.id or test_id})
        if test.id != test_id:
            # 409, not 400: the body is valid on its own (the OpenAPI schema cannot relate it to the path).
            raise Conflict(f"id: the body's id {test.id!r} is not the test {test_id!r} of the path")
        stored = await self._stored(problem_id)
        problem = stored.problem
        index = self._test_index(problem, test_id)
        tests = list(problem.tests)
        tests[index] = to_case(test)
        return await self._put(msgspec.structs.replace(problem, tests=tests), by, stored.revision)

    async def delete_test(self, problem_id: int, test_id: str, *, by: str) -> None:
        stored = await self._stored(problem_id)
        problem = stored.problem
        index = self._test_index(problem, test_id)
        tests = [t for i, t in enumerate(problem.tests) if i != index]
        await self._put(msgspec.structs.replace(problem, tests=tests), by, stored.revision)

    @staticmethod
    def _test_index(problem: Problem, test_id: str) -> int:
        for i, t in enumerate(problem.tests):
            if t.id == test_id:
                return i
        raise ProblemTestNotFound(f"problem {problem.id} has no test {test_id!r}")

    async def _valid(self, problem: Problem) -> Problem:
        """The rules across fields, and the level and session that must exist (422 naming the field)."""
        try:
            check(problem)
        except ProblemInvalid as exc:
            raise _rejected(exc) from None
        if problem.level not in {level.slug for level in await self.store.levels()}:
            raise ProblemRejected(f"level: there is no level {problem.level!r}")
        session = await self.store.session(problem.session)
        if session is None:
            raise ProblemRejected(f"session: there is no session {problem.session!r}")
        if session.level != problem.level:
            raise ProblemRejected(
                f"session: the session {problem.session!r} belongs to level {session.level!r}, not {problem.level!r}"
            )
        return problem

    async def _put(self, problem: Problem, by: str, read_revision: int) -> TeacherProblem:
        """Write an edit of what was read at ``read_revision``: 409 if it changed meanwhile (no
        concurrent edit is lost, and a deleted problem is not brought back)."""
        try:
            outcome = await self.store.put_problem(problem, by=by, source="api", expected_revision=read_revision)
        except ProblemInvalid as exc:
            raise _rejected(exc) from None
        except EditConflict as exc:
            raise Conflict(str(exc)) from None
        if outcome is None:  # nothing changed: no new revision, nothing to announce
            return teacher_view(await self._stored(problem.id))
        change, revision = outcome
        await self._announce(problem, change, revision, by)
        return teacher_view(Stored(problem=problem, revision=revision))

    async def _announce(self, problem: Problem, change: Change, revision: int, by: str) -> None:
        """Publish the change (the caching consumer invalidates on it). The write stands either way:
        if publishing fails, invalidate here so the edit still shows."""
        try:
            await publish_change(self.js, problem, change, revision, by=by)
        except (NatsError, TimeoutError) as exc:
            log.warning(
                "problem %s revision %s %s, but its change event was not published (%s: %s); "
                "invalidating the cache directly",
                problem.id,
                revision,
                change,
                type(exc).__name__,
                exc,
            )
            await self.invalidate()


class PreconditionFailed(GatewayError, status=412, title="Precondition failed", slug="precondition-failed"): ...


def _check_precondition(current: Stored, if_match: int | None) -> None:
    """``If-Match: "<revision>"``: the edit is of that revision, or nothing is changed."""
    if if_match is not None and if_match != current.revision:
        raise PreconditionFailed(
            f"problem {current.problem.id} is at revision {current.revision}, not {if_match}; reload it"
        )
