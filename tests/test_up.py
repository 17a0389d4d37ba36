"""`coderunner up`: the whole stack supervised; a crashed process restarts; SIGTERM stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from curriculum import files
from local import embedded
from local.supervisor import STOP_DEADLINE
from sandbox import cgroups
from tests.conftest import ROOT, Stack, wait_for
from tests.helpers import read_events, submit

pytestmark = pytest.mark.e2e
cgroups_v1 = all(os.access(cgroups.ROOT / c, os.W_OK) for c in cgroups.CONTROLLERS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_up_serves_restarts_crashed_processes_and_stops_cleanly(tmp_path) -> None:
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "REDIS_URL", "MONGODB_URI", "JWT_SECRET")}
    env["PYTHONPATH"] = str(ROOT)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--data-dir", str(tmp_path / ".data"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        wait_for(lambda: f"Code Runner is up: http://127.0.0.1:{port}" in log_path.read_text(), 60, what="up")
        text = log_path.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)}
        assert set(pids) == {
            "nats",
            "redis",
            "mongodb",
            "gateway",
            "runner",
            "consumer-caching",
            "consumer-progress",
            "consumer-grading",
        }

        os.kill(pids["runner"], signal.SIGKILL)
        wait_for(lambda: len(re.findall(r"started runner \(pid", log_path.read_text())) == 2, 30, what="restart")
        restarted = int(re.findall(r"started runner \(pid (\d+)\)", log_path.read_text())[-1])
        # Development secrets were generated on first start and kept in the data folder.
        secrets_file = tmp_path / ".data" / "secrets.env"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        assert "JWT_SECRET=" in secrets_file.read_text()
        with Stack(env={}, base_url=f"http://127.0.0.1:{port}", tmp=tmp_path).client() as client:
            job = submit(client, "print('after restart')")
            assert read_events(client, job["eventsUrl"])[-1].data["stdout"] == "after restart\n"
        # The empty database got the curriculum, and a teacher is one command away, with no
        # environment (the command finds the stack `up` started in ./.data).
        with Stack(env={}, base_url=f"http://127.0.0.1:{port}", tmp=tmp_path).client(anonymous=True) as client:
            assert client.get("/problems").json()["total"] == len(files.load().problems)
            email = "teacher@example.org"
            account = {"email": email, "password": "correct horse battery", "displayName": "T", "level": "adults"}
            assert client.post("/auth/register", json=account).status_code == 201
            bare = {k: v for k, v in env.items() if k not in ("REDIS_URL", "MONGODB_URI", "NATS_URL")}
            done = subprocess.run(
                [sys.executable, "-m", "cli", "user-role", email, "teacher"],
                cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            login = client.post("/auth/login", json={"email": email, "password": account["password"]}).json()
            hidden = client.get("/problems/101/tests/all", headers={"Authorization": f"Bearer {login['accessToken']}"})
            assert hidden.status_code == 200 and any(not t["public"] for t in hidden.json())
        # A restart, not a crash loop: the new runner is the one still serving.
        assert _alive(restarted)
        assert len(re.findall(r"started runner \(pid", log_path.read_text())) == 2

        all_pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", log_path.read_text())]
        up.send_signal(signal.SIGTERM)
        # Every process is asked at once under one deadline (STOP_DEADLINE), not one after another.
        assert up.wait(2 * STOP_DEADLINE + 5) == 0
        assert not [p for p in all_pids if _alive(p)], "a supervised process outlived `coderunner up`"
    finally:
        if up.poll() is None:
            up.kill()


def test_killing_up_kills_its_whole_stack(tmp_path) -> None:
    """SIGKILL of `up` (nothing can run its clean-up) still ends every process it started.

    The gateway's port comes from GATEWAY_PORT alone: `up` must wait for readiness on that port.
    """
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "REDIS_URL", "MONGODB_URI", "JWT_SECRET")}
    env.update(PYTHONPATH=str(ROOT), GATEWAY_PORT=str(port))
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--data-dir", str(tmp_path / "data")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        wait_for(lambda: f"Code Runner is up: http://127.0.0.1:{port}" in log_path.read_text(), 60, what="up")
        named = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", log_path.read_text())}
        pids = list(named.values())
        assert len(pids) == 8 and all(_alive(p) for p in pids)
        up.kill()
        up.wait()
        wait_for(lambda: not [p for p in pids if _alive(p)], 5, what="every child of `up` to die with it")
        # The runner died by SIGKILL too: the next runner on this host removes the groups it left.
        assert any(f"/{named['runner']}-" in str(p) for p in cgroups.sweep_stale("coderunner")) or not cgroups_v1
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
