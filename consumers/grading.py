"""Grading consumer: compares a graded job's observations with its problem's expectations.

Reads ``observed`` and ``finished`` events (its own durable consumer); expectations come from
MongoDB, never from an event, and never enter a sandbox. For each observation it publishes the
test's result at once (``test``: live per-test results); on the job's ``finished`` event it grades
every test and publishes the ``graded`` event.

Idempotent: a job that already has its ``graded`` event is not graded again (checked on the stream
before publishing, and ``Nats-Msg-Id = <jobId>.graded`` covers two graders racing), so a redelivered
event never yields a second, different grade, even if a teacher edited the problem meanwhile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime

from beanie import init_beanie
from nats.js import JetStreamContext

from bus import client, history
from bus.settle import Permanent
from consumers.base import Delivery, Deps
from curriculum.store import DATABASE, DOCUMENTS, CurriculumStore, Stored
from flags.declared import GRADING_NEAR_MISS
from flags.store import FlagReader, RedisSource
from grading import grader
from schemas import subjects
from schemas.deadletter import DeadLetterReason
from schemas.executions import ExecutionFinished, TestObserved, Verdict
from schemas.grades import Graded, TestGraded
from schemas.submissions import SubmissionRequested
from telemetry import metrics

log = logging.getLogger(__name__)

# Jobs being graded whose submission and problem are kept in memory (one snapshot of the problem
# per job: its live results and its grade use the same expectations, and the same flags).
MEMO_JOBS = 512


class Grader:
    def __init__(
        self, js: JetStreamContext, deps: Deps, store: CurriculumStore, flags: FlagReader | None = None
    ) -> None:
        self.js = js
        self.deps = deps
        self.store = store
        self.flags = flags
        self._memo: OrderedDict[str, tuple[SubmissionRequested, Stored, bool]] = OrderedDict()

    async def __call__(self, delivery: Delivery) -> None:
        match delivery.event:
            case TestObserved() as observed:
                await self._observed(observed)
            case ExecutionFinished(graded=True) as finished:
                await self._finished(finished)

    async def _job(self, job_id: str) -> tuple[SubmissionRequested, Stored, bool]:
        """The job's submission, its problem, and whether the grading-near-miss flag is on for its
        student (decided once per job, by a hash of the user id)."""
        if job_id in self._memo:
            self._memo.move_to_end(job_id)
            return self._memo[job_id]
        job = await self.deps.submission(job_id)
        if job.problem_id is None or not job.problem_id.isdigit():
            raise Permanent(DeadLetterReason.INVALID, f"job {job_id} is graded but names no problem")
        stored = await self.store.problem(int(job.problem_id), include_deleted=True)
        if stored is None:
            raise Permanent(DeadLetterReason.INVALID, f"job {job_id}: problem {job.problem_id} does not exist")
        near = self.flags is not None and self.flags.enabled(GRADING_NEAR_MISS, job.user_id)
        self._memo[job_id] = (job, stored, near)
        while len(self._memo) > MEMO_JOBS:
            self._memo.popitem(last=False)
        return job, stored, near

    async def _observed(self, obs: TestObserved) -> None:
        if await history.job_graded(self.js, obs.job_id):
            return
        job, stored, near = await self._job(obs.job_id)
        test = next((t for t in stored.problem.tests if t.id == obs.test_id), None)
        if test is None:
            return  # removed from the problem since: not graded
        result = grader.result_for(stored.problem, obs.index, test, obs, job.code, near_miss=near)
        event = TestGraded(job_id=obs.job_id, attempt=obs.attempt, result=result)
        await client.publish(
            self.js, subjects.execution(event), event, msg_id=f"{obs.job_id}.{obs.attempt}.test.{obs.test_id}"
        )

    async def _finished(self, finished: ExecutionFinished) -> None:
        job_id = finished.job_id
        if await history.job_graded(self.js, job_id):
            log.info("job %s already graded; redelivery acked", job_id)
            return
        job, stored, near = await self._job(job_id)
        tests = grader.tests_of(stored.problem, [t.id for t in job.tests])
        if finished.verdict is Verdict.SANDBOX_ERROR:
            grade = grader.sandbox_failed(str(stored.problem.id), stored.revision, job.scope)
        else:
            observations: dict[str, TestObserved] = {}
            published: set[str] = set()
            async for _, event in history.job_events(self.js, job_id):
                if event.attempt != finished.attempt:
                    continue
                if isinstance(event, TestObserved):
                    observations.setdefault(event.test_id, event)
                elif isinstance(event, TestGraded):
                    published.add(event.result.test_id)
            grade = grader.grade(
                stored.problem, stored.revision, tests, observations, job.code, scope=job.scope, near_miss=near
            )
            # Results not yet published live (a grader that died between two) go out first.
            for result in grade.tests:
                if result.test_id not in published:
                    event = TestGraded(job_id=job_id, attempt=finished.attempt, result=result)
                    await client.publish(
                        self.js,
                        subjects.execution(event),
                        event,
                        msg_id=f"{job_id}.{finished.attempt}.test.{result.test_id}",
                    )
        graded = Graded(job_id=job_id, attempt=finished.attempt, grade=grade, graded_at=datetime.now(UTC))
        ack = await client.publish(self.js, subjects.graded_of(job_id), graded, msg_id=f"{job_id}.graded")
        if not ack.duplicate:  # another grader's publish of the same grade is not a second grade
            metrics.GRADES.labels(grade.verdict.value).inc()
        self._memo.pop(job_id, None)
        log.info("job %s graded %s (%s)", job_id, grade.verdict, grade.score)


async def build(deps: Deps) -> Grader:
    await init_beanie(database=deps.mongo.get_default_database(DATABASE), document_models=DOCUMENTS)
    # Feature flags from Redis, re-read every second (for as long as the process runs).
    flags = FlagReader(RedisSource(deps.redis))
    await flags.start()
    return Grader(deps.js, deps, CurriculumStore(), flags)
