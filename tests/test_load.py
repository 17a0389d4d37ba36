"""The load scenarios: the smoke run is correct, and the run's checks catch what they claim to.

Figures are never asserted here (they are measured by `make load` and quoted in
docs/benchmarks.md); the smoke run checks correctness only: no 5xx, no lost job, exactly one
`done` per job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from load.run import Sampler, summarize
from load.scenarios import SCENARIOS
from tests.conftest import ROOT


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_the_smoke_scenario_runs_correctly(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "load.run", "smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["problems"] == []
    jobs = result["jobs"]
    # Every student ran jobs of every kind, and every accepted job ended, streamed once.
    assert jobs["accepted"] >= 20, jobs
    assert set(jobs["by_kind"]) >= {"problem", "run", "grade"}, jobs
    assert jobs["lost"] == 0 and jobs["terminal"] == jobs["accepted"], jobs
    assert not [k for k in result["answers"] if k.rsplit(" ", 1)[-1].startswith("5")], result["answers"]
    assert "POST -> done" in done.stdout or "POST->done" in done.stdout


def _ledger(tmp_path: Path, jobs: list[dict], answers: dict[str, int]) -> None:
    (tmp_path / "ledger.json").write_text(
        json.dumps({"scenario": "smoke", "jobs": jobs, "answers": answers, "refused": {}, "end_check": {}})
    )


def _job(job_id: str, *, dones: int = 1, status: str = "completed") -> dict:
    return {
        "job_id": job_id,
        "kind": "run",
        "accepted_at": 1000.0,
        "started_after": 0.1 if dones else None,
        "done_after": 0.2 if dones else None,
        "dones": dones,
        "status": status,
        "verdict": "OK",
        "stream_error": None,
    }


def test_a_clean_ledger_passes(tmp_path: Path) -> None:
    _ledger(tmp_path, [_job("a"), _job("b")], {"POST /execution/submit 202": 2})
    assert summarize(SCENARIOS["smoke"], tmp_path, 60.0, Sampler({}), 0)["problems"] == []


def test_the_checks_catch_a_5xx_a_lost_job_and_a_repeated_done(tmp_path: Path) -> None:
    jobs = [_job("ok"), _job("lost", dones=0, status="running"), _job("twice", dones=2)]
    _ledger(tmp_path, jobs, {"POST /execution/submit 202": 3, "GET /progress/summary 500": 1})
    problems = summarize(SCENARIOS["smoke"], tmp_path, 60.0, Sampler({}), 0)["problems"]
    assert len(problems) == 3, problems
    assert "5xx" in problems[0] and "lost" in problems[1] and "more than one done" in problems[2]


def test_a_run_without_a_ledger_fails(tmp_path: Path) -> None:
    problems = summarize(SCENARIOS["smoke"], tmp_path, 60.0, Sampler({}), 1)["problems"]
    assert problems and "no ledger" in problems[0]


def test_a_refusal_with_retry_after_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "ledger.json").write_text(
        json.dumps(
            {
                "scenario": "smoke",
                "jobs": [_job("a")],
                "answers": {"POST /execution/submit 503": 4, "POST /execution/submit 202": 1},
                "refused": {"POST /execution/submit 503": 4},
                "end_check": {},
            }
        )
    )
    assert summarize(SCENARIOS["smoke"], tmp_path, 60.0, Sampler({}), 0)["problems"] == []


def test_the_rss_timeline_shows_growth_after_warm_up() -> None:
    """A process whose RSS climbs after the first quarter of the run shows that climb as growth."""
    sampler = Sampler({})
    mib = 1 << 20
    sampler.timeline = [(t * 60, {"gateway": (100 + 10 * t) * mib, "runner": 50 * mib}) for t in range(8)]
    assert sampler.growth() == {"gateway": 50, "runner": 0}
    assert Sampler({}).growth() == {}
