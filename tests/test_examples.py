"""The examples in examples/ work against a real stack: each follows results with its own durable
consumer and prints the job we submit; and the dedup keys the catalogue documents are the ones the
publishers really send."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest

from bus import streams
from local.lifetimes import die_with_parent
from schemas import catalog, subjects
from schemas.executions import ExecutionFinished, Verdict, execution_decoder
from schemas.grades import Grade, Graded, GradeVerdict
from schemas.submissions import submission_decoder
from tests.conftest import ROOT, App, Stack, wait_for
from tests.helpers import submit
from tests.test_contract import npm_cached, require_node

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runner(stack: Stack) -> Iterator[App]:
    app = stack.runner()
    yield app
    app.stop()


def _follow_one_result(stack: Stack, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Start an example with ``--once 1``, submit a job once it listens, and check the line it printed."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--once", "1", "--durable", f"example-{log.stem}"],
            cwd=ROOT,
            env={**stack.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # it dies with the test run, whatever happens
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited {proc.returncode}:\n{log.read_text()}")
            return "listening on" in log.read_text()

        # The durable starts from new results: it must exist before the job finishes.
        wait_for(listening, 30, what=f"{log.name}: listening")
        with stack.client() as client:
            job = submit(client, 'print("hello from an example")')
        proc.wait(60)
        printed = log.read_text()
        assert proc.returncode == 0, printed
        assert re.search(rf"^{re.escape(job['jobId'])} finished OK exit=0 \d+ms$", printed, re.MULTILINE), printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_python_example_prints_the_result_of_a_submitted_job(stack: Stack, runner: App, tmp_path: Path) -> None:
    _follow_one_result(
        stack, [sys.executable, str(ROOT / "examples" / "python" / "results_subscriber.py")], tmp_path / "python.log"
    )


@pytest.mark.timeout(600)  # the first run installs the Node packages from the lockfile
def test_node_example_prints_the_result_of_a_submitted_job(stack: Stack, runner: App, tmp_path: Path) -> None:
    node = require_node()
    packages = npm_cached(ROOT / "examples" / "node")
    _follow_one_result(
        stack,
        [node, str(ROOT / "examples" / "node" / "results_subscriber.js")],
        tmp_path / "node.log",
        # The packages live in a cache outside the work tree; require() looks there too.
        env={"NODE_PATH": str(packages / "node_modules")},
    )


def test_published_dedup_keys_are_the_catalogues(stack: Stack, runner: App) -> None:
    """Every stored message of one job carries the Nats-Msg-Id the catalogue documents."""
    with stack.client() as client:
        job_id = submit(client, 'print("a")\nprint("b")')["jobId"]

    async def stored(stream: str, subject: str) -> list[tuple[bytes, str]]:
        nc = await nats.connect(stack.env["NATS_URL"])
        js = nc.jetstream()
        found: list[tuple[bytes, str]] = []
        seq = 1
        try:
            while True:
                try:
                    msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    return found
                found.append((msg.data or b"", (msg.headers or {}).get("Nats-Msg-Id", "")))
                seq = (msg.seq or seq) + 1
        finally:
            await nc.close()

    def finished() -> list[tuple[bytes, str]]:
        events = asyncio.run(stored(streams.EXECUTIONS, subjects.executions_of(job_id)))
        return events if any(b'"execution.finished"' in data for data, _ in events) else []

    events = wait_for(finished, 30, what="the job's finished event")
    assert isinstance(events, list)
    kinds = set()
    for data, msg_id in events:
        event = execution_decoder.decode(data)
        kinds.add(catalog.tag(type(event)))
        assert msg_id == catalog.msg_id(catalog.channel_of(streams.EXECUTIONS), event), msgspec.json.decode(data)
    assert {"execution.started", "execution.output", "execution.finished"} <= kinds
    [(data, msg_id)] = asyncio.run(stored(streams.SUBMISSIONS, subjects.submission(job_id)))
    assert msg_id == catalog.msg_id(catalog.channel_of(streams.SUBMISSIONS), submission_decoder.decode(data))


def test_both_examples_describe_a_grade_and_a_run_alike(tmp_path: Path) -> None:
    """The graded line too (the stack test above sees a run's): the same text from both examples."""
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    grade = Grade(
        problem_id="101", revision=3, verdict=GradeVerdict.WRONG_ANSWER, score=50.0, passed=1, total=2, tests=[]
    )
    events = [
        msgspec.to_builtins(Graded(job_id="job-00000001", grade=grade, graded_at=now)),
        msgspec.to_builtins(
            ExecutionFinished(
                job_id="job-00000001", verdict=Verdict.OK, exit_code=0, duration_ms=4, finished_at=now, graded=True
            )
        ),
    ]
    spec = importlib.util.spec_from_file_location("results_subscriber", ROOT / "examples/python/results_subscriber.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    lines = [example.describe(e) for e in events]
    assert lines == [
        "job-00000001 graded WRONG_ANSWER score=50.0 (1/2)",
        "job-00000001 finished OK exit=0 4ms (a grade follows)",
    ]

    node = require_node()
    packages = npm_cached(ROOT / "examples" / "node")
    script = (
        "const { describe } = require(process.argv[1]);"
        "for (const e of JSON.parse(process.argv[2])) console.log(describe(e));"
    )
    done = subprocess.run(
        [node, "-e", script, str(ROOT / "examples/node/results_subscriber.js"), json.dumps(events)],
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(packages / "node_modules")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # JavaScript prints 50.0 as 50: the only difference between the two.
    assert done.stdout.splitlines() == [lines[0].replace("score=50.0", "score=50"), lines[1]]
