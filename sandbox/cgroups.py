"""cgroup limits for bubblewrap sandboxes, v1 or v2: memory (no swap), CPU share, process count.

Docker does this itself. For bwrap the runner makes one group per sandbox and the sandbox's first
process joins it before it execs bwrap, so every descendant is inside. The memory controller's
OOM-kill count then tells a memory limit apart from other deaths.

- **v1** (one hierarchy per controller): groups ``<controller>/coderunner/<pid>-<runner>/sN``
  under ``/sys/fs/cgroup``, where the controllers are writable (root, or v1 delegation).
- **v2** (one unified hierarchy, what current hosts run): the runner needs a *delegated* subtree,
  as systemd gives a service with ``Delegate=yes`` or a container runtime gives a container with
  its own cgroup namespace. v2 forbids processes in a group whose children have controllers, so the
  runner does what systemd does: it moves the processes of its own group into a leaf
  (``<own>/runner``), enables memory, pids and cpu below its group, and makes
  ``<own>/coderunner/<pid>-<runner>/sN`` per sandbox.

Where neither works, :func:`detect` returns ``None`` with the reason, and the backend falls back to
rlimits (address space, CPU seconds, per-uid processes). :func:`describe` says which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
PARENT = "coderunner"


class CgroupLimits(NamedTuple):
    memory_bytes: int
    cpus: float
    pids: int


class CgroupSlot:
    """One sandbox's group(s): one directory per controller on v1, one directory on v2."""

    version = 1

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

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError):
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
            # Older kernels have no oom_kill counter: a hit on the limit is the best sign.
            return int((self.paths["memory"] / "memory.failcnt").read_text()) > 0
        return False

    def limit_job(self, memory_bytes: int | None, pids: int | None) -> bool:
        """Lower this sandbox's limits for its job (below the ceilings set at creation).

        ``pids`` counts the job's processes: those already in the group (bwrap, the harness) are
        added. False if a limit could not be written (the caller falls back to rlimits).
        """
        try:
            if memory_bytes is not None:
                memory = self.paths["memory"]
                _write(memory / "memory.limit_in_bytes", memory_bytes)  # lowering: this one first
                with contextlib.suppress(FileNotFoundError):
                    _write(memory / "memory.memsw.limit_in_bytes", memory_bytes)
            if pids is not None:
                _lower_pids(self.paths["pids"], pids)
        except (OSError, KeyError, ValueError):
            return False
        return True

    def renice(self, value: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, value)

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

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


class CgroupSlotV2(CgroupSlot):
    version = 2

    @property
    def path(self) -> Path:
        return self.paths["unified"]

    def oom_killed(self) -> bool:
        return _keyed(self.path / "memory.events").get("oom_kill", 0) > 0

    def limit_job(self, memory_bytes: int | None, pids: int | None) -> bool:
        try:
            if memory_bytes is not None:
                _write(self.path / "memory.max", memory_bytes)
            if pids is not None:
                _lower_pids(self.path, pids)
        except (OSError, ValueError):
            return False
        return True

    def kill_all(self) -> None:
        try:
            _write(self.path / "cgroup.kill", 1)  # the kernel kills every member at once (5.14+)
        except OSError:
            super().kill_all()


class CgroupV1:
    """The parent groups ``<controller>/<name>/`` under which per-sandbox groups are made."""

    version = 1

    def __init__(self, name: str, limits: CgroupLimits, root: Path = ROOT) -> None:
        self.bases = {c: root / c / name for c in CONTROLLERS}
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

    def close(self) -> None:
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                base.rmdir()


class CgroupV2:
    """``<delegated>/coderunner/<name>/`` with memory, pids and cpu enabled for its children."""

    version = 2

    def __init__(
        self, delegated: Path, name: str, limits: CgroupLimits, controllers: tuple[str, ...] = CONTROLLERS
    ) -> None:
        self.delegated = delegated
        self.controllers = controllers
        self.limits = limits
        _evacuate(delegated)
        parent = delegated / PARENT
        self.base = delegated / PARENT / name.split("/", 1)[-1]
        for group in (delegated, parent, self.base):
            group.mkdir(exist_ok=True)
            _enable(group, controllers)
        self.bases = {"unified": self.base}

    def create(self, slot: str) -> CgroupSlotV2:
        path = self.base / slot
        path.mkdir(exist_ok=True)
        if "memory" in self.controllers:
            _write(path / "memory.max", self.limits.memory_bytes)
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: no swap to forbid
                _write(path / "memory.swap.max", 0)
        if "pids" in self.controllers:
            _write(path / "pids.max", self.limits.pids)
        if "cpu" in self.controllers:
            (path / "cpu.max").write_text(f"{int(self.limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        return CgroupSlotV2({"unified": path})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.base.rmdir()


Cgroups = CgroupV1 | CgroupV2


def _write(path: Path, value: int | str) -> None:
    path.write_text(str(value))


def _lower_pids(group: Path, job: int) -> None:
    """pids.max = the processes already in ``group`` + the job's own, if that is lower."""
    wanted = int((group / "pids.current").read_text()) + job
    ceiling = (group / "pids.max").read_text().strip()
    if ceiling == "max" or wanted < int(ceiling):
        _write(group / "pids.max", wanted)


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` lines), or {} when unreadable."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


def _enable(group: Path, controllers: tuple[str, ...]) -> None:
    if controllers:
        _write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in controllers))


def _evacuate(group: Path) -> None:
    """Move the processes of ``group`` into its leaf ``runner`` (v2: no processes in inner groups)."""
    leaf = group / "runner"
    pids = (group / "cgroup.procs").read_text().split()
    if not pids:
        return
    leaf.mkdir(exist_ok=True)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, OSError):  # a process that exited meanwhile
            _write(leaf / "cgroup.procs", pid)


def v2_mount() -> Path | None:
    """Where the unified hierarchy is mounted (``/sys/fs/cgroup`` on a v2-only host), if anywhere."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    return None


def own_v2_group(mount: Path) -> Path | None:
    """This process's own group in the unified hierarchy (``0::/path`` in /proc/self/cgroup)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    return None


def v2_delegation(mount: Path, controllers: tuple[str, ...] = CONTROLLERS) -> tuple[Path | None, str]:
    """The group the runner may manage on v2, or ``None`` and why not."""
    own = own_v2_group(mount)
    if own is None or not own.is_dir():
        return None, f"this process has no group in the cgroup v2 hierarchy at {mount}"
    if not all(os.access(own / f, os.W_OK) for f in ("cgroup.procs", "cgroup.subtree_control")):
        return None, f"cgroup v2 group {own} is not delegated to this user (systemd: Delegate=yes)"
    available = set((own / "cgroup.controllers").read_text().split())
    missing = [c for c in controllers if c not in available]
    if missing:
        return None, f"cgroup v2 group {own} lacks the {', '.join(missing)} controller(s)"
    return own, ""


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


def _parents(parent: str) -> list[tuple[str, Path]]:
    """Every folder under which runners make their instance groups (v1 per controller, v2 once)."""
    found = [(c, ROOT / c / parent) for c in CONTROLLERS]
    mount = v2_mount()
    own = own_v2_group(mount) if mount else None
    if own is not None:
        found.append(("unified", own / parent))
    return found


def sweep_stale(parent: str = PARENT, bases: list[tuple[str, Path]] | None = None) -> list[Path]:
    """Remove the groups a dead runner left under ``parent`` (a SIGKILLed runner cannot clean up).

    Anything still inside them is killed first. Groups of live runners are left alone.
    """
    removed: list[Path] = []
    for key, base in bases if bases is not None else _parents(parent):
        with contextlib.suppress(OSError):
            for group in list(base.iterdir()):
                owner = group.name.split("-", 1)[0]
                if not group.is_dir() or not owner.isdigit() or _alive(int(owner)):
                    continue
                inner = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                for path in [*inner, group]:
                    slot = CgroupSlotV2({key: path}) if key == "unified" else CgroupSlot({key: path})
                    with contextlib.suppress(OSError):
                        slot.remove()
                    if not path.exists():
                        removed.append(path)
    return removed


@dataclass(frozen=True, slots=True)
class Detection:
    cgroups: Cgroups | None
    why_not: str = ""


def detect(name: str, limits: CgroupLimits, mode: str = "auto") -> Detection:
    """cgroups for the sandboxes: ``mode`` "auto" tries v1 then v2; "v1" or "v2" only that one."""
    reasons: list[str] = []
    if mode in ("auto", "v1"):
        if all((ROOT / c).is_dir() and os.access(ROOT / c, os.W_OK) for c in CONTROLLERS):
            try:
                return Detection(CgroupV1(name, limits))
            except OSError as exc:
                reasons.append(f"cgroup v1: {exc}")
        else:
            reasons.append("cgroup v1: the memory, pids and cpu hierarchies are not all writable")
    if mode in ("auto", "v2"):
        mount = v2_mount()
        if mount is None:
            reasons.append("cgroup v2: not mounted")
        else:
            delegated, why = v2_delegation(mount)
            if delegated is None:
                reasons.append(why)
            else:
                try:
                    return Detection(CgroupV2(delegated, name, limits))
                except OSError as exc:
                    reasons.append(f"cgroup v2 at {delegated}: {exc}")
    return Detection(None, "; ".join(reasons))


def describe(found: Cgroups | None) -> dict[str, str]:
    """Which mechanism enforces each sandbox limit (logged at start-up and in runner stats)."""
    if found is None:
        return {
            "memory": "rlimit (address space)",
            "pids": "rlimit (processes per host uid)",
            "cpu": "rlimit (CPU seconds; no share limit)",
        }
    label = f"cgroup v{found.version}"
    return {"memory": label, "pids": label, "cpu": label}
