"""``coderunner replay`` and ``coderunner redrive``: the stored events as a timeline, and dead letters
sent back to where they came from.

Reads are stateless: each stream is read by one ordered consumer (ephemeral, no acks, in memory),
deleted when the command ends; a start time is turned into a start sequence with direct gets
first, so the ordered consumer can always resume by sequence. Nothing durable is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from bus import client, deadletters, streams
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import (
    ExecutionFinished,
    ExecutionStarted,
    OutputChunk,
    TestObserved,
    execution_decoder,
)
from schemas.grades import Graded, TestGraded
from schemas.problems import ProblemChanged, problem_event_decoder
from schemas.submissions import SubmissionRequested, submission_decoder

DEFAULT_STREAMS = (streams.SUBMISSIONS, streams.EXECUTIONS, streams.PROBLEMS, streams.DEADLETTER)
# Ties in time print in this order (a job's submission before its first event).
_RANK = {name: i for i, name in enumerate(DEFAULT_STREAMS)}
deadletter_decoder = msgspec.json.Decoder(DeadLetter)
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    streams.SUBMISSIONS: submission_decoder.decode,
    streams.EXECUTIONS: execution_decoder.decode,
    streams.PROBLEMS: problem_event_decoder.decode,
    streams.DEADLETTER: deadletter_decoder.decode,
}
EXCERPT = 60


# --- Arguments -------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2025-05-01T12:00:00Z``; no zone means UTC), or a duration ago (``90s``, ``1h30m``, ``2d``)."""
    text = text.strip()
    if text and _RELATIVE.sub("", text) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _RELATIVE.findall(text))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither RFC 3339 nor a duration such as 1h or 30m") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _job_id(text: str) -> str:
    if not subjects.JOB_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id")
    return text


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", type=_job_id, help="one job's events (an id starting with - as --job=ID)")
    parser.add_argument("--user", help="the jobs (and problem edits) of one user id")
    parser.add_argument("--problem", help="the jobs on one problem, and its changes")
    parser.add_argument("--subject", help="a subject filter, wildcards allowed (coderunner.v1.executions.*.finished)")
    parser.add_argument("--since", type=parse_time, help="from this time: RFC 3339, or ago (1h, 30m, 2d)")
    parser.add_argument("--until", type=parse_time, help="up to this time: RFC 3339, or ago")
    parser.add_argument("--from-seq", type=int, help="from this stream sequence (each stream read)")
    parser.add_argument("--to-seq", type=int, help="up to this stream sequence (each stream read)")
    parser.add_argument(
        "--stream",
        action="append",
        type=str.upper,
        help=f"a stream to read (repeatable; default: {', '.join(DEFAULT_STREAMS)})",
    )
    parser.add_argument("--dead-letters", action="store_true", help="the DEADLETTER stream as a table of records")
    parser.add_argument("--reason", choices=[r.value for r in DeadLetterReason], help="dead letters of one reason")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")


def add_redrive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seqs", nargs="*", type=int, metavar="SEQ", help="DEADLETTER stream sequences")
    parser.add_argument("--reason", choices=[r.value for r in DeadLetterReason], help="every dead letter of a reason")
    parser.add_argument("--job", type=_job_id, help="every dead letter of a job (--job=ID)")
    parser.add_argument("--since", type=parse_time, help="dead letters recorded since (RFC 3339, or ago)")
    parser.add_argument("--until", type=parse_time, help="dead letters recorded until (RFC 3339, or ago)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be published, publish nothing")


# --- Selection -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    job: str | None = None
    user: str | None = None
    problem: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    streams: tuple[str, ...] = DEFAULT_STREAMS
    reason: str | None = None


def overlap(a: str, b: str) -> bool:
    """Whether some subject matches both subject filters."""
    ta, tb = a.split("."), b.split(".")
    for x, y in zip(ta, tb, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(ta) == len(tb)


def stream_filters(stream: str, stream_subjects: list[str], sel: Selection) -> list[str] | None:
    """The server-side filter for ``stream`` (the rest is filtered here), or None: nothing in it can match."""
    if sel.subject:
        return [sel.subject] if any(overlap(sel.subject, s) for s in stream_subjects) else None
    if sel.job:
        if stream == streams.SUBMISSIONS:
            return [subjects.submission(sel.job)]
        if stream == streams.EXECUTIONS:
            return [subjects.executions_of(sel.job)]
        if stream == streams.PROBLEMS:
            return None  # a job has no curriculum events
    if sel.problem and stream == streams.PROBLEMS:
        return [subjects.problem_changed(sel.problem)] if sel.problem.isdigit() else None
    return stream_subjects


# --- Reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    stream: str
    seq: int
    subject: str
    time: datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """A reader delivered everything its stream held when the command started."""

    stream: str


async def start_seq(js: JetStreamContext, stream: str, since: datetime, first: int, last: int) -> int:
    """The first sequence stored at or after ``since`` (``last + 1`` if none), by bisection with direct
    gets: a limits stream stores in time order."""
    lo, hi = first, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            # The next stored message from mid on (a deleted sequence has none of its own).
            raw = await js.get_msg(stream, seq=mid, subject=">", next=True, direct=True)
        except NotFoundError:
            hi = mid
            continue
        assert raw.seq is not None
        if raw.time is not None and raw.time >= since:
            hi = mid
        else:
            lo = raw.seq + 1
    return lo


async def read_stream(
    js: JetStreamContext, stream: str, sel: Selection, *, follow: bool, out: asyncio.Queue[Stored | CaughtUp]
) -> None:
    """Put each message of ``stream`` that the server-side filter keeps on ``out`` in order, then
    :class:`CaughtUp`; with ``follow`` keep going. The ordered consumer is deleted on the way out."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        print(f"coderunner replay: no stream {stream}", file=sys.stderr)
        await out.put(CaughtUp(stream))
        return
    filters = stream_filters(stream, list(info.config.subjects or []), sel)
    first, last = info.state.first_seq, info.state.last_seq
    start = max(first, sel.from_seq or 0, 1)
    if sel.since is not None and last >= start:
        start = max(start, await start_seq(js, stream, sel.since, start, last))
    if filters is None or (not follow and (start > last or (sel.to_seq is not None and start > sel.to_seq))):
        await out.put(CaughtUp(stream))
        return
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        filter_subjects=filters if len(filters) > 1 else None,
        # A backstop only (a killed command): the consumer is deleted below.
        inactive_threshold=30.0,
    )
    sub = await js.subscribe(filters[0], stream=stream, ordered_consumer=True, config=config)
    caught_up = False
    last_seen = 0
    try:
        cinfo = await sub.consumer_info()
        if cinfo.num_pending == 0 and _delivered(cinfo)[0] == 0:  # nothing to deliver at all
            caught_up = True
            await out.put(CaughtUp(stream))
            if not follow:
                return
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:  # nats-py raises its own (a subclass) or asyncio's
                if not caught_up:
                    # Nothing left on the server, and nothing delivered that we have not read.
                    cinfo = await sub.consumer_info()
                    consumer_seq, stream_seq = _delivered(cinfo)
                    if cinfo.num_pending == 0 and (consumer_seq == 0 or stream_seq <= last_seen):
                        caught_up = True
                        await out.put(CaughtUp(stream))
                        if not follow:
                            return
                continue
            meta = msg.metadata
            seq = meta.sequence.stream
            last_seen = seq
            past = (sel.to_seq is not None and seq > sel.to_seq) or (
                sel.until is not None and meta.timestamp > sel.until
            )
            if past:
                break
            await out.put(Stored(stream, seq, msg.subject, meta.timestamp, msg.data))
            if not caught_up and (meta.num_pending == 0 or seq >= last):
                caught_up = True
                await out.put(CaughtUp(stream))
                if not follow:
                    return
        if not caught_up:
            await out.put(CaughtUp(stream))
    finally:
        await _delete(js, stream, sub)


def _delivered(info: ConsumerInfo) -> tuple[int, int]:
    """How far the consumer delivered: (consumer sequence, stream sequence)."""
    return (info.delivered.consumer_seq, info.delivered.stream_seq) if info.delivered else (0, 0)


async def _delete(js: JetStreamContext, stream: str, sub: JetStreamContext.PushSubscription) -> None:
    # The ordered consumer may have been re-created under another name: _consumer is the current.
    consumer = getattr(sub, "_consumer", None)
    with contextlib.suppress(Exception):  # it expires on its own after its inactive threshold
        await sub.unsubscribe()
        if consumer:
            await js.delete_consumer(stream, consumer)


# --- Rows ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    stored: Stored
    kind: str
    job_id: str | None
    summary: str
    event: Any = None  # the decoded payload, None if it does not decode

    def sort_key(self) -> tuple[datetime, int, str, int]:
        s = self.stored
        return (s.time, _RANK.get(s.stream, len(_RANK)), s.stream, s.seq)


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """One line: control characters escaped (a newline shows as \\n), cut at ``limit``."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 2])
    return line if len(line) <= limit else line[: limit - 1] + "…"


def kind_of(stream: str, subject: str) -> str:
    if stream == streams.SUBMISSIONS:
        return "submission"
    if stream == streams.DEADLETTER:
        return "deadletter"
    if stream == streams.PROBLEMS:
        return f"problem.{subject.rsplit('.', 1)[-1]}"
    return subject.rsplit(".", 1)[-1]


def summarize(event: Any) -> str:
    match event:
        case SubmissionRequested():
            where = f" problem {event.problem_id}" if event.problem_id else ""
            tests = f", {len(event.tests)} tests ({event.scope})" if event.mode == "grade" else ""
            return f"{event.mode} by user {event.user_id}{where}{tests}: {excerpt(event.code, 40)}"
        case ExecutionStarted():
            return f"attempt {event.attempt} on runner {event.runner_id}"
        case OutputChunk():
            return f"{event.stream} #{event.seq} (attempt {event.attempt}): {excerpt(event.text)}"
        case TestObserved():
            error = f" {event.error.type}" if event.error else ""
            timed_out = " timed out" if event.timed_out else ""
            return (
                f"test {event.test_id} ({event.index + 1}/{event.count}) exit {event.exit_code}"
                f"{timed_out}{error} in {event.time_ms} ms: {excerpt(event.stdout, 30)}"
            )
        case ExecutionFinished():
            graded = ", grade follows" if event.graded else ""
            message = f": {excerpt(event.message)}" if event.message else ""
            return (
                f"{event.verdict.value} exit {event.exit_code} in {event.duration_ms} ms "
                f"(attempt {event.attempt}){graded}{message}"
            )
        case TestGraded():
            return f"test {event.result.test_id} ({event.result.index + 1}): {event.result.verdict.value}"
        case Graded():
            g = event.grade
            where = f"problem {g.problem_id} rev {g.revision}"
            return f"{g.verdict.value} score {g.score:g} ({g.passed}/{g.total} passed, {where})"
        case ProblemChanged():
            return f"problem {event.problem_id} rev {event.revision} {event.change} by {event.changed_by}"
        case DeadLetter():
            return (
                f"{event.reason.value} from {event.stream}:{event.stream_seq} ({event.consumer}, "
                f"{event.attempts or '?'} attempts): {excerpt(event.detail, 40)}"
            )
    return excerpt(msgspec.json.encode(event).decode())


def to_row(stored: Stored) -> Row:
    decode = _DECODERS.get(stored.stream)
    kind = kind_of(stored.stream, stored.subject)
    job_id = deadletters.job_id_of(stored.subject)
    try:
        event = decode(stored.data) if decode else msgspec.json.decode(stored.data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        text = stored.data.decode("utf-8", errors="replace")
        return Row(stored, kind, job_id, f"undecodable ({excerpt(str(exc), 40)}): {excerpt(text)}")
    if isinstance(event, DeadLetter):
        job_id = event.job_id
    return Row(stored, kind, job_id, summarize(event), event)


@dataclass
class Matcher:
    """The selection's client-side filters; a job's submission is read once (for --user, --problem)."""

    js: JetStreamContext
    sel: Selection
    _jobs: dict[str, SubmissionRequested | None] = field(default_factory=dict)

    async def submission(self, job_id: str | None) -> SubmissionRequested | None:
        if job_id is None:
            return None
        if job_id not in self._jobs:
            try:
                raw = await self.js.get_msg(streams.SUBMISSIONS, subject=subjects.submission(job_id), direct=True)
                self._jobs[job_id] = submission_decoder.decode(raw.data or b"")
            except (NotFoundError, msgspec.DecodeError, ValueError):
                self._jobs[job_id] = None
        return self._jobs[job_id]

    async def keep(self, row: Row) -> bool:
        sel, s = self.sel, row.stored
        if sel.from_seq is not None and s.seq < sel.from_seq:
            return False
        if sel.since is not None and s.time < sel.since:
            return False
        if sel.job and row.job_id != sel.job:
            return False
        if sel.reason and not (isinstance(row.event, DeadLetter) and row.event.reason.value == sel.reason):
            return False
        if sel.user or sel.problem:
            event = row.event
            if isinstance(event, ProblemChanged):
                return (not sel.user or event.changed_by == sel.user) and (
                    not sel.problem or event.problem_id == sel.problem
                )
            if isinstance(event, DeadLetter) and event.job_id is None and sel.problem:
                # A curriculum change given up on: its subject names the problem.
                return event.subject == subjects.problem_changed(sel.problem) if sel.problem.isdigit() else False
            job = event if isinstance(event, SubmissionRequested) else await self.submission(row.job_id)
            if job is None:
                return False
            if sel.user and job.user_id != sel.user:
                return False
            if sel.problem and job.problem_id != sel.problem:
                return False
        return True


# --- Output ----------------------------------------------------------------------------------------


def _time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _payload(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode("utf-8", errors="replace")


def json_line(row: Row) -> str:
    s = row.stored
    return msgspec.json.encode(
        {
            "time": _time(s.time),
            "stream": s.stream,
            "seq": s.seq,
            "subject": s.subject,
            "kind": row.kind,
            "jobId": row.job_id,
            "summary": row.summary,
            "payload": _payload(s.data),
        }
    ).decode()


TABLE = "{:<24}  {:<18}  {:<14}  {:<22}  {}"
DEAD_TABLE = "{:<24}  {:<15}  {:<14}  {:<18}  {:<18}  {:>8}  {:<22}  {}"


def header(dead: bool) -> str:
    if dead:
        return DEAD_TABLE.format("TIME", "SEQ", "REASON", "ORIGIN", "CONSUMER", "ATTEMPTS", "JOB", "DETAIL")
    return TABLE.format("TIME", "STREAM:SEQ", "KIND", "JOB", "SUMMARY")


def table_line(row: Row, dead: bool) -> str:
    s = row.stored
    if dead:
        d = row.event
        if not isinstance(d, DeadLetter):
            return DEAD_TABLE.format(_time(s.time), f"{s.stream}:{s.seq}", "?", "", "", "", "", row.summary)
        return DEAD_TABLE.format(
            _time(s.time),
            f"{s.stream}:{s.seq}",
            d.reason.value,
            f"{d.stream}:{d.stream_seq}",
            d.consumer,
            d.attempts or "?",
            d.job_id or "-",
            excerpt(d.detail, 80),
        )
    return TABLE.format(_time(s.time), f"{s.stream}:{s.seq}", row.kind, row.job_id or "-", row.summary)


# --- Commands -------------------------------------------------------------------------------------


async def rows(js: JetStreamContext, sel: Selection, *, follow: bool) -> AsyncIterator[Row | None]:
    """The selected rows: first everything stored, in time order, then ``None`` (caught up), then
    with ``follow`` each new one as it comes."""
    queue: asyncio.Queue[Stored | CaughtUp] = asyncio.Queue(maxsize=10_000)
    readers = [asyncio.create_task(read_stream(js, name, sel, follow=follow, out=queue)) for name in sel.streams]
    matcher = Matcher(js, sel)
    backlog: list[Row] = []
    waiting = set(sel.streams)
    try:
        while waiting:
            item = await _next(queue, readers)
            if item is None:
                break
            if isinstance(item, CaughtUp):
                waiting.discard(item.stream)
                continue
            row = to_row(item)
            if await matcher.keep(row):
                backlog.append(row)
        for row in sorted(backlog, key=Row.sort_key):
            yield row
        yield None
        while follow:
            item = await _next(queue, readers)
            if item is None:
                return  # every stream is past --until / --to-seq
            if isinstance(item, Stored):
                row = to_row(item)
                if await matcher.keep(row):
                    yield row
    finally:
        for task in readers:
            task.cancel()
        # Each reader deletes its consumer as it is cancelled.
        await asyncio.gather(*readers, return_exceptions=True)


async def _next(queue: asyncio.Queue[Stored | CaughtUp], readers: list[asyncio.Task[None]]) -> Stored | CaughtUp | None:
    """The next item, or None once every reader has ended and nothing is left; a reader's error
    stops the command (it is the answer)."""
    while True:
        if not queue.empty():
            return queue.get_nowait()
        for task in readers:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        running = [t for t in readers if not t.done()]
        if not running:
            return None
        getter = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait([getter, *running], return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()  # a cancelled get leaves its item in the queue
        if getter in done:
            return getter.result()


async def replay(js: JetStreamContext, sel: Selection, *, as_json: bool, dead: bool, follow: bool) -> int:
    count = 0
    if not as_json:
        print(header(dead), flush=True)
    async for row in rows(js, sel, follow=follow):
        if row is None:
            if not as_json and not count and not follow:
                print("(no events)", file=sys.stderr)
            continue
        count += 1
        print(json_line(row) if as_json else table_line(row, dead), flush=True)
    return 0


def selection_of(args: argparse.Namespace) -> Selection:
    chosen = tuple(dict.fromkeys(args.stream)) if args.stream else DEFAULT_STREAMS
    if args.dead_letters or args.reason:
        chosen = (streams.DEADLETTER,)
    return Selection(
        job=args.job,
        user=args.user,
        problem=args.problem,
        subject=args.subject,
        since=args.since,
        until=args.until,
        from_seq=args.from_seq,
        to_seq=args.to_seq,
        streams=chosen,
        reason=args.reason,
    )


def _nats_url(command: str) -> str:
    from local.stackenv import stack_setting

    url = stack_setting("NATS_URL")
    if not url:
        raise SystemExit(f"coderunner {command}: NATS_URL is required (or a running `coderunner up`)")
    return url


async def _close(nc: NATS) -> None:
    logging.getLogger(client.__name__).setLevel(logging.ERROR)  # our own disconnect is no news
    await client.close(nc)


def main_replay(args: argparse.Namespace) -> None:
    sel = selection_of(args)

    async def run() -> int:
        nc, js = await client.connect(_nats_url("replay"), "coderunner-replay", one_shot=True)
        try:
            return await replay(
                js, sel, as_json=args.json, dead=args.dead_letters or bool(args.reason), follow=args.follow
            )
        finally:
            await _close(nc)

    try:
        code = asyncio.run(run())
    except BrokenPipeError:  # `coderunner replay | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    raise SystemExit(code)


# --- Redrive -------------------------------------------------------------------------------------


async def selected_letters(js: JetStreamContext, args: argparse.Namespace) -> list[tuple[int, DeadLetter | None]]:
    """The chosen dead letters by DEADLETTER sequence (None: that sequence holds no record)."""
    found: list[tuple[int, DeadLetter | None]] = []
    if args.seqs:
        for seq in dict.fromkeys(args.seqs):
            try:
                raw = await js.get_msg(streams.DEADLETTER, seq=seq, direct=True)
                found.append((seq, deadletter_decoder.decode(raw.data or b"")))
            except (NotFoundError, msgspec.DecodeError):
                found.append((seq, None))
        return [
            (seq, d)
            for seq, d in found
            if d is None
            or ((not args.reason or d.reason.value == args.reason) and (not args.job or d.job_id == args.job))
        ]
    sel = Selection(job=args.job, since=args.since, until=args.until, streams=(streams.DEADLETTER,), reason=args.reason)
    async for row in rows(js, sel, follow=False):
        if row is not None and isinstance(row.event, DeadLetter):
            found.append((row.stored.seq, row.event))
    return found


async def redrive(js: JetStreamContext, args: argparse.Namespace) -> int:
    failed = 0
    for seq, letter in await selected_letters(js, args):
        if letter is None:
            print(f"DEADLETTER:{seq}: no dead-letter record there", file=sys.stderr)
            failed += 1
            continue
        what = f"DEADLETTER:{seq} {letter.reason.value} ({letter.stream}:{letter.stream_seq}, {letter.consumer})"
        if not letter.subject:
            print(f"{what}: its original is gone, nothing to publish", file=sys.stderr)
            failed += 1
            continue
        if args.dry_run:
            print(f"{what} → would publish to {letter.subject} ({len(letter.payload.encode())} bytes)")
            continue
        try:
            ack = await deadletters.redrive(js, letter, source=f"{streams.DEADLETTER}:{seq}")
        except Exception as exc:  # one failure must not stop the others; the exit code tells
            print(f"{what}: could not publish to {letter.subject}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if ack.duplicate:
            print(f"{what} → {letter.subject}: already redriven ({ack.stream}:{ack.seq}), not published again")
        else:
            print(f"{what} → {letter.subject}: published as {ack.stream}:{ack.seq}")
    return 1 if failed else 0


def main_redrive(args: argparse.Namespace) -> None:
    if not (args.seqs or args.reason or args.job):
        raise SystemExit("coderunner redrive: name dead letters: SEQ..., --reason or --job")

    async def run() -> int:
        nc, js = await client.connect(_nats_url("redrive"), "coderunner-redrive", one_shot=True)
        try:
            return await redrive(js, args)
        finally:
            await _close(nc)

    raise SystemExit(asyncio.run(run()))
