"""A steady load of submissions against a stack on a three-node JetStream cluster, while faults are
injected, then the history checker (:mod:`chaos.checker`).

    .venv/bin/python -m chaos --jobs 1000      # or: make chaos
    (tests/test_chaos.py runs a bounded form in `make test`)

The stack: three ``nats-server`` processes as one cluster with every stream at R3, Redis, the
MongoDB-wire server, one gateway, two runners, and the grading, progress and caching consumers
(``local.supervisor.Stack`` with ``nats_nodes=3``, plus a second runner). Students submit as the
browser app does: an ``Idempotency-Key`` per submission, retried with the same key on 503, 429 or
a broken connection, then read the job's event stream to ``done``. Two thirds are runs, one third
graded submissions (a problem's solution, or one of its wrong solutions).

Faults, each at a share of the acknowledged submissions (so they land mid-load whatever the
machine's speed): SIGKILL the NATS node that leads the EXECUTIONS stream, restart it; SIGKILL a
runner, restart it; SIGKILL the grading consumer, restart it; SIGKILL the progress consumer,
restart it. Then the run waits until the checker is satisfied or a deadline passes, and prints the
checker's counts (acknowledged, finished, graded, dead-lettered, lost, duplicated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bus import client, streams
from chaos.checker import Acknowledged, Verdict, judge, read_history
from local import embedded
from local.stackenv import NO_QUOTAS
from local.supervisor import Stack, Supervised

log = logging.getLogger("coderunner.chaos")

# The settings a chaos run needs: quotas that let one machine's students submit hundreds of jobs,
# and redelivery soon enough after a SIGKILL (the defaults, 30 s, are for production).
ENV = {
    **NO_QUOTAS,
    "MAX_QUEUE_WAIT_SECONDS": "3600",
    "RUNNER_ACK_WAIT_SECONDS": "3",
    "CONSUMER_ACK_WAIT_SECONDS": "3",
    "LOG_LEVEL": "INFO",
}
PASSWORD = "chaos horse battery staple"


@dataclass
class Fault:
    at: float  # share of the submissions acknowledged when it happens
    what: str
    action: Callable[[], None]
    # Or this long after the previous fault: while a stream has no quorum nothing is acknowledged,
    # so a share would never be reached.
    after_seconds: float | None = None


@dataclass
class ChaosStack:
    """The stack, with a second runner, and the process-level faults."""

    folder: Path
    stack: Stack = field(init=False)
    runner2: Supervised | None = None
    killed: set[str] = field(default_factory=set)  # down on purpose, until the plan restarts them
    revived: list[str] = field(default_factory=list)  # processes that exited by themselves

    def __post_init__(self) -> None:
        self.stack = Stack(self.folder, "127.0.0.1", embedded.free_port(), nats_nodes=3, env=ENV)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}"

    def start(self) -> None:
        self.stack.start()
        runner = self.process("runner")
        env = {**runner.env, "METRICS_PORT": str(embedded.free_port())}
        log_path = self.folder / "logs" / "runner-2.log"
        self.runner2 = Supervised("runner-2", runner.argv, env, log_path)
        self.stack.apps.append(self.runner2)
        self.runner2.start()
        if not self.stack.wait_ready(120):
            raise RuntimeError(f"the stack did not become ready; see {self.folder / 'logs'}")

    def stop(self) -> None:
        self.stack.stop()
        # A sandbox of a killed runner may take a moment to die after its bwrap.
        deadline = time.monotonic() + 10
        while any(uid != os.getuid() for _, uid in _zombie_children()) and time.monotonic() < deadline:
            self.reap_orphans()
            time.sleep(0.1)

    @property
    def env(self) -> dict[str, str]:
        return self.process("gateway").env

    def process(self, name: str) -> Supervised:
        for spec, sup in self.stack.servers:
            if spec.name == name:
                return sup
        return next(app for app in self.stack.apps if app.name == name)

    def kill(self, *names: str) -> None:
        for name in names:
            sup = self.process(name)
            self.killed.add(name)
            if sup.proc is not None and sup.proc.poll() is None:
                sup.proc.send_signal(signal.SIGKILL)
                sup.proc.wait()
            log.warning("chaos: killed %s", name)

    def restart(self, *names: str) -> None:
        for name in names:
            self.process(name).start()
            self.killed.discard(name)
            log.warning("chaos: restarted %s", name)

    def reap_orphans(self) -> int:
        """Reap the sandboxes a SIGKILLed runner left behind.

        They die with it (bwrap's --die-with-parent) but are re-parented to the nearest subreaper,
        which may be this process (pytest is one once a sandbox backend ran in it): unreaped, they
        stay zombies under sandbox uids. Only zombies of other uids are reaped, so no exit status
        this process's own children (the stack's servers) are waited for is taken.
        """
        reaped = 0
        for pid, uid in _zombie_children():
            if uid != os.getuid():
                with contextlib.suppress(ChildProcessError):
                    reaped += os.waitpid(pid, os.WNOHANG)[0] == pid
        return reaped

    async def supervise(self) -> None:
        """Restart an application process that exited by itself, as Kubernetes restarts a crashed
        pod (a process may exit when NATS is unreachable at its start: that is its contract)."""
        while True:
            await asyncio.sleep(0.5)
            self.reap_orphans()
            for app in self.stack.apps:
                if app.proc is not None and app.proc.poll() is not None and app.name not in self.killed:
                    self.revived.append(f"{app.name} exited by itself (code {app.proc.returncode}); restarted")
                    log.warning("chaos: %s", self.revived[-1])
                    app.start()

    async def executions_leader(self) -> str:
        """The NATS node (``nats-N``) that leads the EXECUTIONS stream now."""
        nc, js = await client.connect(self.env["NATS_URL"], "chaos-probe")
        try:
            info = await js.stream_info(streams.EXECUTIONS)
        finally:
            await nc.close()
        leader = info.cluster.leader if info.cluster else None
        return f"nats-{leader.rsplit('-', 1)[-1]}" if leader else "nats-1"


@dataclass
class Load:
    """Students submitting; what the gateway acknowledged."""

    url: str
    jobs: int
    students: int
    problems: list[dict[str, Any]]
    acknowledged: list[Acknowledged] = field(default_factory=list)
    refusals: int = 0
    retries: int = 0
    streams_broken: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)  # set at each 202

    async def until(self, share: float) -> None:
        while len(self.acknowledged) < share * self.jobs:
            self.acked.clear()
            await self.acked.wait()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            tokens = [await self._sign_up(http, i) for i in range(self.students)]
            await asyncio.gather(*(self._student(http, token, i) for i, token in enumerate(tokens)))

    async def _sign_up(self, http: httpx.AsyncClient, i: int) -> str:
        email = f"chaos-{i}-{secrets.token_hex(4)}@example.org"
        body = {"email": email, "password": PASSWORD, "displayName": f"Chaos {i}", "level": "adults"}
        res = await http.post("/auth/register", json=body)
        res.raise_for_status()
        res = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
        res.raise_for_status()
        return str(res.json()["accessToken"])

    async def _student(self, http: httpx.AsyncClient, token: str, i: int) -> None:
        rng = random.Random(i)
        auth = {"Authorization": f"Bearer {token}"}
        while len(self.acknowledged) < self.jobs:
            if rng.random() < 1 / 3:
                problem = rng.choice(self.problems)
                code = rng.choice([problem["solution"], *problem["wrong"]])
                path, body, mode = "/execution/submit/grade", {"problemId": problem["id"], "code": code}, "grade"
            else:
                path, body, mode = "/execution/submit", {"code": f"print({rng.randrange(10**6)})"}, "run"
            accepted = await self._submit(http, path, body, auth)
            if accepted is None:
                continue
            self.acknowledged.append(Acknowledged(accepted["jobId"], mode))
            self.acked.set()
            await self._read_to_done(http, accepted["eventsUrl"], auth)

    async def _submit(
        self, http: httpx.AsyncClient, path: str, body: dict[str, Any], auth: dict[str, str]
    ) -> dict[str, Any] | None:
        """POST with one Idempotency-Key until it is answered 202 (the key makes retries safe)."""
        headers = {**auth, "Idempotency-Key": secrets.token_hex(16)}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                res = await http.post(path, json=body, headers=headers)
            except httpx.TransportError:
                self.retries += 1
                await asyncio.sleep(0.5)
                continue
            if res.status_code == 202:
                return dict(res.json())
            if res.status_code in (429, 503):
                self.refusals += 1
                await asyncio.sleep(min(5.0, float(res.headers.get("Retry-After", "1"))))
                continue
            raise RuntimeError(f"{path} answered {res.status_code}: {res.text[:300]}")
        return None

    async def _read_to_done(self, http: httpx.AsyncClient, url: str, auth: dict[str, str]) -> None:
        """The browser's part: the event stream, to `done` (not judged: the checker reads the streams)."""
        try:
            async with asyncio.timeout(30), http.stream("GET", url, headers=auth) as res:
                async for line in res.aiter_lines():
                    if line == "event: done":
                        return
        except (httpx.HTTPError, TimeoutError):
            self.streams_broken += 1


def _zombie_children() -> list[tuple[int, int]]:
    """(pid, uid) of this process's children that have exited and wait to be reaped."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state == "Z" and int(ppid) == me:
            uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
            found.append((int(entry.name), uid))
    return found


def curriculum_problems(limit: int = 6) -> list[dict[str, Any]]:
    from curriculum.files import load

    chosen = [p for p in load().problems if p.solution and p.wrong_solutions][:limit]
    return [{"id": p.id, "solution": p.solution, "wrong": [w.code for w in p.wrong_solutions]} for p in chosen]


async def check(env: dict[str, str], acknowledged: list[Acknowledged]) -> Verdict:
    nc, js = await client.connect(env["NATS_URL"], "chaos-checker")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["MONGODB_URI"])
    try:
        return judge(await read_history(js, mongo.get_default_database("coderunner"), acknowledged))
    finally:
        await nc.close()
        await mongo.close()


async def _faults(chaos: ChaosStack, load: Load, done: list[str]) -> None:
    """Inject each fault when its share of the submissions is acknowledged; ``done`` says what was."""
    leader = await chaos.executions_leader()
    plan = [
        Fault(0.15, f"SIGKILL {leader} (EXECUTIONS leader)", lambda: chaos.kill(leader)),
        Fault(0.30, f"restart {leader}", lambda: chaos.restart(leader)),
        # Processes come back after a few seconds, as an orchestrator restarts them: by a share they
        # might never come back, since students wait for the dead consumer's results.
        Fault(0.40, "SIGKILL runner", lambda: chaos.kill("runner")),
        Fault(0, "restart runner", lambda: chaos.restart("runner"), 3.0),
        Fault(0.55, "SIGKILL consumer-grading", lambda: chaos.kill("consumer-grading")),
        Fault(0, "restart consumer-grading", lambda: chaos.restart("consumer-grading"), 3.0),
        Fault(0.70, "SIGKILL consumer-progress", lambda: chaos.kill("consumer-progress")),
        Fault(0, "restart consumer-progress", lambda: chaos.restart("consumer-progress"), 3.0),
        # Two of three nodes: the streams lose their quorum and can store nothing. Submissions must
        # be refused (503), not acknowledged, until it is back.
        Fault(0.88, "SIGKILL nats-1 and nats-2 (no quorum)", lambda: chaos.kill("nats-1", "nats-2")),
        Fault(0, "restart nats-1 and nats-2", lambda: chaos.restart("nats-1", "nats-2"), 5.0),
    ]
    for fault in plan:
        if fault.after_seconds is not None:
            await asyncio.sleep(fault.after_seconds)
        else:
            await load.until(fault.at)
        fault.action()
        done.append(f"{len(load.acknowledged)}/{load.jobs} acknowledged: {fault.what}")


async def run(folder: Path, jobs: int, students: int = 8, settle_seconds: float = 180) -> tuple[Verdict, list[str]]:
    chaos = ChaosStack(folder)
    try:
        await asyncio.to_thread(chaos.start)
        load = Load(chaos.url, jobs, students, curriculum_problems())
        done: list[str] = []
        supervisor = asyncio.create_task(chaos.supervise())
        faults = asyncio.create_task(_faults(chaos, load, done))
        await load.run()
        # A fault timed after the previous one (a restart) still comes; one waiting for a share the
        # finished load never reaches does not: say so, not hide it.
        await asyncio.wait({faults}, timeout=30)
        if not faults.done():
            faults.cancel()
            done.append("NOT ALL FAULTS INJECTED: the load ended first")
        with contextlib.suppress(asyncio.CancelledError):
            await faults
        done.append(
            f"load: {len(load.acknowledged)} acknowledged, {load.refusals} refusals (429/503), "
            f"{load.retries} connection retries, {load.streams_broken} event streams broken"
        )
        # Redelivery after the kills takes an ack wait or two: wait for the history to settle.
        deadline = time.monotonic() + settle_seconds
        verdict = await check(chaos.env, load.acknowledged)
        while not verdict.ok and time.monotonic() < deadline:
            await asyncio.sleep(2)
            verdict = await check(chaos.env, load.acknowledged)
        supervisor.cancel()
        done += chaos.revived
        return verdict, done
    finally:
        await asyncio.to_thread(chaos.stop)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="keep the stack's folder (logs, data) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="coderunner-chaos-") as tmp:
        folder = args.keep or Path(tmp)
        began = time.monotonic()
        verdict, done = asyncio.run(run(folder, args.jobs, args.students))
        for line in done:
            print(f"  {line}")
        print(verdict.report())
        print(f"  {time.monotonic() - began:.0f} s")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
