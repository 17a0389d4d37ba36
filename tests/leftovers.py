"""What a test session must not leave behind: processes, sandbox cgroups, sandbox containers.

The session marks its own environment with a token that every process it starts inherits (the
embedded servers, the application processes, `coderunner up` and its children). At its end,
:func:`find` lists whatever still carries the token, every sandbox process (host uids of the bwrap
backend) started since the session began, every sandbox cgroup made since, and every sandbox
container; conftest fails the session when anything is found, after removing it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

MARK = "CODERUNNER_TEST_SESSION"
# The bwrap backend's per-sandbox host uids: 60000+ for runners, 61000+ for the sandbox tests.
SANDBOX_UIDS = range(60_000, 62_000)
# Test workers (pytest-xdist, `make test`) run side by side, each with host uids of its own: a
# worker's checks for sandbox processes never see the other's sandboxes.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
UID_STRIDE = 250
RUNNER_UID_BASE = 60_000 + UID_STRIDE * WORKER  # its runners' (SANDBOX_HOST_UID_BASE, set by conftest)
TEST_UID_BASE = 61_000 + UID_STRIDE * WORKER  # the sandboxes its tests make in-process
WORKER_UIDS = frozenset({*range(RUNNER_UID_BASE, RUNNER_UID_BASE + 64), *range(TEST_UID_BASE, TEST_UID_BASE + 64)})
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "pids", "cpu")
CGROUP_PARENT = "coderunner"


@dataclass
class Snapshot:
    """What existed when the session started (someone else's, not ours to judge)."""

    pids: set[int] = field(default_factory=set)
    cgroups: set[Path] = field(default_factory=set)
    # The session's temporary folder: a process working inside it is the session's, even one that
    # overwrote its environment (and the mark) with its process title, as redis-server does.
    tmp_root: str = ""


@dataclass
class Leftovers:
    processes: dict[int, str] = field(default_factory=dict)
    cgroups: list[Path] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.cgroups or self.containers)

    def describe(self) -> str:
        lines = [f"process {pid}: {cmd}" for pid, cmd in sorted(self.processes.items())]
        lines += [f"cgroup {path}" for path in self.cgroups]
        lines += [f"container {name}" for name in self.containers]
        return "\n".join(lines)


def _pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def _cgroups() -> set[Path]:
    found: set[Path] = set()
    for controller in CGROUP_CONTROLLERS:
        parent = CGROUP_ROOT / controller / CGROUP_PARENT
        # os.walk ignores folders that vanish while it walks (another runner removing its groups).
        for folder, subfolders, _ in os.walk(parent):
            found.update(Path(folder) / sub for sub in subfolders)
    return found


def snapshot(tmp_root: str = "") -> Snapshot:
    return Snapshot(pids=_pids(), cgroups=_cgroups(), tmp_root=tmp_root)


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return "?"


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def sandbox_process(pid: int) -> bool:
    """A sandbox's process, not one of the test session's own (servers, application processes).

    As root every sandbox process runs as a sandbox host uid. Otherwise sandbox processes have the
    sandbox's clean environment, without the session's mark (some servers, redis among them,
    overwrite their environment block with their process title, so the mark alone cannot tell).
    """
    try:
        uid = int(_status(pid)["Uid"].split()[0])
    except (KeyError, ValueError, IndexError):
        return False
    if os.geteuid() == 0:
        return uid in WORKER_UIDS
    token = os.environ.get(MARK)
    return token is None or not _marked(pid, token)


def _works_in(pid: int, root: str) -> bool:
    if not root:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return False
    return cwd == root or cwd.startswith(root.rstrip("/") + "/")


def _marked(pid: int, token: str) -> bool:
    try:
        return f"{MARK}={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _ours(pid: int, token: str, before: Snapshot) -> bool:
    """Started by this session: it carries the mark, or it is a sandbox process (clean environment)
    descended from this session, or orphaned since the session began. Another session's live
    sandboxes are not ours."""
    if pid == os.getpid():
        return False
    status = _status(pid)
    if not status or status.get("State", "").startswith(("Z", "X")):
        return False  # a zombie holds nothing but a table entry; its parent reaps it
    if _marked(pid, token) or _works_in(pid, before.tmp_root):
        return True
    try:
        uid = int(status["Uid"].split()[0])
    except (KeyError, ValueError, IndexError):
        return False
    if uid not in SANDBOX_UIDS or pid in before.pids:
        return False
    ancestor = pid
    for _ in range(64):
        parent = int(_status(ancestor).get("PPid", "0") or 0)
        if parent in (0, 1):
            return True  # orphaned: nobody will end it
        if parent == os.getpid() or _marked(parent, token):
            return True
        if int(_status(parent).get("Uid", "0").split()[0]) not in SANDBOX_UIDS:
            return False  # started by a live process of someone else's
        ancestor = parent
    return False


def runner_id(name: str = "tests") -> str:
    """A runner id that marks the sandbox containers of this session (label ``coderunner.runner``)."""
    return f"{name}-w{WORKER}-{os.environ.get(MARK, 'unmarked')}"


def _containers(token: str) -> list[str]:
    host = os.environ.get("DOCKER_HOST", "unix:///run/coderunner-podman.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return []
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=10)
        try:
            containers = client.containers.list(all=True, filters={"label": "coderunner.sandbox"})
            return [c.name for c in containers if c.labels.get("coderunner.runner", "").endswith(f"-{token}")]
        finally:
            client.close()
    except Exception:  # no engine: no containers
        return []


def _cgroup_ours(path: Path, token: str) -> bool:
    """A sandbox cgroup is named ``<owner pid>-<runner>``: ours if its owner is ours or dead."""
    for part in path.parts:
        owner = part.split("-", 1)[0]
        if owner.isdigit() and "-" in part:
            pid = int(owner)
            return pid == os.getpid() or _marked(pid, token) or not _status(pid)
    return False


def find(token: str, before: Snapshot) -> Leftovers:
    found = Leftovers()
    for pid in _pids():
        if _ours(pid, token, before):
            found.processes[pid] = cmdline(pid)
    found.cgroups = sorted(p for p in _cgroups() - before.cgroups if _cgroup_ours(p, token))
    found.containers = _containers(token)
    return found


def settle(token: str, before: Snapshot, grace: float = 5.0) -> Leftovers:
    """Leftovers that are still there after ``grace`` seconds (processes may be exiting right now)."""
    deadline = time.monotonic() + grace
    while (found := find(token, before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def remove(found: Leftovers) -> None:
    for pid in found.processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for path in sorted(found.cgroups, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 2
        while path.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                path.rmdir()
            time.sleep(0.02)
    if found.containers:
        with contextlib.suppress(Exception):
            import docker

            client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///run/coderunner-podman.sock"))
            for name in found.containers:
                with contextlib.suppress(Exception):
                    client.containers.get(name).remove(force=True)
            client.close()
