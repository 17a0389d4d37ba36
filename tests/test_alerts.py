"""The Prometheus side of operations: deploy/prometheus/ (scrape configs, alert rules and their
promtool unit tests) checked by a real promtool, and the promises around them: every alert has a
severity, a summary and a runbook section, is unit-tested firing and not firing, and names only
metrics that some process exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import telemetry.metrics
from bus import streams
from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
UNIT_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/coderunner/coderunner/blob/main/docs/runbook.md#"
JOBS = {"gateway", "runner", "consumers"}
# Litestar's PrometheusMiddleware (gateway/app.py), under the project's prefix.
HTTP_METRICS = {
    "coderunner_requests_total",
    "coderunner_request_duration_seconds",
    "coderunner_requests_in_progress",
    "coderunner_requests_error_total",
}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool missing: bash .ci/system-deps.sh installs Debian's prometheus package")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


# -- promtool ---------------------------------------------------------------------------------


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@pytest.mark.parametrize("config", ["prometheus.yml", "local.yml"])
def test_scrape_configs_are_valid(config: str) -> None:
    result = promtool("check", "config", config, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_documented_target_file_shape_is_what_prometheus_reads(tmp_path: Path) -> None:
    """local.yml documents the file_sd files `coderunner up` writes; promtool reads such files."""
    shutil.copy(PROMETHEUS / "local.yml", tmp_path)
    shutil.copy(ALERTS, tmp_path)
    (tmp_path / "targets").mkdir()
    target = tmp_path / "targets" / "runner.json"
    target.write_text(json.dumps([{"targets": ["127.0.0.1:9100"], "labels": {"job": "runner"}}]))
    good = promtool("check", "config", "local.yml", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "WARNING" not in good.stdout + good.stderr  # the glob found the file and read it

    target.write_text(json.dumps({"targets": "127.0.0.1:9100", "labels": {"job": "runner"}}))
    bad = promtool("check", "config", "local.yml", cwd=tmp_path)
    assert bad.returncode != 0, bad.stdout + bad.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _copy_with(tmp_path: Path, alerts_text: str, tests_text: str) -> Path:
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "alerts.yml").write_text(alerts_text)
    copy = tmp_path / "tests" / "alerts_test.yml"
    copy.write_text(tests_text)
    return copy


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    wrong = UNIT_TESTS.read_text().replace('summary: "600 submissions wait', 'summary: "599 submissions wait', 1)
    assert wrong != UNIT_TESTS.read_text()
    result = promtool("test", "rules", str(_copy_with(tmp_path, ALERTS.read_text(), wrong)))
    assert result.returncode != 0
    assert "QueueDepthCritical" in result.stdout + result.stderr


# Protections in the rules, each switched off: the unit tests must notice every one.
WEAKENED = {
    "no alert without a gateway target": (' or absent(up{job="gateway"})', ""),
    "no alert without a runner target": (' or absent(up{job="runner"})', ""),
    "/metrics scrapes dilute the error share": (',path!~"/metrics|/health"', ""),
    "error threshold 20 %": ("> 0.05", "> 0.2"),
    "SSE streams count as slow requests": (',path!~".*/events|/metrics"', ""),
    "queue depth summed over gateway replicas": (
        "max(coderunner_queue_depth) > 500",
        "sum(coderunner_queue_depth) > 500",
    ),
    "consumer lag counts the runner's backlog": ('{consumer!="runner"}', ""),
    "a stuck consumer is one that settles messages": ("unless on (consumer)", "and on (consumer)"),
    "a dead-letter counter born at 1 is missed": (
        "\n            or\n          sum by (reason) (coderunner_dead_letters_total unless"
        " coderunner_dead_letters_total offset 10m) > 0",
        "",
    ),
    "Prometheus's own CPU pages us": ('{job=~"gateway|runner|consumers"}', ""),
}


@pytest.mark.parametrize("protection", sorted(WEAKENED))
def test_the_unit_tests_catch_a_protection_switched_off(tmp_path: Path, protection: str) -> None:
    before, after = WEAKENED[protection]
    original = ALERTS.read_text()
    assert before in original, f"{protection}: {before!r} is not in alerts.yml"
    weakened = original.replace(before, after)
    copy = _copy_with(tmp_path, weakened, UNIT_TESTS.read_text())
    assert promtool("check", "rules", str(tmp_path / "alerts.yml")).returncode == 0, "still a valid rule"
    result = promtool("test", "rules", str(copy))
    assert result.returncode != 0, f"{protection}: the unit tests still pass\n{result.stdout}"


# -- the promises around the rules --------------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    headings = {
        github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if re.match(r"#{1,6} ", line)
    }
    found = alerts()
    assert len(found) >= 10
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        url = notes["runbook_url"]
        assert url.startswith(RUNBOOK_URL), (name, url)
        anchor = url.removeprefix(RUNBOOK_URL)
        assert anchor == github_anchor(name), (name, anchor)
        assert anchor in headings, f"{name}: docs/runbook.md has no heading for #{anchor}"


def test_the_seeds_alerts_are_there_with_their_severity() -> None:
    severity = {name: rule["labels"]["severity"] for name, rule in alerts().items()}
    for name in ("ApiHealthFailing", "HighErrorRate", "QueueDepthCritical", "AllRunnersDown"):
        assert severity.get(name) == "critical", name
    for name in ("HighLatencyP95", "QueueDepthHigh", "HighCpu", "ConsumerLag", "DeadLetters"):
        assert severity.get(name) == "warning", name


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    stays_quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = set(alerts())
    assert names - fires == set(), "never shown firing"
    assert names - stays_quiet == set(), "never shown not firing"
    assert (fires | stays_quiet) - names == set(), "tests of alerts that do not exist"
    for case in cases:
        for expected in case.get("exp_alerts") or []:
            assert (
                expected["exp_annotations"]["runbook_url"] == alerts()[case["alertname"]]["annotations"]["runbook_url"]
            )


def exported_metric_names() -> set[str]:
    """The names a scrape shows for every collector in telemetry/metrics.py (histograms by base name)."""
    suffix = {"counter": "_total", "info": "_info"}
    names: set[str] = set()
    for collector in vars(telemetry.metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names.add(family.name + suffix.get(family.type, ""))
    return names


def test_every_metric_in_the_rules_is_exported() -> None:
    known = exported_metric_names() | HTTP_METRICS
    assert {"coderunner_queue_depth", "coderunner_dead_letters_total", "coderunner_build_info"} <= known
    named = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for rule in rules()
        for name in re.findall(r"coderunner_[a-z_]+", rule["expr"])
    }
    assert named, "no coderunner_ metric in the rules"
    assert named - known == set(), "metrics no process exports"


def test_the_rules_select_only_the_scrape_jobs() -> None:
    selected: set[str] = set()
    for rule in rules():
        for op, value in re.findall(r'\bjob\s*(=~|=)\s*"([^"]*)"', rule["expr"]):
            selected.update(value.split("|") if op == "=~" else [value])
    assert selected == JOBS
    compose = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert {job["job_name"] for job in compose["scrape_configs"]} >= JOBS
    assert compose["rule_files"] == ["alerts.yml"]
    local = yaml.safe_load((PROMETHEUS / "local.yml").read_text())
    assert local["rule_files"] == ["alerts.yml"]
    assert local["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["targets/*.json"]


def test_compose_scrapes_every_runner_replica_and_every_consumer_process() -> None:
    jobs = {
        job["job_name"]: job for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert jobs["runner"]["dns_sd_configs"] == [
        {"names": ["runner"], "type": "A", "port": 9100, "refresh_interval": "15s"}
    ]
    consumers = {target.split(":")[0] for target in jobs["consumers"]["static_configs"][0]["targets"]}
    assert consumers == set(streams.CONSUMERS)
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {"gateway", "runner"} | consumers <= set(services)
