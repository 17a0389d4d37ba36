"""The Grafana dashboards (deploy/grafana/dashboards) against what the processes export.

Static: every dashboard loads, every panel queries the provisioned Prometheus data source, and
every metric a query names is declared in ``telemetry.metrics`` (with Litestar's HTTP metrics) or
is prometheus_client's process metrics: no panel names a metric that no process exports.

Live: a real Prometheus (Debian's ``prometheus`` package; ``.ci/system-deps.sh`` installs it)
scrapes, every second, a real stack: the gateway, the three consumers and two runners, each
serving ``/metrics``. Under load (students running and grading code, a user bursting past the
quota and filling the backlog, a runner stopped mid-job and started again, an undecodable event on
the bus), every panel's query, Grafana's variables substituted, goes through Prometheus's HTTP
API at one instant: each must parse and return data, each metric it names must be exported by a
scraped process, and the panels for the load's incidents must show them (a rate above zero).
The answers are rendered as Markdown: to ``docs/dashboards.md`` with ``UPDATE_DASHBOARD_DOCS=1``,
otherwise into the test's temp dir.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import prometheus_client
import pytest
import yaml

from bus import streams
from curriculum import files
from local import embedded
from local.lifetimes import die_with_parent
from telemetry import metrics
from tests import test_manifests as manifests
from tests.conftest import ROOT, App, Stack, stack_env, wait_for, wait_ready
from tests.helpers import read_events

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DOCS = ROOT / "docs" / "dashboards.md"
PROMETHEUS = "/usr/bin/prometheus"
COMMAND = "UPDATE_DASHBOARD_DOCS=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_dashboards.py"

# Grafana's built-in variables, as a panel over the last hour with a 15 s scrape interval would
# get them ($__rate_interval is at least four scrape intervals; 1m suits the 1 s scrapes here too).
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_METRIC = re.compile(r"\b(?:coderunner|process)_\w+")


# -- the dashboards -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str
    legend: str
    # The dashboard's own variables and their defaults (prices, a pod's requests).
    variables: tuple[tuple[str, str], ...] = ()

    @property
    def query(self) -> str:
        return substitute(self.expr, dict(self.variables))


ORDER = ("overview", "queue", "runners", "business")


def dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard, in the order an operator reads them (then any other, by name)."""
    paths = sorted(DASHBOARDS.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.name))
    return {path: json.loads(path.read_text()) for path in paths}


def panels_of(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves carry no query."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_variables(board: dict[str, Any]) -> dict[str, str]:
    """A dashboard's own variables with their defaults. Only numbers an operator types in (a
    price, a pod's request), each described: a query variable would hide what a panel computes."""
    found = {}
    for variable in board.get("templating", {}).get("list", []):
        where = f"{board['title']}: ${variable.get('name')}"
        assert variable["type"] in ("textbox", "constant"), where
        assert variable.get("description", "").strip(), f"{where} has no description"
        default = variable["query"]
        assert float(default) >= 0 and variable["current"]["value"] == default, where
        assert variable["name"] not in GRAFANA_VARIABLES, where
        found[variable["name"]] = default
    return found


def targets() -> list[Target]:
    return [
        Target(
            board["title"],
            panel["title"],
            t["refId"],
            t["expr"],
            t.get("legendFormat", ""),
            tuple(sorted(dashboard_variables(board).items())),
        )
        for board in dashboards().values()
        for panel in panels_of(board)
        for t in panel["targets"]
    ]


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    known = {**GRAFANA_VARIABLES, **(variables or {})}

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in known:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr}")
        return known[name]

    return _VARIABLE.sub(value, expr)


def named_metrics(expr: str) -> set[str]:
    """The metric families a query names (a histogram's _bucket, _sum and _count are its own)."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in _METRIC.findall(expr)}


def exported_families() -> set[str]:
    """Every family the processes export, as Prometheus names it in its metadata: ours (the
    gateway's HTTP metrics included), and prometheus_client's process collector's."""
    process = prometheus_client.ProcessCollector(registry=None)
    return metrics.declared_names() | {s.name for family in process.collect() for s in family.samples}


def test_every_dashboard_loads_with_a_uid_a_title_and_queries_on_the_provisioned_data_source() -> None:
    boards = dashboards()
    assert {p.stem for p in boards} == set(ORDER)
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for path, board in boards.items():
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]) and board["title"], path
        assert board["schemaVersion"] >= 36, path
        panels = list(panels_of(board))
        assert panels, path
        assert len({p["id"] for p in panels}) == len(panels), f"{path}: panel ids repeat"
        assert len({p["title"] for p in panels}) == len(panels), f"{path}: panel titles repeat"
        for panel in panels:
            where = f"{path.name}: {panel.get('title')!r}"
            assert panel["title"] and panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "table"), where
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target.get("expr", "").strip(), where
                assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs), where


def test_no_panel_names_a_metric_no_process_exports() -> None:
    exported = exported_families()
    unknown = {
        f"{t.dashboard} / {t.panel}: {name}"
        for t in targets()
        for name in named_metrics(t.expr)
        if name not in exported
    }
    assert not unknown, "\n".join(sorted(unknown))


def test_rate_windows_use_grafanas_rate_interval_and_every_variable_is_known() -> None:
    for t in targets():
        assert "$" not in t.query  # substitute() raises on a variable it does not know
        for window in re.findall(r"\[([^\]]+)\]", t.expr):
            assert window == "$__rate_interval", f"{t.dashboard} / {t.panel}: [{window}]"
    with pytest.raises(AssertionError, match="unknown Grafana variable \\$runner_cores"):
        substitute("count(coderunner_runner_slots) * $runner_cores")


COST_PANEL = ("Code Runner / Business", "Cost per execution ($ per 1,000 executions)")


def test_the_cost_panel_prices_the_production_runners_requests_at_the_documented_prices() -> None:
    """Its runner figures are the production overlay's requests (set from the measured cost per
    job), and its default prices are the inputs docs/capacity.md states, to be replaced."""
    (board,) = (b for b in dashboards().values() if b["title"] == COST_PANEL[0])
    variables = dashboard_variables(board)
    cost = [t for t in targets() if (t.dashboard, t.panel) == COST_PANEL]
    used = {group for t in cost for match in _VARIABLE.findall(t.expr) for group in match if group}
    assert used >= set(variables), set(variables) - used
    objects = manifests.rendered("production")
    requests = manifests.container(objects, "runner")["resources"]["requests"]
    assert float(variables["runner_cores"]) == manifests._quantity(requests["cpu"])
    assert float(variables["runner_gib"]) * 2**30 == manifests._quantity(requests["memory"])
    capacity = (ROOT / "docs" / "capacity.md").read_text()
    for name in ("spot_core_hour_price", "spot_gib_hour_price", "core_hour_price"):
        assert f"${variables[name]} " in capacity, f"${name}'s default {variables[name]} is not in docs/capacity.md"


# -- Prometheus -----------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str, **params: Any) -> Any:
        res = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = res.json()
        assert body.get("status") == "success", f"{path} {params}: {res.status_code} {body}"
        return body["data"]

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prometheus(tmp: Path, jobs: dict[str, list[str]]) -> Prometheus:
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus missing: bash .ci/system-deps.sh installs Debian's prometheus package")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = embedded.free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, what="prometheus ready")
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


# -- the stack under watch ------------------------------------------------------------------------

# Per user and minute; the greedy user goes past it, every student stays below it.
EXEC_LIMIT = 20
STUDENT_SUBMISSIONS = 16
# The runners' backlog at which submissions get 503 (the greedy user's burst reaches it).
MAX_QUEUE_DEPTH = 8
RUNNER_READY = "pulling with concurrency"


@dataclass
class Watched:
    stack: Stack
    prometheus: Prometheus
    jobs: dict[str, list[str]]
    # The runner the load stops mid-job (and starts again), and its /metrics address.
    second_runner: App
    second_target: str


def _metered(stack: Stack, *args: str, name: str, ready: str, port: int = 0, **env: str) -> tuple[App, str]:
    port = port or embedded.free_port()
    app = stack.spawn(*args, name=name, env={"METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1", **env})
    app.wait_log(ready)
    return app, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def watched(
    nats_url: str, shared_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    """Gateway, consumers and two runners, each with /metrics, the curriculum seeded, and a
    Prometheus scraping them every second."""
    tmp = tmp_path_factory.mktemp("watched")
    port = embedded.free_port()
    env = stack_env(
        nats_url,
        shared_servers,
        GATEWAY_PORT=str(port),
        EXEC_LIMIT_PER_MINUTE=str(EXEC_LIMIT),
        MAX_QUEUE_DEPTH=str(MAX_QUEUE_DEPTH),
    )
    env.pop("METRICS_TOKEN", None)
    stack = Stack(env=env, base_url=f"http://127.0.0.1:{port}", tmp=tmp)
    prometheus: Prometheus | None = None
    try:
        gateway = stack.spawn("gateway")
        jobs: dict[str, list[str]] = {"gateway": [f"127.0.0.1:{port}"], "runner": [], "consumers": []}
        for name in streams.CONSUMERS:
            _, target = _metered(stack, "consume", name, name=name, ready=f"consumer {name} started")
            jobs["consumers"].append(target)
        _, target = _metered(stack, "runner", name="runner-1", ready=RUNNER_READY)
        jobs["runner"].append(target)
        second, second_target = _metered(
            stack, "runner", name="runner-2", ready=RUNNER_READY, RUNNER_SHUTDOWN_GRACE_SECONDS="0.5"
        )
        jobs["runner"].append(second_target)
        wait_ready(gateway, stack.base_url)
        subprocess.run(
            [sys.executable, "-m", "cli", "seed"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120
        )
        prometheus = start_prometheus(tmp, jobs)
        yield Watched(stack, prometheus, jobs, second, second_target)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for app in reversed(stack.apps):
            app.stop()


# -- load -----------------------------------------------------------------------------------------


@dataclass
class Load:
    runs: int = 0
    grades: int = 0
    refusals: int = 0
    unavailable: int = 0
    handed_back: int = 0
    dead_letters: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)


def _retry_after(res: httpx.Response) -> float:
    """The wait a 503 asks for, capped so that the test moves on (a patient client's behaviour)."""
    try:
        return min(float(res.headers.get("Retry-After", "1")), 1.0)
    except ValueError:
        return 1.0


def _submit(client: httpx.Client, path: str, body: dict[str, Any], load: Load) -> dict[str, Any]:
    """Submit, waiting out 503s (the backlog is full while the greedy user's burst drains)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        res = client.post(path, json=body)
        if res.status_code != 503:
            assert res.status_code == 202, res.text
            return dict(res.json())
        load.count("unavailable")
        time.sleep(_retry_after(res))
    raise AssertionError(f"{path}: 503 for 40 s")


def _wait_done(client: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def done() -> bool:
        res = client.get(url)
        assert res.status_code == 200, res.text
        box.update(res.json())
        return box["status"] in ("completed", "failed")

    wait_for(done, timeout, interval=0.2, what=f"result at {url}")
    return box


def student(stack: Stack, stop: threading.Event, load: Load, number: int) -> None:
    """One student: runs code and reads its event stream, submits solutions (right and wrong) to
    graded problems, reads results (the result cache) and progress (the summary cache)."""
    problems = files.load().problems
    with stack.client(stack.new_user()) as c:
        i = 0
        while not stop.is_set():
            job = _submit(c, "/execution/submit", {"code": f"print(sum(range({number * 1000 + i})))"}, load)
            assert read_events(c, job["eventsUrl"])[-1].event == "done"
            _wait_done(c, job["resultUrl"])
            load.count("runs")
            problem = problems[(number * 7 + i) % len(problems)]
            code = problem.solution if i % 2 == 0 else problem.wrong_solutions[0].code
            graded = _submit(c, "/execution/submit/grade", {"code": code, "problemId": problem.id}, load)
            _wait_done(c, graded["resultUrl"])
            load.count("grades")
            for _ in range(2):
                assert c.get("/progress/summary").status_code == 200
            assert c.get("/execution/history").status_code == 200
            i += 1
            if 2 * (i + 1) > STUDENT_SUBMISSIONS:
                return
            stop.wait(0.3)


def greedy(stack: Stack, load: Load, start: threading.Event) -> None:
    """A user who submits faster than the per-minute quota allows, until refused; the burst also
    fills the runners' backlog, so some submissions get 503 (and are not counted by the quota)."""
    accepted = 0
    start.wait(60)
    with stack.client(stack.new_user()) as c:
        while accepted <= EXEC_LIMIT:
            res = c.post("/execution/submit", json={"code": "pass"})
            if res.status_code == 429:
                load.count("refusals")
                return
            if res.status_code == 503:
                load.count("unavailable")
                time.sleep(_retry_after(res))
                continue
            assert res.status_code == 202, res.text
            accepted += 1
    raise AssertionError(f"no 429 after {accepted} accepted submissions")


def handover(watched: Watched, load: Load, running: threading.Event) -> None:
    """The second runner is stopped (SIGTERM) while it runs two long jobs: it hands them back
    and they run again (redeliveries). It is started again at once. ``running`` is set once the
    long jobs run (the greedy burst waits for it, so that they are not stuck behind it)."""
    stack, jobs = watched.stack, 4  # two runners of two slots each

    def busy() -> float:
        text = httpx.get(f"http://{watched.second_target}/metrics", timeout=5).text
        match = re.search(r"^coderunner_runner_busy ([\d.]+)$", text, re.MULTILINE)
        return float(match[1]) if match else 0.0

    with stack.client(stack.new_user()) as c:
        urls = [
            _submit(c, "/execution/submit", {"code": f"import time\ntime.sleep(4)\nprint({n})"}, load)["resultUrl"]
            for n in range(jobs)
        ]

        def all_running() -> bool:
            # Four long jobs on four slots: the second runner's two busy slots hold two of them.
            return all(c.get(url).json()["status"] == "running" for url in urls) and busy() >= 2

        wait_for(all_running, 30, interval=0.1, what="the long jobs running, two on the second runner")
        running.set()
        watched.second_runner.stop()
        port = int(watched.second_target.rpartition(":")[2])
        watched.second_runner, _ = _metered(stack, "runner", name="runner-2-again", ready=RUNNER_READY, port=port)
        statuses: dict[str, str] = {}

        def all_done() -> bool:
            statuses.update({url: c.get(url).json()["status"] for url in urls})
            return all(status in ("completed", "failed") for status in statuses.values())

        try:
            wait_for(all_done, 40, interval=0.2, what="the handed-back jobs done")
        except AssertionError:
            raise AssertionError(f"jobs handed back by a stopped runner never finished: {statuses}") from None
        assert set(statuses.values()) == {"completed"}, statuses
    load.count("handed_back", 2)


def undecodable_event(nats_url: str, load: Load) -> None:
    """An event the consumers cannot decode: each reading it dead-letters it and goes on."""

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        try:
            token = secrets.token_hex(4)
            subject = f"coderunner.v1.executions.garbage-{token}.finished"
            await nc.jetstream().publish(subject, b'{"type": "not.a.thing", "oops": ' + token.encode())
        finally:
            await nc.close()

    asyncio.run(publish())
    load.count("dead_letters")


def guarded(load: Load, work: Any, *args: Any) -> None:
    try:
        work(*args)
    except Exception as exc:  # reported by the test
        with load.lock:
            load.errors.append(f"{work.__name__}: {exc!r}")


# -- the live test ----------------------------------------------------------------------------------

# Panels that must show an event the load causes (a value above zero in a series with these
# labels), not only answer: the dashboards have to show what happened.
SHOWN: list[tuple[str, str, dict[str, str], str]] = [
    ("Code Runner / Overview", "429 Too Many Requests by quota", {"quota": "exec-minute"}, "the greedy user's 429"),
    ("Code Runner / Business", "Quota refusals by quota", {"quota": "exec-minute"}, "the greedy user's 429"),
    ("Code Runner / Overview", "503 Service Unavailable by cause", {"cause": "queue_full"}, "503s of the full backlog"),
    (
        "Code Runner / Overview",
        "Errors by process and kind",
        {"process": "consumer-grading", "kind": "term"},
        "the undecodable event",
    ),
    ("Code Runner / Queue", "Dead letters by reason", {"reason": "undecodable"}, "the undecodable event"),
    (
        "Code Runner / Queue",
        "Messages settled by consumer",
        {"consumer": "grading", "outcome": "term"},
        "the undecodable event",
    ),
    ("Code Runner / Queue", "Redeliveries", {"consumer": "runner"}, "the jobs the stopped runner handed back"),
    ("Code Runner / Business", "Grades by verdict", {"verdict": "ACCEPTED"}, "right solutions"),
    ("Code Runner / Business", "Grades by verdict", {"verdict": "WRONG_ANSWER"}, "wrong solutions"),
    ("Code Runner / Business", "Cache hit ratio by cache", {"cache": "results"}, "results read twice"),
    ("Code Runner / Business", "Cache hit ratio by cache", {"cache": "progress_summary"}, "summaries read twice"),
]


def unseen_events(answers: dict[Target, list[dict[str, Any]]]) -> Iterator[str]:
    for dashboard, panel, labels, why in SHOWN:
        found = [a for t, a in answers.items() if (t.dashboard, t.panel) == (dashboard, panel)]
        assert found, f"no panel {dashboard} / {panel}"
        series = [s for result in found for s in result if labels.items() <= s["metric"].items()]
        if not any(float(s["value"][1]) > 0 for s in series):
            yield f"{dashboard} / {panel} {labels} ({why}): {[s['value'][1] for s in series]}"


LOAD_SECONDS = 20.0
DATA_TIMEOUT = 45.0
STUDENTS = 4


@pytest.mark.e2e
def test_every_panel_query_returns_data_from_a_real_prometheus_scraping_a_live_stack(
    watched: Watched, nats_url: str, tmp_path: Path
) -> None:
    prometheus, stack = watched.prometheus, watched.stack
    all_targets = targets()
    load, stop = Load(), threading.Event()
    # Every target is scraped before the load starts...
    health: list[str] = []

    def all_up() -> bool:
        assert not load.errors, load.errors
        active = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
        health[:] = sorted(f"{t['labels']['job']} {t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in active)
        expected = sum(len(t) for t in watched.jobs.values())
        return len(active) == expected and all(t["health"] == "up" for t in active)

    try:
        wait_for(all_up, 30, interval=0.5, what="every target up in prometheus")
    except AssertionError:
        raise AssertionError("targets not all up:\n" + "\n".join(health)) from None

    long_jobs_running = threading.Event()
    workers = [
        threading.Thread(target=guarded, args=(load, student, stack, stop, load, n), daemon=True)
        for n in range(STUDENTS)
    ]
    workers.append(threading.Thread(target=guarded, args=(load, greedy, stack, load, long_jobs_running), daemon=True))
    started = time.monotonic()
    for worker in workers:
        worker.start()
    # The main thread stops and starts the runner: a child dies with the thread that started it
    # (local.lifetimes), so a worker thread must not.
    guarded(load, undecodable_event, nats_url, load)
    guarded(load, handover, watched, load, long_jobs_running)
    long_jobs_running.set()

    # ...the load runs for a while (a runner is stopped and started again in it), then every
    # query is asked at one instant until all answer.
    answers: dict[Target, list[dict[str, Any]]] = {}
    missing: set[str] = set()
    unseen: list[str] = []
    at = 0.0

    def everything_answers() -> bool:
        nonlocal at
        assert not load.errors, load.errors
        if time.monotonic() - started < LOAD_SECONDS or not (load.refusals and load.handed_back):
            return False
        at = time.time()
        down = prometheus.query("up == 0", at)
        if down:  # a snapshot with every process scraped (the stopped runner is back)
            unseen[:] = [f"targets down: {[d['metric'] for d in down]}"]
            return False
        answers.clear()
        for t in all_targets:
            answers[t] = prometheus.query(t.query, at)  # status success: the query parses
        exported = set(prometheus.get("/api/v1/metadata"))
        missing.clear()
        missing.update(name for t in all_targets for name in named_metrics(t.expr) if name not in exported)
        unseen.clear()
        unseen.extend(why for why in unseen_events(answers))
        return not missing and all(answers.values()) and not unseen

    try:
        wait_for(everything_answers, LOAD_SECONDS + DATA_TIMEOUT, interval=1.0, what="data for every panel")
    except AssertionError:
        empty = [f"{t.dashboard} / {t.panel} [{t.ref}]: {t.query}" for t, a in answers.items() if not a]
        raise AssertionError(
            f"load: {load}\n"
            f"metrics no scraped process exports: {sorted(missing)}\n"
            "queries without data:\n" + "\n".join(empty) + "\n"
            "events of the load that panels do not show (a counter whose labelled series appears at its "
            "first increment hides that increment from rate(): export its known label values at 0 from "
            "the start):\n" + "\n".join(unseen)
        ) from None
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert not load.errors, load.errors
    assert load.refusals == 1 and load.unavailable >= 1 and load.handed_back == 2
    assert load.runs >= STUDENTS and load.grades >= STUDENTS

    out = DOCS if os.environ.get("UPDATE_DASHBOARD_DOCS") == "1" else tmp_path / "dashboards.md"
    out.write_text(render(answers, at, load))


# -- rendering ----------------------------------------------------------------------------------------

SERIES_SHOWN = 5


def _value(raw: str) -> str:
    number = float(raw)
    if math.isnan(number) or math.isinf(number):
        return raw
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.4g}"


def _labels(metric: dict[str, str], legend: str) -> str:
    if legend:
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m[1], ""), legend)
        if text.strip():
            return text
    if not metric:
        return "(no labels)"
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _order(series: dict[str, Any]) -> tuple[float, str]:
    """Largest first, NaN last."""
    number = float(series["value"][1])
    return (math.inf if math.isnan(number) else -number, json.dumps(series["metric"], sort_keys=True))


def render(answers: dict[Target, list[dict[str, Any]]], at: float, load: Load) -> str:
    version = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    variables = ", ".join(f"`${k}` = `{v}`" for k, v in GRAFANA_VARIABLES.items())
    lines = [
        "# Dashboards: every panel's query on a real run",
        "",
        "<!-- Generated by tests/test_dashboards.py; do not edit by hand. -->",
        "",
        "Produced by",
        "",
        f"    {COMMAND}",
        "",
        "whose live test starts a real Prometheus",
        f"({version.removeprefix('prometheus, ')}, the Debian package)",
        f"scraping every second a local stack: the gateway, the consumers {', '.join(streams.CONSUMERS)}",
        "and two runners with bubblewrap sandboxes, each serving `/metrics`. Under load, it runs every panel's",
        "query through Prometheus's HTTP API (each must parse and return data) and writes this file.",
        "",
        f"The load: {STUDENTS} students ran code and read its event stream, submitted right and wrong solutions",
        "to seeded problems, and read their results and progress; another user submitted past the per-minute",
        f"quota until refused, a burst that also filled the runners' backlog (`MAX_QUEUE_DEPTH={MAX_QUEUE_DEPTH}`,",
        "so some submissions were answered 503 and retried); one runner was stopped (SIGTERM) while running",
        "two long jobs, which it handed back for the other runner, and started again; and one undecodable",
        "event was published on the bus. In all: "
        f"{load.runs} runs and {load.grades} graded submissions by the students, {load.refusals} quota refusal,",
        f"{load.unavailable} answers 503, {load.handed_back} jobs handed back, {load.dead_letters} undecodable event.",
        "The figures come from a developer machine under that small load: they show what each panel plots,",
        "not capacity.",
        "",
        f"Every query was evaluated at one instant, {when}, with Grafana's variables substituted:",
        f"{variables}, and each dashboard's own variables (prices, a runner pod's requests) at their",
        f"defaults. Up to {SERIES_SHOWN} series are shown per query, largest first;",
        "NaN is a quantile over a window with no observations.",
        "",
        "Grafana loads these dashboards from `deploy/grafana/` (provisioned by `compose.yaml`).",
        "",
    ]
    for path, board in dashboards().items():
        lines += [f"## {board['title']}", "", f"`deploy/grafana/dashboards/{path.name}`, uid `{board['uid']}`.", ""]
        lines += [board.get("description", ""), ""]
        for panel in panels_of(board):
            lines += [f"### {panel['title']}", "", f"{panel['type']}: {panel.get('description', '')}", ""]
            for target in panel["targets"]:
                t = Target(
                    board["title"],
                    panel["title"],
                    target["refId"],
                    target["expr"],
                    target.get("legendFormat", ""),
                    tuple(sorted(dashboard_variables(board).items())),
                )
                result = answers[t]
                lines += ["```promql", t.expr, "```", "", "| series | value |", "| --- | --- |"]
                for series in sorted(result, key=_order)[:SERIES_SHOWN]:
                    label = _labels(series["metric"], t.legend).replace("|", "\\|")
                    lines.append(f"| {label} | {_value(series['value'][1])} |")
                if len(result) > SERIES_SHOWN:
                    lines.append(f"| … and {len(result) - SERIES_SHOWN} more series | |")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"
