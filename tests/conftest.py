"""Real servers for the tests: embedded NATS, Redis and MongoDB-wire on free ports in temp dirs.

NATS_URL / REDIS_URL / MONGODB_URI in the environment replace the embedded servers. Application
processes (gateway, runner, consumers) run as real subprocesses via ``coderunner``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bus import streams
from local import embedded
from local.lifetimes import die_with_parent
from tests import leftovers

ROOT = Path(__file__).resolve().parent.parent
_session: dict[str, object] = {}


def _worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker (``make test`` runs two); the controller or a plain run is not."""
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _worker(config):
        # This worker's runners, wherever they are started, take this worker's host uids.
        os.environ["SANDBOX_HOST_UID_BASE"] = str(leftovers.RUNNER_UID_BASE)
        return
    # Every process this session starts inherits the mark (workers too: they start after this);
    # whatever still carries it at the end outlived its test.
    os.environ[leftovers.MARK] = secrets.token_hex(8)


# Modules that each run for half a minute or more under load: one worker takes them one after the
# other (pytest_xdist_make_scheduler), so that two of them never compete for the machine's cores.
HEAVY = frozenset(
    {
        "test_api_client",
        "test_api_fuzz",
        "test_backup",
        "test_chaos",
        "test_dashboards",
        "test_flags",
        "test_grading",
        "test_load",
        "test_rebuild",
    }
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole modules to a worker (a module-scoped stack starts once), the heavy ones as one unit.

    (xdist's own ``loadgroup`` marks do not take with pytest 9, which keeps node ids elsewhere.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.partition("::")[0]
            return "heavy" if Path(module).stem in HEAVY else module

    return ModuleScheduling(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    if _worker(session.config):
        return  # the controller checks for leftovers, once every worker is done
    tmp_root = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    _session.update(token=os.environ[leftovers.MARK], before=leftovers.snapshot(tmp_root))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if it left a process, a sandbox cgroup or a sandbox container behind."""
    token, before = _session.get("token"), _session.get("before")
    if not isinstance(token, str) or not isinstance(before, leftovers.Snapshot):
        return
    found = leftovers.settle(token, before)
    if found:
        leftovers.remove(found)
        print(f"\nERROR: the test session left these behind (now removed):\n{found.describe()}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> object:
    """Poll until ``predicate`` returns something truthy (tests poll, never sleep blindly)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last={last!r}")


@dataclass
class Servers:
    urls: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _start_servers(tmp: Path, names: set[str]) -> Servers:
    servers = Servers(urls={})
    try:
        for spec in embedded.specs(tmp, persistent=False):
            if spec.name not in names:
                continue
            proc = embedded.start(spec)
            servers.procs.append(proc)  # tracked before the wait: a server that never listens is stopped too
            embedded.wait_listening(spec, proc)
            servers.urls[spec.name] = spec.url
    except BaseException:
        _stop_servers(servers)
        raise
    return servers


def _stop_servers(servers: Servers) -> None:
    for proc in servers.procs:
        embedded.stop(proc)


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Redis and MongoDB for the whole session (every test uses its own keys and job ids)."""
    external = {"redis": os.environ.get("REDIS_URL"), "mongodb": os.environ.get("MONGODB_URI")}
    wanted = {name for name, url in external.items() if not url}
    servers = _start_servers(tmp_path_factory.mktemp("servers"), wanted)
    try:
        yield {**{k: v for k, v in external.items() if v}, **servers.urls}
    finally:
        _stop_servers(servers)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server per test module, so each module's streams and durable consumers start clean."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    servers = _start_servers(tmp_path_factory.mktemp("nats"), {"nats"})
    try:
        yield servers.urls["nats"]
    finally:
        _stop_servers(servers)


class App:
    """One ``coderunner`` process with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> App:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            return needle in self.log()

        wait_for(seen, timeout, what=f"{needle!r} in {self.log_path.name}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_ready(gateway: App, base_url: str) -> None:
    def ready() -> bool:
        assert gateway.proc is not None
        if gateway.proc.poll() is not None:
            raise AssertionError(gateway.log())
        try:
            return httpx.get(f"{base_url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, what="gateway ready")


@dataclass
class Stack:
    env: dict[str, str]
    base_url: str
    tmp: Path
    apps: list[App] = field(default_factory=list)

    def spawn(self, *args: str, env: dict[str, str] | None = None, name: str | None = None) -> App:
        log = self.tmp / f"{name or '-'.join(args)}-{len(self.apps)}.log"
        app = App(list(args), {**self.env, **(env or {})}, log).start()
        self.apps.append(app)
        return app

    def runner(self, **env: str) -> App:
        app = self.spawn("runner", env=env)
        app.wait_log("pulling with concurrency")
        return app

    _token: str | None = None

    def new_user(self, role_email: str | None = None) -> str:
        """Register and sign in a fresh user; returns an access token."""
        email = role_email or f"user-{secrets.token_hex(6)}@example.org"
        with httpx.Client(base_url=self.base_url, timeout=30) as c:
            res = c.post(
                "/auth/register",
                json={"email": email, "password": "correct horse battery", "displayName": "T", "level": "adults"},
            )
            assert res.status_code == 201, res.text
            res = c.post("/auth/login", json={"email": email, "password": "correct horse battery"})
            assert res.status_code == 200, res.text
            return str(res.json()["accessToken"])

    def client(self, token: str | None = None, *, anonymous: bool = False) -> httpx.Client:
        """A client signed in as this stack's default user (or as ``token``'s user)."""
        headers = {}
        if not anonymous:
            if token is None:
                if self._token is None:
                    self._token = self.new_user()
                token = self._token
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)


def stack_env(nats: str, shared: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "REDIS_", "MONGODB_"))}
    env.update(
        NATS_URL=nats,
        REDIS_URL=shared["redis"],
        MONGODB_URI=shared["mongodb"],
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
        # Short so that a killed runner's job is redelivered quickly; in-progress acks keep
        # longer jobs alive.
        RUNNER_ACK_WAIT_SECONDS="2",
        SSE_HEARTBEAT_SECONDS="0.5",
        JWT_SECRET=secrets.token_urlsafe(48),
        # Generous quotas: the quota tests start their own gateway with the real ones.
        EXEC_LIMIT_PER_MINUTE="100000",
        EXEC_LIMIT_PER_DAY="1000000",
        API_LIMIT_PER_MINUTE="100000",
        API_LIMIT_ANONYMOUS_PER_MINUTE="100000",
        API_LIMIT_PER_ADDRESS_PER_MINUTE="1000000",
        # Tests submit bursts (a whole curriculum at once) to a single slow runner: the wait rule
        # is tested on its own (test_backlog.py, and `make load`'s smoke runs with it).
        MAX_QUEUE_WAIT_SECONDS="3600",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack(nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Gateway and the three consumers against this module's NATS. Tests add runners as needed."""
    tmp = tmp_path_factory.mktemp("stack")
    port = embedded.free_port()
    env = stack_env(nats_url, shared_servers, GATEWAY_PORT=str(port))
    s = Stack(env=env, base_url=f"http://127.0.0.1:{port}", tmp=tmp)
    try:
        gateway = s.spawn("gateway")
        for name in streams.CONSUMERS:
            s.spawn("consume", name).wait_log(f"consumer {name} started")
        wait_ready(gateway, s.base_url)
        yield s
    finally:
        for app in reversed(s.apps):
            app.stop()


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Stack:
    """The stack with the repository's curriculum in MongoDB (idempotent: modules share the
    database, and seeding an already seeded one changes nothing)."""
    subprocess.run(
        [sys.executable, "-m", "cli", "seed"], env=stack.env, cwd=ROOT, check=True, capture_output=True, timeout=120
    )
    return stack


@pytest.fixture(scope="module")
def runner(seeded: Stack) -> Iterator[App]:
    """One runner for the seeded stack's module (modules that need other runners start their own)."""
    app = seeded.runner()
    yield app
    app.stop()
