"""Chaos on a three-node JetStream cluster, judged by the history checker (chaos/).

The bounded form of `make chaos`: a few hundred submissions while a NATS node (the EXECUTIONS
leader), a runner, the grading consumer and the progress consumer are each SIGKILLed and
restarted. Then every acknowledged submission must be accounted for. The checker's own rules are
tested first on made-up histories, so a checker that cannot fail would show here.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections import Counter
from pathlib import Path

import pytest

from chaos.checker import Acknowledged, History, judge
from chaos.run import _zombie_children, run

PR_SET_CHILD_SUBREAPER = 36

RUN, GRADE = "run", "grade"


def _history(**changes: object) -> History:
    """A correct history: one run and one graded submission, each finished once, recorded once."""
    history = History(
        acknowledged=[Acknowledged("run-1", RUN), Acknowledged("grade-1", GRADE)],
        submissions={"run-1": ("u1", None, RUN, "all"), "grade-1": ("u1", "7", GRADE, "all")},
        finished=Counter({"run-1": 1, "grade-1": 1}),
        graded=Counter({"grade-1": 1}),
        records=Counter({"run-1": 1, "grade-1": 1}),
        attempts={("u1", "7"): 1},
    )
    for name, value in changes.items():
        setattr(history, name, value)
    return history


def test_a_correct_history_passes_and_is_counted() -> None:
    verdict = judge(_history())
    assert verdict.ok, verdict.problems
    assert verdict.counts["acknowledged"] == 2 and verdict.counts["finished"] == 2
    assert verdict.counts["graded"] == 1 and verdict.counts["lost"] == 0 and verdict.counts["duplicated"] == 0


@pytest.mark.parametrize(
    ("changes", "found"),
    [
        ({"finished": Counter({"grade-1": 1})}, "acknowledged jobs lost"),
        ({"finished": Counter({"run-1": 2, "grade-1": 1})}, "finished more than once"),
        ({"graded": Counter({"grade-1": 2})}, "graded more than once"),
        ({"graded": Counter()}, "never graded"),
        ({"records": Counter({"grade-1": 1})}, "missing from the projection"),
        ({"records": Counter({"run-1": 2, "grade-1": 1})}, "recorded twice"),
        ({"attempts": {("u1", "7"): 2}}, "applied twice"),
        ({"attempts": {}}, "not applied"),
    ],
)
def test_the_checker_reports_each_kind_of_wrong_history(changes: dict[str, object], found: str) -> None:
    verdict = judge(_history(**changes))
    assert not verdict.ok
    assert any(found in p for p in verdict.problems), verdict.problems


def test_a_dead_lettered_job_is_accounted_for_not_lost() -> None:
    verdict = judge(_history(finished=Counter({"grade-1": 1}), dead_letters={"run-1": ["max_deliveries"]}))
    assert verdict.ok, verdict.problems
    assert verdict.counts["dead-lettered"] == 1 and verdict.counts["lost"] == 0


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_no_acknowledged_submission_is_lost_when_nodes_runners_and_consumers_are_killed(tmp_path: Path) -> None:
    # As in a full run, where a sandbox backend already made pytest a subreaper: the killed runner's
    # sandboxes come to this process, and the run must reap them (else they stay zombies, counted
    # against their sandbox uid, and every later conformance test reports them).
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    verdict, done = asyncio.run(run(tmp_path / "stack", jobs=60, students=6))
    leftovers = [pid for pid, uid in _zombie_children() if uid != os.getuid()]
    assert not leftovers, f"sandboxes of the killed runner left as zombies: {leftovers}"
    print("\n".join(done))
    print(verdict.report())
    assert not any("NOT ALL FAULTS" in line for line in done), done
    assert verdict.ok, verdict.report()
    assert verdict.counts["acknowledged"] >= 60
    assert verdict.counts["lost"] == 0 and verdict.counts["duplicated"] == 0
