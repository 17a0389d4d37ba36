"""Problem routes: the curriculum for everyone (no sign-in), hidden tests and edits for staff."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import HeaderParameter, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from curriculum.model import LevelSlug
from gateway.dependencies import AUTHENTICATED, services_of
from gateway.errors import InvalidRequest
from gateway.guards import staff_only
from gateway.problems.models import (
    LevelOut,
    ProblemIn,
    ProblemOut,
    ProblemPage,
    ProblemTest,
    PublicTest,
    ReplacedTest,
    SessionDetail,
    SessionOut,
    TeacherProblem,
)
from gateway.problems.service import PAGE_MAX, PAGE_SIZE_MAX, ProblemService
from gateway.tokens import Principal, bearer_token

SLUG_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_DIGITS = re.compile(r"[0-9]{1,9}")


IF_MATCH = 'The revision the edit is based on (`"3"`); another revision answers 412, changing nothing.'
# Path and header parameters as Litestar checks them (400 otherwise) and OpenAPI shows them.
ProblemId = Annotated[int, Parameter(ge=1, le=2**31 - 1, description="A problem's `id`")]
TestIdParam = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="A test's `id`")]
SessionId = Annotated[str, Parameter(pattern=SLUG_PATTERN, max_length=64, description="A session's `id`")]
Age = Annotated[int, Parameter(ge=0, le=150)]
IfMatch = Annotated[
    str | None, HeaderParameter(name="If-Match", pattern=r'^(\*|(W/)?"?[0-9]{1,9}"?)$', description=IF_MATCH)
]
_REVISION = re.compile(r'(?:W/)?"?([0-9]{1,9})"?')


def _revision(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _REVISION.fullmatch(if_match.strip())
    if not match:
        raise InvalidRequest('If-Match must be a problem revision, e.g. "3"')
    return int(match[1])


def provide_problems(state: State) -> ProblemService:
    return services_of(state).problems


async def provide_bearer_principal(request: Request[Any, Any, Any]) -> Principal | None:
    """The signed-in user, or None without a bearer token (no SSE ticket here: those are for jobs)."""
    token = bearer_token(request.headers)
    return None if token is None else await services_of(request.app.state).tokens.principal(token)


def _int_param(raw: str, name: str, highest: int) -> int:
    # Parsed here rather than by Litestar so that the 400 names the parameter as clients spell it.
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= highest:
        raise InvalidRequest(f"{name} must be an integer from 1 to {highest}")
    return int(raw)


def _int_schema(default: int, highest: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": highest, "default": default}


class ProblemController(Controller):
    path = "/problems"
    tags = ["problems"]
    dependencies = {"problems": Provide(provide_problems, sync_to_thread=False)}

    # --- reads: everyone ---------------------------------------------------------------------------

    @get("/", summary="Problems, by level and session, a page at a time")
    async def list_problems(
        self,
        problems: ProblemService,
        level: LevelSlug | None = None,
        session: Annotated[str | None, Parameter(pattern=SLUG_PATTERN, max_length=64)] = None,
        page: Annotated[str, Parameter(schema_extra=_int_schema(1, PAGE_MAX))] = "1",
        page_size: Annotated[
            str, Parameter(query="pageSize", schema_extra=_int_schema(20, PAGE_SIZE_MAX), description="1 to 100")
        ] = "20",
    ) -> ProblemPage:
        return await problems.problems(
            level=level,
            session=session,
            page=_int_param(page, "page", PAGE_MAX),
            page_size=_int_param(page_size, "pageSize", PAGE_SIZE_MAX),
        )

    @get("/{problem_id:int}", summary="A problem: statement, starter code, limits (no hidden tests)")
    async def problem(self, problem_id: ProblemId, problems: ProblemService) -> ProblemOut:
        return await problems.problem(problem_id)

    @get("/{problem_id:int}/tests", summary="A problem's public tests")
    async def public_tests(self, problem_id: ProblemId, problems: ProblemService) -> list[PublicTest]:
        return await problems.public_tests(problem_id)

    @get(
        "/{problem_id:int}/tests/all",
        summary="Every test of a problem, hidden ones included (teachers and admins)",
        description="Anyone else gets the 404 of a problem that does not exist.",
        dependencies={"principal": Provide(provide_bearer_principal)},
    )
    async def all_tests(
        self, problem_id: ProblemId, problems: ProblemService, principal: Principal | None
    ) -> list[ProblemTest]:
        return await problems.all_tests(problem_id, principal)

    @get(
        "/{problem_id:int}/edit",
        summary="A problem as stored, everything included, to edit it (teachers and admins)",
        description="What `PUT /problems/{id}` takes, plus `id` and `revision` (send it as `If-Match`). "
        "Anyone else gets the 404 of a problem that does not exist.",
        dependencies={"principal": Provide(provide_bearer_principal)},
    )
    async def edit_view(
        self, problem_id: ProblemId, problems: ProblemService, principal: Principal | None
    ) -> TeacherProblem:
        return await problems.edit_view(problem_id, principal)

    @get("/levels", summary="Every level, youngest first")
    async def levels(self, problems: ProblemService) -> list[LevelOut]:
        return await problems.levels()

    @get("/levels/{age:int}", summary="The levels for an age (0 to 150)")
    async def levels_for_age(self, age: Age, problems: ProblemService) -> list[LevelOut]:
        return await problems.levels_for_age(age)

    @get("/sessions", summary="Sessions (lessons), by level and order")
    async def sessions(self, problems: ProblemService, level: LevelSlug | None = None) -> list[SessionOut]:
        return await problems.sessions(level)

    @get("/sessions/{session_id:str}", summary="A session and its problems, in order")
    async def session(self, session_id: SessionId, problems: ProblemService) -> SessionDetail:
        return await problems.session(session_id)

    # --- edits: teachers and admins (401 signed out, 403 students) ---------------------------------

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create a problem (tests included)",
        guards=[staff_only],
        dependencies={"principal": AUTHENTICATED},
    )
    async def create(self, data: ProblemIn, problems: ProblemService, principal: Principal) -> TeacherProblem:
        return await problems.create(data, by=principal.user_id)

    @put(
        "/{problem_id:int}", summary="Replace a problem", guards=[staff_only], dependencies={"principal": AUTHENTICATED}
    )
    async def replace(
        self,
        problem_id: ProblemId,
        data: ProblemIn,
        problems: ProblemService,
        principal: Principal,
        if_match: IfMatch = None,
    ) -> TeacherProblem:
        return await problems.replace(problem_id, data, by=principal.user_id, if_match=_revision(if_match))

    @delete(
        "/{problem_id:int}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a problem",
        guards=[staff_only],
        dependencies={"principal": AUTHENTICATED},
    )
    async def delete_problem(
        self,
        problem_id: ProblemId,
        problems: ProblemService,
        principal: Principal,
        if_match: IfMatch = None,
    ) -> None:
        await problems.delete(problem_id, by=principal.user_id, if_match=_revision(if_match))

    @post(
        "/{problem_id:int}/tests",
        status_code=HTTP_201_CREATED,
        summary="Add a test to a problem",
        guards=[staff_only],
        dependencies={"principal": AUTHENTICATED},
    )
    async def add_test(
        self, problem_id: ProblemId, data: ProblemTest, problems: ProblemService, principal: Principal
    ) -> TeacherProblem:
        return await problems.add_test(problem_id, data, by=principal.user_id)

    @put(
        "/{problem_id:int}/tests/{test_id:str}",
        summary="Replace a test of a problem",
        guards=[staff_only],
        dependencies={"principal": AUTHENTICATED},
    )
    async def replace_test(
        self,
        problem_id: ProblemId,
        test_id: TestIdParam,
        data: ReplacedTest,
        problems: ProblemService,
        principal: Principal,
    ) -> TeacherProblem:
        return await problems.replace_test(problem_id, test_id, data, by=principal.user_id)

    @delete(
        "/{problem_id:int}/tests/{test_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a test from a problem",
        guards=[staff_only],
        dependencies={"principal": AUTHENTICATED},
    )
    async def delete_test(
        self, problem_id: ProblemId, test_id: TestIdParam, problems: ProblemService, principal: Principal
    ) -> None:
        await problems.delete_test(problem_id, test_id, by=principal.user_id)
