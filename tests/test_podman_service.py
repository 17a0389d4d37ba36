"""`.ci/podman.sh` replaces a Docker API service that answers but cannot run containers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman: make test runs as root")


def _answers(sock: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            return b"OK" in s.recv(4096)
    except OSError:
        return False


def test_a_service_started_in_a_deleted_clone_is_replaced(tmp_path: Path) -> None:
    sock = f"/run/coderunner-podman-test-{os.getpid()}.sock"
    clone = tmp_path / "clone"
    clone.mkdir()
    env = {**os.environ, "DOCKER_SOCK": sock, "PODMAN_LOG": str(tmp_path / "podman.log")}
    # As an older podman.sh did: the service keeps the clone's folder as its working directory.
    with (tmp_path / "old.log").open("wb") as log:
        old = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: _answers(sock), 30, what="the old service")
        shutil.rmtree(clone)
        broken = subprocess.run(
            ["podman", "--url", f"unix://{sock}", "run", "--rm", "coderunner-sandbox:test", "python3", "-c", "1"],
            capture_output=True,
            text=True,
        )
        assert broken.returncode != 0, "the check cannot tell: the old service still runs containers"

        fixed = subprocess.run(["bash", ".ci/podman.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "replacing it" in fixed.stdout, fixed.stdout
        assert old.wait(10) is not None
        new_pid = int(Path(f"{sock}.pid").read_text())
        assert os.readlink(f"/proc/{new_pid}/cwd") == "/"
    finally:
        subprocess.run(["bash", ".ci/podman.sh", "stop"], cwd=ROOT, env=env, check=False, capture_output=True)
        if old.poll() is None:
            old.kill()
            old.wait()
    assert not Path(sock).exists()
