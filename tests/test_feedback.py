"""Feedback for failed programs: the right entry, the student's own line, and a data file that is
complete, valid and free of internals. The stderr texts are hand-copied CPython 3.11 output of the
harness (frames of the student's program compiled as main.py); nothing is run here."""

from __future__ import annotations

import re
import tomllib

import msgspec
import pytest

from grading import feedback
from grading.feedback import Feedback, explain

TABLE = tomllib.loads(feedback.EXPLANATIONS.read_text(encoding="utf-8"))
FORBIDDEN = ("harness", "sandbox", "main.py", "/tmp", "traceback")


def _pattern_text(kind: str, match: str) -> str:
    """The specific explanation of ``kind``'s pattern whose regex is ``match``."""
    return next(p["explanation"] for p in TABLE[kind]["patterns"] if p["match"] == match)


# --- the data file ---------------------------------------------------------------------------------


def test_every_required_key_exists() -> None:
    assert set(feedback.REQUIRED_KEYS) <= set(TABLE)
    for key in ("TIME_LIMIT", "MEMORY_LIMIT", "OUTPUT_LIMIT", "default", "ImportError", "ModuleNotFoundError"):
        assert key in feedback.REQUIRED_KEYS


@pytest.mark.parametrize("key", sorted(TABLE))
def test_every_entry_has_a_title_an_explanation_and_valid_patterns(key: str) -> None:
    entry = TABLE[key]
    assert set(entry) <= {"title", "explanation", "patterns"}
    assert isinstance(entry["title"], str) and entry["title"].strip()
    assert isinstance(entry["explanation"], str) and entry["explanation"].strip()
    assert len(entry["title"]) <= 60, "titles are short"
    # 2-4 short sentences (a sentence ends with . ! or ? followed by a space or the end).
    assert 2 <= len(re.findall(r"[.!?](?:\s|$)", entry["explanation"])) <= 4, entry["explanation"]
    for pattern in entry.get("patterns", []):
        assert set(pattern) == {"match", "explanation"}
        re.compile(pattern["match"])
        assert pattern["explanation"].strip()
        assert 1 <= len(re.findall(r"[.!?](?:\s|$)", pattern["explanation"])) <= 4, pattern["explanation"]


@pytest.mark.parametrize("key", sorted(TABLE))
def test_no_text_mentions_internals(key: str) -> None:
    entry = TABLE[key]
    texts = [entry["title"], entry["explanation"], *(p["explanation"] for p in entry.get("patterns", []))]
    for text in texts:
        for word in FORBIDDEN:
            assert word not in text.lower(), (key, word, text)


def test_the_module_loads_the_same_file() -> None:
    table = feedback._table()
    assert set(table) == set(TABLE)
    assert all(len(table[k].patterns) == len(TABLE[k].get("patterns", [])) for k in TABLE)


# --- explaining real failures ----------------------------------------------------------------------


def test_name_error_with_a_suggestion() -> None:
    code = "name = 'Sam'\npritn(name)\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 2, in <module>\n'
        "    pritn(name)\n"
        "    ^^^^^\n"
        "NameError: name 'pritn' is not defined. Did you mean: 'print'?\n"
    )
    result = explain("NameError", stderr=stderr, code=code)
    assert result.kind == "NameError"
    assert (result.line, result.code) == (2, "pritn(name)")
    assert result.title == TABLE["NameError"]["title"]
    assert result.explanation == _pattern_text("NameError", "Did you mean")
    assert result.message == "name 'pritn' is not defined. Did you mean: 'print'?"


def test_name_error_suggestion_is_seen_in_stderr_when_the_message_lacks_it() -> None:
    # The harness reports str(exc), which has no suggestion: the printed line has it.
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 1, in <module>\n'
        "NameError: name 'pritn' is not defined. Did you mean: 'print'?\n"
    )
    result = explain("NameError", message="name 'pritn' is not defined", stderr=stderr)
    assert result.explanation == _pattern_text("NameError", "Did you mean")
    assert result.message == "name 'pritn' is not defined"


def test_lower_case_true_gets_its_own_explanation() -> None:
    result = explain("NameError", message="name 'true' is not defined. Did you mean: 'True'?")
    assert "capital letter" in result.explanation
    assert result.line is None


def test_zero_division_in_a_function_points_at_the_deepest_student_line() -> None:
    code = "def average(total, count):\n    return total / count\n\nprint(average(10, 0))\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 4, in <module>\n'
        "    print(average(10, 0))\n"
        "          ^^^^^^^^^^^^^^^\n"
        '  File "main.py", line 2, in average\n'
        "    return total / count\n"
        "           ~~~~~~^~~~~~~\n"
        "ZeroDivisionError: division by zero\n"
    )
    result = explain("ZeroDivisionError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("ZeroDivisionError", 2, "return total / count")
    assert result.explanation == TABLE["ZeroDivisionError"]["explanation"]
    assert result.message == "division by zero"


def test_bracket_never_closed() -> None:
    code = "x = 5\nprint((x + 1)\n"
    stderr = "  File \"main.py\", line 2\n    print((x + 1)\n         ^\nSyntaxError: '(' was never closed\n"
    result = explain("SyntaxError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("SyntaxError", 2, "print((x + 1)")
    assert result.explanation == _pattern_text("SyntaxError", "was never closed")


def test_syntax_error_message_from_the_harness_loses_its_file_name_but_keeps_the_line() -> None:
    result = explain("SyntaxError", message="'(' was never closed (main.py, line 3)", code="a\nb\nprint((1\n")
    assert (result.line, result.code, result.message) == (3, "print((1", "'(' was never closed")


def test_single_equals_in_if() -> None:
    stderr = (
        '  File "main.py", line 2\n    if x = 1:\n       ^^^^^\n'
        "SyntaxError: invalid syntax. Maybe you meant '==' or ':=' instead of '='?\n"
    )
    result = explain("SyntaxError", stderr=stderr, code="x = 1\nif x = 1:\n    print(x)\n")
    assert (result.line, result.code) == (2, "if x = 1:")
    assert result.explanation == _pattern_text("SyntaxError", "Maybe you meant '=='")


def test_indentation_error_reported_as_syntax_error_uses_the_precise_kind() -> None:
    # A caller that knows only "SyntaxError" (any compile error) still gets the precise entry.
    code = "if True:\nprint('hi')\n"
    stderr = (
        '  File "main.py", line 2\n'
        "    print('hi')\n"
        "    ^\n"
        "IndentationError: expected an indented block after 'if' statement on line 1\n"
    )
    result = explain("SyntaxError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("IndentationError", 2, "print('hi')")
    assert result.title == TABLE["IndentationError"]["title"]
    assert result.explanation == _pattern_text("IndentationError", "expected an indented block")
    assert result.message == "expected an indented block after 'if' statement on line 1"


def test_str_plus_int() -> None:
    code = "age = 10\nprint('I am ' + age)\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 2, in <module>\n'
        "    print('I am ' + age)\n"
        "          ~~~~~~~~^~~~~\n"
        'TypeError: can only concatenate str (not "int") to str\n'
    )
    result = explain("TypeError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("TypeError", 2, "print('I am ' + age)")
    assert result.explanation == _pattern_text("TypeError", "can only concatenate str")
    assert "str(" in result.explanation


def test_int_of_text_that_is_not_a_whole_number() -> None:
    code = "n = int(input())\nprint(n * 2)\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 1, in <module>\n'
        "    n = int(input())\n"
        "        ^^^^^^^^^^^^\n"
        "ValueError: invalid literal for int() with base 10: 'abc'\n"
    )
    result = explain("ValueError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("ValueError", 1, "n = int(input())")
    assert result.explanation == _pattern_text("ValueError", "invalid literal for int")
    assert "whole number" in result.explanation


def test_key_error() -> None:
    code = "pet = {'name': 'Rex'}\nprint(pet['Name'])\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 2, in <module>\n'
        "    print(pet['Name'])\n"
        "          ~~~^^^^^^^^\n"
        "KeyError: 'Name'\n"
    )
    result = explain("KeyError", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code, result.message) == ("KeyError", 2, "print(pet['Name'])", "'Name'")
    assert result.explanation == TABLE["KeyError"]["explanation"]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ("list index out of range", "list index out of range"),
        ("string index out of range", "string index out of range"),
    ],
)
def test_index_errors(message: str, match: str) -> None:
    code = "items = [1, 2, 3]\nword = 'cat'\nprint(items[3], word[3])\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 3, in <module>\n'
        "    print(items[3], word[3])\n"
        f"IndexError: {message}\n"
    )
    result = explain("IndexError", stderr=stderr, code=code)
    assert (result.line, result.code) == (3, "print(items[3], word[3])")
    assert result.explanation == _pattern_text("IndexError", match)


def test_recursion_error() -> None:
    code = "def countdown(n):\n    print(n)\n    countdown(n - 1)\n\ncountdown(3)\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 5, in <module>\n'
        "    countdown(3)\n"
        '  File "main.py", line 3, in countdown\n'
        "    countdown(n - 1)\n"
        '  File "main.py", line 3, in countdown\n'
        "    countdown(n - 1)\n"
        '  File "main.py", line 3, in countdown\n'
        "    countdown(n - 1)\n"
        "  [Previous line repeated 993 more times]\n"
        '  File "main.py", line 2, in countdown\n'
        "    print(n)\n"
        "RecursionError: maximum recursion depth exceeded while calling a Python object\n"
    )
    result = explain("RecursionError", stderr="3\n2\n1\n" + stderr, code=code)
    assert (result.kind, result.line, result.code) == ("RecursionError", 2, "print(n)")
    assert result.explanation == TABLE["RecursionError"]["explanation"]


def test_eof_error() -> None:
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 3, in <module>\n'
        "    b = input()\n"
        "        ^^^^^^^\n"
        "EOFError: EOF when reading a line\n"
    )
    result = explain("EOFError", stderr=stderr, code="a = input()\nprint(a)\nb = input()\n")
    assert (result.kind, result.line, result.code) == ("EOFError", 3, "b = input()")
    assert "input" in result.explanation


def test_last_frame_in_a_test_script_reports_the_last_student_line() -> None:
    code = "def double(x):\n    return helper(x)\n"
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 2, in double\n'
        "    return helper(x)\n"
        "           ^^^^^^^^^\n"
        '  File "<test>", line 1, in helper\n'
        "AssertionError: expected 4\n"
    )
    result = explain("AssertionError", message="expected 4", stderr=stderr, code=code)
    assert (result.kind, result.line, result.code) == ("AssertionError", 2, "return helper(x)")
    assert result.explanation == TABLE["AssertionError"]["explanation"]
    # Explanations never carry the message: it may be a hidden test's.
    assert "expected 4" not in result.explanation and "expected 4" not in result.title
    # Without the source, the line CPython printed under the student's frame is shown.
    assert explain("AssertionError", stderr=stderr).code == "return helper(x)"


def test_no_student_frame_means_no_line() -> None:
    stderr = 'Traceback (most recent call last):\n  File "<test>", line 3, in <module>\nAssertionError\n'
    result = explain("AssertionError", stderr=stderr, code="x = 1\ny = 2\nz = 3\n")
    assert (result.line, result.code, result.message) == (None, None, None)


def test_frames_printed_by_the_program_itself_are_ignored() -> None:
    # Output before the real traceback (or without one) can say anything.
    fake = '  File "main.py", line 99, in <module>\n'
    assert explain("ValueError", stderr=fake + "ValueError: boom\n").line is None
    stderr = fake + 'Traceback (most recent call last):\n  File "main.py", line 1, in <module>\nValueError: boom\n'
    assert explain("ValueError", stderr=stderr).line == 1


def test_time_limit_without_stderr() -> None:
    result = explain("TIME_LIMIT", code="while True:\n    pass\n")
    assert result == Feedback(
        kind="TIME_LIMIT", title=TABLE["TIME_LIMIT"]["title"], explanation=TABLE["TIME_LIMIT"]["explanation"]
    )
    assert "while" in result.explanation


def test_limits_ignore_what_the_program_printed() -> None:
    stderr = 'Traceback (most recent call last):\n  File "main.py", line 1, in <module>\nValueError: not mine\n'
    result = explain("OUTPUT_LIMIT", stderr=stderr)
    assert (result.line, result.message) == (None, None)


def test_unknown_kinds_use_the_default_entry() -> None:
    result = explain("SomethingWeird", message="x")
    assert result.kind == "SomethingWeird"
    assert result.explanation == TABLE["default"]["explanation"]
    assert "SomethingWeird" in result.title and "{kind}" not in result.title
    assert result.message == "x"


def test_built_in_subclasses_use_their_base_entry() -> None:
    result = explain("UnicodeDecodeError", message="'utf-8' codec can't decode byte 0xff")
    assert result.kind == "UnicodeDecodeError"
    assert result.title == TABLE["ValueError"]["title"]


def test_runtime_error_verdict_reads_the_type_from_stderr() -> None:
    stderr = 'Traceback (most recent call last):\n  File "main.py", line 1, in <module>\nKeyError: 3\n'
    result = explain("RUNTIME_ERROR", stderr=stderr, code="{}[3]\n")
    assert (result.kind, result.line, result.code) == ("KeyError", 1, "{}[3]")
    assert explain("RUNTIME_ERROR").title == TABLE["default"]["title"].replace("{kind}", "an error")


def test_long_messages_are_cut_and_the_result_encodes_in_camel_case() -> None:
    result = explain("ValueError", message="v" * 1000, code="x = 1\n")
    assert result.message is not None and len(result.message) == feedback.MAX_TEXT
    encoded = msgspec.json.decode(msgspec.json.encode(result))
    assert set(encoded) == {"kind", "title", "explanation", "line", "code", "message"}
    assert msgspec.convert(encoded, Feedback) == result


def test_source_lines_follow_the_tokenizer() -> None:
    # \f is not a line break for Python, \r\n is one.
    assert _line_of("a = 1\r\nb = '\f'\r\nc = d\r\n", 3) == "c = d"


def _line_of(code: str, line: int) -> str | None:
    stderr = f'Traceback (most recent call last):\n  File "main.py", line {line}, in <module>\nNameError: x\n'
    return explain("NameError", stderr=stderr, code=code).code
