"""Progress routes: the signed-in student's progress (staff: anyone's, with ``userId``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from gateway.dependencies import AUTHENTICATED, IdempotencyKey, services_of
from gateway.progress.models import AttemptRequest, CompleteRequest, ProgressList, Recorded, Summary
from gateway.progress.service import ProgressService
from gateway.tokens import Principal

SLUG = r"^[a-z0-9]+(-[a-z0-9]+)*$"
USER = Parameter(query="userId", required=False, description="Staff only: another user's progress", max_length=64)


def provide_progress(state: State) -> ProgressService:
    return services_of(state).progress


class ProgressController(Controller):
    path = "/progress"
    tags = ["progress"]
    dependencies = {"progress": Provide(provide_progress, sync_to_thread=False), "principal": AUTHENTICATED}

    @get("/", summary="Progress per problem and reading (filter by level and session)")
    async def list_progress(
        self,
        progress: ProgressService,
        principal: Principal,
        level: Annotated[str | None, Parameter(pattern=SLUG, max_length=16)] = None,
        session: Annotated[str | None, Parameter(pattern=SLUG, max_length=64)] = None,
        user_id: Annotated[str | None, USER] = None,
    ) -> ProgressList:
        return await progress.list(progress.whose(principal, user_id), level=level, session=session)

    @get("/summary", summary="Solved counts per level and session, attempts, streak (cached for a minute)")
    async def summary(
        self, progress: ProgressService, principal: Principal, user_id: Annotated[str | None, USER] = None
    ) -> Summary:
        return await progress.summary(progress.whose(principal, user_id))

    @post("/attempt", status_code=HTTP_202_ACCEPTED, summary="Record an attempt at a problem")
    async def attempt(
        self,
        data: AttemptRequest,
        progress: ProgressService,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Recorded:
        return await progress.attempt(principal, data, idempotency_key)

    @post(
        "/complete",
        status_code=HTTP_202_ACCEPTED,
        summary="Mark a reading, or a problem without tests, as complete",
        description="A problem with tests is complete only when a submission is accepted (409 otherwise).",
    )
    async def complete(
        self,
        data: CompleteRequest,
        progress: ProgressService,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Recorded:
        return await progress.complete(principal, data, idempotency_key)
