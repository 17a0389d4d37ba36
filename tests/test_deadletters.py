"""Dead letters from every consumer: a malformed event is dead-lettered (``undecodable``) and the
consumer goes on; a message that reaches MaxDeliver is dead-lettered (``max_deliveries``) even when
no process of its durable was running as the server announced it (the ADVISORIES stream keeps the
advisory until the owner comes up). Real servers and processes throughout."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import nats
import pytest
from nats.js.errors import NotFoundError

from bus import advisories, streams
from bus.streams import BusLimits
from schemas import subjects
from schemas.codec import encode
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import ExecutionFinished, Verdict, execution_decoder
from schemas.problems import ProblemChanged
from schemas.progress import AttemptRecorded, ProgressChanged
from schemas.submissions import Limits, SubmissionRequested
from tests.conftest import ROOT, App, Stack, wait_for
from tests.helpers import read_events, stored_messages, submit

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def on_bus(nats_url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(js)`` on a connection of its own."""

    async def run() -> T:
        nc = await nats.connect(nats_url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def publish(nats_url: str, subject: str, payload: bytes) -> int:
    async def pub(js: Any) -> int:
        return int((await js.publish(subject, payload)).seq)

    return on_bus(nats_url, pub)


def dead_letters(nats_url: str, stream: str) -> list[tuple[int, DeadLetter]]:
    """Every record about ``stream``'s messages, with its DEADLETTER sequence."""

    async def read(js: Any) -> list[tuple[int, DeadLetter]]:
        out, seq = [], 1
        while True:
            try:
                raw = await js.get_msg(
                    streams.DEADLETTER, seq=seq, subject=subjects.deadletter(stream.lower()), next=True, direct=True
                )
            except NotFoundError:
                return out
            out.append((raw.seq, msgspec.json.decode(raw.data, type=DeadLetter)))
            seq = raw.seq + 1

    return on_bus(nats_url, read)


def letters_about(nats_url: str, stream: str, seq: int) -> list[DeadLetter]:
    return [d for _, d in dead_letters(nats_url, stream) if d.stream_seq == seq]


def ack_floor(nats_url: str, stream: str, durable: str) -> int:
    async def floor(js: Any) -> int:
        return int((await js.consumer_info(stream, durable)).ack_floor.stream_seq)

    return on_bus(nats_url, floor)


def submission(job_id: str) -> bytes:
    return encode(
        SubmissionRequested(
            job_id=job_id,
            mode="run",
            code="print(1)",
            user_id="u-test",
            limits=Limits(),
            submitted_at=datetime.now(UTC),
        )
    )


def problem_changed(problem_id: str) -> bytes:
    return encode(
        ProblemChanged(
            problem_id=problem_id,
            revision=1,
            change="updated",
            level="adults",
            session="s1",
            changed_at=datetime.now(UTC),
            changed_by="test",
        )
    )


def progress_event(user_id: str, kind: str) -> bytes:
    at = datetime.now(UTC)
    if kind == "attempt":
        return encode(AttemptRecorded(user_id=user_id, event_id=secrets.token_hex(8), at=at, problem_id="101"))
    return encode(ProgressChanged(user_id=user_id, event_id=secrets.token_hex(8), at=at, item="x", source="t"))


def last_seq(nats_url: str, stream: str, subject: str) -> int:
    """The sequence of the last message stored on ``subject``."""

    async def get(js: Any) -> int:
        return int((await js.get_msg(stream, subject=subject, direct=True)).seq)

    return on_bus(nats_url, get)


def payload_at(nats_url: str, stream: str, seq: int) -> str:
    async def get(js: Any) -> str:
        return str((await js.get_msg(stream, seq=seq, direct=True)).data.decode())

    return on_bus(nats_url, get)


def run_a_job(stack: Stack) -> str:
    with stack.client() as c:
        job = submit(c, "print('fine')")
        assert read_events(c, job["eventsUrl"])[-1].data["stdout"] == "fine\n"
    return str(job["jobId"])


# The durables reading each stream's garbage subject below, and how a good event follows it.
@pytest.mark.parametrize(
    ("stream", "durables"),
    [
        (streams.SUBMISSIONS, ("runner",)),
        (streams.EXECUTIONS, ("caching", "progress", "grading")),
        (streams.PROBLEMS, ("caching-problems",)),
        (streams.PROGRESS, ("progress-inputs",)),
        (streams.PROGRESS, ("caching-progress",)),
    ],
)
def test_malformed_event_is_dead_lettered_by_every_consumer_that_reads_it_and_they_go_on(
    stack: Stack, nats_url: str, stream: str, durables: tuple[str, ...]
) -> None:
    token = secrets.token_hex(4)
    user = f"garbage-{token}"
    subject = {
        "runner": f"coderunner.v1.submissions.garbage-{token}",
        "caching": f"coderunner.v1.executions.garbage-{token}.finished",
        "caching-problems": f"coderunner.v1.problems.9{int(token, 16)}.changed",
        "progress-inputs": subjects.progress(user, "attempt"),
        "caching-progress": subjects.progress(user, "changed"),
    }[durables[0]]
    garbage = b'{"type": "not.a.thing", "oops": ' + token.encode()
    runner = stack.runner() if stream in (streams.SUBMISSIONS, streams.EXECUTIONS) else None
    try:
        bad_seq = publish(nats_url, subject, garbage)

        def recorded() -> list[DeadLetter]:
            letters = letters_about(nats_url, stream, bad_seq)
            return letters if {d.consumer for d in letters} >= set(durables) else []

        letters = wait_for(recorded, what=f"dead letters from {durables}")
        assert isinstance(letters, list)
        assert sorted(d.consumer for d in letters) == sorted(durables)  # once per consumer
        for d in letters:
            assert d.reason is DeadLetterReason.UNDECODABLE
            assert (d.stream, d.subject, d.payload, d.attempts) == (stream, subject, garbage.decode(), 1)
        # ...and every one of them goes on with the next, good, event.
        if stream == streams.SUBMISSIONS:
            good_seq = last_seq(nats_url, stream, subjects.submission(run_a_job(stack)))
        elif stream == streams.EXECUTIONS:
            good_seq = last_seq(nats_url, stream, subjects.finished_of(run_a_job(stack)))
        elif stream == streams.PROBLEMS:
            good_seq = publish(nats_url, subjects.problem_changed("77"), problem_changed("77"))
        else:
            kind = "attempt" if durables == ("progress-inputs",) else "changed"
            good_seq = publish(nats_url, subjects.progress(user, kind), progress_event(user, kind))
        for durable in durables:
            wait_for(lambda d=durable: ack_floor(nats_url, stream, d) >= good_seq, what=f"{durable} past the event")
    finally:
        if runner:
            runner.stop()


def give_up_while_nobody_listens(nats_url: str, stream: str, durable: str, subject: str, payload: bytes) -> int:
    """Publish a message and let it reach MaxDeliver on ``durable`` with nobody but this test
    pulling: the durable gets MaxDeliver 2 and a short AckWait, the test fetches the message twice
    without acking it, and its next pull makes the server announce the give-up. Returns the
    message's sequence once the ADVISORIES stream holds the advisory."""
    definition = next(d for d in streams.DURABLES if d.name == durable)
    limits = BusLimits(
        stream_retention_seconds=3600,
        duplicate_window_seconds=120,
        runner_ack_wait_seconds=1,
        runner_max_deliver=2,
        consumer_ack_wait_seconds=1,
        consumer_max_deliver=2,
    )

    async def work(js: Any) -> int:
        await js.add_consumer(definition.stream, streams.consumer_config(definition, limits))
        seq = int((await js.publish(subject, payload)).seq)
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        deliveries = 0
        for _ in range(20):
            try:
                msgs = await sub.fetch(10, timeout=1.5)
            except TimeoutError:  # nats-py raises both its own and asyncio's
                msgs = []
            deliveries += sum(1 for m in msgs if m.metadata.sequence.stream == seq)
            if deliveries >= 2:
                break
        assert deliveries == 2
        # The server announces the give-up on the next pull after AckWait (nobody acks).
        for _ in range(20):
            with contextlib.suppress(TimeoutError):
                await sub.fetch(10, timeout=1.5)
            try:
                raw = await js.get_msg(
                    streams.ADVISORIES, subject=advisories.max_deliveries_of(stream, durable), direct=True
                )
            except NotFoundError:
                continue
            if advisories.decoder.decode(raw.data).stream_seq == seq:
                return seq
        raise AssertionError("no MAX_DELIVERIES advisory was stored")

    return on_bus(nats_url, work)


def test_runner_give_up_is_dead_lettered_when_a_runner_comes_up_later(stack: Stack, nats_url: str) -> None:
    # No runner runs in this module outside the tests that start one.
    job_id = f"nobody-{secrets.token_hex(4)}"
    seq = give_up_while_nobody_listens(
        nats_url, streams.SUBMISSIONS, "runner", subjects.submission(job_id), submission(job_id)
    )
    assert letters_about(nats_url, streams.SUBMISSIONS, seq) == []  # nobody has handled it yet
    runner = stack.runner()
    try:
        letters = wait_for(lambda: letters_about(nats_url, streams.SUBMISSIONS, seq), what="the dead letter")
        assert isinstance(letters, list) and len(letters) == 1
        (letter,) = letters
        assert letter.reason is DeadLetterReason.MAX_DELIVERIES
        assert (letter.consumer, letter.attempts, letter.job_id) == ("runner", 2, job_id)
        assert letter.payload == payload_at(nats_url, streams.SUBMISSIONS, seq)
        # ...and the job is finished, so nobody waits for it forever.
        finished = wait_for(
            lambda: stored_messages(nats_url, streams.EXECUTIONS, subjects.finished_of(job_id)), what="finished"
        )
        assert isinstance(finished, list) and len(finished) == 1
        event = execution_decoder.decode(finished[0])
        assert isinstance(event, ExecutionFinished) and event.verdict is Verdict.SANDBOX_ERROR
    finally:
        runner.stop()


def _caching_apps(stack: Stack) -> list[App]:
    return [a for a in stack.apps if a.args == ["consume", "caching"] and a.proc and a.proc.poll() is None]


def test_consumer_give_up_is_dead_lettered_when_its_process_comes_up_later_and_redrive_fixes_it(
    stack: Stack, nats_url: str
) -> None:
    for app in _caching_apps(stack):
        app.stop()
    problem_id = str(secrets.randbelow(10**6) + 10**6)
    subject = subjects.problem_changed(problem_id)
    try:
        seq = give_up_while_nobody_listens(
            nats_url, streams.PROBLEMS, "caching-problems", subject, problem_changed(problem_id)
        )
        assert letters_about(nats_url, streams.PROBLEMS, seq) == []
    finally:
        stack.spawn("consume", "caching").wait_log("consumer advisories-caching started")
    letters = wait_for(lambda: letters_about(nats_url, streams.PROBLEMS, seq), what="the dead letter")
    assert isinstance(letters, list) and len(letters) == 1
    (letter,) = letters
    assert letter.reason is DeadLetterReason.MAX_DELIVERIES
    assert (letter.consumer, letter.attempts, letter.subject) == ("caching-problems", 2, subject)
    assert letter.payload == payload_at(nats_url, streams.PROBLEMS, seq)
    # Redriven, the same event is published once more, and the consumer, now healthy, takes it.
    letter_seq = next(s for s, d in dead_letters(nats_url, streams.PROBLEMS) if d.stream_seq == seq)
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "cli", "redrive", str(letter_seq)],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    copies = stored_messages(nats_url, streams.PROBLEMS, subject)
    assert len(copies) == 2 and msgspec.json.decode(copies[1]) == msgspec.json.decode(copies[0])
    copy_seq = last_seq(nats_url, streams.PROBLEMS, subject)
    wait_for(lambda: ack_floor(nats_url, streams.PROBLEMS, "caching-problems") >= copy_seq, what="the copy acked")
    assert letters_about(nats_url, streams.PROBLEMS, copy_seq) == []
