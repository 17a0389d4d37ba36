"""Plain-language feedback for a student whose program failed.

``explain(kind, message=..., stderr=..., code=...)`` turns an error (an exception type name such as
``"NameError"``, or a verdict such as ``"TIME_LIMIT"``) into a :class:`Feedback`: a friendly title,
an explanation a ten-year-old understands, and the line of the student's own code closest to the
error. The texts are data, in ``explanations.toml`` next to this module; nothing here adds words of
its own, and nothing of the error message ever goes into the title or the explanation (callers drop
``message`` for hidden tests, and the explanation must not leak it back).
"""

from __future__ import annotations

import builtins
import functools
import re
import tomllib
from pathlib import Path

import msgspec

from schemas.grades import Feedback  # the contract's type: it goes into grading events

__all__ = ["FILENAME", "LIMIT_KINDS", "NEAR_MISS_KINDS", "REQUIRED_KEYS", "Feedback", "explain"]

# The name the harness compiles the student's program under (sandbox/harness.py; not imported:
# the harness is standard-library only and runs inside the sandbox).
FILENAME = "main.py"
EXPLANATIONS = Path(__file__).with_name("explanations.toml")
# Verdicts that are not exceptions: the program was stopped, so its stderr says nothing about why.
LIMIT_KINDS = frozenset({"TIME_LIMIT", "MEMORY_LIMIT", "OUTPUT_LIMIT"})
# A wrong answer that came close (grading/compare.py: near_miss; the grading-near-miss flag): the
# program ran fine, so its stderr says nothing about the difference either.
NEAR_MISS_KINDS = frozenset({"NEAR_MISS_SPACING", "NEAR_MISS_CASE", "NEAR_MISS_PUNCTUATION"})
REQUIRED_KEYS = (
    "NameError",
    "SyntaxError",
    "IndentationError",
    "TabError",
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
    "IndexError",
    "KeyError",
    "AttributeError",
    "RecursionError",
    "UnboundLocalError",
    "ImportError",
    "ModuleNotFoundError",
    "EOFError",
    "AssertionError",
    "FileNotFoundError",
    "OverflowError",
    "MemoryError",
    "StopIteration",
    *sorted(LIMIT_KINDS),
    *sorted(NEAR_MISS_KINDS),
    "default",
)
MAX_TEXT = 300
# Kinds that say "it failed" without saying how: the exception's type is read from stderr instead.
_UNSPECIFIC = frozenset({"", "RUNTIME_ERROR"})

_HEADER = re.compile(r"^Traceback \(most recent call last\):$", re.MULTILINE)
# A frame (or a SyntaxError's location line); `|` prefixes are exception groups' sub-tracebacks.
_FRAME = re.compile(r'[ |]*File "(?P<file>[^"\n]*)", line (?P<line>\d+)')
# The line naming the exception, `Type: message` or a bare `Type`, at the start of a line.
_EXCEPTION_LINE = re.compile(r"(?P<type>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:: (?P<message>.*))?")
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Exit", "Interrupt", "Iteration", "Warning", "Group")
# str(SyntaxError) ends with its location, e.g. "'(' was never closed (main.py, line 1)".
_SYNTAX_LOCATION = re.compile(r"\s*\((?P<file>[^()\n]*), line (?P<line>\d+)\)\Z")
_KIND_NAME = re.compile(r"[A-Za-z_][\w.]{0,79}")
_VERDICT_NAME = re.compile(r"[A-Z]+(?:_[A-Z]+)+")


class _Pattern(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    match: str
    explanation: str


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: str
    explanation: str
    patterns: list[_Pattern] = []


class _Compiled(msgspec.Struct, frozen=True):
    title: str
    explanation: str
    patterns: tuple[tuple[re.Pattern[str], str], ...]


@functools.cache
def _table() -> dict[str, _Compiled]:
    """The explanations, read and checked once: a broken data file fails loudly, not per student."""
    raw = tomllib.loads(EXPLANATIONS.read_text(encoding="utf-8"))
    entries = msgspec.convert(raw, dict[str, _Entry])
    missing = [key for key in REQUIRED_KEYS if key not in entries]
    if missing:
        raise ValueError(f"{EXPLANATIONS.name} lacks {', '.join(missing)}")
    return {
        key: _Compiled(
            title=entry.title,
            explanation=entry.explanation,
            patterns=tuple((re.compile(p.match), p.explanation) for p in entry.patterns),
        )
        for key, entry in entries.items()
    }


def explain(kind: str, *, message: str | None = None, stderr: str = "", code: str = "") -> Feedback:
    """Feedback for a failed program.

    ``kind`` is an exception type name or a key of LIMIT_KINDS ("" or "RUNTIME_ERROR": read the type
    from ``stderr``); ``message`` the exception's message (None: read from ``stderr``'s exception
    line); ``stderr`` what the program wrote to stderr, ending with its traceback; ``code`` the
    student's source, to show the line the error points at.
    """
    kind = (kind or "").strip()[:100]
    parsed_type: str | None = None
    parsed_message: str | None = None
    line: int | None = None
    shown: str | None = None
    if kind not in LIMIT_KINDS | NEAR_MISS_KINDS:
        parsed_type, parsed_message = _exception_line(stderr, kind)
        if parsed_type is not None and (kind in _UNSPECIFIC or _is_subclass(parsed_type, kind)):
            # The more precise name wins, e.g. the IndentationError of a caller that says "SyntaxError".
            kind = parsed_type
        line, shown = _student_frame(stderr, syntax=_is_syntax_error(kind))
    if message is None:
        message = parsed_message
    if message is not None and _is_syntax_error(kind):
        located = _SYNTAX_LOCATION.search(message)
        if located:
            # str(SyntaxError) carries its location; keep the line, drop the file name.
            message = message[: located.start()]
            if line is None and located["file"] == FILENAME:
                line = int(located["line"])

    entry, key = _entry(kind)
    title = entry.title
    if key == "default":
        title = title.replace("{kind}", kind if _is_nameable(kind) else "an error")
    explanation = entry.explanation
    # Match the message given and the one printed (only the printed NameError has "Did you mean").
    texts = [text[:1000] for text in (message, parsed_message) if text]
    for pattern, specific in entry.patterns:
        if any(pattern.search(text) for text in texts):
            explanation = specific
            break

    source = _source_line(code, line)
    return Feedback(
        kind=kind,
        title=title,
        explanation=explanation,
        line=line,
        code=_clip(source if source is not None else shown),
        message=_clip(message.strip()) if message and message.strip() else None,
    )


def _entry(kind: str) -> tuple[_Compiled, str]:
    """The entry for a kind: its own, else its nearest built-in base class's, else the default."""
    table = _table()
    name = kind.rpartition(".")[2]
    if name in table:
        return table[name], name
    for base in getattr(_builtin_exception(name), "__mro__", ())[1:]:
        if base.__name__ in table:
            return table[base.__name__], base.__name__
    return table["default"], "default"


def _builtin_exception(name: str) -> type[BaseException] | None:
    value = getattr(builtins, name, None) if name.isidentifier() else None
    return value if isinstance(value, type) and issubclass(value, BaseException) else None


def _is_subclass(name: str, base: str) -> bool:
    """Whether built-in exception ``name`` is a strict subclass of built-in ``base``."""
    child, parent = _builtin_exception(name), _builtin_exception(base)
    return child is not None and parent is not None and child is not parent and issubclass(child, parent)


def _is_syntax_error(kind: str) -> bool:
    return kind == "SyntaxError" or _is_subclass(kind, "SyntaxError")


def _is_nameable(kind: str) -> bool:
    """Whether ``kind`` reads as an error's name in a title (not empty, not a verdict like RUNTIME_ERROR)."""
    return bool(_KIND_NAME.fullmatch(kind)) and not _VERDICT_NAME.fullmatch(kind)


def _last_exception(stderr: str) -> tuple[str, bool]:
    """The part of stderr about the final exception (after the last traceback header, if any), and
    whether there was a header.

    What the program printed before it failed comes earlier, so text there that merely looks like
    a frame is ignored; a chained exception's traceback comes before the final one's header.
    """
    headers = list(_HEADER.finditer(stderr))
    return (stderr[headers[-1].end() :], True) if headers else (stderr, False)


def _exception_line(stderr: str, kind: str) -> tuple[str | None, str | None]:
    """The type and message of the exception line nearest the end of stderr (``Type: message``)."""
    name = kind.rpartition(".")[2]
    for text in reversed(_last_exception(stderr)[0].splitlines()):
        found = _EXCEPTION_LINE.fullmatch(text)
        if not found:
            continue
        found_name = found["type"].rpartition(".")[2]
        # A bare word could be an exception note or a message's second line: only names that look
        # like exceptions count.
        if found_name == name or found_name.endswith(_EXCEPTION_SUFFIXES) or _builtin_exception(found_name):
            return found["type"], found["message"]
    return None, None


def _student_frame(stderr: str, *, syntax: bool) -> tuple[int | None, str | None]:
    """The line number of the last frame in the student's file, and the source line printed under it.

    Without a traceback header only a syntax error's location line counts: a program that never
    started printed nothing of its own, but one that did may have printed anything.
    """
    block, traceback = _last_exception(stderr)
    if not traceback and not syntax:
        return None, None
    lines = block.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        frame = _FRAME.match(lines[index])
        if frame and frame["file"] == FILENAME:
            return int(frame["line"]), _printed_source(lines[index + 1 : index + 2])
    return None, None


def _printed_source(following: list[str]) -> str | None:
    """The source line CPython prints under a frame (indented deeper), if that is what follows."""
    if not following or not following[0].startswith("    "):
        return None
    text = following[0].strip()
    if not text or set(text) <= set("^~ ") or text.startswith(("File ", "[Previous line")):
        return None
    return text


def _source_line(code: str, line: int | None) -> str | None:
    if not code or line is None or line < 1:
        return None
    # The tokenizer's line breaks, not str.splitlines' (which also splits at \f, \v, \x1c, \u2028...).
    lines = re.split(r"\r\n|\r|\n", code)
    return lines[line - 1].strip() if line <= len(lines) else None


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 1] + "…"
