"""compose.yaml without Docker: valid against the Compose Specification's JSON schema (what
``docker compose config`` checks, vendored from github.com/compose-spec/compose-spec,
schema/compose-spec.json), every host path it mounts or builds from exists, and Prometheus and
Grafana come with this repository's configuration and provisioning."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema_rs
import pytest
import yaml

from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "tests" / "vendor" / "compose-spec.json").read_text())
# Host paths outside the repository that a service may mount, and why.
HOST_PATHS = {"/var/run/docker.sock": "the runner starts sandboxes through the Docker Engine API"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def schema_errors(document: object) -> list[str]:
    validator = jsonschema_rs.validator_for(SCHEMA)
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(document)]


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append((entry["type"], str(entry.get("source", "")), entry["target"]))
            continue
        source, _, rest = entry.partition(":")
        target = rest.split(":")[0] if rest else source
        kind = "bind" if source.startswith((".", "/", "~")) else "volume" if rest else "anonymous"
        out.append((kind, source, target))
    return out


def test_compose_yaml_is_valid_against_the_compose_specification() -> None:
    assert not schema_errors(compose())


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["services"]["gateway"].update(replicas=2), "'replicas' was unexpected"),
        (lambda d: d["services"]["prometheus"].update(ports="9090:9090"), "is not of type"),
        (lambda d: d.update(servces={}), "'servces' was unexpected"),
    ],
)
def test_the_schema_check_rejects_a_broken_document(breakage: Any, expected: str) -> None:
    """The check above can fail: an unknown key, a wrong type, a misspelt section."""
    document = copy.deepcopy(compose())
    breakage(document)
    errors = schema_errors(document)
    assert any(expected in e for e in errors), errors


def test_every_host_path_compose_mounts_or_builds_from_exists() -> None:
    document = compose()
    declared = set(document.get("volumes") or {})
    for name, service in document["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is missing"
            if isinstance(build, dict) and "dockerfile" in build:
                assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} is missing"
        for kind, source, target in mounts(service):
            assert PurePosixPath(target).is_absolute(), f"{name}: mount target {target} is not absolute"
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"
            elif kind == "bind" and source.startswith("/"):
                assert source in HOST_PATHS, f"{name}: mounts {source} from the host"
            elif kind == "bind":
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repository"


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def _mount_of(service: dict[str, Any], target: str) -> Path:
    found = [ROOT / source for kind, source, t in mounts(service) if kind == "bind" and t == target]
    assert len(found) == 1, f"nothing mounted at {target}"
    return found[0]


def test_prometheus_gets_this_repositorys_scrape_config_and_scrapes_every_process() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config_dir = _mount_of(prometheus, "/etc/prometheus")
    assert config_dir == ROOT / "deploy" / "prometheus"
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    for rules in config.get("rule_files", []):
        assert (config_dir / rules).is_file(), rules
    assert any(p.startswith("127.0.0.1:") for p in prometheus["ports"])

    # Every runner and consumer service serves /metrics where Prometheus looks for it.
    targets: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.setdefault(job["job_name"], set()).update(static["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets.setdefault(job["job_name"], set()).update(f"{n}:{sd['port']}" for n in sd["names"])
    metered = {n: s for n, s in services.items() if s.get("command", [None])[0] in ("runner", "consume")}
    assert metered
    for name, service in metered.items():
        env = _env(service)
        assert env.get("METRICS_HOST") == "0.0.0.0", name
        job = "runner" if service["command"] == ["runner"] else "consumers"
        assert f"{name}:{env.get('METRICS_PORT')}" in targets[job], (name, targets[job])
    assert any(t.startswith("gateway:") for t in targets["gateway"])


def test_grafana_is_provisioned_with_the_prometheus_data_source_and_the_dashboards() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.[\d.]+", grafana["image"])
    assert any(p.startswith("127.0.0.1:") for p in grafana["ports"])
    # A secret is never a default: compose refuses to start without the password.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}"
    )
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    provisioning = _mount_of(grafana, "/etc/grafana/provisioning")
    assert provisioning == ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    (source,) = sources
    assert (source["uid"], source["type"]) == ("prometheus", "prometheus")
    host_port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"])
    assert host_port and host_port[1] in services, source["url"]
    assert f"{host_port[2]}:{host_port[2]}" in services[host_port[1]]["ports"][0]

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "coderunner.yml").read_text())["providers"]
    assert provider["type"] == "file"
    dashboards = _mount_of(grafana, provider["options"]["path"])
    assert dashboards == ROOT / "deploy" / "grafana" / "dashboards"
    assert {p.stem for p in dashboards.glob("*.json")} == {"overview", "queue", "runners", "business"}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / PurePosixPath(home).relative_to(provider["options"]["path"])).is_file()
