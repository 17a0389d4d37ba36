"""The history checker: is every submission the gateway acknowledged accounted for?

In the spirit of Jepsen's checkers: the load driver records what the system promised (each 202
and its job id); afterwards the checker reads what the system did, from the engines themselves
(the JetStream streams and the MongoDB projection), and compares. It never trusts a process's
own account of its work.

For every acknowledged job:

- it has exactly one ``finished`` event, or a dead letter naming it (with the reason);
- a graded submission has at most one ``graded`` event, and one if it finished (or a dead letter);
- the progress projection applied each result once: one ``execution_records`` document per
  finished job, and each (student, problem)'s ``attempts`` equals the number of graded
  submissions (scope ``all``) the stream holds for them, neither more (applied twice) nor fewer.

:func:`judge` is pure (a :class:`History` in, a :class:`Verdict` out), so its rules are tested
on made-up histories; :func:`read_history` collects a real one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import streams
from schemas import subjects
from schemas.deadletter import DeadLetter
from schemas.executions import ExecutionFinished, kind
from schemas.grades import Graded
from schemas.submissions import submission_decoder

FINISHED = kind(ExecutionFinished)
GRADED = kind(Graded)


@dataclass(frozen=True)
class Acknowledged:
    """A submission the gateway answered 202."""

    job_id: str
    mode: str  # "run" | "grade"


@dataclass
class History:
    acknowledged: list[Acknowledged]
    # From the streams: job -> (user, problem, mode, scope) of every stored submission.
    submissions: dict[str, tuple[str, str | None, str, str]] = field(default_factory=dict)
    finished: Counter[str] = field(default_factory=Counter)  # job -> finished events
    graded: Counter[str] = field(default_factory=Counter)  # job -> graded events
    dead_letters: dict[str, list[str]] = field(default_factory=dict)  # job -> reasons
    # From the projection.
    records: Counter[str] = field(default_factory=Counter)  # job -> execution_records documents
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (user, problem) -> attempts


@dataclass
class Verdict:
    counts: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        line = ", ".join(f"{name} {value}" for name, value in self.counts.items())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dead_letter_reasons.items()))
        return "\n".join(
            [
                f"history: {line}",
                *([f"  dead letters of acknowledged jobs, by reason: {reasons}"] if reasons else []),
                *(f"  PROBLEM: {p}" for p in self.problems),
            ]
        )


def judge(history: History) -> Verdict:
    problems: list[str] = []
    acked = {a.job_id: a for a in history.acknowledged}
    lost = [j for j in acked if not history.finished[j] and j not in history.dead_letters]
    twice_finished = [j for j in acked if history.finished[j] > 1]
    twice_graded = [j for j in acked if history.graded[j] > 1]
    ungraded = [
        j
        for j, a in acked.items()
        if a.mode == "grade" and history.finished[j] and not history.graded[j] and j not in history.dead_letters
    ]
    unrecorded = [j for j in acked if history.finished[j] and not history.records[j]]
    recorded_twice = [j for j, n in history.records.items() if n > 1]
    # What the projection should hold: one attempt per graded submission of everything stored,
    # acknowledged or not (a submission whose 202 was lost still ran, and still counts).
    expected: Counter[tuple[str, str]] = Counter()
    for job, (user, problem, mode, scope) in history.submissions.items():
        if mode == "grade" and scope == "all" and problem is not None and history.graded[job]:
            expected[(user, problem)] += 1
    over = {k: (history.attempts.get(k, 0), n) for k, n in expected.items() if history.attempts.get(k, 0) > n}
    under = {k: (history.attempts.get(k, 0), n) for k, n in expected.items() if history.attempts.get(k, 0) < n}
    over |= {k: (n, 0) for k, n in history.attempts.items() if k not in expected and n}

    def some(jobs: list[str] | dict[Any, Any]) -> str:
        return ", ".join(str(j) for j in list(jobs)[:5])

    if lost:
        problems.append(f"{len(lost)} acknowledged jobs lost (no finished, no dead letter): {some(lost)}")
    if twice_finished:
        problems.append(f"{len(twice_finished)} jobs finished more than once: {some(twice_finished)}")
    if twice_graded:
        problems.append(f"{len(twice_graded)} jobs graded more than once: {some(twice_graded)}")
    if ungraded:
        problems.append(f"{len(ungraded)} submissions finished but never graded nor dead-lettered: {some(ungraded)}")
    if unrecorded:
        problems.append(f"{len(unrecorded)} finished jobs missing from the projection: {some(unrecorded)}")
    if recorded_twice:
        problems.append(f"{len(recorded_twice)} jobs recorded twice in the projection: {some(recorded_twice)}")
    if over:
        problems.append(f"progress applied twice (attempts stored, expected): {dict(list(over.items())[:5])}")
    if under:
        problems.append(f"progress not applied (attempts stored, expected): {dict(list(under.items())[:5])}")
    counts = {
        "acknowledged": len(acked),
        "finished": sum(1 for j in acked if history.finished[j]),
        "graded": sum(1 for j in acked if history.graded[j]),
        "dead-lettered": sum(1 for j in acked if j in history.dead_letters),
        "lost": len(lost),
        "duplicated": len(set(twice_finished) | set(twice_graded) | set(recorded_twice)) + len(over),
        "stored, not acknowledged": len(set(history.submissions) - set(acked)),
    }
    reasons = Counter(r for j in acked for r in history.dead_letters.get(j, []))
    return Verdict(counts, problems, dict(reasons))


async def _messages(js: JetStreamContext, stream: str, subject: str) -> list[tuple[str, bytes]]:
    """Every message of ``stream`` on ``subject`` (wildcards allowed), with its subject, by direct gets."""
    out: list[tuple[str, bytes]] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return out
        out.append((msg.subject or "", msg.data or b""))
        seq = (msg.seq or seq) + 1


async def read_history(js: JetStreamContext, db: Any, acknowledged: list[Acknowledged]) -> History:
    """What the streams and the projection (``db``: the application's pymongo async database) hold."""
    history = History(acknowledged)
    for _, data in await _messages(js, streams.SUBMISSIONS, subjects.SUBMISSIONS_ALL):
        job = submission_decoder.decode(data)
        history.submissions[job.job_id] = (job.user_id, job.problem_id, job.mode, job.scope)
    for subject, _ in await _messages(js, streams.EXECUTIONS, f"{subjects.PREFIX}.executions.*.{FINISHED}"):
        history.finished[subjects.job_of_execution(subject) or "?"] += 1
    for subject, _ in await _messages(js, streams.EXECUTIONS, f"{subjects.PREFIX}.executions.*.{GRADED}"):
        history.graded[subjects.job_of_execution(subject) or "?"] += 1
    for _, data in await _messages(js, streams.DEADLETTER, subjects.DEADLETTER_ALL):
        try:
            letter = msgspec.json.decode(data, type=DeadLetter)
        except msgspec.DecodeError:
            continue
        if letter.job_id:
            history.dead_letters.setdefault(letter.job_id, []).append(letter.reason.value)
    async for doc in db["execution_records"].find({}, {"job_id": 1}):
        history.records[doc["job_id"]] += 1
    async for doc in db["progress_items"].find({}, {"user_id": 1, "item": 1, "attempts": 1}):
        if doc["item"].startswith("problem:"):
            history.attempts[(doc["user_id"], doc["item"].split(":", 1)[1])] = int(doc.get("attempts", 0))
    return history
