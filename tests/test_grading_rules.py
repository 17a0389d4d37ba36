"""Grading rules without servers: comparisons, each test's verdict, scores, what a student sees."""

from __future__ import annotations

import signal

import pytest

from curriculum.model import Comparison, GradingMode, Problem, ProblemInvalid, TestCase, check
from grading.compare import diff, text_matches, values_match
from grading.grader import grade, result_for
from schemas.executions import STUDENT_KINDS, TestError, TestObserved, kind
from schemas.grades import GradeVerdict

C = Comparison


@pytest.mark.parametrize(
    ("comparison", "expected", "actual", "ok"),
    [
        (C.NORMALIZED, "a b\n1 2\n", "a  b   \n1\t2\n\n", True),
        (C.NORMALIZED, "a b\n", "ab\n", False),
        (C.NORMALIZED, "x\n", "\r\nx\r\n", True),
        (C.EXACT, "a b\n", "a b\n", True),
        (C.EXACT, "a b\n", "a  b\n", False),
        (C.EXACT, "a\n", "a", False),
        (C.FLOAT, "3.333333 x\n", "3.3333334 x\n", True),
        (C.FLOAT, "3.33\n", "3.34\n", False),
        (C.FLOAT, "1e3\n", "1000.0000001\n", True),
        (C.FLOAT, "nan\n", "nan\n", True),  # equal tokens
        (C.FLOAT, "1 2\n", "1\n", False),
        (C.UNORDERED_LINES, "a\nb\nc\n", "c\na\nb\n", True),
        (C.UNORDERED_LINES, "a\nb\n", "a\na\n", False),
    ],
)
def test_text_comparisons(comparison: Comparison, expected: str, actual: str, ok: bool) -> None:
    assert text_matches(expected, actual, comparison, 1e-6) is ok


def test_json_values_compare_with_types_and_tolerance() -> None:
    assert values_match([1, {"a": "x"}], [1, {"a": "x"}])
    assert values_match(5, 5.0)
    assert not values_match(True, 1) and not values_match(1, True) and not values_match("1", 1)
    assert not values_match(0.1 + 0.2, 0.3)
    assert values_match(0.1 + 0.2, 0.3, tolerance=1e-9)
    assert not values_match({"a": 1}, {"a": 1, "b": 2}) and not values_match([1, 2], [2, 1])


def test_the_diff_reads_expected_against_yours() -> None:
    text = diff("a\nb\n", "a\nc\n")
    assert "-b" in text and "+c" in text and "your output" in text


def _problem(**fields: object) -> Problem:
    base: dict[str, object] = dict(
        id=1, slug="p", title="P", level="kids", session="kids-x", order=1, statement="s",
        tests=[TestCase(id="p1", public=True, stdin="1\n", expected="2\n")],
    )  # fmt: skip
    base.update(fields)
    return check(Problem(**base))  # type: ignore[arg-type]


def _obs(**fields: object) -> TestObserved:
    base: dict[str, object] = dict(job_id="j", test_id="p1", index=0, count=1)
    base.update(fields)
    return TestObserved(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("observation", "verdict", "feedback"),
    [
        (_obs(stdout="2\n"), GradeVerdict.ACCEPTED, None),
        (_obs(stdout="3\n"), GradeVerdict.WRONG_ANSWER, None),
        (_obs(timed_out=True), GradeVerdict.TIME_LIMIT, "TIME_LIMIT"),
        (_obs(signal=signal.SIGXCPU), GradeVerdict.TIME_LIMIT, "TIME_LIMIT"),
        (_obs(signal=signal.SIGKILL), GradeVerdict.MEMORY_LIMIT, "MEMORY_LIMIT"),
        (_obs(error=TestError(type="MemoryError")), GradeVerdict.MEMORY_LIMIT, "MEMORY_LIMIT"),
        (_obs(stdout="2\n", output_truncated=True), GradeVerdict.OUTPUT_LIMIT, "OUTPUT_LIMIT"),
        (_obs(error=TestError(type="ZeroDivisionError", message="division by zero")), GradeVerdict.RUNTIME_ERROR,
         "ZeroDivisionError"),
        (_obs(error=TestError(type="IndentationError", phase="compile")), GradeVerdict.COMPILE_ERROR,
         "IndentationError"),
        (_obs(stdout="2\n", exit_code=3), GradeVerdict.RUNTIME_ERROR, "SystemExit"),
        (_obs(error=TestError(type="NoObservation", phase="harness")), GradeVerdict.RUNTIME_ERROR, "NoObservation"),
    ],
)  # fmt: skip
def test_each_observation_gets_its_verdict(observation: TestObserved, verdict: GradeVerdict, feedback: str) -> None:
    problem = _problem()
    result = result_for(problem, 0, problem.tests[0], observation, "print(int(input()) * 2)\n")
    assert result.verdict is verdict
    assert (result.feedback.kind if result.feedback else None) == feedback


def test_function_and_script_tests_are_decided_outside() -> None:
    problem = _problem(
        grading=GradingMode.FUNCTION,
        function="f",
        tests=[
            TestCase(id="p1", public=True, args=[2], expected=4),
            TestCase(id="p2", public=True, script="assert f(2) == 4"),
        ],
    )
    call, script = problem.tests
    assert result_for(problem, 0, call, _obs(return_json="4"), "").verdict is GradeVerdict.ACCEPTED
    assert result_for(problem, 0, call, _obs(return_json="true"), "").verdict is GradeVerdict.WRONG_ANSWER
    assert result_for(problem, 0, call, _obs(return_json="{not json"), "").verdict is GradeVerdict.WRONG_ANSWER
    not_json = _obs(error=TestError(type="NotJSON", phase="call"))
    assert result_for(problem, 0, call, not_json, "").verdict is GradeVerdict.WRONG_ANSWER
    assert result_for(problem, 1, script, _obs(test_id="p2"), "").verdict is GradeVerdict.ACCEPTED
    failed = _obs(test_id="p2", error=TestError(type="AssertionError", phase="script"))
    assert result_for(problem, 1, script, failed, "").verdict is GradeVerdict.WRONG_ANSWER
    assert result_for(problem, 0, call, _obs(return_json="4"), "").input == "f(2)"


def test_a_hidden_test_shows_its_verdict_only() -> None:
    secret = TestCase(id="h1", public=False, stdin="SECRET-IN\n", expected="SECRET-OUT\n")
    problem = _problem(tests=[TestCase(id="p1", public=True, stdin="1\n", expected="2\n"), secret])
    obs = _obs(test_id="h1", stdout="SECRET-IN\n", stderr="ValueError: SECRET-IN", error=TestError(type="ValueError"))
    hidden = result_for(problem, 1, secret, obs, "x = input()\n")
    assert "SECRET" not in repr(hidden) and hidden.verdict is GradeVerdict.RUNTIME_ERROR
    # The same test made public shows everything: the check above can see a leak.
    shown = result_for(
        problem, 1, TestCase(id="h1", public=True, stdin="SECRET-IN\n", expected="SECRET-OUT\n"), obs, ""
    )
    assert "SECRET-IN" in repr(shown) and "SECRET-OUT" in repr(shown)
    # The overall feedback for a failed hidden test names the mistake, never the message.
    graded = grade(problem, 1, problem.tests, {"p1": _obs(stdout="2\n"), "h1": obs}, "x = input()\n", scope="all")
    assert graded.feedback is not None and graded.feedback.kind == "ValueError" and graded.feedback.message is None
    assert "SECRET" not in repr(graded)
    # Observations are internal: students' streams carry an allow-list of kinds.
    assert kind(TestObserved) not in STUDENT_KINDS


def test_scores_are_weighted_and_the_first_failure_decides() -> None:
    tests = [
        TestCase(id="a", public=True, stdin="", expected="1\n", weight=1),
        TestCase(id="b", public=True, stdin="", expected="1\n", weight=2),
        TestCase(id="c", public=False, stdin="", expected="1\n", weight=3),
    ]
    problem = _problem(tests=tests)
    observations = {"a": _obs(test_id="a", stdout="1\n"), "b": _obs(test_id="b", timed_out=True)}
    graded = grade(problem, 4, tests, observations, "", scope="all")
    assert graded.score == round(100 / 6, 2) and graded.passed == 1 and graded.total == 3
    assert graded.verdict is GradeVerdict.TIME_LIMIT and graded.revision == 4
    assert graded.tests[2].verdict is GradeVerdict.RUNTIME_ERROR  # c never reported
    compile_error = {t.id: _obs(test_id=t.id, error=TestError(type="SyntaxError", phase="compile")) for t in tests}
    assert grade(problem, 1, tests, compile_error, "", scope="all").verdict is GradeVerdict.COMPILE_ERROR


def test_problem_rules_name_the_field() -> None:
    with pytest.raises(ProblemInvalid, match=r"tests\[0\]\.script"):
        _problem(tests=[TestCase(id="h", public=False, script="assert True")])
    with pytest.raises(ProblemInvalid, match="function"):
        _problem(grading=GradingMode.FUNCTION, tests=[TestCase(id="p", public=True, args=[], expected=1)])
    with pytest.raises(ProblemInvalid, match=r"tests\[0\]\.expected"):
        _problem(tests=[TestCase(id="p", public=True, expected=3)])
    with pytest.raises(ProblemInvalid, match="unique"):
        _problem(tests=[TestCase(id="p", public=True, expected=""), TestCase(id="p", public=True, expected="")])
    _problem(allow_hidden_scripts=True, tests=[TestCase(id="h", public=False, script="assert True")])
