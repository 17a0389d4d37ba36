"""The Docker backend (production): one hardened container per job, from a warm pool.

Each container gets the seed plan's HostConfig: memory = memory+swap (no swap), a CPU quota, no
network, a read-only root with size-capped ``noexec,nosuid`` tmpfs for /tmp (and for /run and
/var/tmp, which some engines add writable on their own), a pids limit (the API's default 0 means
unlimited), ``no-new-privileges``, every capability dropped, uid 1000. The Docker socket is never
mounted into a sandbox. The harness runs as the container's command and talks to the host over
the attach stream: stdin carries the job, stdout/stderr come back multiplexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sandbox import base
from sandbox.base import Applied, ExitInfo, SandboxConfig, SandboxFailure, SandboxUnavailable
from sandbox.executor import READY, harness_argv
from schemas.executions import StreamName
from schemas.submissions import Limits

log = logging.getLogger(__name__)

SPAWN_TIMEOUT = 20.0
LABEL = "coderunner.sandbox"
# Docker's own default masked paths: MaskedPaths replaces them, so they are named again.
DOCKER_MASKED = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
MASKED = tuple(dict.fromkeys(DOCKER_MASKED + base.MASKED_FILES + base.MASKED_DIRS))
# The container's own writable mounts (tmpfs, /dev/shm, /dev/mqueue), emptied between test cases.
SCRATCH = ("/tmp", "/var/tmp", "/run", "/dev/shm", "/dev/mqueue")
_STREAMS: dict[int, StreamName] = {1: "stdout", 2: "stderr"}


@dataclass(frozen=True, slots=True)
class DockerConfig(SandboxConfig):
    image: str = "coderunner-sandbox:latest"
    base_url: str | None = None  # default: DOCKER_HOST or the local socket
    runner_id: str = "runner"


class DockerInstance:
    def __init__(self, backend: DockerBackend, container_id: str, raw: socket.socket) -> None:
        self.backend = backend
        self.id = container_id
        self.raw = raw
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.created_at = time.monotonic()
        self.killed_by_host = False
        self._exited = False
        self._destroyed = False
        self._pending: list[tuple[StreamName, bytes]] = []
        self._eof = asyncio.Event()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.raw)

    async def _frame(self) -> tuple[StreamName, bytes] | None:
        assert self.reader is not None
        try:
            header = await self.reader.readexactly(8)
            payload = await self.reader.readexactly(int.from_bytes(header[4:8], "big"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return _STREAMS.get(header[0], "stderr"), payload

    async def wait_ready(self) -> None:
        seen = b""
        while len(seen) < len(READY):
            frame = await self._frame()
            if frame is None:
                raise SandboxFailure("the container closed before the harness was ready")
            stream, data = frame
            if stream != "stdout":
                raise SandboxFailure(f"harness error: {data[:500].decode(errors='replace')}")
            seen += data
        if not seen.startswith(READY):
            raise SandboxFailure("the harness did not start")
        if rest := seen[len(READY) :]:
            self._pending.append(("stdout", rest))

    def alive(self) -> bool:
        return not self._exited and self.writer is not None and not self.writer.is_closing()

    async def apply(self, limits: Limits) -> Applied:
        cfg = self.backend.config
        applied = base.clamp(
            limits,
            memory_bytes=cfg.memory_bytes,
            processes=cfg.pids - 1,  # the harness is one of the container's processes
            cpu_seconds=cfg.cpu_seconds,
            file_size_bytes=cfg.file_size_bytes,
            open_files=cfg.open_files,
        )
        harness = {"tmpInodes": cfg.tmp_inodes}
        memory = applied.memory_bytes if applied.memory_bytes < cfg.memory_bytes else None
        pids = applied.max_processes + 1 if applied.max_processes + 1 < cfg.pids else None
        if (memory is not None or pids is not None) and not await asyncio.to_thread(
            self.backend.update_limits, self.id, memory, pids
        ):
            # The engine cannot lower them: the harness caps the address space (processes stay at
            # the container's PidsLimit: the uid is shared by every container, so no RLIMIT_NPROC).
            harness["addressSpaceBytes"] = applied.memory_bytes
        return Applied(applied, harness, scratch=SCRATCH)

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()  # stdin EOF for the program
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def output(self) -> AsyncIterator[tuple[StreamName, bytes]]:
        try:
            for item in self._pending:
                yield item
            self._pending.clear()
            while (frame := await self._frame()) is not None:
                yield frame
        finally:
            self._eof.set()

    async def wait(self) -> ExitInfo:
        # The attach stream ends when the container's pid 1 (the harness) exits, which kills
        # everything else in it. Then the state is already final: a few inspects instead of
        # `wait`, which some engines (podman) answer only on their next poll, 250 ms to 1 s later.
        await self._eof.wait()
        delay = 0.002
        while True:
            state = (await asyncio.to_thread(self.backend.api.inspect_container, self.id))["State"]
            if state.get("Status") in ("exited", "stopped", "dead"):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._exited = True
        code = int(state.get("ExitCode", -1))
        # podman does not always report OOMKilled: a SIGKILL the host did not send is the kernel's.
        oom = bool(state.get("OOMKilled")) or (code == 137 and not self.killed_by_host)
        return ExitInfo(started=True, exit_code=code, oom_killed=oom)

    async def kill(self) -> None:
        self.killed_by_host = True
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.backend.api.kill, self.id)

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self.writer is not None:
            self.writer.close()
        else:
            self.raw.close()
        # A container still shutting down can refuse removal for a moment: retry briefly.
        for attempt in range(40):
            try:
                await asyncio.to_thread(self.backend.api.remove_container, self.id, force=True)
                return
            except Exception as exc:  # docker.errors.* and connection errors alike
                if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                    return
                if attempt == 39:
                    raise
                await asyncio.sleep(0.05)


class DockerBackend:
    name = "docker"

    def __init__(self, config: DockerConfig | None = None) -> None:
        self.config = config or DockerConfig()
        self._client: Any = None
        self._podman: bool | None = None
        self._update_warned = False

    @property
    def api(self) -> Any:
        if self._client is None:
            import docker

            self._client = (
                docker.DockerClient(base_url=self.config.base_url, timeout=30)
                if self.config.base_url
                else docker.from_env(timeout=30)
            )
        return self._client.api

    async def check(self) -> None:
        import docker.errors

        try:
            await asyncio.to_thread(self.api.ping)
        except Exception as exc:
            raise SandboxUnavailable(
                f"no Docker Engine API reachable ({exc}): start Docker (or `podman system service`) and "
                "set DOCKER_HOST, or use SANDBOX_BACKEND=bwrap"
            ) from exc
        try:
            await asyncio.to_thread(self.api.inspect_image, self.config.image)
        except docker.errors.ImageNotFound:
            log.info("pulling sandbox image %s", self.config.image)
            try:
                await asyncio.to_thread(self._client.images.pull, self.config.image)
            except Exception as exc:
                raise SandboxUnavailable(
                    f"sandbox image {self.config.image} is not present and could not be pulled ({exc}): "
                    "build it from deploy/sandbox/Dockerfile or set SANDBOX_IMAGE"
                ) from exc
        await asyncio.to_thread(self._remove_exited)
        await asyncio.to_thread(self._engine_is_podman)

    def _engine_is_podman(self) -> bool:
        """Podman's Docker API differs: masks via ``mask=``, no tmpfs ``nr_inodes``, update via libpod."""
        if self._podman is None:
            components = self.api.version().get("Components") or []
            self._podman = any("podman" in str(c.get("Name", "")).lower() for c in components)
        return self._podman

    def update_limits(self, container: str, memory: int | None, pids: int | None) -> bool:
        """Lower a running container's memory (no swap) and process limits for its job."""
        try:
            if self._engine_is_podman():
                body: dict[str, Any] = {}
                if memory is not None:
                    body["memory"] = {"limit": memory, "swap": memory}  # OCI: swap = memory + swap
                if pids is not None:
                    body["pids"] = {"limit": pids}
                url = f"{self.api.base_url}/v4.0.0/libpod/containers/{container}/update"
                response = self.api.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"})
            else:
                update: dict[str, Any] = {}
                if memory is not None:
                    update.update(Memory=memory, MemorySwap=memory)
                if pids is not None:
                    update["PidsLimit"] = pids
                response = self.api._post_json(self.api._url("/containers/{0}/update", container), data=update)
            self.api._raise_for_status(response)
        except Exception as exc:
            if not self._update_warned:
                self._update_warned = True
                log.warning("cannot lower a container's limits for its job (%s): address-space cap only", exc)
            return False
        return True

    def _remove_exited(self) -> None:
        """Sandboxes left by a runner that died (their harness exits when its stdin closes)."""
        for c in self.api.containers(all=True, filters={"label": LABEL, "status": "exited"}):
            with contextlib.suppress(Exception):
                self.api.remove_container(c["Id"], force=True)

    def _host_config(self) -> Any:
        from docker.types import Ulimit

        cfg = self.config
        podman = self._engine_is_podman()
        tmp = f"rw,noexec,nosuid,nodev,size={cfg.tmp_bytes}"
        if not podman:  # podman 4 refuses the option; the harness's file count still applies
            tmp += f",nr_inodes={cfg.tmp_inodes}"
        masks = ["mask=" + ":".join(MASKED)] if podman else []
        host_config = self.api.create_host_config(
            mem_limit=cfg.memory_bytes,
            memswap_limit=cfg.memory_bytes,  # = memory: no swap
            cpu_period=100_000,
            cpu_quota=int(cfg.cpus * 100_000),
            pids_limit=cfg.pids,
            network_mode="none" if cfg.isolate_network else "bridge",
            read_only=True,
            tmpfs={"/tmp": tmp, "/var/tmp": "rw,noexec,nosuid,nodev,size=1m", "/run": "rw,noexec,nosuid,nodev,size=1m"},
            security_opt=["no-new-privileges", *([] if cfg.seccomp else ["seccomp=unconfined"]), *masks],
            shm_size=cfg.shm_bytes,
            cap_drop=["ALL"],
            # Name nofile and nproc explicitly: podman replaces its configured defaults with the
            # host's maxima when a request carries any ulimit, which runc may not set (EPERM).
            # nproc counts per uid across containers; PidsLimit is the per-sandbox bound.
            ulimits=[
                Ulimit(name="nofile", soft=cfg.open_files, hard=cfg.open_files),
                Ulimit(name="nproc", soft=4096, hard=4096),
                Ulimit(name="fsize", soft=cfg.file_size_bytes, hard=cfg.file_size_bytes),
                Ulimit(name="cpu", soft=cfg.cpu_seconds, hard=cfg.cpu_seconds),
                Ulimit(name="core", soft=0, hard=0),
            ],
            auto_remove=False,
        )
        if not podman:
            host_config["MaskedPaths"] = list(MASKED)
        return host_config

    def _create_and_attach(self) -> tuple[str, socket.socket]:
        container = self.api.create_container(
            self.config.image,
            command=harness_argv("python3"),
            user="1000:1000",
            working_dir="/tmp",
            stdin_open=True,
            tty=False,
            network_disabled=self.config.isolate_network,
            environment={"HOME": "/tmp", "LANG": "C.UTF-8"},
            labels={LABEL: "1", "coderunner.runner": self.config.runner_id},
            host_config=self._host_config(),
            healthcheck={"test": ["NONE"]},
        )
        cid = container["Id"]
        try:
            sock = self.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            raw: socket.socket = sock._sock  # the plain socket under docker-py's wrapper
            raw.setblocking(False)
            self.api.start(cid)
        except Exception:
            with contextlib.suppress(Exception):
                self.api.remove_container(cid, force=True)
            raise
        return cid, raw

    async def spawn(self) -> DockerInstance:
        creating = asyncio.ensure_future(asyncio.to_thread(self._create_and_attach))
        try:
            cid, raw = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The thread goes on creating the container: wait for it and remove it, or it is orphaned.
            with contextlib.suppress(Exception):
                cid, raw = await creating
                raw.close()
                await asyncio.to_thread(self.api.remove_container, cid, force=True)
            raise
        except Exception as exc:
            raise SandboxFailure(f"cannot start a container: {exc}") from exc
        instance = DockerInstance(self, cid, raw)
        try:
            await instance.connect()
            await asyncio.wait_for(instance.wait_ready(), SPAWN_TIMEOUT)
        except (TimeoutError, SandboxFailure, OSError) as exc:
            await instance.destroy()
            raise SandboxFailure(f"sandbox container did not start: {exc}") from exc
        except asyncio.CancelledError:
            await instance.destroy()
            raise
        return instance

    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces each limit (runner start-up log and stats)."""
        podman = bool(self._podman)
        return {
            "memory": "docker",
            "pids": "docker",
            "cpu": "docker",
            "seccomp": "bpf (harness) + docker default",
            "job_limits": "engine update (libpod)" if podman else "engine update",
            "cpu_time": "harness budget (every process, /proc + cgroup counter)",
            "files": "harness count" if podman else "tmpfs nr_inodes + harness count",
        }

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
