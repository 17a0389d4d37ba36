"""cgroup v1 limits for bubblewrap sandboxes: memory (no swap), CPU share, process count.

Docker does this itself. For bwrap the runner makes one group per sandbox under each controller
and the sandbox's first process joins it before it execs bwrap, so every descendant is inside.
The memory controller's OOM-kill count then tells a memory limit apart from other deaths.

Where the controllers are not writable (no cgroup v1 delegation) :func:`detect` returns ``None``
and the backend falls back to rlimits (address space, CPU seconds, processes).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    memory_bytes: int
    cpus: float
    pids: int


class CgroupV1:
    """The parent groups ``<controller>/<name>/`` under which per-sandbox groups are made."""

    def __init__(self, name: str, limits: CgroupLimits) -> None:
        self.bases = {c: ROOT / c / name for c in CONTROLLERS}
        self.limits = limits
        for base in self.bases.values():
            base.mkdir(parents=True, exist_ok=True)

    def create(self, slot: str) -> CgroupSlot:
        paths = {c: base / slot for c, base in self.bases.items()}
        for path in paths.values():
            path.mkdir(exist_ok=True)
        memory = paths["memory"]
        _write(memory / "memory.limit_in_bytes", self.limits.memory_bytes)
        with contextlib.suppress(FileNotFoundError):  # only with swap accounting enabled
            _write(memory / "memory.memsw.limit_in_bytes", self.limits.memory_bytes)
        _write(memory / "memory.swappiness", 0)
        _write(paths["pids"] / "pids.max", self.limits.pids)
        _write(paths["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(paths["cpu"] / "cpu.cfs_quota_us", int(self.limits.cpus * CPU_PERIOD_US))
        return CgroupSlot(paths)


class CgroupSlot:
    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        # Opened now, written by the child between fork and exec (no path lookups there).
        self.procs_files = [str(p / "cgroup.procs") for p in paths.values()]

    def join(self) -> None:
        """Called in the child before exec: move this process (and so all its descendants) in."""
        pid = str(os.getpid()).encode()
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError):
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
            # Older kernels have no oom_kill counter: a hit on the limit is the best sign.
            return int((self.paths["memory"] / "memory.failcnt").read_text()) > 0
        return False

    def renice(self, value: int) -> None:
        with contextlib.suppress(OSError):
            for pid in (self.paths["pids"] / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError, ValueError):
                    os.setpriority(os.PRIO_PROCESS, int(pid), value)

    def kill_all(self) -> None:
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), 9)

    def remove(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for path in self.paths.values():
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    self.kill_all()
                    time.sleep(0.01)


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))


def instance_name(parent: str, instance: str) -> str:
    """``<parent>/<pid>-<instance>``: the owner's pid in the name tells a dead runner's groups apart."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in instance)[:100]
    return f"{parent}/{os.getpid()}-{safe}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    return False


def sweep_stale(parent: str) -> list[Path]:
    """Remove the groups a dead runner left under ``parent`` (a SIGKILLed runner cannot clean up).

    Anything still inside them is killed first. Groups of live runners are left alone.
    """
    removed: list[Path] = []
    for controller in CONTROLLERS:
        base = ROOT / controller / parent
        with contextlib.suppress(OSError):
            for group in list(base.iterdir()):
                owner = group.name.split("-", 1)[0]
                if not group.is_dir() or not owner.isdigit() or _alive(int(owner)):
                    continue
                inner = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                for path in [*inner, group]:
                    with contextlib.suppress(OSError):
                        CgroupSlot({controller: path}).remove()
                    if not path.exists():
                        removed.append(path)
    return removed


def detect(name: str, limits: CgroupLimits) -> CgroupV1 | None:
    if not all((ROOT / c).is_dir() and os.access(ROOT / c, os.W_OK) for c in CONTROLLERS):
        return None
    try:
        return CgroupV1(name, limits)
    except OSError:
        return None
