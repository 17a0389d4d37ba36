"""Comparing what a program produced with what a test expects. Pure functions, no I/O.

Runs in the grading consumer only: expectations never enter a sandbox.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from curriculum.model import Comparison

DIFF_LIMIT = 4000


def normalized_lines(text: str) -> list[str]:
    """Whitespace normalised: runs of spaces and tabs are one space, ends of lines and blank lines
    at the start or the end do not count, and \\r\\n is \\n."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _close(a: float, b: float, tolerance: float) -> bool:
    # Absolute or relative: 1e-6 means "six decimals" for small numbers and relative for big ones.
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _float_tokens_equal(expected: str, actual: str, tolerance: float) -> bool:
    want, got = expected.split(), actual.split()
    if len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):
        if w == g:
            continue
        a, b = _number(w), _number(g)
        if a is None or b is None or not _close(a, b, tolerance):
            return False
    return True


def text_matches(expected: str, actual: str, comparison: Comparison, tolerance: float = 1e-6) -> bool:
    match comparison:
        case Comparison.EXACT:
            return expected == actual
        case Comparison.NORMALIZED:
            return normalized_lines(expected) == normalized_lines(actual)
        case Comparison.UNORDERED_LINES:
            return sorted(normalized_lines(expected)) == sorted(normalized_lines(actual))
        case Comparison.FLOAT:
            want, got = normalized_lines(expected), normalized_lines(actual)
            return len(want) == len(got) and all(
                _float_tokens_equal(w, g, tolerance) for w, g in zip(want, got, strict=True)
            )
    raise ValueError(f"unknown comparison {comparison!r}")


def values_match(expected: Any, actual: Any, *, tolerance: float | None = None) -> bool:
    """JSON values equal, types included (``true`` is not ``1``, ``"1"`` is not ``1``); numbers
    compare by value, within ``tolerance`` when one is given."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if tolerance is None:
            return expected == actual  # 5 and 5.0 are the same number
        return _close(float(expected), float(actual), tolerance)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            values_match(e, a, tolerance=tolerance) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            values_match(expected[k], actual[k], tolerance=tolerance) for k in expected
        )
    return type(expected) is type(actual) and expected == actual


_PUNCTUATION = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def near_miss(expected: str, actual: str) -> str | None:
    """How a wrong output came close, if it did: the one kind of small difference between the two
    (``NEAR_MISS_SPACING``: spaces or empty lines only; ``NEAR_MISS_CASE``: capital letters only;
    ``NEAR_MISS_PUNCTUATION``: punctuation only), checked in that order; None for anything else."""
    want, got = normalized_lines(expected), normalized_lines(actual)
    if want == got or "".join("".join(want).split()) == "".join("".join(got).split()):
        return "NEAR_MISS_SPACING"
    if [line.casefold() for line in want] == [line.casefold() for line in got]:
        return "NEAR_MISS_CASE"

    def bare(lines: list[str]) -> list[str]:
        return [w for w in (" ".join(line.translate(_PUNCTUATION).split()) for line in lines) if w]

    if bare(want) == bare(got) and bare(want):
        return "NEAR_MISS_PUNCTUATION"
    return None


def diff(expected: str, actual: str) -> str:
    """A readable line diff (``-`` expected, ``+`` yours), capped."""
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "your output", lineterm="", n=2
    )
    text = "\n".join(lines)
    return text if len(text) <= DIFF_LIMIT else text[:DIFF_LIMIT] + "\n… (diff cut)"
