"""``coderunner replay`` and ``coderunner redrive`` against a real stack: a job's whole timeline in
order, the selections, JSON lines, following, dead letters, and a redrive that publishes once."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats
import pytest

from bus import streams
from cli.replay import overlap, parse_time
from gateway.executions import live
from schemas import subjects
from schemas.deadletter import DeadLetter
from tests.conftest import ROOT, App, Stack, wait_for
from tests.helpers import read_events, stored_messages, submit

PROGRAM = "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')"


# --- Arguments (no servers) --------------------------------------------------------------------


def test_times_are_rfc3339_or_a_duration_ago() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("1h30m", now) == now - timedelta(hours=1, minutes=30)
    assert parse_time("90s", now) == now - timedelta(seconds=90)
    assert parse_time("2d", now) == now - timedelta(days=2)
    assert parse_time("2025-05-01T10:00:00Z") == datetime(2025, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2025-05-01T10:00:00") == datetime(2025, 5, 1, 10, tzinfo=UTC)  # no zone: UTC
    assert parse_time("2025-05-01T12:00:00+02:00") == datetime(2025, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(Exception, match="neither RFC 3339 nor a duration"):
        parse_time("yesterday")


def test_subject_filters_overlap_as_nats_matches_them() -> None:
    assert overlap("coderunner.v1.executions.*.finished", "coderunner.v1.executions.>")
    assert overlap("coderunner.v1.>", "coderunner.v1.submissions.>")
    assert not overlap("coderunner.v1.executions.*.finished", "coderunner.v1.submissions.>")
    assert not overlap("coderunner.v1.submissions.a", "coderunner.v1.submissions.a.b")


# --- Against the stack -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(stack: Stack) -> Iterator[App]:
    app = stack.runner()
    yield app
    app.stop()


def cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def json_rows(stack: Stack, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(stack, "replay", "--json", *args).stdout.splitlines()]


def table_rows(stack: Stack, *args: str) -> list[list[str]]:
    lines = cli(stack, "replay", *args).stdout.splitlines()
    assert lines[0].split()[:2] == ["TIME", "STREAM:SEQ"]
    return [line.split(None, 4) for line in lines[1:]]


def run_job(stack: Stack, code: str = PROGRAM, token: str | None = None) -> str:
    with stack.client(token) as c:
        job = submit(c, code)
        assert read_events(c, job["eventsUrl"])[-1].data["status"] == "completed"
    return str(job["jobId"])


def user_of(nats_url: str, job_id: str) -> str:
    (raw,) = stored_messages(nats_url, streams.SUBMISSIONS, subjects.submission(job_id))
    return str(json.loads(raw)["userId"])


def test_replay_job_prints_its_whole_timeline_in_order(stack: Stack, runner: App) -> None:
    job_id = run_job(stack)
    rows = table_rows(stack, f"--job={job_id}")
    kinds = [r[2] for r in rows]
    assert kinds[0] == "submission" and kinds[1] == "started" and kinds[-1] == "finished", rows
    assert set(kinds[2:-1]) == {"output"}
    assert all(r[3] == job_id for r in rows)
    assert rows[0][1].startswith("SUBMISSIONS:")
    seqs = [int(r[1].split(":")[1]) for r in rows[1:]]
    assert all(r[1].startswith("EXECUTIONS:") for r in rows[1:]) and seqs == sorted(seqs)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert "OK exit 0" in rows[-1][4]
    assert any("stderr" in r[4] and "two" in r[4] for r in rows)

    # The same as JSON lines, each with its payload.
    lines = json_rows(stack, f"--job={job_id}")
    assert [line["kind"] for line in lines] == kinds
    assert lines[0]["payload"]["type"] == "submission.requested" and lines[0]["payload"]["code"] == PROGRAM
    assert lines[-1]["payload"]["verdict"] == "OK" and lines[-1]["jobId"] == job_id
    output = "".join(line["payload"]["text"] for line in lines if line["kind"] == "output")
    assert "one" in output and "three" in output


def test_replay_selects_by_user_time_sequence_and_subject(stack: Stack, nats_url: str, runner: App) -> None:
    first = run_job(stack, "print(1)", token=stack.new_user())
    mid = datetime.now(UTC)
    second_user = stack.new_user()
    second = run_job(stack, "print(2)", token=second_user)
    user = user_of(nats_url, second)

    by_user = json_rows(stack, f"--user={user}")
    assert {line["jobId"] for line in by_user} == {second}
    assert {line["kind"] for line in by_user} >= {"submission", "started", "finished"}

    since = {line["jobId"] for line in json_rows(stack, "--since", mid.isoformat())}
    assert second in since and first not in since
    until = {line["jobId"] for line in json_rows(stack, "--until", mid.isoformat())}
    assert first in until and second not in until
    assert {second, first} <= {line["jobId"] for line in json_rows(stack, "--since", "10m")}

    finished = json_rows(stack, "--subject", "coderunner.v1.executions.*.finished")
    assert {line["kind"] for line in finished} == {"finished"} and {first, second} <= {x["jobId"] for x in finished}

    executions = json_rows(stack, f"--job={second}", "--stream", "executions")
    a, b = executions[1]["seq"], executions[-2]["seq"]
    window = json_rows(stack, "--stream", "EXECUTIONS", "--from-seq", str(a), "--to-seq", str(b))
    assert [line["seq"] for line in window] == list(range(a, b + 1))
    assert {line["stream"] for line in window} == {streams.EXECUTIONS}


def test_follow_prints_new_events_until_interrupted(stack: Stack, runner: App) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "replay", "--follow", "--json", "--subject", subjects.EXECUTIONS_FINISHED],
        env=stack.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    seen: list[dict[str, Any]] = []

    def printed(job_id: str) -> bool:
        while not lines.empty():
            seen.append(json.loads(lines.get()))
        return any(line["jobId"] == job_id for line in seen)

    try:
        job_id = run_job(stack, "print('followed')")
        wait_for(lambda: printed(job_id), what="the job's finished event printed")
        later = run_job(stack, "print('later')")
        wait_for(lambda: printed(later), what="a later job's finished event printed")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    # Nothing is left on the server: every command above deleted its ordered consumers.
    wait_for(lambda: not leftover_consumers(stack.env["NATS_URL"]), what="no ephemeral consumers left")


def leftover_consumers(nats_url: str) -> list[str]:
    durable = {d.name for d in streams.DURABLES}

    async def names() -> list[str]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            found = []
            for stream in (streams.SUBMISSIONS, streams.EXECUTIONS, streams.PROBLEMS, streams.DEADLETTER):
                found += [
                    f"{stream}/{c.name}"
                    for c in await js.consumers_info(stream)
                    # The gateway's one live-events consumer lives as long as the gateway.
                    if c.name not in durable and c.config.description != live.DESCRIPTION
                ]
            return found
        finally:
            await nc.close()

    return asyncio.run(names())


def test_dead_letters_are_listed_and_redriven_once(stack: Stack, nats_url: str, runner: App) -> None:
    job_id = "garbage-replay-01"
    subject = subjects.submission(job_id)
    garbage = b'{"type": "submission.requested", "jobId": "garbage-replay-01"}'

    async def pub() -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().publish(subject, garbage)
        await nc.close()

    asyncio.run(pub())
    wait_for(lambda: json_rows(stack, "--dead-letters", f"--job={job_id}"), what="the dead letter")

    lines = cli(stack, "replay", "--dead-letters", f"--job={job_id}").stdout.splitlines()
    assert lines[0].split() == ["TIME", "SEQ", "REASON", "ORIGIN", "CONSUMER", "ATTEMPTS", "JOB", "DETAIL"]
    (row,) = [line.split(None, 7) for line in lines[1:]]
    seq = row[1].removeprefix("DEADLETTER:")
    assert row[2:7] == ["undecodable", row[3], "runner", "1", job_id] and row[3].startswith("SUBMISSIONS:")
    (record,) = json_rows(stack, "--dead-letters", f"--job={job_id}")
    letter = msgspec.json.decode(json.dumps(record["payload"]), type=DeadLetter)
    assert letter.payload == garbage.decode() and letter.attempts == 1 and record["seq"] == int(seq)
    assert json_rows(stack, "--reason", "undecodable", f"--job={job_id}") == [record]

    dry = cli(stack, "redrive", seq, "--dry-run").stdout
    assert "would publish" in dry and len(stored_messages(nats_url, streams.SUBMISSIONS, subject)) == 1

    first = cli(stack, "redrive", seq).stdout
    assert f"DEADLETTER:{seq}" in first and "published as SUBMISSIONS:" in first
    again = cli(stack, "redrive", seq).stdout
    assert "already redriven" in again
    copies = stored_messages(nats_url, streams.SUBMISSIONS, subject)
    assert copies == [garbage, garbage]  # the original payload, published once more, once

    # The copy went to the runner again (and, still garbage, was dead-lettered again: a new letter).
    wait_for(lambda: len(json_rows(stack, "--dead-letters", f"--job={job_id}")) == 2, what="the copy dead-lettered")
    by_job = cli(stack, "redrive", f"--job={job_id}", "--reason", "undecodable", "--dry-run").stdout
    assert by_job.count("would publish") == 2
    missing = cli(stack, "redrive", "999999", check=False)
    assert missing.returncode == 1 and "no dead-letter record" in missing.stderr


def test_redrive_needs_a_selection(stack: Stack) -> None:
    out = cli(stack, "redrive", check=False)
    assert out.returncode != 0 and "name dead letters" in out.stderr
