"""The sandbox interface every backend implements.

A backend runs one untrusted program with limits and streams its output back as text. It never
sees expected results: grading compares outside the sandbox. Whatever comes out is untrusted:
output is size-capped and decoded leniently (invalid UTF-8 becomes U+FFFD).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from schemas.executions import StreamName, Verdict
from schemas.submissions import Limits


class SandboxError(Exception):
    """Base of every sandbox error."""


class SandboxUnavailable(SandboxError):
    """No sandbox can start here; the message says what to do. The runner refuses to start."""


class SandboxFailure(SandboxError):
    """The sandbox itself failed while running a job (not the student's fault)."""


@dataclass(frozen=True, slots=True)
class Execution:
    code: str
    limits: Limits
    stdin: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    exit_code: int | None
    duration_ms: int
    signal: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    message: str | None = None


OutputSink = Callable[[StreamName, str], Awaitable[None]]


class Sandbox(Protocol):
    name: str

    async def check(self) -> None:
        """Prove a sandbox can start here; raise :class:`SandboxUnavailable` otherwise."""

    async def run(self, execution: Execution, sink: OutputSink) -> Outcome:
        """Run the program, sending output to ``sink`` as it arrives.

        Raises :class:`SandboxFailure` when the sandbox could not run the program at all.
        """

    async def close(self) -> None: ...
