"""The event contract: round trips, tags, forward compatibility, the result fold."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from bus.history import apply
from schemas import subjects
from schemas.codec import encode
from schemas.executions import (
    ExecutionFinished,
    ExecutionStarted,
    OutputChunk,
    TestObserved,
    Verdict,
    execution_decoder,
)
from schemas.grades import Grade, Graded, GradeVerdict, TestGraded, TestResult
from schemas.results import JobResult
from schemas.submissions import Limits, SubmissionRequested, submission_decoder

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _finished(**kw) -> ExecutionFinished:  # type: ignore[no-untyped-def]
    base = dict(job_id="job-00000001", verdict=Verdict.OK, exit_code=0, duration_ms=12, finished_at=NOW)
    return ExecutionFinished(**{**base, **kw})


def test_submission_round_trip_is_camel_case_and_tagged() -> None:
    event = SubmissionRequested(
        job_id="job-00000001", mode="run", code="print(1)", user_id="u1", limits=Limits(), submitted_at=NOW
    )
    raw = encode(event)
    doc = msgspec.json.decode(raw)
    assert doc["type"] == "submission.requested"
    assert doc["jobId"] == "job-00000001"
    assert doc["limits"]["wallTimeMs"] == 5000
    assert doc["limits"]["memoryBytes"] == 128 * 1024 * 1024
    assert submission_decoder.decode(raw) == event


@pytest.mark.parametrize(
    "event",
    [
        ExecutionStarted(job_id="job-00000001", runner_id="r1", started_at=NOW),
        OutputChunk(job_id="job-00000001", stream="stderr", seq=3, text="\x00\x1b[31mred\ufffd"),
        _finished(verdict=Verdict.TIME_LIMIT, exit_code=None, signal=9, stdout_truncated=True),
    ],
)
def test_execution_union_decodes_each_member(event) -> None:  # type: ignore[no-untyped-def]
    assert execution_decoder.decode(encode(event)) == event


def test_unknown_fields_from_a_newer_minor_version_are_ignored() -> None:
    doc = msgspec.json.decode(encode(_finished()))
    doc["v"] = 2
    doc["memoryPeakBytes"] = 123  # a field a later version adds
    decoded = execution_decoder.decode(msgspec.json.encode(doc))
    assert isinstance(decoded, ExecutionFinished) and decoded.v == 2


def test_unknown_event_type_and_bad_values_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        execution_decoder.decode(b'{"type": "execution.exploded", "jobId": "x"}')
    with pytest.raises(msgspec.ValidationError):
        submission_decoder.decode(
            encode(
                {
                    "type": "submission.requested",
                    "jobId": "j",
                    "mode": "run",
                    "code": "",
                    "userId": "u",
                    "limits": {"memoryBytes": 1},
                    "submittedAt": NOW.isoformat(),
                }
            )
        )


def test_subjects_reject_job_ids_that_would_break_tokens() -> None:
    assert subjects.submission("abcDEF_-1234") == "coderunner.v1.submissions.abcDEF_-1234"
    for bad in ("a.b.c.d.e.f", "*" * 10, ">" * 10, "short", "x" * 65, "abc def ghi"):
        with pytest.raises(ValueError, match="invalid job id"):
            subjects.submission(bad)


def test_fold_builds_the_result_and_ignores_events_after_the_end() -> None:
    r = JobResult(job_id="job-00000001")
    r = apply(r, ExecutionStarted(job_id="job-00000001", runner_id="r", started_at=NOW), 1)
    assert r.status == "running"
    r = apply(r, OutputChunk(job_id="job-00000001", stream="stdout", seq=0, text="a"), 2)
    r = apply(r, OutputChunk(job_id="job-00000001", stream="stderr", seq=1, text="e"), 3)
    r = apply(r, OutputChunk(job_id="job-00000001", stream="stdout", seq=2, text="b"), 4)
    r = apply(r, _finished(verdict=Verdict.RUNTIME_ERROR, exit_code=1), 5)
    assert (r.status, r.stdout, r.stderr, r.verdict, r.exit_code, r.last_seq) == (
        "completed",
        "ab",
        "e",
        Verdict.RUNTIME_ERROR,
        1,
        5,
    )
    assert apply(r, OutputChunk(job_id="job-00000001", stream="stdout", seq=9, text="late"), 6) == r


def test_fold_a_newer_attempt_supersedes_the_partial_output_of_an_older_one() -> None:
    r = JobResult(job_id="job-00000001")
    r = apply(r, ExecutionStarted(job_id="job-00000001", runner_id="r1", started_at=NOW), 1)
    r = apply(r, OutputChunk(job_id="job-00000001", stream="stdout", seq=0, text="partial"), 2)
    r = apply(r, ExecutionStarted(job_id="job-00000001", attempt=2, runner_id="r2", started_at=NOW), 3)
    assert r.stdout == "" and r.attempt == 2
    # A straggler from attempt 1 does not leak into attempt 2's output.
    r = apply(r, OutputChunk(job_id="job-00000001", stream="stdout", seq=1, text="stale"), 4)
    r = apply(r, OutputChunk(job_id="job-00000001", attempt=2, stream="stdout", seq=0, text="full"), 5)
    r = apply(r, _finished(attempt=2), 6)
    assert (r.stdout, r.status, r.attempt) == ("full", "completed", 2)


def test_sandbox_error_means_failed_not_completed() -> None:
    r = apply(JobResult(job_id="job-00000001"), _finished(verdict=Verdict.SANDBOX_ERROR, exit_code=None), 1)
    assert r.status == "failed"


def test_json_schema_is_generated_for_every_event() -> None:
    from schemas.deadletter import DeadLetter
    from schemas.executions import ExecutionEvent

    _, defs = msgspec.json.schema_components([SubmissionRequested, ExecutionEvent, DeadLetter, JobResult])
    assert {
        "SubmissionRequested",
        "ExecutionStarted",
        "OutputChunk",
        "ExecutionFinished",
        "DeadLetter",
        "JobResult",
    } <= set(defs)
    assert defs["OutputChunk"]["properties"]["type"] == {"enum": ["execution.output"]}


def test_published_json_schema_is_up_to_date() -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run(
        [sys.executable, "-m", "cli", "schema"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    # The combined document; the per-family files beside it are checked in tests/test_contract.py.
    assert (ROOT / "schemas" / "json" / "events.schema.json").read_text() == out, (
        "regenerate with `coderunner schema --write`"
    )


def test_every_event_kind_round_trips_through_tag_subject_and_sse_name() -> None:
    """One name per event: tag → kind → subject suffix → SSE event name → the same type."""
    from typing import get_args

    from schemas.executions import KINDS, ExecutionEvent, kind

    samples = {
        ExecutionStarted: ExecutionStarted(job_id="job-00000001", runner_id="r", started_at=NOW),
        OutputChunk: OutputChunk(job_id="job-00000001", stream="stdout", seq=0, text="x"),
        ExecutionFinished: ExecutionFinished(
            job_id="job-00000001", verdict=Verdict.OK, exit_code=0, duration_ms=1, finished_at=NOW
        ),
        TestObserved: TestObserved(job_id="job-00000001", test_id="t", index=0, count=1, stdout="x"),
        TestGraded: TestGraded(job_id="job-00000001", result=_result("t", GradeVerdict.ACCEPTED)),
        Graded: Graded(job_id="job-00000001", grade=_grade(), graded_at=NOW),
    }
    assert set(samples) == set(get_args(ExecutionEvent)), "a new event type needs a sample here"
    for cls, event in samples.items():
        name = kind(event)
        assert str(cls.__struct_config__.tag).endswith(f".{name}")
        subject = subjects.execution(event)
        assert subject.rsplit(".", 1)[1] == name
        assert KINDS[subject.rsplit(".", 1)[1]] is cls
        assert msgspec.json.decode(msgspec.json.encode(event), type=ExecutionEvent) == event
    assert subjects.finished_of("job-00000001") == subjects.execution(samples[ExecutionFinished])


def _result(test_id: str, verdict: GradeVerdict, index: int = 0) -> TestResult:
    return TestResult(test_id=test_id, index=index, public=False, verdict=verdict)


def _grade(*tests: TestResult) -> Grade:
    return Grade(
        problem_id="101", revision=1, verdict=GradeVerdict.ACCEPTED, score=100.0, passed=1, total=1, tests=list(tests)
    )


def test_fold_of_a_graded_job_ends_with_its_grade_not_its_run() -> None:
    r = apply(
        JobResult(job_id="job-00000001"), ExecutionStarted(job_id="job-00000001", runner_id="r", started_at=NOW), 1
    )
    r = apply(r, TestObserved(job_id="job-00000001", test_id="b", index=1, count=2, stdout="secret"), 2)
    assert r.stdout == "" and r.tests == []  # observations are not part of the result
    r = apply(r, TestGraded(job_id="job-00000001", result=_result("b", GradeVerdict.WRONG_ANSWER, 1)), 3)
    r = apply(r, TestGraded(job_id="job-00000001", result=_result("a", GradeVerdict.ACCEPTED, 0)), 4)
    assert [t.test_id for t in r.tests] == ["a", "b"] and r.status == "running"
    r = apply(r, _finished(graded=True), 5)
    assert r.status == "grading" and not r.terminal
    grade = _grade(_result("a", GradeVerdict.ACCEPTED), _result("b", GradeVerdict.WRONG_ANSWER, 1))
    r = apply(r, Graded(job_id="job-00000001", grade=grade, graded_at=NOW), 6)
    assert r.status == "completed" and r.terminal and r.grade == grade and r.last_seq == 6
    # A run's finished event ends the job at once.
    assert apply(JobResult(job_id="job-00000001"), _finished(), 1).terminal
