"""Progress and stored results: the projection applied exactly once, its API, the cached summary,
and results served after the streams forgot them. Real servers throughout."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from datetime import UTC, date, datetime
from typing import Any

import httpx
import nats
import pytest
import redis
from nats.js.api import ConsumerConfig, DeliverPolicy
from pymongo import AsyncMongoClient, MongoClient

from bus import streams
from consumers.caching import cache_key
from curriculum import files
from gateway.progress.service import streak
from progress.projection import Names, Projection
from schemas import subjects
from schemas.grades import Grade, Graded, GradeVerdict
from schemas.submissions import Limits, SubmissionRequested
from tests.conftest import ROOT, Stack, wait_for
from tests.helpers import read_events, stored_messages, submit

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
HELLO = files.load().problems[0]  # 101, "Say hello"


def _user(stack: Stack) -> tuple[str, str]:
    email = f"student-{secrets.token_hex(6)}@example.org"
    token = stack.new_user(email)
    with stack.client(token) as c:
        return token, c.get("/auth/me").json()["id"]


def _grade(client: httpx.Client, code: str, problem_id: int = HELLO.id) -> dict[str, Any]:
    res = client.post("/execution/submit/grade", json={"code": code, "problemId": problem_id})
    assert res.status_code == 202, res.text
    return read_events(client, res.json()["eventsUrl"])[-1].data


def _item(client: httpx.Client, item: str) -> dict[str, Any] | None:
    items = client.get("/progress").json()["items"]
    return next((i for i in items if i["item"] == item), None)


async def _redeliver(nats_url: str, durable: str, stream: str, from_seq: int) -> int:
    """Deliver the durable's messages again from ``from_seq`` (as a replay or a lost ack would);
    returns the stream's last sequence, to wait for."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    info = await js.consumer_info(stream, durable)
    config = info.config
    await js.delete_consumer(stream, durable)
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=config.filter_subject,
            filter_subjects=config.filter_subjects,
            ack_policy=config.ack_policy,
            ack_wait=config.ack_wait,
            max_deliver=config.max_deliver,
            max_ack_pending=config.max_ack_pending,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=from_seq,
        ),
    )
    last = (await js.stream_info(stream)).state.last_seq
    await nc.close()
    return last


def _caught_up(nats_url: str, durable: str, stream: str, seq: int) -> bool:
    async def check() -> bool:
        nc = await nats.connect(nats_url)
        info = await nc.jetstream().consumer_info(stream, durable)
        await nc.close()
        return info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0

    return asyncio.run(check())


def test_a_grade_counts_once_however_often_it_is_delivered(seeded: Stack, runner, nats_url: str) -> None:
    token, _ = _user(seeded)
    with seeded.client(token) as c:
        done = _grade(c, HELLO.solution)
        assert done["grade"]["verdict"] == "ACCEPTED"
        item = f"problem:{HELLO.id}"
        first = wait_for(lambda: _item(c, item), 20, what="progress item")
        assert first["attempts"] == 1 and first["solved"] and first["bestScore"] == 100
        [graded] = stored_messages(nats_url, streams.EXECUTIONS, subjects.graded_of(done["jobId"]))
        graded_seq = done["lastSeq"]
        # Delivered a second and a third time (a replay from before the grade).
        for _ in range(2):
            last = asyncio.run(_redeliver(nats_url, "progress", streams.EXECUTIONS, graded_seq))
            wait_for(lambda last=last: _caught_up(nats_url, "progress", streams.EXECUTIONS, last), 30, what="again")
        again = _item(c, item)
        assert again is not None and again["attempts"] == 1 and again["firstSolvedAt"] == first["firstSolvedAt"]
        # One announcement of the change, however often the event came.
        changed = stored_messages(
            nats_url, streams.PROGRESS, subjects.progress(c.get("/auth/me").json()["id"], "changed")
        )
        assert len(changed) == 1
        assert graded  # the graded event is still there: the replay read it again


def test_an_attempt_replayed_counts_once(seeded: Stack, nats_url: str) -> None:
    token, user_id = _user(seeded)
    key = secrets.token_hex(8)
    with seeded.client(token) as c:
        for _ in range(2):
            res = c.post(
                "/progress/attempt", json={"problemId": HELLO.id, "code": "print(1)"}, headers={"Idempotency-Key": key}
            )
            assert res.status_code == 202, res.text
        other = c.post("/progress/attempt", json={"problemId": HELLO.id})
        assert other.status_code == 202
        item = f"problem:{HELLO.id}"
        wait_for(lambda: (_item(c, item) or {}).get("attempts") == 2, 20, what="two attempts")
        assert len(stored_messages(nats_url, streams.PROGRESS, subjects.progress(user_id, "attempt"))) == 2
        assert _item(c, item)["lastCode"] == "print(1)" and not _item(c, item)["solved"]
        # An attempt is not a completion; a problem with tests is completed by a grade only.
        res = c.post("/progress/complete", json={"problemId": HELLO.id})
        assert res.status_code == 409 and res.headers["content-type"].startswith("application/problem+json")
        assert c.post("/progress/complete", json={"sessionId": HELLO.session}).status_code == 202
        wait_for(lambda: (_item(c, f"reading:{HELLO.session}") or {}).get("completed"), 20, what="reading done")
        bad = c.post("/progress/complete", json={"problemId": HELLO.id, "sessionId": HELLO.session})
        assert bad.status_code == 400
        assert c.post("/progress/attempt", json={"problemId": 999_999}).status_code == 404


def test_the_summary_is_cached_yet_a_new_grade_shows_at_once(seeded: Stack, runner) -> None:
    token, user_id = _user(seeded)
    r = redis.Redis.from_url(seeded.env["REDIS_URL"])
    with seeded.client(token) as c:
        before = c.get("/progress/summary").json()
        assert before["solved"] == 0 and before["streakDays"] == 0
        kids = next(level for level in before["levels"] if level["id"] == "kids")
        assert kids["total"] >= 13 and kids["solved"] == 0
        assert r.ttl(f"coderunner:progress:summary:{user_id}:0") > 0  # cached for a minute
        _grade(c, HELLO.solution)
        after = wait_for(lambda: (s := c.get("/progress/summary").json())["solved"] == 1 and s, 10, what="summary")
    assert after["streakDays"] == 1 and after["lastActiveDay"] == datetime.now(UTC).date().isoformat()  # type: ignore[index]
    session = next(s for s in after["sessions"] if s["id"] == HELLO.session)  # type: ignore[index]
    assert session["solved"] == 1 and session["level"] == "kids"


def test_students_see_their_own_progress_and_staff_anyones(seeded: Stack) -> None:
    _, user_id = _user(seeded)
    other_token, _ = _user(seeded)
    email = f"teacher-{secrets.token_hex(6)}@example.org"
    seeded.new_user(email)
    subprocess.run(
        [sys.executable, "-m", "cli", "user-role", email, "teacher"],
        env=seeded.env, cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with httpx.Client(base_url=seeded.base_url, timeout=30) as c:
        teacher = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["accessToken"]
    with seeded.client(other_token) as c:
        for path in ("/progress", "/progress/summary"):
            res = c.get(path, params={"userId": user_id})
            assert res.status_code == 404, res.text
    with seeded.client(teacher) as c:
        assert c.get("/progress", params={"userId": user_id}).json()["userId"] == user_id
        assert c.get("/progress/summary", params={"userId": user_id}).status_code == 200
    with seeded.client(anonymous=True) as c:
        assert c.get("/progress").status_code == 401


def test_a_result_is_served_after_the_stream_forgot_it(seeded: Stack, runner, nats_url: str) -> None:
    token, _ = _user(seeded)
    with seeded.client(token) as c:
        job = submit(c, "print('kept')")
        done = read_events(c, job["eventsUrl"])[-1].data
        records = MongoClient(seeded.env["MONGODB_URI"]).get_default_database("coderunner")["execution_records"]
        wait_for(lambda: records.find_one({"job_id": job["jobId"]}), 20, what="stored result")

        async def forget() -> None:
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            await js.purge_stream(streams.EXECUTIONS, subject=subjects.executions_of(job["jobId"]))
            await js.purge_stream(streams.SUBMISSIONS, subject=subjects.submission(job["jobId"]))
            await nc.close()

        asyncio.run(forget())
        redis.Redis.from_url(seeded.env["REDIS_URL"]).delete(cache_key(job["jobId"]))
        assert not stored_messages(nats_url, streams.EXECUTIONS, subjects.executions_of(job["jobId"]))
        res = c.get(job["resultUrl"])
        assert res.status_code == 200 and res.json() == done
        history = c.get("/execution/history").json()
        assert history["items"][0]["jobId"] == job["jobId"] and history["total"] >= 1
    # Still nobody else's.
    other, _ = _user(seeded)
    with seeded.client(other) as c:
        assert c.get(job["resultUrl"]).status_code == 404


def test_history_is_newest_first_and_paginated(seeded: Stack, runner) -> None:
    token, _ = _user(seeded)
    with seeded.client(token) as c:
        jobs = [submit(c, f"print({i})")["jobId"] for i in range(3)]
        wait_for(lambda: c.get("/execution/history").json()["total"] == 3, 30, what="three stored results")
        page = c.get("/execution/history", params={"pageSize": 2}).json()
        rest = c.get("/execution/history", params={"pageSize": 2, "page": 2}).json()
        assert [j["jobId"] for j in page["items"] + rest["items"]] == list(reversed(jobs)) or set(
            j["jobId"] for j in page["items"] + rest["items"]
        ) == set(jobs)
        assert c.get("/execution/history", params={"pageSize": 0}).status_code == 400


async def test_the_projection_applies_each_event_once(shared_servers: dict[str, str]) -> None:
    """Below the consumer: the same event three times changes the counters once; the check can fail
    (a different event, with a later sequence, does count)."""
    mongo: AsyncMongoClient = AsyncMongoClient(shared_servers["mongodb"])
    try:
        projection = Projection(mongo[f"projection_{secrets.token_hex(4)}"], Names())
        await projection.ensure_indexes()
        job = SubmissionRequested(
            job_id="job-00000001", mode="grade", code="x", user_id="u1", limits=Limits(),
            submitted_at=datetime.now(UTC), problem_id="101",
        )  # fmt: skip
        grade = Grade(
            problem_id="101", revision=1, verdict=GradeVerdict.ACCEPTED, score=100, passed=1, total=1, tests=[]
        )
        event = Graded(job_id="job-00000001", grade=grade, graded_at=datetime.now(UTC))
        for _ in range(3):
            await projection.graded(job, event, 7)
        doc = await projection.items.find_one({"user_id": "u1"})
        assert doc is not None and doc["attempts"] == 1 and doc["exec_seq"] == 7
        await projection.graded(job, event, 8)
        doc = await projection.items.find_one({"user_id": "u1"})
        assert doc is not None and doc["attempts"] == 2
    finally:
        await mongo.close()


def test_a_streak_counts_consecutive_days() -> None:
    today = date(2026, 11, 29)
    assert streak([], today) == 0
    assert streak(["2026-11-29", "2026-11-28", "2026-11-26"], today) == 2
    assert streak(["2026-11-28", "2026-11-27"], today) == 2  # yesterday still counts
    assert streak(["2026-11-27"], today) == 0
