"""Typed, frozen settings read once from the environment.

Each process declares a ``msgspec.Struct`` whose field names are the lower-cased environment
variable names. :func:`load` converts every variable, collects every problem, and raises one
:class:`SettingsError` naming each bad variable, so an operator fixes them all in one go.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

AppEnv = Literal["development", "staging", "production"]
Url = Annotated[str, Meta(min_length=1)]
PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]

S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(Exception):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in msgspec.structs.fields(cls):
        name = field.name.upper()
        raw = env.get(name)
        if raw is None or raw == "":
            if field.required:
                problems.append(f"{name} is required but not set")
            continue
        try:
            # strict=False lets "8000" become 8000 and "true" become True.
            values[field.name] = msgspec.convert(raw, field.type, strict=False)
        except msgspec.ValidationError as exc:
            problems.append(f"{name}={raw!r} is invalid: {exc}")
    if problems:
        raise SettingsError(problems)
    try:
        settings = cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError([str(exc)]) from exc
    return settings


def env_example(*classes: type[msgspec.Struct]) -> str:
    """Render ``.env.example`` from the settings classes, so it cannot drift from the code."""
    lines: list[str] = []
    seen: set[str] = set()
    for cls in classes:
        lines.append(f"# --- {cls.__doc__.splitlines()[0] if cls.__doc__ else cls.__name__}")
        for field in msgspec.structs.fields(cls):
            name = field.name.upper()
            if name in seen:
                continue
            seen.add(name)
            if field.required:
                lines.append(f"{name}=")
            else:
                default = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
                lines.append(f"# {name}={'' if default is None else default}")
        lines.append("")
    return "\n".join(lines)
