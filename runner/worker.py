"""The runner: pulls submissions from the shared durable consumer and runs each in a sandbox.

Delivery rules (JetStream at-least-once, made effectively-once):
- A job whose ``finished`` event already exists is acked without running again (a redelivery
  after the runner published the result but died before acking).
- ``ExecutionFinished`` is published with ``Nats-Msg-Id = <jobId>.finished``: JetStream drops a
  second one inside the duplicate window, and the check above covers later redeliveries.
- While a job runs longer than AckWait, the runner sends in-progress acks.
- A sandbox failure is nak'd for another attempt; on the last attempt the job finishes with
  SANDBOX_ERROR and a dead-letter record. Jobs whose runner died on every attempt are dead-lettered
  from the MAX_DELIVERIES advisory (see :mod:`runner.deadletters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from opentelemetry import trace

from bus import client, deadletters, history, streams
from bus.settle import Permanent, Transient, settle
from flags.declared import SANDBOX_DOCKER
from flags.store import FlagReader
from runner.settings import RunnerSettings
from sandbox.base import Execution, Outcome, Sandbox, SandboxFailure, TestCase, TestObservation
from schemas import subjects
from schemas.deadletter import DeadLetterReason
from schemas.executions import (
    ExecutionFinished,
    ExecutionStarted,
    OutputChunk,
    StreamName,
    TestError,
    TestObserved,
    Verdict,
)
from schemas.submissions import Mode, SubmissionRequested, submission_decoder
from telemetry import metrics
from telemetry.logs import bind_job

log = logging.getLogger(__name__)
tracer = trace.get_tracer("coderunner.runner")

# Output is coalesced into chunks of at most this size, flushed at least this often.
CHUNK_BYTES = 8 * 1024
CHUNK_SECONDS = 0.05


class ChunkPublisher:
    """Batches a program's output into ``OutputChunk`` events and publishes them in order."""

    def __init__(self, js: JetStreamContext, job: SubmissionRequested, attempt: int) -> None:
        self.js = js
        self.job = job
        self.attempt = attempt
        self.seq = 0
        self._buffer: list[tuple[StreamName, str]] = []
        self._size = 0
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, stream: StreamName, text: str) -> None:
        self._buffer.append((stream, text))
        self._size += len(text)
        if self._size >= CHUNK_BYTES:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(CHUNK_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            buffer, self._buffer, self._size = self._buffer, [], 0
            # Merge neighbours of the same stream, keeping stdout/stderr interleaving.
            merged: list[tuple[StreamName, str]] = []
            for stream, text in buffer:
                if merged and merged[-1][0] == stream:
                    merged[-1] = (stream, merged[-1][1] + text)
                else:
                    merged.append((stream, text))
            for stream, text in merged:
                chunk = OutputChunk(
                    job_id=self.job.job_id, attempt=self.attempt, stream=stream, seq=self.seq, text=text
                )
                await client.publish(
                    self.js,
                    subjects.execution(chunk),
                    chunk,
                    msg_id=f"{self.job.job_id}.{self.attempt}.{self.seq}",
                )
                self.seq += 1

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()


class Runner:
    def __init__(
        self,
        js: JetStreamContext,
        sandbox: Sandbox,
        settings: RunnerSettings,
        *,
        sandboxes: Mapping[str, Sandbox] | None = None,
        flags: FlagReader | None = None,
    ) -> None:
        self.js = js
        # SANDBOX_BACKEND's; with a second backend, the sandbox-docker flag picks each job's.
        self.sandbox = sandbox
        self.sandboxes: Mapping[str, Sandbox] = sandboxes or {sandbox.name: sandbox}
        self.flags = flags
        self._fallbacks_logged: set[str] = set()
        self.runner_id = settings.runner_id
        self.concurrency = settings.runner_concurrency
        self.ack_wait = settings.runner_ack_wait_seconds
        self.max_deliver = settings.runner_max_deliver
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        # Set while no pull request of this runner is open on the server.
        self._not_fetching = asyncio.Event()
        self._not_fetching.set()
        # One pipeline per submission mode.
        self._pipelines: dict[Mode, Callable[[SubmissionRequested, ChunkPublisher, Sandbox], Awaitable[Outcome]]] = {
            "run": self._run_program,
            "grade": self._run_tests,
        }

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        sub = await self.js.pull_subscribe_bind(durable=streams.RUNNER_CONSUMER, stream=streams.SUBMISSIONS)
        free = asyncio.Semaphore(self.concurrency)
        log.info("runner %s pulling with concurrency %d", self.runner_id, self.concurrency)
        while not self._stopping.is_set():
            await free.acquire()
            if self._stopping.is_set():
                free.release()
                break
            # Fetch only as many as there are free slots, so no message waits in this process
            # while another runner is idle.
            slots = 1
            while slots < self.concurrency and not free.locked():
                await free.acquire()
                slots += 1
            self._not_fetching.clear()
            try:
                msgs = await sub.fetch(slots, timeout=1.0)
            except (FetchTimeoutError, TimeoutError):
                msgs = []
            except Exception as exc:  # the bus may be briefly away; keep pulling
                log.warning("fetch failed: %s", exc)
                msgs = []
                await asyncio.sleep(0.5)
            finally:
                self._not_fetching.set()
            for _ in range(slots - len(msgs)):
                free.release()
            if self._stopping.is_set():
                # Fetched while stopping: hand them straight back to another runner.
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    free.release()
                break
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg, free))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop pulling; let running jobs finish for ``grace`` seconds; hand the rest back (nak)
        so another runner starts them now rather than after AckWait."""
        self._stopping.set()
        # First let the pull request in progress end (within its 1 s expiry): a job handed back
        # while this runner still has a pull request open would be delivered to it again.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._not_fetching.wait(), timeout=3)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("handing back %d unfinished jobs", len(pending))
                await asyncio.wait(pending, timeout=5)

    async def _handle(self, msg: Msg, free: asyncio.Semaphore) -> None:
        try:
            with bind_job(deadletters.job_id_of(msg.subject)), client.processing(msg, streams.RUNNER_CONSUMER):
                await settle(self.js, msg, lambda: self._process(msg), who=f"runner {self.runner_id}")
        except asyncio.CancelledError:
            # Stopped past the grace period: the job goes back for another runner (a redelivery
            # of a job whose finished event exists is acked without running again).
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        finally:
            free.release()

    async def _process(self, msg: Msg) -> None:
        try:
            job = submission_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise Permanent(DeadLetterReason.UNDECODABLE, str(exc)) from exc
        if job.mode == "grade" and not job.tests:
            raise Permanent(DeadLetterReason.INVALID, "a grade submission without tests")
        if await history.job_finished(self.js, job.job_id):
            log.info("job %s already finished; acking redelivery", job.job_id)
            return
        attempt = msg.metadata.num_delivered
        if attempt == 1:
            metrics.QUEUE_WAIT.observe(max(0.0, (datetime.now(UTC) - job.submitted_at).total_seconds()))
        sandbox = self._sandbox_for(job.job_id)
        started_event = ExecutionStarted(
            job_id=job.job_id,
            attempt=attempt,
            runner_id=self.runner_id,
            started_at=datetime.now(UTC),
            sandbox=sandbox.name,
        )
        await client.publish(
            self.js, subjects.execution(started_event), started_event, msg_id=f"{job.job_id}.started.{attempt}"
        )
        chunks = ChunkPublisher(self.js, job, attempt)
        keepalive = asyncio.create_task(self._keep_alive(msg))
        started = time.monotonic()
        try:
            with tracer.start_as_current_span(
                "sandbox run", attributes={"coderunner.mode": job.mode, "coderunner.sandbox": sandbox.name}
            ):
                outcome = await self._pipelines[job.mode](job, chunks, sandbox)
        except SandboxFailure as exc:
            metrics.error("sandbox")
            if attempt < self.max_deliver:
                raise Transient(str(exc)) from exc
            outcome = Outcome(
                verdict=Verdict.SANDBOX_ERROR,
                exit_code=None,
                duration_ms=int((time.monotonic() - started) * 1000),
                message="the sandbox failed; this was not caused by your program",
            )
            await deadletters.record(self.js, msg, reason=DeadLetterReason.SANDBOX_FAILED, detail=str(exc))
        finally:
            keepalive.cancel()
        metrics.EXECUTION_SECONDS.labels(job.mode, outcome.verdict.value).observe(outcome.duration_ms / 1000)
        await chunks.close()
        await client.publish(
            self.js,
            subjects.finished_of(job.job_id),
            ExecutionFinished(
                job_id=job.job_id,
                attempt=attempt,
                verdict=outcome.verdict,
                exit_code=outcome.exit_code,
                duration_ms=outcome.duration_ms,
                finished_at=datetime.now(UTC),
                stdout_truncated=outcome.stdout_truncated,
                stderr_truncated=outcome.stderr_truncated,
                signal=outcome.signal,
                message=outcome.message,
                graded=job.mode == "grade",
            ),
            msg_id=f"{job.job_id}.finished",
        )

    def _sandbox_for(self, job_id: str) -> Sandbox:
        """The sandbox-docker flag's choice for this job (a hash of its id: the same on every
        redelivery while the flag holds), or this runner's own backend when it lacks that one: the
        job still runs, and the fallback is counted (and logged once per backend)."""
        wanted = "docker" if self.flags is not None and self.flags.enabled(SANDBOX_DOCKER, job_id) else "bwrap"
        chosen = self.sandboxes.get(wanted)
        if chosen is not None:
            metrics.SANDBOX_JOBS.labels(chosen.name, "flag").inc()
            return chosen
        metrics.SANDBOX_JOBS.labels(self.sandbox.name, "fallback").inc()
        if wanted not in self._fallbacks_logged:
            self._fallbacks_logged.add(wanted)
            log.warning(
                "the %s flag chose %s for job %s, which this runner lacks: running it in %s (counted in "
                'coderunner_sandbox_jobs_total{choice="fallback"}; logged once)',
                SANDBOX_DOCKER.name,
                wanted,
                job_id,
                self.sandbox.name,
            )
        return self.sandbox

    async def _run_program(self, job: SubmissionRequested, chunks: ChunkPublisher, sandbox: Sandbox) -> Outcome:
        """Run mode: the program with the student's stdin, its output streamed live."""
        return await sandbox.run(Execution(code=job.code, stdin=job.stdin, limits=job.limits), chunks.write)

    async def _run_tests(self, job: SubmissionRequested, chunks: ChunkPublisher, sandbox: Sandbox) -> Outcome:
        """Grade mode: the program is compiled once and each test case runs in its own child.

        The submission carries the tests' inputs only; each observation is published as soon as
        the harness reports it (``observed``), and the grading consumer compares it outside.
        """
        index = {t.id: i for i, t in enumerate(job.tests)}
        count = len(job.tests)

        async def observed(obs: TestObservation) -> None:
            error = None
            if obs.error:
                error = TestError(
                    type=str(obs.error.get("type", "Error"))[:100],
                    message=str(obs.error.get("message", ""))[:1000],
                    phase=_phase(obs.error.get("phase")),
                )
            event = TestObserved(
                job_id=job.job_id,
                attempt=chunks.attempt,
                test_id=obs.id,
                index=index[obs.id],
                count=count,
                stdout=obs.stdout,
                stderr=obs.stderr,
                return_json=obs.return_json,
                error=error,
                exit_code=obs.exit_code,
                signal=obs.signal,
                timed_out=obs.timed_out,
                output_truncated=obs.output_truncated,
                time_ms=obs.time_ms,
            )
            await client.publish(
                self.js, subjects.execution(event), event, msg_id=f"{job.job_id}.{chunks.attempt}.observed.{obs.id}"
            )

        cases = [
            TestCase(
                id=t.id,
                stdin=t.stdin,
                function=t.function,
                args=t.args or [],
                script=t.script,
                wall_ms=t.wall_ms,
                cpu_seconds=max(1, -(-t.wall_ms // 1000)),
            )
            for t in job.tests
        ]
        run = await sandbox.run_tests(job.code, cases, job.limits, observed)
        return run.outcome

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()


_PHASES = ("program", "call", "script", "compile", "harness")


def _phase(raw: object) -> Literal["program", "call", "script", "compile", "harness"]:
    """The phase the harness named, or "program" (its report is untrusted data)."""
    return raw if raw in _PHASES else "program"  # type: ignore[return-value]
