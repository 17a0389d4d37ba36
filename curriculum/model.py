"""The curriculum's own model: what a problem file holds, validated (one model for the files, the
store, the API's teacher views and the grading consumer's expectations).

Bus events (``schemas.problems``) and HTTP bodies (``gateway.problems.models``) are separate types.
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Slug = Annotated[str, Meta(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)]
LevelSlug = Literal["kids", "teens", "adults"]
TestId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class GradingMode(enum.StrEnum):
    # stdin → stdout, compared with the test's comparison
    STDOUT = "stdout"
    # call a named function with JSON arguments; compare the JSON result
    FUNCTION = "function"
    # a teacher's test program runs after the student's code; passes when it raises nothing
    SCRIPT = "script"


class Comparison(enum.StrEnum):
    NORMALIZED = "normalized"  # whitespace normalised: the default
    EXACT = "exact"
    FLOAT = "float"  # tokens equal, numbers within the tolerance
    UNORDERED_LINES = "unordered_lines"


class Level(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    slug: LevelSlug
    name: Annotated[str, Meta(min_length=1, max_length=80)]
    min_age: Annotated[int, Meta(ge=0, le=150)]
    max_age: Annotated[int, Meta(ge=0, le=150)]
    description: str = ""


class Session(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A lesson: an ordered list of problems within a level."""

    id: Slug  # "<level>-<folder slug>", e.g. "kids-printing"
    level: LevelSlug
    order: Annotated[int, Meta(ge=1, le=999)]
    title: Annotated[str, Meta(min_length=1, max_length=120)]
    introduction: Annotated[str, Meta(max_length=4000)] = ""


class TestCase(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One test: its input (stdin, function arguments or a script) and what is expected."""

    __test__ = False  # not a pytest class

    id: TestId
    public: bool
    stdin: Annotated[str, Meta(max_length=65536)] = ""
    # Function tests: the arguments (a JSON array) and the expected return value (JSON).
    args: list[Any] | None = None
    # Stdout tests: the expected output; function tests: the expected value.
    expected: Any = None
    # Script tests: a test program that runs after the student's code (in the same sandbox).
    script: Annotated[str, Meta(max_length=20000)] | None = None
    comparison: Comparison | None = None  # None: the problem's
    weight: Annotated[int, Meta(ge=1, le=100)] = 1


class Problem(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    slug: Slug
    title: Annotated[str, Meta(min_length=1, max_length=120)]
    level: LevelSlug
    session: Slug
    order: Annotated[int, Meta(ge=1, le=999)]
    statement: Annotated[str, Meta(min_length=1, max_length=20000)]
    starter_code: Annotated[str, Meta(max_length=20000)] = ""
    tags: list[Annotated[str, Meta(max_length=32)]] = []
    grading: GradingMode = GradingMode.STDOUT
    comparison: Comparison = Comparison.NORMALIZED
    tolerance: Annotated[float, Meta(ge=0, le=1)] = 1e-6
    function: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    time_limit_ms: Annotated[int, Meta(ge=100, le=10_000)] = 2_000
    memory_limit_mb: Annotated[int, Meta(ge=16, le=512)] = 64
    hint: Annotated[str, Meta(max_length=2000)] = ""
    # Script tests enter the sandbox: hidden ones only where a teacher says so (docs/curriculum.md).
    allow_hidden_scripts: bool = False
    tests: list[TestCase]
    # Files only (never sent to students): a correct solution and plausible wrong ones.
    solution: str = ""
    wrong_solutions: list[WrongSolution] = []

    def public_tests(self) -> list[TestCase]:
        return [t for t in self.tests if t.public]

    def comparison_of(self, test: TestCase) -> Comparison:
        return test.comparison or self.comparison

    def digest(self) -> str:
        """A digest of everything a change to the file can change (the seed compares it)."""
        return hashlib.sha256(msgspec.json.encode(self, order="deterministic")).hexdigest()


class WrongSolution(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: str
    # What is wrong with it (for teachers), and the verdict it should get (checked by the tests).
    note: str = ""


class ProblemInvalid(ValueError):
    """A problem breaks a rule the types alone cannot say; the message names the field."""


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check(problem: Problem) -> Problem:
    """The rules across fields. Raises :class:`ProblemInvalid` naming the field."""
    if not problem.tests:
        raise ProblemInvalid("tests: a problem needs at least one test")
    ids = [t.id for t in problem.tests]
    if len(set(ids)) != len(ids):
        raise ProblemInvalid("tests: test ids must be unique")
    if problem.grading is GradingMode.FUNCTION and not problem.function:
        raise ProblemInvalid("function: function grading names the function to call")
    for i, test in enumerate(problem.tests):
        where = f"tests[{i}]"
        is_script = test.script is not None
        if problem.grading is GradingMode.SCRIPT and not is_script:
            raise ProblemInvalid(f"{where}.script: script grading needs a script in every test")
        if is_script and not test.public and not problem.allow_hidden_scripts:
            raise ProblemInvalid(
                f"{where}.script: a hidden test cannot be a script (its code enters the sandbox) unless "
                "the problem sets allow_hidden_scripts"
            )
        if problem.grading is GradingMode.FUNCTION and not is_script:
            if test.args is None:
                raise ProblemInvalid(f"{where}.args: function tests need args (a list)")
        elif test.args is not None:
            raise ProblemInvalid(f"{where}.args: only function tests take args")
        if problem.grading is GradingMode.STDOUT and not is_script and not isinstance(test.expected, str):
            raise ProblemInvalid(f"{where}.expected: stdout tests expect text")
        if problem.grading is GradingMode.FUNCTION and not is_script:
            try:
                msgspec.json.encode(test.expected)
            except (TypeError, msgspec.EncodeError) as exc:
                raise ProblemInvalid(f"{where}.expected: not JSON ({exc})") from None
    return problem


problem_decoder = msgspec.json.Decoder(Problem)
