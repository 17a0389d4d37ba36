from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from config.common import CommonSettings
from config.loader import PositiveFloat, PositiveInt


def _default_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RunnerSettings(CommonSettings, frozen=True, kw_only=True):
    """Runner (executes submissions in sandboxes)"""

    runner_concurrency: PositiveInt = 2
    runner_id: str = msgspec.field(default_factory=_default_runner_id)
    # On SIGTERM a runner takes no new job and gives running ones this long to finish; the rest
    # are handed back (nak) at once, for another runner.
    runner_shutdown_grace_seconds: PositiveFloat = 10.0
    # bwrap: bubblewrap on this host (the embedded default); docker: containers (production).
    sandbox_backend: Literal["bwrap", "docker"] = "bwrap"
    # A second backend this runner also keeps warm (the other one, configured by the same
    # settings): the sandbox-docker flag then picks the backend of each job (docs/flags.md).
    sandbox_second_backend: Literal["bwrap", "docker"] | None = None
    # Limits of every sandbox (seed plan defaults). Per-job limits can only be lower.
    sandbox_memory_mb: Annotated[int, Meta(ge=16, le=65536)] = 128
    sandbox_cpus: Annotated[float, Meta(gt=0, le=64)] = 0.5
    sandbox_pids: Annotated[int, Meta(ge=4, le=65536)] = 50
    sandbox_tmp_mb: Annotated[int, Meta(ge=1, le=65536)] = 50
    sandbox_open_files: Annotated[int, Meta(ge=16, le=65536)] = 256
    sandbox_file_size_mb: Annotated[int, Meta(ge=0, le=65536)] = 50
    # Warm pool: sandboxes kept started and waiting (defaults: concurrency, 2 x concurrency).
    sandbox_pool_min: Annotated[int, Meta(ge=0)] | None = None
    sandbox_pool_max: Annotated[int, Meta(ge=1)] | None = None
    sandbox_pool_max_age_seconds: PositiveFloat = 600.0
    # bwrap: interpreter inside ("auto": /usr/bin/python3, else this Python's base install).
    sandbox_python: str = "auto"
    # bwrap: "auto" uses cgroup v1 memory/cpu/pids controllers when writable, else a delegated
    # cgroup v2 subtree; "v1" / "v2" only that one; "off": rlimits only.
    sandbox_cgroups: Literal["auto", "v1", "v2", "off"] = "auto"
    # In production a runner refuses to start unless memory and processes are enforced by cgroups
    # (or Docker); rlimits alone can be dodged (e.g. memory outside the address space).
    sandbox_allow_weak_limits: bool = False
    # bwrap, runner running as root: sandboxes run as host uids BASE..BASE+63 (RLIMIT_NPROC does
    # not apply to root, and separate uids keep process counts apart).
    sandbox_host_uid_base: PositiveInt = 60_000
    # docker: the sandbox image (built from sandbox/Dockerfile) and the Engine API address.
    sandbox_image: str = "coderunner-sandbox:latest"
    docker_host: str | None = None

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> list[str]:
        problems = super().check_values(values)
        second = values.get("sandbox_second_backend")
        if second is not None and second == values.get("sandbox_backend", "bwrap"):
            problems.append(f"SANDBOX_SECOND_BACKEND={second!r} is SANDBOX_BACKEND already: name the other backend")
        return problems

    @property
    def backends(self) -> tuple[str, ...]:
        """The sandbox backends this runner runs jobs in, its SANDBOX_BACKEND first."""
        return (self.sandbox_backend,) + ((self.sandbox_second_backend,) if self.sandbox_second_backend else ())

    @property
    def pool_min(self) -> int:
        return self.runner_concurrency if self.sandbox_pool_min is None else self.sandbox_pool_min

    @property
    def pool_max(self) -> int:
        return max(self.pool_min, self.sandbox_pool_max or 2 * self.runner_concurrency, 1)
