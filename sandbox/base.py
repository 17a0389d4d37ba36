"""The sandbox interface every backend implements.

A backend starts sandboxes that already run the in-sandbox harness (``sandbox/harness.py``) and
wait for one job; :mod:`sandbox.executor` drives a job through one, and :mod:`sandbox.pool` keeps
some warm. Expected results never enter a sandbox: the harness reports raw observations and
grading compares outside. Whatever comes out is untrusted: size-capped, decoded leniently
(invalid UTF-8 becomes U+FFFD), parsed as JSON into typed structs only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from schemas.executions import StreamName, Verdict
from schemas.ops import PoolStats
from schemas.submissions import Limits, MiB


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
class SandboxConfig:
    """Limits and protections every backend applies when a sandbox starts (the job's ceilings)."""

    memory_bytes: int = 128 * MiB
    cpus: float = 0.5
    pids: int = 50
    tmp_bytes: int = 50 * MiB
    # /dev/shm: its own size cap (files there are memory no address-space limit counts).
    shm_bytes: int = 16 * MiB
    # Files and folders /tmp and /dev/shm may hold together.
    tmp_inodes: int = 25_000
    # Ceilings; each job's own (lower) limits are applied at job time, never above these.
    cpu_seconds: int = 60
    open_files: int = 1024
    file_size_bytes: int = 50 * MiB
    # TEST-ONLY switches (never a runner setting): the conformance suite turns a protection off
    # to prove that the checks naming it fail without it.
    seccomp: bool = True
    isolate_network: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    exit_code: int | None
    duration_ms: int
    signal: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    message: str | None = None


class TestCase(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One test case's input. Never its expected output."""

    __test__ = False  # not a pytest class

    id: str
    stdin: str = ""
    # Call this function of the program with these JSON arguments (after running the module).
    function: str | None = None
    args: list[Any] = msgspec.field(default_factory=list)
    # A test program run after the program in the same module (script tests); passes if it raises nothing.
    script: str | None = None
    wall_ms: int = 5_000
    cpu_seconds: int | None = None


class TestObservation(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the harness saw while one test case ran. Untrusted: decoded from sandbox output."""

    __test__ = False

    id: str
    stdout: str = ""
    stderr: str = ""
    return_json: str | None = None
    error: dict[str, str] | None = None
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_truncated: bool = False
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class TestRun:
    __test__ = False
    observations: list[TestObservation]
    outcome: Outcome


# What a program has no use for and would learn the host from (Docker's default masked paths, and
# kernel symbols, configuration and memory layout, interrupt and disk activity, pressure stalls):
# files read as empty, folders as empty and read-only. Both backends mask them (each mask is a mount
# made when a sandbox starts: the list stays short).
MASKED_FILES = (
    "/proc/kallsyms", "/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/timer_list",
    "/proc/timer_stats", "/proc/latency_stats", "/proc/sched_debug", "/proc/config.gz", "/proc/modules",
    "/proc/iomem", "/proc/ioports", "/proc/vmallocinfo", "/proc/slabinfo", "/proc/kpageflags",
    "/proc/kpagecount", "/proc/kpagecgroup", "/proc/sysrq-trigger", "/proc/kmsg", "/proc/interrupts",
    "/proc/softirqs", "/proc/diskstats",
)  # fmt: skip
MASKED_DIRS = (
    "/proc/sys", "/proc/scsi", "/proc/acpi", "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
    "/proc/pressure", "/sys/firmware", "/sys/kernel", "/sys/devices/virtual/powercap",
)  # fmt: skip


def clamp(limits: Limits, *, memory_bytes: int, processes: int, cpu_seconds: int, file_size_bytes: int,
          open_files: int) -> Limits:  # fmt: skip
    """A job's limits, none above the sandbox's ceilings."""
    return msgspec.structs.replace(
        limits,
        memory_bytes=min(limits.memory_bytes, memory_bytes),
        max_processes=min(limits.max_processes, processes),
        cpu_time_ms=min(limits.cpu_time_ms, cpu_seconds * 1000),
        file_size_bytes=min(limits.file_size_bytes, file_size_bytes),
        open_files=min(limits.open_files, open_files),
    )


@dataclass(frozen=True, slots=True)
class Applied:
    """A job's limits as one sandbox enforces them (see :meth:`Instance.apply`)."""

    # The job's limits lowered to the sandbox's ceilings: what verdict messages name.
    limits: Limits
    # Settings for the harness beyond the job's limits (e.g. ``addressSpaceBytes`` where no memory
    # cgroup holds the job's memory limit, ``tmpInodes``).
    harness: dict[str, int]
    # The sandbox's private scratch mounts, emptied by the harness between test cases.
    scratch: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a sandbox's harness process ended, as observed by the host."""

    started: bool  # the sandbox came up (False: the sandbox failed, not the program)
    exit_code: int | None
    oom_killed: bool = False


OutputSink = Callable[[StreamName, str], Awaitable[None]]
ObservationSink = Callable[["TestObservation"], Awaitable[None]]


class Instance(Protocol):
    """One started sandbox whose harness waits for its job. Serves one job, then is destroyed."""

    created_at: float

    def alive(self) -> bool: ...

    async def apply(self, limits: Limits) -> Applied:
        """Apply the job's memory and process limits, never above the sandbox's ceilings.

        Called once, before :meth:`send`. Whatever the backend holds from outside (a cgroup) is
        set here; the rest goes to the harness in :attr:`Applied.harness`.
        """

    async def send(self, data: bytes) -> None:
        """Write the job frame and the program's stdin, then close stdin."""

    def output(self) -> AsyncIterator[tuple[StreamName, bytes]]:
        """Raw output chunks until both streams close."""

    async def wait(self) -> ExitInfo: ...

    async def kill(self) -> None: ...

    async def destroy(self) -> None: ...


class Backend(Protocol):
    name: str

    async def check(self) -> None:
        """Raise :class:`SandboxUnavailable` (saying what to do) if no sandbox can start here."""

    async def spawn(self) -> Instance:
        """Start a sandbox running the harness; return once it said it is ready."""

    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces each limit ("memory", "pids", "cpu", "seccomp") here."""

    async def close(self) -> None: ...


class Sandbox(Protocol):
    name: str

    async def check(self) -> None: ...

    async def run(self, execution: Execution, sink: OutputSink) -> Outcome:
        """Run a program, sending output to ``sink`` as it arrives. Raises :class:`SandboxFailure`."""

    async def run_tests(
        self, code: str, tests: list[TestCase], limits: Limits, on_observation: ObservationSink | None = None
    ) -> TestRun:
        """Run each test case in a fresh child of one warm interpreter; observations only, each
        also handed to ``on_observation`` as soon as the harness reports it."""

    def stats(self) -> PoolStats: ...

    async def close(self) -> None: ...
