"""``coderunner up``: the embedded servers plus every Code Runner process, supervised.

A process that exits unexpectedly is restarted with a growing delay; Ctrl-C or SIGTERM stops the
application processes first (so they drain), then the servers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bus import streams
from config.loader import secret_env
from local import embedded, stackenv
from local.lifetimes import die_with_parent

log = logging.getLogger("coderunner.up")

PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# One deadline for the whole stop: every process is asked at once, then the stragglers are killed.
STOP_DEADLINE = 15.0
# A process that stayed up this long is considered healthy again: its delay resets.
HEALTHY_AFTER = 30.0


@dataclass
class Supervised:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        out = self.log_path.open("ab") if self.log_path else None
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                env=self.env,
                # Own session: Ctrl-C reaches only `up`, which stops everything in order. The death
                # signal ties the child's life to ours even if `up` itself is killed.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            if out:
                out.close()
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.proc.pid)


class Stack:
    def __init__(
        self, data_dir: Path, host: str, port: int, *, nats_nodes: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        # Settings for this stack's processes, over this process's environment (which stays as is).
        self.extra_env = dict(env or {})
        self.host = host
        self.port = port
        # 3: a JetStream cluster of three servers, streams at R3 (`coderunner up --cluster`).
        self.nats_nodes = nats_nodes
        self.servers: list[tuple[embedded.ServerSpec, Supervised]] = []
        self.apps: list[Supervised] = []
        self.metrics: dict[str, tuple[int, str]] = {}
        self._stopping = False
        # Set by a signal handler: `up` is asked to stop (checked while waiting, too).
        self.stopping = False

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        urls: dict[str, list[str]] = {}
        for spec, _ in self.servers:
            urls.setdefault(spec.service, []).append(spec.url)
        env.setdefault("NATS_URL", ",".join(urls.get("nats", [])))
        env.setdefault("REDIS_URL", ",".join(urls.get("redis", [])))
        env.setdefault("MONGODB_URI", ",".join(urls.get("mongodb", [])))
        if self.nats_nodes > 1:
            env.setdefault("STREAM_REPLICAS", str(min(3, self.nats_nodes)))
        # The address `up` checks for readiness is the one the gateway listens on.
        env["GATEWAY_HOST"] = self.host
        env["GATEWAY_PORT"] = str(self.port)
        env.update(secret_env(self.data_dir, env.get("APP_ENV", "development")))
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        wanted = {"nats": "NATS_URL", "redis": "REDIS_URL", "mongodb": "MONGODB_URI"}
        given = {**os.environ, **self.extra_env}
        for spec in embedded.specs(self.data_dir, nats_nodes=self.nats_nodes):
            if given.get(wanted[spec.service]):
                log.info("using external %s at %s", spec.service, given[wanted[spec.service]])
                continue
            sup = Supervised(spec.name, spec.argv, {**os.environ, **spec.env}, spec.log_path)
            # Tracked before waiting: a server that never listens is still stopped by stop().
            self.servers.append((spec, sup))
            sup.start()
            assert sup.proc is not None
            embedded.wait_listening(spec, sup.proc)
        env = self._env()
        if self.nats_nodes > 1 and not given.get("NATS_URL"):
            embedded.wait_jetstream(env["NATS_URL"])
        stackenv.write(self.data_dir, env)
        exe = [sys.executable, "-m", "cli"]
        # An empty database gets the curriculum (the files); a seeded one is left as teachers made it.
        subprocess.run([*exe, "seed", "--if-empty"], env=env, check=False, preexec_fn=die_with_parent())
        logs = self.data_dir / "logs"
        # Runners and consumers serve /metrics on a port of their own (the gateway on its own).
        self.metrics = {"gateway": (self.port, "gateway")}
        for name in ("runner", *(f"consumer-{c}" for c in streams.CONSUMERS)):
            self.metrics[name] = (embedded.free_port(), "runner" if name == "runner" else "consumers")
        self.apps = [
            Supervised("gateway", [*exe, "gateway"], env, logs / "gateway.log"),
            Supervised("runner", [*exe, "runner"], self._metrics_env(env, "runner"), logs / "runner.log"),
            *(
                Supervised(
                    f"consumer-{name}",
                    [*exe, "consume", name],
                    self._metrics_env(env, f"consumer-{name}"),
                    logs / f"consumer-{name}.log",
                )
                for name in streams.CONSUMERS
            ),
        ]
        self._write_scrape_targets()
        for app in self.apps:
            app.start()

    def _metrics_env(self, env: dict[str, str], name: str) -> dict[str, str]:
        return {**env, "METRICS_HOST": self.host, "METRICS_PORT": str(self.metrics[name][0])}

    def _write_scrape_targets(self) -> None:
        """A Prometheus config for this stack: deploy/prometheus/local.yml, with the alert rules'
        absolute path, beside the file-based discovery of this start's ports."""
        folder = self.data_dir / "prometheus"
        (folder / "targets").mkdir(parents=True, exist_ok=True)
        # Only "job" (and the address): "process" is a label of the metrics themselves.
        targets = [{"targets": [f"{self.host}:{port}"], "labels": {"job": job}} for port, job in self.metrics.values()]
        _write_atomically(folder / "targets" / "coderunner.json", json.dumps(targets, indent=2) + "\n")
        if not (PROMETHEUS_DIR / "local.yml").exists():  # installed without the repository's deploy/
            return
        config = (PROMETHEUS_DIR / "local.yml").read_text()
        config = config.replace("  - alerts.yml", f"  - {PROMETHEUS_DIR / 'alerts.yml'}")
        _write_atomically(folder / "prometheus.yml", config)

    def metrics_lines(self) -> str:
        return "\n".join(
            f"    {name:<22} http://{self.host}:{port}/metrics" for name, (port, _) in self.metrics.items()
        )

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.port}/ready"
        while time.monotonic() < deadline and not self.stopping:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            self.tick()
            time.sleep(0.2)
        return False

    def tick(self) -> None:
        """Restart whatever died, after its back-off delay."""
        now = time.monotonic()
        for sup in [s for _, s in self.servers] + self.apps:
            if self._stopping or sup.proc is None:
                continue
            if sup.proc.poll() is None:
                if sup.failures and now - sup.started_at > HEALTHY_AFTER:
                    sup.failures = 0
                continue
            if sup.restart_at is None:
                delay = RESTART_DELAYS[min(sup.failures, len(RESTART_DELAYS) - 1)]
                sup.failures += 1
                sup.restart_at = now + delay
                log.warning(
                    "%s exited with %s; restarting in %.0fs (log: %s)",
                    sup.name,
                    sup.proc.returncode,
                    delay,
                    sup.log_path,
                )
            elif now >= sup.restart_at:
                sup.start()

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Stop the application processes (they drain), then the servers, within one deadline."""
        self._stopping = True
        until = time.monotonic() + deadline
        for group in (self.apps, [s for _, s in self.servers]):
            _terminate_all(group, until)
        log.info("stopped")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _terminate_all(group: list[Supervised], until: float) -> None:
    """SIGTERM every process of the group at once; SIGKILL whatever is still there at ``until``."""
    running = [sup for sup in group if sup.proc is not None and sup.proc.poll() is None]
    for sup in running:
        assert sup.proc is not None
        sup.proc.send_signal(signal.SIGTERM)
    for sup in running:
        assert sup.proc is not None
        try:
            sup.proc.wait(max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", sup.name)
            sup.proc.kill()
            sup.proc.wait()


def up(data_dir: Path, host: str, port: int, *, nats_nodes: int = 1) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stack = Stack(data_dir, host, port, nats_nodes=nats_nodes)

    def on_signal(signum: int, _frame: object) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        if stack.wait_ready() and not stack.stopping:
            prom = data_dir / "prometheus"
            print(
                f"\n  Code Runner is up: http://{host}:{port}\n  (logs in {data_dir / 'logs'}; Ctrl-C stops)\n"
                f"\n  Metrics:\n{stack.metrics_lines()}\n"
                f"  Prometheus with the alert rules: prometheus --config.file={prom / 'prometheus.yml'}"
                f" --storage.tsdb.path={prom / 'tsdb'}\n",
                flush=True,
            )
        elif not stack.stopping:
            log.error("gateway not ready on %s:%d; see %s", host, port, data_dir / "logs")
        while not stack.stopping:
            stack.tick()
            time.sleep(0.5)
    except embedded.EmbeddedError as exc:
        log.error("%s", exc)
        return 1
    finally:
        stack.stop()
    return 0
