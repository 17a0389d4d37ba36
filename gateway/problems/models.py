"""Problems' HTTP request and response bodies (camelCase JSON).

Separate from the curriculum's own model (``curriculum.model``) and from bus events. Request bodies
carry the same constraints as :class:`curriculum.model.Problem`, so a bad body is Litestar's 400
naming the field; the service converts them to the model, which checks them once more.

Students' views never carry a solution, a wrong solution or anything of a hidden test.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from curriculum.model import Comparison, GradingMode, LevelSlug, Slug, TestId

# --- teachers: what they write and read back ------------------------------------------------------


class _TestFields(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    public: bool
    stdin: Annotated[str, Meta(max_length=65536)] = ""
    args: list[Any] | None = None
    expected: Any = None
    script: Annotated[str, Meta(max_length=20000)] | None = None
    comparison: Comparison | None = None  # None: the problem's
    weight: Annotated[int, Meta(ge=1, le=100)] = 1


class ProblemTest(_TestFields, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """One test as a teacher writes it (public or hidden)."""

    id: TestId


class ReplacedTest(_TestFields, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A test replacing the one its path names: ``id`` may be left out (it is the path's)."""

    id: TestId | None = None


class WrongSolutionBody(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    code: Annotated[str, Meta(max_length=20000)]
    note: Annotated[str, Meta(max_length=2000)] = ""


class ProblemIn(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A problem as a teacher writes it: every field of the curriculum's problem but its id."""

    slug: Slug
    title: Annotated[str, Meta(min_length=1, max_length=120)]
    level: LevelSlug
    session: Slug
    order: Annotated[int, Meta(ge=1, le=999)]
    statement: Annotated[str, Meta(min_length=1, max_length=20000)]
    starter_code: Annotated[str, Meta(max_length=20000)] = ""
    tags: Annotated[list[Annotated[str, Meta(max_length=32)]], Meta(max_length=20)] = []
    grading: GradingMode = GradingMode.STDOUT
    comparison: Comparison = Comparison.NORMALIZED
    tolerance: Annotated[float, Meta(ge=0, le=1)] = 1e-6
    function: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    time_limit_ms: Annotated[int, Meta(ge=100, le=10_000)] = 2_000
    memory_limit_mb: Annotated[int, Meta(ge=16, le=512)] = 64
    hint: Annotated[str, Meta(max_length=2000)] = ""
    allow_hidden_scripts: bool = False
    tests: Annotated[list[ProblemTest], Meta(min_length=1, max_length=200)]
    solution: Annotated[str, Meta(max_length=20000)] = ""
    wrong_solutions: Annotated[list[WrongSolutionBody], Meta(max_length=50)] = []


class TeacherProblem(Struct, frozen=True, kw_only=True, rename="camel"):
    """A problem as stored, everything included (teachers and admins only)."""

    id: int
    revision: int
    slug: str
    title: str
    level: str
    session: str
    order: int
    statement: str
    starter_code: str
    tags: list[str]
    grading: GradingMode
    comparison: Comparison
    tolerance: float
    function: str | None
    time_limit_ms: int
    memory_limit_mb: int
    hint: str
    allow_hidden_scripts: bool
    tests: list[ProblemTest]
    solution: str
    wrong_solutions: list[WrongSolutionBody]


# --- students (and everyone: the curriculum is not secret, its hidden tests are) -------------------


class ProblemSummary(Struct, frozen=True, kw_only=True, rename="camel"):
    id: int
    slug: str
    title: str
    level: str
    session: str
    order: int
    tags: list[str]
    grading: GradingMode


class ProblemPage(Struct, frozen=True, kw_only=True, rename="camel"):
    items: list[ProblemSummary]
    page: int
    page_size: int
    total: int


class ProblemOut(Struct, frozen=True, kw_only=True, rename="camel"):
    """A problem as students see it: no solution, and of its hidden tests only how many there are."""

    id: int
    slug: str
    title: str
    level: str
    session: str
    order: int
    tags: list[str]
    statement: str
    starter_code: str
    hint: str
    grading: GradingMode
    function: str | None
    comparison: Comparison
    time_limit_ms: int
    memory_limit_mb: int
    revision: int
    public_test_count: int
    hidden_test_count: int


class PublicTest(Struct, frozen=True, kw_only=True, rename="camel"):
    """A public test; ``comparison`` is the one that applies (the test's own, else the problem's)."""

    id: str
    stdin: str
    args: list[Any] | None
    expected: Any
    script: str | None
    comparison: Comparison
    weight: int


class LevelOut(Struct, frozen=True, kw_only=True, rename="camel"):
    slug: str
    name: str
    min_age: int
    max_age: int
    description: str


class SessionOut(Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    level: str
    order: int
    title: str
    introduction: str


class SessionDetail(Struct, frozen=True, kw_only=True, rename="camel"):
    """A session and its problems, in order."""

    id: str
    level: str
    order: int
    title: str
    introduction: str
    problems: list[ProblemSummary]
