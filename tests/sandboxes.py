"""Sandbox fixtures shared by the conformance suite and the sandbox tests: one per backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import seccomp
from sandbox.base import Execution, Outcome
from sandbox.bwrap import BwrapBackend, BwrapConfig
from sandbox.docker import DockerBackend, DockerConfig
from sandbox.pool import PooledSandbox, WarmPool
from schemas.submissions import Limits
from tests import leftovers

BACKENDS = ["bwrap", "docker"]
# .ci/podman.sh serves the Docker Engine API here and builds this image without a registry.
DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///run/coderunner-podman.sock")
DOCKER_IMAGE = os.environ.get("SANDBOX_IMAGE", "coderunner-sandbox:test")
FAST = Limits(wall_time_ms=2000, cpu_time_ms=2000)


@dataclass
class Run:
    outcome: Outcome
    chunks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(t for s, t in self.chunks if s == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(t for s, t in self.chunks if s == "stderr")


def make_backend(name: str, **overrides: object) -> BwrapBackend | DockerBackend:
    if name == "bwrap":
        # Host uids apart from the runners', so leftover checks see only these sandboxes.
        config = BwrapConfig(**{"host_uid_base": leftovers.TEST_UID_BASE, **overrides})  # type: ignore[arg-type]
        return BwrapBackend(config, instance_name=f"test-{os.getpid()}")
    settings = {"image": DOCKER_IMAGE, "base_url": DOCKER_HOST, "runner_id": leftovers.runner_id(), **overrides}
    return DockerBackend(DockerConfig(**settings))  # type: ignore[arg-type]


async def make_sandbox(
    name: str,
    *,
    min_size: int = 1,
    max_size: int = 3,
    seccomp_on: bool = True,
    isolate_network: bool = True,
    **overrides: object,
) -> PooledSandbox:
    """A pooled sandbox as the runner makes it.

    ``seccomp_on=False`` and ``isolate_network=False`` are test-only: they take that protection
    away (no outer bwrap filter, no harness filter, Docker's own profile ``unconfined``; a shared
    network namespace, Docker's ``bridge`` network) so the conformance suite can prove that the
    checks naming it fail without it.
    """
    if not seccomp_on:
        overrides["seccomp"] = False
    if not isolate_network:
        overrides["isolate_network"] = False
    backend = make_backend(name, **overrides)
    pool = WarmPool(backend, min_size=min_size, max_size=max_size, max_age=600)
    sandbox = PooledSandbox(backend, pool, seccomp=seccomp.program("harness") if seccomp_on else None)
    # No silent skip: a backend that cannot start fails the tests, with the reason.
    await sandbox.check()
    return sandbox


async def run(sandbox: PooledSandbox, code: str, *, stdin: str = "", limits: Limits = FAST) -> Run:
    result = Run(outcome=None)  # type: ignore[arg-type]

    async def sink(stream: str, text: str) -> None:
        result.chunks.append((stream, text))

    result.outcome = await sandbox.run(Execution(code=code, stdin=stdin, limits=limits), sink)
    return result


def processes_of_uids(uids: range) -> dict[int, int]:
    """pid -> ppid of every live process whose real uid is in ``uids``.

    Zombies are left out: they have exited and hold nothing but a pid until their reaper (here the
    host's pid 1, which reaps lazily) collects them.
    """
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if uid in uids and not fields["State"].strip().startswith(("Z", "X")):
            found[int(entry.name)] = int(fields["PPid"].strip())
    return found


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state letter) of every process, zombies included."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> set[int]:
    """Every process below ``root`` (zombies included)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
