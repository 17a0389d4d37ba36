"""The curriculum as files in the repository (``curriculum/content``), read and validated.

Layout (documented in docs/curriculum.md)::

    content/levels.toml                  [[levels]]: slug, name, min_age, max_age
    content/<level>/<NN>-<session>/session.toml        title, introduction
    content/<level>/<NN>-<session>/<NN>-<problem>.toml one problem

A problem's level, session, order and slug come from its path, so a file cannot disagree with
where it is. Every error names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from curriculum.model import Level, Problem, ProblemInvalid, Session, check

CONTENT = Path(__file__).parent / "content"
_NUMBERED = re.compile(r"^(\d{2})-([a-z0-9]+(?:-[a-z0-9]+)*)$")


class CurriculumError(ValueError):
    """The curriculum files are invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Curriculum:
    levels: list[Level]
    sessions: list[Session]
    problems: list[Problem]


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CurriculumError(f"{path}: not valid TOML: {exc}") from None


def _numbered(path: Path) -> tuple[int, str]:
    match = _NUMBERED.fullmatch(path.stem if path.is_file() else path.name)
    if not match:
        raise CurriculumError(f"{path}: name it NN-slug (two digits, a dash, lower-case words joined by dashes)")
    return int(match[1]), match[2]


def _convert(data: dict[str, Any], type_: type[Any], path: Path) -> Any:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise CurriculumError(f"{path}: {exc}") from None


def load_problem(path: Path, level: str, session_id: str) -> Problem:
    """One problem file; its level, session, order and slug come from where it is."""
    data = _read(path)
    order, slug = _numbered(path)
    for derived in ("level", "session", "order", "slug"):
        if derived in data:
            raise CurriculumError(f"{path}: `{derived}` comes from the file's path; remove it")
    problem = _convert({**data, "level": level, "session": session_id, "order": order, "slug": slug}, Problem, path)
    try:
        return check(problem)
    except ProblemInvalid as exc:
        raise CurriculumError(f"{path}: {exc}") from None


def load(root: Path = CONTENT) -> Curriculum:
    """Every level, session and problem under ``root``, validated, in order."""
    levels_file = root / "levels.toml"
    if not levels_file.is_file():
        raise CurriculumError(f"{levels_file}: missing (it lists the levels)")
    levels = [_convert(entry, Level, levels_file) for entry in _read(levels_file).get("levels", [])]
    sessions: list[Session] = []
    problems: list[Problem] = []
    for level in levels:
        folder = root / level.slug
        if not folder.is_dir():
            continue
        for session_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            order, slug = _numbered(session_dir)
            session_file = session_dir / "session.toml"
            if not session_file.is_file():
                raise CurriculumError(f"{session_file}: missing (title and introduction of the session)")
            session = _convert(
                {**_read(session_file), "id": f"{level.slug}-{slug}", "level": level.slug, "order": order},
                Session,
                session_file,
            )
            sessions.append(session)
            for path in sorted(session_dir.glob("*.toml")):
                if path.name != "session.toml":
                    problems.append(load_problem(path, level.slug, session.id))
    _check_unique(problems, sessions)
    return Curriculum(levels=levels, sessions=sessions, problems=problems)


def _check_unique(problems: list[Problem], sessions: list[Session]) -> None:
    seen: dict[object, str] = {}
    for p in problems:
        for key in (("id", p.id), ("slug", p.slug)):
            if key in seen:
                raise CurriculumError(f"problem {p.slug}: {key[0]} {key[1]!r} is also used by {seen[key]}")
            seen[key] = p.slug
    ids = [s.id for s in sessions]
    if len(ids) != len(set(ids)):
        raise CurriculumError("two sessions have the same folder slug within one level")
