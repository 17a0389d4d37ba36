"""Run one load scenario against the real stack and report what it measured.

    .venv/bin/python -m load.run normal            # or: make load SCENARIO=normal
    .venv/bin/python -m load.run smoke --url http://127.0.0.1:8000   # a stack already running

Without ``--url`` the whole stack (embedded NATS, Redis, MongoDB-wire, gateway, runner, consumers)
starts in a temporary folder with the seeded curriculum and the default per-user quotas, as a new
user gets it (only the per-address API limits are raised: every simulated student shares one
address), and stops at the end. Locust runs headless in a child process with the scenario's shape
(``load/scenarios.py``) while every process's CPU time and peak RSS are sampled.

Prints, and writes as JSON (``--out``, default ``.data/load/<scenario>-<time>.json``): p50/p95/p99
per endpoint, POST → ``done`` and queue wait per kind of job, jobs per second, refusals (429/503
with Retry-After: correct answers), the error rate, and each process's CPU and peak RSS.

Exits 1 when the run was not correct: any 5xx, any lost job (accepted, never terminal), any job
whose stream delivered ``done`` more than once, or no ledger. Figures never fail a run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from load.scenarios import SCENARIOS, Scenario
from local.lifetimes import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    rss: int = 0  # at the last sample


@dataclass
class Sampler:
    """CPU time and RSS of named processes, sampled every ``every`` seconds in a thread.

    Every ``timeline_every`` seconds the RSS of each process is also kept, so a long run (the soak)
    shows growth, not only a peak.
    """

    pids: dict[str, int]
    every: float = 1.0
    timeline_every: float = 60.0
    usage: dict[str, Usage] = field(default_factory=dict)
    timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._procs = {}
        for name, pid in self.pids.items():
            try:
                proc = psutil.Process(pid)
                self._procs[name] = (proc, _cpu(proc.cpu_times()))
                self.usage[name] = Usage()
            except psutil.Error:
                pass
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._began = time.monotonic()
        self._thread.start()

    def _sample(self) -> None:
        for name, (proc, began) in self._procs.items():
            try:
                with proc.oneshot():
                    times, rss = proc.cpu_times(), proc.memory_info().rss
            except psutil.Error:
                continue
            use = self.usage[name]
            use.cpu_seconds = _cpu(times) - began
            use.peak_rss = max(use.peak_rss, rss)
            use.rss = rss

    def _keep(self, t: float) -> None:
        self.timeline.append((round(t), {name: use.rss for name, use in self.usage.items()}))

    def _run(self) -> None:
        next_kept = 0.0
        while not self._stop.wait(self.every):
            self._sample()
            t = time.monotonic() - self._began
            if t >= next_kept:
                self._keep(t)
                next_kept = t + self.timeline_every

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._thread.ident is not None:  # started: the end is the timeline's last point
            self._keep(time.monotonic() - self._began)

    def growth(self) -> dict[str, int]:
        """RSS at the end minus RSS a quarter into the run (after warm-up), per process, in MiB."""
        if len(self.timeline) < 2:
            return {}
        _, settled = self.timeline[len(self.timeline) // 4]
        _, last = self.timeline[-1]
        return {name: (last.get(name, 0) - settled.get(name, 0)) >> 20 for name in settled}


def _cpu(times: Any) -> float:
    """User and system time, with the children it waited for (the runner's sandboxes)."""
    return float(times.user + times.system + times.children_user + times.children_system)


def raise_open_files() -> None:
    """A gateway holding a thousand streams needs more descriptors than the usual soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_locust(sc: Scenario, url: str, workdir: Path, pids: dict[str, int]) -> tuple[int, float, Sampler]:
    env = {**os.environ, "LOAD_SCENARIO": sc.name, "LOAD_JOURNAL": str(workdir / "ledger.json")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--csv",
        str(workdir / "locust"),
        "--stop-timeout",
        "60",  # users finish the job in hand when the scenario ends
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    log = (workdir / "locust.log").open("w")
    began = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
    sampler = Sampler({**pids, "locust (clients)": proc.pid})
    sampler.start()
    try:
        code = proc.wait(timeout=sc.duration + 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    finally:
        sampler.stop()
        log.close()
    return code, time.monotonic() - began, sampler


def read_stats(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _ms(row: dict[str, Any], column: str) -> float | None:
    value = row.get(column, "N/A")
    return None if value in ("N/A", "", None) else float(value)


def summarize(
    sc: Scenario, workdir: Path, elapsed: float, sampler: Sampler, locust_rc: int, commit: str = "?"
) -> dict[str, Any]:
    stats = read_stats(workdir / "locust_stats.csv")
    ledger_path = workdir / "ledger.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else None
    endpoints = [
        {
            "type": row["Type"],
            "name": row["Name"],
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _ms(row, "50%"),
            "p95_ms": _ms(row, "95%"),
            "p99_ms": _ms(row, "99%"),
        }
        for row in stats
        if row["Name"] != "Aggregated"
    ]
    http = [e for e in endpoints if e["type"] != "JOB"]
    requests_total = sum(e["requests"] for e in http)
    failures = sum(e["failures"] for e in http)
    jobs = ledger["jobs"] if ledger else []
    answers: dict[str, int] = ledger["answers"] if ledger else {}
    five_xx = {k: v for k, v in answers.items() if k.rsplit(" ", 1)[-1].startswith("5")}
    refused = ledger["refused"] if ledger else {}
    unrefused_5xx = {k: v - refused.get(k, 0) for k, v in five_xx.items() if v - refused.get(k, 0) > 0}
    terminal = [j for j in jobs if j["status"] in ("completed", "failed")]
    done_times = sorted(j["accepted_at"] + j["done_after"] for j in jobs if j["done_after"] is not None)
    first = min((j["accepted_at"] for j in jobs), default=0.0)
    window = (done_times[-1] - first) if done_times else 0.0
    problems = []
    if ledger is None:
        problems.append("no ledger: Locust did not finish cleanly (see locust.log)")
    if unrefused_5xx:
        problems.append(f"5xx answers without Retry-After: {unrefused_5xx}")
    lost = [j["job_id"] for j in jobs if j["status"] not in ("completed", "failed")]
    if lost:
        problems.append(f"{len(lost)} lost jobs (accepted, never terminal): {lost[:5]}")
    repeated = [j["job_id"] for j in jobs if j["dones"] > 1]
    if repeated:
        problems.append(f"{len(repeated)} jobs with more than one done: {repeated[:5]}")
    return {
        "scenario": sc.name,
        "description": sc.description,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}",
        "seconds": round(elapsed, 1),
        "peak_users": sc.peak_users,
        "requests": requests_total,
        "failures": failures,
        "error_rate": failures / requests_total if requests_total else None,
        "refused": refused,
        "answers": answers,
        "client_errors": ledger.get("errors", {}) if ledger else {},
        "jobs": {
            "accepted": len(jobs),
            "done_on_stream": sum(1 for j in jobs if j["dones"]),
            "terminal": len(terminal),
            "lost": len(lost),
            "stream_errors": sum(1 for j in jobs if j["stream_error"]),
            "per_second": round(len(done_times) / window, 2) if window else None,
            "by_kind": _by_kind(jobs),
        },
        "endpoints": endpoints,
        "processes": {
            name: {
                "cpu_seconds": round(u.cpu_seconds, 1),
                "cores": round(u.cpu_seconds / elapsed, 2),
                "peak_rss_mib": u.peak_rss >> 20,
            }
            for name, u in sampler.usage.items()
        },
        # Each process's RSS over the run (MiB), and its growth after the first quarter: a leak shows
        # as steady growth in a long run at a steady load (the soak).
        "rss_timeline_mib": [{"t": t, **{n: v >> 20 for n, v in rss.items()}} for t, rss in sampler.timeline],
        "rss_growth_mib": sampler.growth(),
        "locust_exit": locust_rc,
        "end_check": ledger["end_check"] if ledger else None,
        "problems": problems,
    }


def _by_kind(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from bench.common import percentile

    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({j["kind"] for j in jobs}):
        mine = [j for j in jobs if j["kind"] == kind]
        done = [j["done_after"] for j in mine if j["done_after"] is not None]
        waits = [j["started_after"] for j in mine if j["started_after"] is not None]
        kinds[kind] = {
            "jobs": len(mine),
            "done_p50_ms": round(percentile(done, 50) * 1000) if done else None,
            "done_p95_ms": round(percentile(done, 95) * 1000) if done else None,
            "done_p99_ms": round(percentile(done, 99) * 1000) if done else None,
            "queue_wait_p95_ms": round(percentile(waits, 95) * 1000) if waits else None,
        }
    return kinds


def _commit() -> str:
    """The commit the run started from (+dirty when the working tree had changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "?"
    return (head.stdout.strip() or "?") + ("+dirty" if dirty.stdout.strip() else "")


def report(result: dict[str, Any]) -> str:
    jobs = result["jobs"]
    lines = [
        f"scenario {result['scenario']}: {result['description']}",
        f"  {result['machine']}, commit {result['commit']}, {result['seconds']} s, peak {result['peak_users']} users",
        f"  requests {result['requests']}, failures {result['failures']}, error rate "
        + (f"{result['error_rate']:.4%}" if result["error_rate"] is not None else "n/a")
        + f", refused (Retry-After) {sum(result['refused'].values())}",
        f"  jobs accepted {jobs['accepted']}, done on stream {jobs['done_on_stream']}, terminal {jobs['terminal']}, "
        f"lost {jobs['lost']}, stream errors {jobs['stream_errors']}, jobs/s {jobs['per_second']}",
    ]
    for kind, k in jobs["by_kind"].items():
        lines.append(
            f"  {kind:<8} n={k['jobs']:<5} POST->done p50 {k['done_p50_ms']} ms  p95 {k['done_p95_ms']} ms  "
            f"p99 {k['done_p99_ms']} ms  queue wait p95 {k['queue_wait_p95_ms']} ms"
        )
    lines.append("  endpoint                                  n      fail  p50 ms  p95 ms  p99 ms")
    for e in result["endpoints"]:
        if e["type"] == "JOB":
            continue
        lines.append(
            f"  {e['type'] + ' ' + e['name']:<40} {e['requests']:<6} {e['failures']:<5} {e['p50_ms']!s:>6}  "
            f"{e['p95_ms']!s:>6}  {e['p99_ms']!s:>6}"
        )
    lines.append("  process                  CPU s   cores  peak RSS MiB  growth after warm-up MiB")
    growth = result.get("rss_growth_mib", {})
    for name, p in result["processes"].items():
        lines.append(
            f"  {name:<22} {p['cpu_seconds']:>7}  {p['cores']:>5}  {p['peak_rss_mib']:>6}  {growth.get(name, '')!s:>12}"
        )
    lines += [f"  PROBLEM: {p}" for p in result["problems"]] or ["  correct: no 5xx, no lost job, one done per job"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", help="a running stack's gateway (default: start one in a temporary folder)")
    parser.add_argument("--out", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    sc = SCENARIOS[args.scenario]
    commit = _commit()
    raise_open_files()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / ".data" / "load" / f"{sc.name}-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="coderunner-load-") as tmp:
        workdir = Path(tmp)
        stack = None
        pids: dict[str, int] = {}
        url = args.url
        if url is None:
            from local import embedded
            from local.supervisor import Stack

            # Every simulated student comes from 127.0.0.1: the per-address limits (anonymous requests,
            # and the ceiling over all of an address's requests) would answer most requests 429.
            # Real students have addresses of their own, or a school's (docs/capacity.md). The
            # per-user quotas (API and runs) stay as a new user gets them.
            os.environ.setdefault("API_LIMIT_ANONYMOUS_PER_MINUTE", "1000000")
            os.environ.setdefault("API_LIMIT_PER_ADDRESS_PER_MINUTE", "1000000")
            port = embedded.free_port()
            stack = Stack(workdir / "stack", "127.0.0.1", port)
            url = f"http://127.0.0.1:{port}"
        try:
            if stack is not None:
                stack.start()
                if not stack.wait_ready():
                    print("the stack did not become ready", file=sys.stderr)
                    return 1
                for spec, sup in stack.servers:
                    if sup.proc is not None:
                        pids[spec.name] = sup.proc.pid
                for app in stack.apps:
                    if app.proc is not None:
                        pids[app.name] = app.proc.pid
            rc, elapsed, sampler = run_locust(sc, url, workdir, pids)
            result = summarize(sc, workdir, elapsed, sampler, rc, commit)
            if result["problems"]:
                print((workdir / "locust.log").read_text()[-3000:], file=sys.stderr)
        finally:
            if stack is not None:
                stack.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"  results: {out}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
