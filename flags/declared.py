"""The one declaration of every feature flag, and what a value means.

A flag is a **switch** (``on`` / ``off``) or a **share** (``on`` = 100 %, ``off`` = 0 %, or a
percentage of keys: jobs or users). Every value is held as a percentage: a switch is 0 or 100.
Whether a share is on for a key is decided by a hash of the flag's name and the key
(:func:`bucket`), never by chance: the same job gets the same answer on every redelivery and in
every process, and the keys that are on at 10 % stay on at 20 %.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from schemas.subjects import FLAG_NAME_RE

Kind = Literal["switch", "share"]


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    # The value (0-100) while the flag was never set, or while no value could be read yet.
    default: int
    # Who checks it, and what it does (``coderunner flag list`` prints it).
    checked_by: str
    description: str
    # What a share is counted over (the key given to :meth:`FlagReader.enabled`).
    per: Literal["", "job", "user"] = ""


SANDBOX_DOCKER = Flag(
    "sandbox-docker",
    "share",
    0,
    "runner",
    "Share of jobs run in the Docker sandbox, the rest in bubblewrap, on runners that have both "
    "(SANDBOX_SECOND_BACKEND); a runner without the chosen backend uses its own and counts it",
    per="job",
)
GRADING_NEAR_MISS = Flag(
    "grading-near-miss",
    "share",
    0,
    "grading consumer",
    "Share of students whose wrong answers that differ from the expected output only in spacing, "
    "letter case or punctuation get feedback that says so (verdicts and scores do not change)",
    per="user",
)
READ_ONLY = Flag(
    "read-only",
    "switch",
    0,
    "gateway",
    "Kill switch: Run, Submit and progress records answer 503 (read-only, Retry-After); reads, "
    "event streams and jobs already queued keep working, so the queue drains",
)

FLAGS: tuple[Flag, ...] = (SANDBOX_DOCKER, GRADING_NEAR_MISS, READ_ONLY)
BY_NAME: dict[str, Flag] = {f.name: f for f in FLAGS}
assert all(FLAG_NAME_RE.fullmatch(f.name) for f in FLAGS), "a flag's name is one subject token"


class FlagError(ValueError):
    """An unknown flag, or a value the flag does not take (the message names it)."""


def flag_named(name: str) -> Flag:
    try:
        return BY_NAME[name]
    except KeyError:
        raise FlagError(f"unknown flag {name!r} (known: {', '.join(BY_NAME)})") from None


def parse(flag: Flag, text: str) -> int:
    """A value as typed or stored (``on``, ``off``, ``25``, ``25%``) as a percentage."""
    raw = text.strip().lower()
    if raw in ("on", "off"):
        return 100 if raw == "on" else 0
    if flag.kind == "switch":
        raise FlagError(f"{flag.name} is a switch: on or off, not {text!r}")
    digits = raw.removesuffix("%")
    if not digits.isdigit() or not 0 <= int(digits) <= 100:
        raise FlagError(f"{flag.name} takes on, off or a percentage from 0 to 100, not {text!r}")
    return int(digits)


def show(flag: Flag, value: int) -> str:
    """A value as stored, printed and carried by the audit event: ``on``/``off``, or ``25``."""
    if flag.kind == "switch" or value in (0, 100):
        return "on" if value == 100 else "off"
    return str(value)


def bucket(flag: Flag, key: str) -> int:
    """The key's bucket (0-99) for this flag: stable across processes, restarts and redeliveries."""
    digest = hashlib.sha256(f"{flag.name}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def on_for(flag: Flag, value: int, key: str = "") -> bool:
    """Whether a flag at ``value`` is on for ``key`` (a switch ignores the key)."""
    if value >= 100:
        return True
    if value <= 0:
        return False
    return bucket(flag, key) < value
