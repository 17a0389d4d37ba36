"""The layout's promises: one registry of durable consumers that everything follows, a contract
package with no plumbing in it, and deploy/ holding deployment artefacts only."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from bus import streams
from bus.streams import BusLimits
from tests.conftest import ROOT


def test_compose_runs_every_registered_consumer_and_nothing_else() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    consumers = {s["command"][1] for s in services.values() if s.get("command", [None])[0] == "consume"}
    assert consumers == set(streams.CONSUMERS)
    assert any(s.get("command") == ["runner"] for s in services.values())


LIMITS = BusLimits(
    stream_retention_seconds=60, duplicate_window_seconds=60, runner_ack_wait_seconds=30, runner_max_deliver=3
)


def test_every_durable_has_one_owner_and_a_known_stream() -> None:
    names = [d.name for d in streams.DURABLES]
    assert len(names) == len(set(names))
    known = {config.name for config in streams.stream_configs(LIMITS)}
    for durable in streams.DURABLES:
        assert durable.stream in known and durable.owner.startswith("coderunner ")
        if durable.process:
            assert durable.owner == f"coderunner consume {durable.process}"
        if durable.handler_factory:
            module, _, function = durable.handler_factory.partition(":")
            assert callable(getattr(__import__(module, fromlist=[function]), function))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_schemas_hold_only_the_contract() -> None:
    """Payload types, subjects and versions: no client library, no other package of ours."""
    for path in (ROOT / "schemas").glob("*.py"):
        assert _imports(path) <= {"__future__", "msgspec", "enum", "datetime", "typing", "re", "schemas"}, path


def test_deploy_holds_deployment_artefacts_only() -> None:
    assert not list((ROOT / "deploy").rglob("*.py"))
