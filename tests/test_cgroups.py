"""Which mechanism enforces the bwrap sandbox's limits: cgroup v1, cgroup v2, or rlimits only.

This machine kind runs cgroup v1 with every controller bound to a v1 hierarchy. A cgroup v2
hierarchy can still be mounted (with no memory, pids or cpu controller available), which exercises
the v2 plumbing (delegation check, evacuation into a leaf, joining, cgroup.kill, removal, the sweep
of a dead runner's groups) but not v2 limits themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.main import check_enforcement
from runner.settings import RunnerSettings
from sandbox import cgroups, seccomp
from sandbox.base import SandboxUnavailable
from sandbox.bwrap import BwrapBackend, BwrapConfig
from sandbox.pool import PooledSandbox, WarmPool
from schemas.executions import Verdict as V
from tests import leftovers
from tests.conftest import ROOT, wait_for
from tests.sandboxes import make_backend, run

V1 = all(os.access(cgroups.ROOT / c, os.W_OK) for c in cgroups.CONTROLLERS)
LIMITS = cgroups.CgroupLimits(64 << 20, 0.5, 20)


async def make_sandbox_from(backend: BwrapBackend) -> PooledSandbox:
    sb = PooledSandbox(
        backend, WarmPool(backend, min_size=1, max_size=1, max_age=60), seccomp=seccomp.program("harness")
    )
    await sb.check()
    return sb


def _settings(**env: str) -> RunnerSettings:
    from config.loader import load

    return load(RunnerSettings, {"NATS_URL": "nats://127.0.0.1:1", **env})


@pytest.mark.skipif(not V1, reason="this host has no writable cgroup v1 controllers")
async def test_v1_enforces_memory_and_says_so() -> None:
    backend = make_backend("bwrap", memory_bytes=64 << 20)
    assert isinstance(backend, BwrapBackend)
    assert backend.enforcement()["memory"] == "cgroup v1"
    sb = await make_sandbox_from(backend)
    try:
        r = await run(sb, "x = bytearray(200 * 1024 * 1024)\nprint('allocated')")
        assert r.outcome.verdict is V.MEMORY_LIMIT, r
        assert "allocated" not in r.stdout
    finally:
        await sb.close()


async def test_rlimits_only_fallback_still_limits_memory_and_says_so() -> None:
    backend = make_backend("bwrap", memory_bytes=64 << 20, cgroups="off")
    assert isinstance(backend, BwrapBackend)
    assert backend.enforcement()["memory"].startswith("rlimit")
    assert backend.enforcement()["pids"].startswith("rlimit")
    sb = await make_sandbox_from(backend)
    try:
        r = await run(sb, "x = bytearray(200 * 1024 * 1024)\nprint('allocated')")
        assert r.outcome.verdict is V.MEMORY_LIMIT, r
    finally:
        await sb.close()


def test_production_refuses_rlimits_only_unless_told_otherwise() -> None:
    weak = cgroups.describe(None)
    with pytest.raises(SandboxUnavailable, match="SANDBOX_ALLOW_WEAK_LIMITS"):
        check_enforcement(_settings(APP_ENV="production"), weak)
    check_enforcement(_settings(APP_ENV="production", SANDBOX_ALLOW_WEAK_LIMITS="true"), weak)
    check_enforcement(_settings(), weak)  # development: allowed (and logged)
    check_enforcement(_settings(APP_ENV="production"), {"memory": "cgroup v2", "pids": "cgroup v2"})


def test_the_runner_process_refuses_and_names_the_setting() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "NATS_URL": "nats://127.0.0.1:1",
        "APP_ENV": "production",
        "SANDBOX_CGROUPS": "off",
        "SANDBOX_HOST_UID_BASE": str(leftovers.TEST_UID_BASE),
    }
    proc = subprocess.run([sys.executable, "-m", "cli", "runner"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "SANDBOX_ALLOW_WEAK_LIMITS" in proc.stderr
    assert "memory=rlimit" in proc.stderr  # the start-up log says what enforces each limit


@pytest.fixture
def v2_mount(tmp_path: Path) -> Iterator[Path]:
    """A cgroup v2 hierarchy mounted for this test (root only), unmounted afterwards."""
    mount = tmp_path / "cgroup2"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "cgroup2", "none", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_v2_without_controllers_is_refused_with_the_reason(v2_mount: Path) -> None:
    available = set((v2_mount / "cgroup.controllers").read_text().split())
    if set(cgroups.CONTROLLERS) <= available:
        pytest.skip("this host's cgroup v2 has every controller: the reason cannot be shown here")
    delegated, why = cgroups.v2_delegation(v2_mount)
    assert delegated is None
    assert "lacks the" in why and "memory" in why
    found = cgroups.detect("coderunner/test", LIMITS, "v2")
    assert found.cgroups is None and "lacks the" in found.why_not


def test_v2_plumbing_evacuates_joins_kills_and_sweeps(v2_mount: Path) -> None:
    """CgroupV2 on a real v2 hierarchy (no controllers): what the runner does with a delegated group."""
    delegated = v2_mount / f"crtest-{os.getpid()}"
    delegated.mkdir()
    # A process already in the delegated group, as the runner itself would be.
    resident = subprocess.Popen(["sleep", "60"])
    (delegated / "cgroup.procs").write_text(str(resident.pid))
    member: subprocess.Popen[bytes] | None = None
    try:
        v2 = cgroups.CgroupV2(delegated, "coderunner/123-test", LIMITS, controllers=())
        # v2 forbids processes in an inner group: the resident moved to the leaf "runner".
        assert str(resident.pid) in (delegated / "runner" / "cgroup.procs").read_text().split()
        slot = v2.create("s1")
        member = subprocess.Popen(["sleep", "60"], preexec_fn=slot.join)
        wait_for(lambda: member.pid in slot.pids(), 5, what="the sandbox process in its group")
        slot.kill_all()  # cgroup.kill
        assert member.wait(5) == -9
        slot.remove()
        assert not slot.path.exists()

        # A dead runner's groups (pid 123... is not alive here, presumably) are swept.
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = delegated / cgroups.PARENT / f"{dead.pid}-gone"
        (stale / "s9").mkdir(parents=True)
        removed = cgroups.sweep_stale(bases=[("unified", delegated / cgroups.PARENT)])
        assert stale in removed and not stale.exists()
        v2.close()
    finally:
        for proc in (resident, member):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            for path in sorted((p for p in delegated.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                path.rmdir()
            delegated.rmdir()


def test_backend_reports_no_cgroups_reason_when_off() -> None:
    backend = BwrapBackend(BwrapConfig(cgroups="off", host_uid_base=leftovers.TEST_UID_BASE))
    assert "SANDBOX_CGROUPS=off" in backend.cgroups_why_not
    asyncio.run(backend.close())
