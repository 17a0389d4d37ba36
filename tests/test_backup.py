"""``coderunner backup`` and ``coderunner restore``: a backup of a working stack, restored into a
fresh one (new NATS, MongoDB and Redis servers on new data folders) before its processes start,
serves the old results, sign-ins and progress, and new jobs continue the restored sequences.

The order is the one docs/backup.md gives for a fresh stack: servers up, ``restore``, then the
gateway, the consumers and the runners (which provision the streams and their durables, find them
restored, and carry on from there)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from bus import streams
from curriculum import files
from local import embedded
from schemas import subjects
from tests.conftest import ROOT, Stack, stack_env, wait_for, wait_ready
from tests.helpers import submit
from tests.test_grading import wait_result

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
PROBLEM = files.load().problems[0]


# --- Helpers -----------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``coderunner`` as an operator runs it, with the stack's environment."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def refused(out: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with one line that says why."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, (out.returncode, out.stdout, out.stderr)
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def start_apps(s: Stack) -> None:
    gateway = s.spawn("gateway")
    for name in streams.CONSUMERS:
        s.spawn("consume", name).wait_log(f"consumer {name} started")
    wait_ready(gateway, s.base_url)
    s.runner()


def stop_apps(s: Stack) -> None:
    for app in reversed(s.apps):
        app.stop()


def sign_in(s: Stack, email: str) -> httpx.Client:
    res = httpx.post(f"{s.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert res.status_code == 200, res.text
    return s.client(str(res.json()["accessToken"]))


def nats_query(url: str, work: Any) -> Any:
    async def run() -> Any:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def seq_of(url: str, stream: str, subject: str) -> int:
    async def last(js: Any) -> int:
        return int((await js.get_last_msg(stream, subject)).seq)

    return int(nats_query(url, last))


def projection_caught_up(url: str) -> bool | str:
    """True once the projection's durables have nothing pending (else what they still have)."""

    async def check(js: Any) -> bool | str:
        waiting = []
        for durable in (d for d in streams.DURABLES if d.in_order):
            info = await js.consumer_info(durable.stream, durable.name)
            if info.num_pending or info.num_ack_pending:
                waiting.append(f"{durable.name}: {info.num_pending} pending, {info.num_ack_pending} in flight")
        return not waiting or "; ".join(waiting)

    result: bool | str = nats_query(url, check)
    return result


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old(nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack that is backed up: this module's NATS, its own database on the shared MongoDB."""
    servers = {**shared_servers, "mongodb": shared_servers["mongodb"].rstrip("/") + f"/backup_{secrets.token_hex(4)}"}
    port = embedded.free_port()
    s = Stack(env=stack_env(nats_url, servers, GATEWAY_PORT=str(port)), base_url=f"http://127.0.0.1:{port}",
              tmp=tmp_path_factory.mktemp("old"))  # fmt: skip
    try:
        start_apps(s)
        assert cli(s.env, "seed").returncode == 0
        yield s
    finally:
        stop_apps(s)


@pytest.fixture(scope="module")
def fresh_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """New NATS, Redis and MongoDB servers on new data folders, for the stack the backup goes into."""
    procs = []
    urls: dict[str, str] = {}
    try:
        for spec in embedded.specs(tmp_path_factory.mktemp("fresh"), persistent=False):
            proc = embedded.start(spec)
            procs.append(proc)  # tracked before the wait: a server that never listens is stopped too
            embedded.wait_listening(spec, proc)
            urls[spec.name] = spec.url
        yield urls
    finally:
        for proc in procs:
            embedded.stop(proc)


# --- The test ----------------------------------------------------------------------------------


def test_a_backup_restored_into_a_fresh_stack_serves_the_old_results_and_progress(
    old: Stack, fresh_servers: dict[str, str], tmp_path: Path
) -> None:
    # Before: a user, a plain run, a graded solution, an attempt; all visible.
    email = f"backup-{secrets.token_hex(6)}@example.org"
    old.new_user(email)
    with sign_in(old, email) as c:
        run = submit(c, "print('hello from before the backup')")
        ran = wait_result(c, run["resultUrl"])
        assert ran["status"] == "completed" and "hello from before the backup" in ran["stdout"], ran
        res = c.post("/execution/submit/grade", json={"code": PROBLEM.solution, "problemId": PROBLEM.id})
        assert res.status_code == 202, res.text
        graded_job = res.json()
        graded = wait_result(c, graded_job["resultUrl"])
        assert graded["grade"]["verdict"] == "ACCEPTED", graded
        other = files.load().problems[1]
        assert c.post("/progress/attempt", json={"problemId": other.id}).status_code == 202
        wait_for(lambda: projection_caught_up(old.env["NATS_URL"]) is True, 30, what="the old projection")
        summary = wait_for(
            lambda: (s := c.get("/progress/summary").json())["solved"] == 1 and s["attempted"] == 2 and s, 30,
            what="the old progress",
        )  # fmt: skip
        history = c.get("/execution/history").json()
        assert history["total"] == 2, history

    # The backup, as an operator takes it.
    backup_dir = tmp_path / "backup"
    out = cli(old.env, "backup", str(backup_dir))
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    saved = {s["name"]: s for s in manifest["nats"]["streams"]}
    assert list(saved) == [c.name for c in streams.stream_configs(streams.BusLimits(1, 1, 1, 1))]
    assert saved[streams.SUBMISSIONS]["messages"] == 2 and streams.RUNNER_CONSUMER in saved["SUBMISSIONS"]["consumers"]
    assert {"progress", "grading", "caching"} <= set(saved[streams.EXECUTIONS]["consumers"])
    collections = {c["name"]: c["documents"] for c in manifest["mongodb"]["collections"]}
    assert collections["users"] == 1 and collections["execution_records"] == 2, collections
    assert manifest["app"]["version"] and manifest["created"]
    refused(cli(old.env, "backup", str(backup_dir)), "not empty")
    stop_apps(old)  # the old stack is gone: what follows is served from the restored data only

    # The fresh stack: servers only, then the restore, then its processes.
    port = embedded.free_port()
    new = Stack(env=stack_env(fresh_servers["nats"], fresh_servers, GATEWAY_PORT=str(port)),
                base_url=f"http://127.0.0.1:{port}", tmp=tmp_path)  # fmt: skip
    assert new.env["JWT_SECRET"] != old.env["JWT_SECRET"]  # nothing of the old stack's sign-ins carries over
    refused(cli(new.env, "restore", str(tmp_path / "nowhere")), "does not exist")
    tampered = tmp_path / "tampered"
    shutil.copytree(backup_dir, tampered)
    with (tampered / "mongodb" / "users.bson").open("ab") as f:
        f.write(b"\0")
    refused(cli(new.env, "restore", str(tampered)), "does not match", "users.bson")
    refused(cli({**new.env, "NATS_URL": f"nats://127.0.0.1:{embedded.free_port()}"}, "restore", str(backup_dir)),
            "NATS", "unreachable")  # fmt: skip

    out = cli(new.env, "restore", str(backup_dir))
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "restore verified" in out.stdout and "MISMATCH" not in out.stdout
    assert "durable progress on EXECUTIONS: position dropped" in out.stdout
    refused(cli(new.env, "restore", str(backup_dir)), "refusing", "--replace", "SUBMISSIONS")

    try:
        start_apps(new)
        with sign_in(new, email) as c:  # the same password, checked against the restored account
            assert c.get(run["resultUrl"]).json() == ran
            assert c.get(graded_job["resultUrl"]).json() == graded
            # The projection's durables replayed the restored streams: nothing counted twice.
            wait_for(lambda: projection_caught_up(new.env["NATS_URL"]) is True, 30, what="the replay")
            assert c.get("/progress/summary").json() == summary
            assert c.get("/execution/history").json() == history

            # A new job continues the restored sequences.
            job = submit(c, "print('hello after the restore')")
            assert "hello after the restore" in wait_result(c, job["resultUrl"])["stdout"]
        url, job_id = new.env["NATS_URL"], job["jobId"]
        assert seq_of(url, streams.SUBMISSIONS, subjects.submission(job_id)) == saved["SUBMISSIONS"]["last_seq"] + 1
        assert seq_of(url, streams.EXECUTIONS, subjects.finished_of(job_id)) > saved["EXECUTIONS"]["last_seq"]
    finally:
        stop_apps(new)
