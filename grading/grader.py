"""Deciding each test from its observation, and the grade from the tests. Pure: no I/O.

The expectations come from MongoDB (the problem), the observations from the sandbox (untrusted
data, already size-capped). What a student may see is decided here, in :func:`result_for`:
everything about a public test, only the verdict of a hidden one.
"""

from __future__ import annotations

import signal
from typing import Any

import msgspec

from curriculum.model import Comparison, GradingMode, Problem, TestCase
from grading.compare import diff, near_miss, text_matches, values_match
from grading.feedback import explain
from schemas.executions import TestError, TestObserved
from schemas.grades import Feedback, Grade, GradeVerdict, TestResult

STDERR_SHOWN = 2000
_COMPILE_ERRORS = ("SyntaxError", "IndentationError", "TabError")


def _verdict(problem: Problem, test: TestCase, obs: TestObserved) -> tuple[GradeVerdict, str | None]:
    """The test's verdict, and the kind of feedback it calls for (an exception name or a limit)."""
    error = obs.error
    if error is not None and error.phase == "compile":
        return GradeVerdict.COMPILE_ERROR, error.type if error.type in _COMPILE_ERRORS else "SyntaxError"
    if obs.timed_out or obs.signal == signal.SIGXCPU:
        return GradeVerdict.TIME_LIMIT, "TIME_LIMIT"
    if obs.output_truncated:
        return GradeVerdict.OUTPUT_LIMIT, "OUTPUT_LIMIT"
    if (error is not None and error.type == "MemoryError") or obs.signal == signal.SIGKILL:
        # A SIGKILL that is not ours (time) is the memory controller's OOM kill.
        return GradeVerdict.MEMORY_LIMIT, "MEMORY_LIMIT"
    if error is not None:
        if error.phase == "script" and error.type == "AssertionError":
            return GradeVerdict.WRONG_ANSWER, "AssertionError"
        if error.type == "NotJSON":
            return GradeVerdict.WRONG_ANSWER, None
        return GradeVerdict.RUNTIME_ERROR, error.type
    if obs.signal is not None or obs.exit_code not in (0, None):
        return GradeVerdict.RUNTIME_ERROR, "SystemExit"
    return (GradeVerdict.ACCEPTED if _matches(problem, test, obs) else GradeVerdict.WRONG_ANSWER), None


def _is_call(problem: Problem, test: TestCase) -> bool:
    return problem.grading is GradingMode.FUNCTION and test.script is None


def _matches(problem: Problem, test: TestCase, obs: TestObserved) -> bool:
    if test.script is not None:
        return True  # it raised nothing
    comparison = problem.comparison_of(test)
    if _is_call(problem, test):
        if obs.return_json is None:
            return False
        try:
            actual = msgspec.json.decode(obs.return_json)
        except msgspec.DecodeError:
            return False
        tolerance = problem.tolerance if comparison is Comparison.FLOAT else None
        return values_match(test.expected, actual, tolerance=tolerance)
    return text_matches(str(test.expected), obs.stdout, comparison, problem.tolerance)


def _shown_input(problem: Problem, test: TestCase) -> str:
    if test.script is not None:
        return test.script
    if _is_call(problem, test):
        args = ", ".join(msgspec.json.encode(a).decode() for a in test.args or [])
        return f"{problem.function}({args})"
    return test.stdin


def _shown_expected(problem: Problem, test: TestCase) -> str | None:
    if test.script is not None:
        return None
    if _is_call(problem, test):
        return msgspec.json.encode(test.expected).decode()
    return str(test.expected)


def _near_miss(problem: Problem, test: TestCase, obs: TestObserved) -> str | None:
    """The near-miss kind of a wrong answer to an output test (whole-text comparisons only)."""
    if test.script is not None or _is_call(problem, test):
        return None
    if problem.comparison_of(test) not in (Comparison.NORMALIZED, Comparison.EXACT):
        return None
    return near_miss(str(test.expected), obs.stdout)


def _decided(problem: Problem, test: TestCase, obs: TestObserved, near: bool) -> tuple[GradeVerdict, str | None]:
    """The verdict and feedback kind; with ``near`` (the grading-near-miss flag), a wrong answer
    that came close gets that kind of feedback. The verdict never changes."""
    verdict, kind = _verdict(problem, test, obs)
    if near and verdict is GradeVerdict.WRONG_ANSWER and kind is None:
        kind = _near_miss(problem, test, obs)
    return verdict, kind


def result_for(
    problem: Problem, index: int, test: TestCase, obs: TestObserved, code: str, *, near_miss: bool = False
) -> TestResult:
    """One test's result, with exactly what its audience may see."""
    verdict, kind = _decided(problem, test, obs, near_miss)
    message = obs.error.message if obs.error else None
    feedback = explain(kind, message=message, stderr=obs.stderr, code=code) if kind else None
    if not test.public:
        return TestResult(test_id=test.id, index=index, public=False, verdict=verdict, weight=test.weight)
    expected = _shown_expected(problem, test)
    actual = obs.return_json if _is_call(problem, test) else obs.stdout
    return TestResult(
        test_id=test.id,
        index=index,
        public=True,
        verdict=verdict,
        weight=test.weight,
        time_ms=obs.time_ms,
        input=_shown_input(problem, test),
        expected=expected,
        actual=actual,
        diff=diff(expected, actual or "")
        if verdict is GradeVerdict.WRONG_ANSWER and expected is not None and not _is_call(problem, test)
        else None,
        stderr=obs.stderr[-STDERR_SHOWN:] or None,
        feedback=feedback,
    )


def _hidden_feedback(
    problem: Problem, test: TestCase, obs: TestObserved, code: str, near_miss: bool
) -> Feedback | None:
    """Help for a failed hidden test: what kind of mistake and where, never its message."""
    _, kind = _decided(problem, test, obs, near_miss)
    if kind is None:
        return None
    return msgspec.structs.replace(explain(kind, message=None, stderr=obs.stderr, code=code), message=None)


def missing(test: TestCase) -> TestObserved:
    """The observation of a test that never reported (the runner's attempt ended without it)."""
    return TestObserved(
        job_id="-",
        test_id=test.id,
        index=0,
        count=0,
        error=TestError(type="NoObservation", message="the test did not report", phase="harness"),
    )


def grade(
    problem: Problem,
    revision: int,
    tests: list[TestCase],
    observations: dict[str, TestObserved],
    code: str,
    *,
    scope: str,
    near_miss: bool = False,
) -> Grade:
    """The grade of a run of ``tests`` (in order): verdict, score by weight, each test's result.

    ``near_miss`` (the grading-near-miss flag) adds feedback to wrong answers that came close; the
    verdicts and the score are the same with it or without."""
    results: list[TestResult] = []
    feedback: Feedback | None = None
    for index, test in enumerate(tests):
        obs = observations.get(test.id) or missing(test)
        result = result_for(problem, index, test, obs, code, near_miss=near_miss)
        results.append(result)
        if feedback is None and not result.passed:
            feedback = result.feedback if test.public else _hidden_feedback(problem, test, obs, code, near_miss)
    total_weight = sum(t.weight for t in tests) or 1
    passed_weight = sum(r.weight for r in results if r.passed)
    failing = [r for r in results if not r.passed]
    if not failing:
        verdict = GradeVerdict.ACCEPTED
    elif any(r.verdict is GradeVerdict.COMPILE_ERROR for r in failing):
        verdict = GradeVerdict.COMPILE_ERROR
    else:
        verdict = failing[0].verdict
    return Grade(
        problem_id=str(problem.id),
        revision=revision,
        verdict=verdict,
        score=round(100 * passed_weight / total_weight, 2),
        passed=sum(r.passed for r in results),
        total=len(results),
        tests=results,
        scope=scope,
        feedback=feedback,
    )


def sandbox_failed(problem_id: str, revision: int, scope: str) -> Grade:
    return Grade(
        problem_id=problem_id,
        revision=revision,
        verdict=GradeVerdict.SANDBOX_ERROR,
        score=0.0,
        passed=0,
        total=0,
        tests=[],
        scope=scope,
    )


def tests_of(problem: Problem, ids: list[str]) -> list[TestCase]:
    """The problem's tests that a submission ran, in the submission's order (a test removed since
    is not graded; one added since was not run)."""
    by_id: dict[str, Any] = {t.id: t for t in problem.tests}
    return [by_id[i] for i in ids if i in by_id]
