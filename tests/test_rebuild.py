"""`coderunner rebuild progress`: the projection recomputed from the streams equals the live one
after a few hundred mixed events (redeliveries included), and is swapped in while the gateway
keeps answering. This module has its own MongoDB database: the swap is visible to everything that
reads it."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import pytest
from pymongo import MongoClient

from bus import streams
from curriculum import files
from local import embedded
from progress.projection import LIVE, POINTER_ID, POINTERS, Names
from tests.conftest import ROOT, Stack, stack_env, wait_for, wait_ready
from tests.helpers import read_events
from tests.test_progress import _redeliver

pytestmark = pytest.mark.e2e

PROBLEMS = files.load().problems[:8]
STUDENTS = 6


@pytest.fixture(scope="module")
def stack(nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database = f"rebuild_{secrets.token_hex(4)}"
    servers = {**shared_servers, "mongodb": shared_servers["mongodb"].rstrip("/") + "/" + database}
    port = embedded.free_port()
    s = Stack(env=stack_env(nats_url, servers, GATEWAY_PORT=str(port)), base_url=f"http://127.0.0.1:{port}",
              tmp=tmp_path_factory.mktemp("rebuild"))  # fmt: skip
    try:
        gateway = s.spawn("gateway")
        for name in streams.CONSUMERS:
            s.spawn("consume", name).wait_log(f"consumer {name} started")
        wait_ready(gateway, s.base_url)
        subprocess.run([sys.executable, "-m", "cli", "seed"], env=s.env, cwd=ROOT, check=True, capture_output=True)
        s.runner()
        yield s
    finally:
        for app in reversed(s.apps):
            app.stop()


def _db(stack: Stack) -> Any:
    return MongoClient(stack.env["MONGODB_URI"]).get_default_database("coderunner")


def _snapshot(db: Any, names: Names) -> dict[str, Any]:
    items = {
        (d["user_id"], d["item"]): (
            d.get("attempts"), d.get("best_score"), d.get("solved"), d.get("completed"), d.get("first_solved_at"),
            d.get("level"), d.get("session"), d.get("last_verdict"),
        )
        for d in db[names.items].find()
    }  # fmt: skip
    records = {
        d["job_id"]: (d["user_id"], d.get("mode"), d.get("verdict"), d.get("score"), d.get("status"), d.get("result"))
        for d in db[names.records].find()
    }
    days = {(d["user_id"], d["day"]) for d in db[names.days].find()}
    return {"items": items, "records": records, "days": days}


def _caught_up(nats_url: str) -> bool | str:
    """True once both progress durables have nothing pending (else what they still have)."""

    async def check() -> bool | str:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            waiting = []
            for stream, durable in ((streams.EXECUTIONS, "progress"), (streams.PROGRESS, "progress-inputs")):
                info = await js.consumer_info(stream, durable)
                if info.num_pending or info.num_ack_pending:
                    waiting.append(f"{durable}: {info.num_pending} pending, {info.num_ack_pending} in flight")
            return not waiting or "; ".join(waiting)
        finally:
            await nc.close()

    return asyncio.run(check())


def _wait_caught_up(nats_url: str) -> None:
    try:
        wait_for(lambda: _caught_up(nats_url) is True, 60, what="progress consumers caught up")
    except AssertionError:
        raise AssertionError(f"progress consumers not caught up: {_caught_up(nats_url)}") from None


def _student(stack: Stack, index: int) -> None:
    token = stack.new_user()
    with stack.client(token) as c:
        for n, problem in enumerate(PROBLEMS):
            code = problem.solution if (n + index) % 3 else problem.wrong_solutions[0].code
            res = c.post("/execution/submit/grade", json={"code": code, "problemId": problem.id})
            assert res.status_code == 202, res.text
            read_events(c, res.json()["eventsUrl"])
            c.post("/execution/submit", json={"code": f"print({n})"})  # a plain run: a stored result
        for n in range(25):
            key = {"Idempotency-Key": f"k{n % 20}"}  # five of them are replays
            assert c.post("/progress/attempt", json={"problemId": PROBLEMS[n % 4].id}, headers=key).status_code == 202
        for problem in PROBLEMS[:2]:
            assert c.post("/progress/complete", json={"sessionId": problem.session}).status_code == 202


def test_the_rebuilt_projection_equals_the_live_one(stack: Stack, nats_url: str) -> None:
    # STUDENTS x 32 submissions (half graded, right or wrong; half plain runs), attempts, readings.
    with ThreadPoolExecutor(STUDENTS) as pool:
        list(pool.map(lambda i: _student(stack, i), range(STUDENTS)))
    _wait_caught_up(nats_url)
    # Redeliveries: both durables see part of their streams again; nothing may count twice.
    asyncio.run(_redeliver(nats_url, "progress", streams.EXECUTIONS, 1))
    asyncio.run(_redeliver(nats_url, "progress-inputs", streams.PROGRESS, 10))
    _wait_caught_up(nats_url)
    db = _db(stack)
    live = _snapshot(db, LIVE)
    assert len(live["items"]) >= STUDENTS * len(PROBLEMS) and len(live["records"]) >= STUDENTS * 2 * len(PROBLEMS)
    assert sum(v[0] for v in live["items"].values()) == STUDENTS * (len(PROBLEMS) + 20)  # grades + distinct attempts

    done = subprocess.run(
        [sys.executable, "-m", "cli", "rebuild", "progress"], env=stack.env, cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pointer = db[POINTERS].find_one({"_id": POINTER_ID})
    assert pointer is not None and pointer["suffix"] and not pointer["switching"], done.stdout
    rebuilt = _snapshot(db, LIVE.suffixed(pointer["suffix"]))
    assert rebuilt == live
    # The check can fail: one changed counter is a difference.
    key = next(iter(live["items"]))
    tampered = {**live, "items": {**live["items"], key: (99, *live["items"][key][1:])}}
    assert rebuilt != tampered

    # The swap is live: new events land in the new collections, and the gateway reads them.
    token = stack.new_user()
    with stack.client(token) as c:
        res = c.post("/execution/submit/grade", json={"code": PROBLEMS[0].solution, "problemId": PROBLEMS[0].id})
        read_events(c, res.json()["eventsUrl"])
        wait_for(lambda: c.get("/progress/summary").json()["solved"] == 1, 60, what="summary after the swap")
        user_id = c.get("/auth/me").json()["id"]
    assert db[LIVE.suffixed(pointer["suffix"]).items].count_documents({"user_id": user_id}) == 1
    assert db[LIVE.items].count_documents({"user_id": user_id}) == 0
