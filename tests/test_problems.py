"""The problems API on real servers: the curriculum for students (cached), hidden tests and edits
for teachers, and the cache following every edit at once."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from typing import Any

import httpx
import msgspec
import pytest
import redis
from pymongo import MongoClient

from consumers.caching import CURRICULUM_GEN_KEY
from curriculum import files
from curriculum.store import DATABASE, FIRST_API_ID, CurriculumStore, Stored
from local import embedded
from tests.conftest import ROOT, Stack, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"  # what Stack.new_user registers with
SESSION = "adults-strings"  # where this module's own problems go
STUDENT_FIELDS = {
    "id", "slug", "title", "level", "session", "order", "tags", "statement", "starterCode", "hint", "grading",
    "function", "comparison", "timeLimitMs", "memoryLimitMb", "revision", "publicTestCount", "hiddenTestCount",
}  # fmt: skip
CURRICULUM = files.load()


def _cli(stack: Stack, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "cli", *args], env=stack.env, cwd=ROOT, check=True, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> None:
    """The repository's curriculum in MongoDB (idempotent: other modules may have seeded it too)."""
    _cli(stack, "seed")


@pytest.fixture(scope="module")
def teacher(stack: Stack, seeded: None) -> str:
    email = f"teacher-{secrets.token_hex(6)}@example.org"
    stack.new_user(email)
    _cli(stack, "user-role", email, "teacher")  # signs the user out: sign in again
    with stack.client(anonymous=True) as c:
        res = c.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert res.status_code == 200, res.text
        return str(res.json()["accessToken"])


@pytest.fixture(scope="module")
def student(stack: Stack) -> str:
    return stack.new_user()


def _body(marker: str = "", **changes: Any) -> dict[str, Any]:
    """A valid problem for the API, unique by title and slug; ``marker`` is in its secrets only."""
    suffix = secrets.token_hex(4)
    body: dict[str, Any] = {
        "slug": f"echo-{suffix}",
        "title": f"Echo {suffix}",
        "level": "adults",
        "session": SESSION,
        "order": 900,
        "statement": "Print what you read.",
        "starterCode": "line = input()\n",
        "tags": ["io"],
        "hint": "print(input())",
        "solution": f"print(input())  # {marker}",
        "wrongSolutions": [{"code": "print('x')", "note": f"wrong {marker}"}],
        "tests": [
            {"id": "p1", "public": True, "stdin": "hello\n", "expected": "hello\n"},
            {"id": "h1", "public": False, "stdin": f"{marker}\n", "expected": f"{marker}\n", "weight": 3},
        ],
    }
    body.update(changes)
    return body


def _create(stack: Stack, teacher: str, body: dict[str, Any]) -> dict[str, Any]:
    with stack.client(teacher) as t:
        res = t.post("/problems", json=body)
    assert res.status_code == 201, res.text
    created: dict[str, Any] = res.json()
    return created


def _assert_problem(res: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/problem+json"), res.headers
    body: dict[str, Any] = res.json()
    assert body["status"] == status
    for needle in needles:
        assert needle in body["detail"], body
    return body


def _stored_count(stack: Stack, title: str) -> int:
    with MongoClient(stack.env["MONGODB_URI"], serverSelectionTimeoutMS=5000) as mongo:
        return int(mongo.get_default_database(DATABASE)["problems"].count_documents({"body.title": title}))


def _generation(stack: Stack) -> int:
    with redis.Redis.from_url(stack.env["REDIS_URL"]) as r:
        return int(r.get(CURRICULUM_GEN_KEY) or 0)


def _cache_counts(stack: Stack) -> dict[str, float]:
    with stack.client(anonymous=True) as c:
        text = c.get("/metrics").text
    found = re.findall(r'^coderunner_cache_requests_total\{cache="curriculum",result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


# --- reads ------------------------------------------------------------------------------------------


def test_list_filters_and_pages(stack: Stack, seeded: None) -> None:
    kids = [p for p in CURRICULUM.problems if p.level == "kids"]
    printing = [p.id for p in CURRICULUM.problems if p.session == "kids-printing"]
    with stack.client(anonymous=True) as c:
        first = c.get("/problems", params={"level": "kids", "pageSize": 2}).json()
        assert first["page"] == 1 and first["pageSize"] == 2 and first["total"] >= len(kids)
        assert len(first["items"]) == 2 and {i["level"] for i in first["items"]} == {"kids"}
        second = c.get("/problems", params={"level": "kids", "pageSize": 2, "page": 2}).json()
        assert len(second["items"]) == 2
        assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}

        session = c.get("/problems", params={"session": "kids-printing"}).json()
        assert [i["id"] for i in session["items"]] == printing and session["total"] == len(printing)
        assert set(session["items"][0]) == {"id", "slug", "title", "level", "session", "order", "tags", "grading"}
        beyond = c.get("/problems", params={"session": "kids-printing", "page": 99}).json()
        assert beyond["items"] == [] and beyond["total"] == len(printing)
        assert c.get("/problems").json()["pageSize"] == 20

        for bad in ("0", "101", "abc", "-1"):
            _assert_problem(c.get("/problems", params={"pageSize": bad}), 400, "pageSize")
        _assert_problem(c.get("/problems", params={"page": "0"}), 400, "page")
        assert c.get("/problems", params={"level": "toddlers"}).status_code == 400
        assert c.get("/problems", params={"session": "Not A Slug"}).status_code == 400


def test_student_views_show_no_solution_and_no_hidden_test(stack: Stack, teacher: str, student: str) -> None:
    marker = f"HIDDEN-{secrets.token_hex(8)}"
    created = _create(stack, teacher, _body(marker))
    pid = created["id"]
    assert marker in str(created)  # the teacher's view has everything
    for token in (student, None):
        with stack.client(token, anonymous=token is None) as c:
            detail = c.get(f"/problems/{pid}")
            assert detail.status_code == 200, detail.text
            assert set(detail.json()) == STUDENT_FIELDS
            assert detail.json()["publicTestCount"] == 1 and detail.json()["hiddenTestCount"] == 1
            tests = c.get(f"/problems/{pid}/tests")
            assert [t["id"] for t in tests.json()] == ["p1"]
            assert set(tests.json()[0]) == {"id", "stdin", "args", "expected", "script", "comparison", "weight"}
            answers = [detail, tests, c.get(f"/problems/sessions/{SESSION}"), c.get("/problems/sessions")]
            page = 1
            while True:  # every page of the list
                listed = c.get("/problems", params={"level": "adults", "pageSize": 100, "page": page})
                answers.append(listed)
                if page * 100 >= listed.json()["total"]:
                    break
                page += 1
            assert pid in [i["id"] for a in answers[4:] for i in a.json()["items"]]
            for answer in answers:
                assert answer.status_code == 200, answer.text
                assert marker not in answer.text, answer.url

    # The seeded problems too: 101's hidden tests (Zoë, Mo, Ana Maria) stay hidden.
    with stack.client(anonymous=True) as c:
        detail = c.get("/problems/101").json()
        assert detail["hiddenTestCount"] == 3 and set(detail) == STUDENT_FIELDS
        assert "Ana Maria" not in c.get("/problems/101/tests").text


def test_all_tests_are_for_staff_and_a_404_for_anyone_else(stack: Stack, teacher: str, student: str) -> None:
    marker = f"HIDDEN-{secrets.token_hex(8)}"
    pid = _create(stack, teacher, _body(marker))["id"]
    missing = 2**31 - 2
    with stack.client(teacher) as t:
        every = t.get(f"/problems/{pid}/tests/all")
        assert every.status_code == 200, every.text
        assert [(x["id"], x["public"]) for x in every.json()] == [("p1", True), ("h1", False)]
        assert marker in every.text
        none = _assert_problem(t.get(f"/problems/{missing}/tests/all"), 404)
    assert none["detail"] == f"no problem {missing}"
    for token in (student, None):
        with stack.client(token, anonymous=token is None) as c:
            refused = _assert_problem(c.get(f"/problems/{pid}/tests/all"), 404)
            absent = _assert_problem(c.get(f"/problems/{missing}/tests/all"), 404)
        assert refused == {**none, "detail": f"no problem {pid}"}
        assert absent == none
        assert marker not in str(refused)


def test_the_edit_view_is_whole_and_for_staff_only(stack: Stack, teacher: str, student: str) -> None:
    body = _body("edit-secret")
    created = _create(stack, teacher, body)
    pid = created["id"]
    with stack.client(teacher) as t:
        view = t.get(f"/problems/{pid}/edit")
        assert view.status_code == 200, view.text
        full = view.json()
        assert full["solution"] == body["solution"] and full["wrongSolutions"] == body["wrongSolutions"]
        assert full["revision"] == 1 and [x["id"] for x in full["tests"]] == ["p1", "h1"]
        # What the edit form sends back is a valid replacement that keeps everything.
        edited = {k: v for k, v in full.items() if k not in ("id", "revision")} | {"title": "Edited"}
        res = t.put(f"/problems/{pid}", json=edited, headers={"If-Match": str(full["revision"])})
        assert res.status_code == 200, res.text
        assert res.json()["solution"] == body["solution"] and res.json()["revision"] == 2
    missing = _assert_problem(httpx.get(f"{stack.base_url}/problems/999999/edit"), 404)
    for client in (stack.client(student), stack.client(anonymous=True)):
        with client as c:
            assert _assert_problem(c.get(f"/problems/{pid}/edit"), 404)["detail"] == missing["detail"].replace(
                "999999", str(pid)
            )


def test_levels_by_age(stack: Stack, seeded: None) -> None:
    with stack.client(anonymous=True) as c:
        assert [lv["slug"] for lv in c.get("/problems/levels").json()] == ["kids", "teens", "adults"]
        for age, expected in ((10, ["kids"]), (15, ["teens"]), (40, ["adults"]), (3, [])):
            res = c.get(f"/problems/levels/{age}")
            assert res.status_code == 200, res.text
            assert [lv["slug"] for lv in res.json()] == expected, age
        assert set(c.get("/problems/levels/10").json()[0]) == {"slug", "name", "minAge", "maxAge", "description"}
        _assert_problem(c.get("/problems/levels/151"), 400, "age")


def test_sessions(stack: Stack, seeded: None) -> None:
    kids = [s.id for s in CURRICULUM.sessions if s.level == "kids"]
    with stack.client(anonymous=True) as c:
        assert [s["id"] for s in c.get("/problems/sessions", params={"level": "kids"}).json()] == kids
        everything = c.get("/problems/sessions").json()
        assert {s["level"] for s in everything} == {"kids", "teens", "adults"}
        printing = c.get("/problems/sessions/kids-printing").json()
        assert printing["title"] == "Printing" and printing["level"] == "kids" and printing["order"] == 1
        assert [p["order"] for p in printing["problems"]] == [1, 2, 3]
        assert [p["id"] for p in printing["problems"]] == [101, 102, 103]
        _assert_problem(c.get("/problems/sessions/kids-no-such-thing"), 404, "kids-no-such-thing")
        # Ids of another form are refused as the OpenAPI document states them (400 naming the parameter).
        _assert_problem(c.get("/problems/sessions/NOT_A_SLUG"), 400, "session_id")
        _assert_problem(c.get("/problems/99999999999999999999"), 400, "problem_id")
        _assert_problem(c.get("/problems/0"), 400, "problem_id")


# --- edits ------------------------------------------------------------------------------------------


def test_teacher_creates_edits_and_deletes(stack: Stack, teacher: str) -> None:
    body = _body("x")
    created = _create(stack, teacher, body)
    pid = created["id"]
    assert pid >= FIRST_API_ID and created["revision"] == 1
    assert created["title"] == body["title"] and [t["id"] for t in created["tests"]] == ["p1", "h1"]
    assert created["solution"] == body["solution"] and created["wrongSolutions"][0]["code"] == "print('x')"
    with stack.client(teacher) as t:
        assert t.get(f"/problems/{pid}").json()["revision"] == 1

        title = f"Renamed {secrets.token_hex(4)}"
        replaced = t.put(f"/problems/{pid}", json={**body, "title": title})
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["revision"] == 2 and replaced.json()["title"] == title
        same = t.put(f"/problems/{pid}", json={**body, "title": title})
        assert same.json()["revision"] == 2  # nothing changed: no new revision

        added = t.post(f"/problems/{pid}/tests", json={"id": "p2", "public": True, "stdin": "a\n", "expected": "a\n"})
        assert added.status_code == 201, added.text
        assert added.json()["revision"] == 3 and [x["id"] for x in added.json()["tests"]] == ["p1", "h1", "p2"]
        _assert_problem(t.post(f"/problems/{pid}/tests", json={"id": "p2", "public": True, "expected": ""}), 409)

        hidden = {"id": "p2", "public": False, "stdin": "b\n", "expected": "b\n"}
        edited = t.put(f"/problems/{pid}/tests/p2", json=hidden)
        assert edited.status_code == 200, edited.text
        assert edited.json()["revision"] == 4 and edited.json()["tests"][2]["public"] is False
        # The body's id, when given, is the path's (409: the body is valid on its own); left out, it is.
        _assert_problem(t.put(f"/problems/{pid}/tests/p2", json={"id": "p3", "public": True, "expected": ""}), 409)
        unnamed = t.put(f"/problems/{pid}/tests/p2", json={"public": False, "stdin": "b\n", "expected": "b\n"})
        assert unnamed.status_code == 200 and unnamed.json()["tests"][2]["id"] == "p2", unnamed.text
        _assert_problem(t.put(f"/problems/{pid}/tests/nope", json={"id": "nope", "public": True, "expected": ""}), 404)

        assert t.delete(f"/problems/{pid}/tests/p2").status_code == 204
        _assert_problem(t.delete(f"/problems/{pid}/tests/p2"), 404, "p2")
        assert t.delete(f"/problems/{pid}/tests/h1").status_code == 204
        # The last test cannot go: a problem needs one.
        _assert_problem(t.delete(f"/problems/{pid}/tests/p1"), 422, "tests")
        wait_for(lambda: [x["id"] for x in t.get(f"/problems/{pid}/tests").json()] == ["p1"], 10, what="tests")
        wait_for(lambda: t.get(f"/problems/{pid}").json()["hiddenTestCount"] == 0, 10, what="no hidden test")

        assert t.delete(f"/problems/{pid}").status_code == 204
        wait_for(lambda: t.get(f"/problems/{pid}").status_code == 404, 10, what="deleted problem gone")
        _assert_problem(t.get(f"/problems/{pid}/tests/all"), 404)
        _assert_problem(t.delete(f"/problems/{pid}"), 404)
        _assert_problem(t.put(f"/problems/{pid}", json=body), 404)
        # The id is never reused.
        assert _create(stack, teacher, _body())["id"] > pid


def test_an_edit_of_an_old_revision_changes_nothing(stack: Stack, teacher: str) -> None:
    body = _body()
    pid = _create(stack, teacher, body)["id"]
    with stack.client(teacher) as t:
        assert (
            t.put(f"/problems/{pid}", json={**body, "title": "First"}, headers={"If-Match": '"1"'}).status_code == 200
        )
        # A second editor still holding revision 1 is refused, and the first edit stands.
        _assert_problem(t.put(f"/problems/{pid}", json={**body, "title": "Second"}, headers={"If-Match": '"1"'}), 412)
        _assert_problem(t.delete(f"/problems/{pid}", headers={"If-Match": "1"}), 412)
        _assert_problem(t.put(f"/problems/{pid}", json=body, headers={"If-Match": "soon"}), 400, "If-Match")
        stored = t.get(f"/problems/{pid}/tests/all")
        assert stored.status_code == 200
        wait_for(lambda: t.get(f"/problems/{pid}").json()["title"] == "First", 10, what="first edit")
        assert t.delete(f"/problems/{pid}", headers={"If-Match": '"2"'}).status_code == 204


async def test_a_concurrent_edit_or_deletion_is_never_undone(stack: Stack) -> None:
    """The store's guard, below the routes: an edit based on a revision that is no longer current
    (another edit, or a deletion, came between its read and its write) is a conflict."""
    from beanie import init_beanie
    from pymongo import AsyncMongoClient

    from curriculum import files
    from curriculum.store import DATABASE, DOCUMENTS, CurriculumStore, EditConflict

    mongo: AsyncMongoClient = AsyncMongoClient(stack.env["MONGODB_URI"])
    try:
        await init_beanie(database=mongo.get_default_database(DATABASE), document_models=DOCUMENTS)
        store = CurriculumStore()
        template = files.load().problems[0]
        problem, revision = await store.create_problem(
            msgspec.structs.replace(template, slug=f"race-{secrets.token_hex(4)}"), by="t"
        )
        edited = msgspec.structs.replace(problem, title="edited")
        assert await store.put_problem(edited, by="a", source="api", expected_revision=revision) == ("updated", 2)
        with pytest.raises(EditConflict):  # b read revision 1 too
            await store.put_problem(
                msgspec.structs.replace(problem, title="b"), by="b", source="api", expected_revision=1
            )
        assert await store.delete_problem(problem.id, by="a", expected_revision=2) == 3
        with pytest.raises(EditConflict):  # an edit of revision 2 does not bring the problem back
            await store.put_problem(edited, by="b", source="api", expected_revision=2)
        # Without the guard (the seed's files win), the last writer would undo the deletion.
        assert await store.put_problem(edited, by="seed", source="files") == ("created", 4)
    finally:
        await mongo.close()


def test_students_cannot_edit_and_anonymous_users_must_sign_in(stack: Stack, teacher: str, student: str) -> None:
    body = _body()
    pid = _create(stack, teacher, _body())["id"]
    with stack.client(student) as s, stack.client(anonymous=True) as a:
        for client, status in ((s, 403), (a, 401)):
            _assert_problem(client.post("/problems", json=body), status)
            _assert_problem(client.put(f"/problems/{pid}", json=body), status)
            _assert_problem(client.delete(f"/problems/{pid}"), status)
            _assert_problem(client.post(f"/problems/{pid}/tests", json={"id": "z", "public": True}), status)
            _assert_problem(client.delete(f"/problems/{pid}/tests/p1"), status)
        assert s.get(f"/problems/{pid}").status_code == 200
    assert _stored_count(stack, body["title"]) == 0


def test_invalid_bodies_are_named_and_nothing_is_stored(stack: Stack, teacher: str) -> None:
    hidden_script = [{"id": "h1", "public": False, "script": "assert True", "expected": ""}]
    cases: list[tuple[dict[str, Any], int, str]] = [
        (_body(tests=hidden_script), 422, "tests[0].script"),
        (_body(tests=[]), 400, "tests"),  # the schema's minItems
        (_body(grading="function"), 422, "function"),
        (_body(session="kids-printing"), 422, "session"),
        (_body(session="adults-no-such-session"), 422, "session"),
        (_body(tests=[{"id": "p1", "public": True, "expected": 42}]), 422, "tests[0].expected"),
        (_body(order=0), 400, "order"),
        (_body(slug="Not A Slug"), 400, "slug"),
        (_body(timeLimitMs=10), 400, "timeLimitMs"),
        (_body(unexpected=True), 400, "unexpected"),
    ]
    untitled = _body()
    del untitled["title"]
    cases.append((untitled, 400, "title"))
    with stack.client(teacher) as t:
        for body, status, field in cases:
            res = t.post("/problems", json=body)
            problem = _assert_problem(res, status)
            assert field in res.text, (field, problem)
            assert _stored_count(stack, body.get("title", "")) == 0, body
        # A hidden script is fine where the teacher allows it.
        allowed = _create(stack, teacher, _body(tests=hidden_script, grading="script", allowHiddenScripts=True))
        # An edit that breaks a rule leaves the stored problem as it was.
        pid = allowed["id"]
        res = t.put(f"/problems/{pid}", json={**_body(tests=hidden_script, grading="script"), "title": "Broken"})
        _assert_problem(res, 422, "tests[0].script", "allowHiddenScripts")
        res = t.post(f"/problems/{pid}/tests", json={"id": "p9", "public": True, "expected": "x"})
        _assert_problem(res, 422, "tests[1].script")
        assert t.get(f"/problems/{pid}/tests/all").json() == allowed["tests"]
    assert _stored_count(stack, "Broken") == 0


# --- the cache --------------------------------------------------------------------------------------


def test_an_edit_shows_at_once_through_the_cache(stack: Stack, teacher: str) -> None:
    body = _body()
    generation = _generation(stack)
    pid = _create(stack, teacher, body)["id"]
    # Once the consumer has taken the creation in, nothing else changes the generation here.
    wait_for(lambda: _generation(stack) > generation, 10, what="the creation's invalidation")
    with stack.client(anonymous=True) as c:
        before = _cache_counts(stack)
        first = c.get(f"/problems/{pid}")
        assert first.status_code == 200 and first.json()["title"] == body["title"]
        assert c.get(f"/problems/{pid}").json() == first.json()  # served from the cache
        counts = _cache_counts(stack)
        assert counts["hit"] > before.get("hit", 0) and counts["miss"] > before.get("miss", 0), (before, counts)

        generation = _generation(stack)
        title = f"Edited {secrets.token_hex(4)}"
        with stack.client(teacher) as t:
            assert t.put(f"/problems/{pid}", json={**body, "title": title}).status_code == 200
        # Well within the cache's 5 minutes: the change event bumped the generation.
        wait_for(lambda: c.get(f"/problems/{pid}").json()["title"] == title, 10, what="the new title")
        assert _generation(stack) > generation
        listed = c.get("/problems", params={"session": SESSION, "pageSize": 100}).json()["items"]
        assert title in [i["title"] for i in listed]


class _OneProblem(CurriculumStore):
    def __init__(self, stored: Stored) -> None:
        self.stored = stored

    async def problem(self, problem_id: int, *, include_deleted: bool = False) -> Stored | None:
        return self.stored if problem_id == self.stored.problem.id else None


def test_reads_are_served_without_redis() -> None:
    """A Redis failure costs the cache, never the answer."""
    from redis import asyncio as aioredis

    from gateway.problems.service import ProblemService

    problem = CURRICULUM.problems[0]

    async def read() -> tuple[str, int]:
        dead = aioredis.from_url(f"redis://127.0.0.1:{embedded.free_port()}", socket_connect_timeout=1)
        service = ProblemService(js=None, redis=dead, store=_OneProblem(Stored(problem=problem, revision=7)))
        try:
            out = await service.problem(problem.id)
            tests = await service.public_tests(problem.id)
            return out.title, len(tests)
        finally:
            await dead.aclose()

    assert asyncio.run(read()) == (problem.title, len(problem.public_tests()))


class _FakeRedis:
    def __init__(self) -> None:
        self.incremented: list[str] = []

    async def incr(self, key: str) -> int:
        self.incremented.append(key)
        return len(self.incremented)


class _ClosedBus:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        from nats.errors import ConnectionClosedError

        raise ConnectionClosedError


class _Deletable(_OneProblem):
    async def delete_problem(self, problem_id: int, *, by: str, expected_revision: int | None = None) -> int | None:
        return self.stored.revision + 1


def test_an_unpublished_change_still_invalidates_the_cache() -> None:
    """The write stands when the bus is away; the gateway then invalidates the cache itself."""
    from gateway.problems.service import ProblemService

    problem = CURRICULUM.problems[0]
    redis_ = _FakeRedis()
    service = ProblemService(js=_ClosedBus(), redis=redis_, store=_Deletable(Stored(problem=problem, revision=1)))
    asyncio.run(service.delete(problem.id, by="someone"))
    assert redis_.incremented == [CURRICULUM_GEN_KEY]
