"""The contract for other services: the channel catalogue agrees with the code, the committed JSON
Schemas and AsyncAPI document are what the code generates, and the AsyncAPI tooling accepts it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import jsonschema_rs
import msgspec
import pytest
import yaml

from bus import streams
from cli import contract
from schemas import catalog, subjects
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.executions import STUDENT_KINDS, ExecutionEvent, ExecutionFinished, OutputChunk, Verdict, kind
from schemas.grades import GradeVerdict, TestGraded, TestResult
from tests.conftest import ROOT

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
JOB = "job-00000001"
# JetStream plumbing that is nobody else's business: the server's own advisories.
INTERNAL_STREAMS = {"ADVISORIES"}


def require_node() -> str:
    """The node binary. Skips only where there is no Node at all: with node present (CI has it) the
    test runs, and fails if the tooling cannot be installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the AsyncAPI CLI and the Node example need it)")
    return node


def npm_cached(folder: Path) -> Path:
    """``npm ci`` of ``folder``'s lockfile into a cache outside the work tree (.ci/npm-cached.sh)."""
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "npm-cached.sh"), str(folder)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"npm ci of {folder} failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


# The catalogue agrees with the code ---------------------------------------------------------------


def test_every_public_stream_has_a_channel_and_its_durables_are_named() -> None:
    configs = streams.stream_configs(streams.BusLimits(1.0, 1.0, 1.0, 1))
    public = {c.name for c in configs} - INTERNAL_STREAMS
    catalogued = {c.stream for c in catalog.CHANNELS if c.stream is not None}
    assert catalogued == public, "a stream needs its channel in schemas/catalog.py"
    for channel in catalog.CHANNELS:
        owned = {d.name for d in streams.DURABLES if d.stream == channel.stream} if channel.stream else set()
        assert set(channel.durables) == owned, f"{channel.id}: durables in bus/streams.py: {sorted(owned)}"
        if channel.stream:
            config = next(c for c in configs if c.name == channel.stream)
            wildcard = re.sub(r"\{\w+\}", "*", channel.address)
            assert config.subjects is not None
            assert any(contract.subject_matches(s, wildcard) for s in config.subjects), (channel.id, config.subjects)


def test_channel_ids_and_families_are_unique_and_each_family_has_one_payload() -> None:
    ids = [c.id for c in catalog.CHANNELS]
    assert len(ids) == len(set(ids))
    payloads: dict[str, object] = {}
    for channel in catalog.CHANNELS:
        assert payloads.setdefault(channel.family, channel.payload) == channel.payload
    assert not set(payloads) & set(catalog.DOCUMENTS)


def test_addresses_are_the_subjects_the_code_builds() -> None:
    by_id = {c.id: c for c in catalog.CHANNELS}
    assert by_id["submissions"].address.format(jobId=JOB) == subjects.submission(JOB)
    for message in get_args(ExecutionEvent):
        assert by_id["executions"].address.format(jobId=JOB, kind=kind(message)) == subjects.of_kind(JOB, message)
    assert by_id["problems"].address.format(problemId="101") == subjects.problem_changed("101")
    for message in catalog.messages(by_id["progress"]):
        progress_kind = catalog.tag(message).rsplit(".", 1)[1]
        assert by_id["progress"].address.format(userId=JOB, kind=progress_kind) == subjects.progress(JOB, progress_kind)
    assert by_id["deadletter"].address.format(stream="submissions") == subjects.deadletter("submissions")
    assert by_id["runnerStats"].address == subjects.RUNNER_STATS
    assert by_id["flags"].address.format(flag="read-only") == subjects.flag_changed("read-only")


def test_parameters_kinds_and_internal_messages_match_the_payloads() -> None:
    for channel in catalog.CHANNELS:
        assert re.findall(r"\{(\w+)\}", channel.address) == [p.name for p in channel.parameters], channel.id
        tags = {catalog.tag(m) for m in catalog.messages(channel)}
        for parameter in channel.parameters:
            if parameter.name == "kind":
                assert set(parameter.enum) == {t.rsplit(".", 1)[1] for t in tags}, channel.id
        assert channel.internal <= tags
    executions = next(c for c in catalog.CHANNELS if c.id == "executions")
    assert {t.rsplit(".", 1)[1] for t in executions.internal} == set(executions.parameters[1].enum) - STUDENT_KINDS


def _fields(struct: type) -> dict[str, msgspec.inspect.Type]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.encode_name: f.type for f in info.fields}


def test_every_stored_message_has_a_dedup_key_made_of_its_own_fields() -> None:
    for channel in catalog.CHANNELS:
        tags = {catalog.tag(m): m for m in catalog.messages(channel)}
        if channel.stream is None:
            assert not channel.msg_ids
            continue
        assert set(channel.msg_ids) == set(tags), f"{channel.id}: a Nats-Msg-Id for every message"
        for tag, pattern in channel.msg_ids.items():
            for path in re.findall(r"\{([\w.]+)\}", pattern):
                struct: type = tags[tag]
                *parents, leaf = path.split(".")
                for parent in parents:
                    nested = _fields(struct)[parent]
                    assert isinstance(nested, msgspec.inspect.StructType), (tag, path)
                    struct = nested.cls
                assert leaf in _fields(struct), f"{tag}: {path} is not a field of the payload"


def test_msg_id_renders_the_publishers_keys() -> None:
    executions = next(c for c in catalog.CHANNELS if c.id == "executions")
    chunk = OutputChunk(job_id=JOB, attempt=2, stream="stdout", seq=7, text="x")
    assert catalog.msg_id(executions, chunk) == f"{JOB}.2.7"
    test = TestGraded(
        job_id=JOB, attempt=1, result=TestResult(test_id="t3", index=0, public=True, verdict=GradeVerdict.ACCEPTED)
    )
    assert catalog.msg_id(executions, test) == f"{JOB}.1.test.t3"
    record = DeadLetter(
        reason=DeadLetterReason.UNDECODABLE,
        stream="EXECUTIONS",
        stream_seq=42,
        subject="coderunner.v1.executions.x.finished",
        consumer="grading",
        recorded_at=NOW,
    )
    from bus import deadletters

    # The dead-letter key is built by one function in the code: the catalogue must say the same.
    assert catalog.msg_id(catalog.channel_of("DEADLETTER"), record) == deadletters.msg_id("EXECUTIONS", "grading", 42)


# The generated files are committed and current ------------------------------------------------------


def test_committed_contract_files_are_up_to_date() -> None:
    files = contract.generated()
    stale = [p.relative_to(ROOT) for p, text in files.items() if not p.exists() or p.read_text() != text]
    extra = sorted(set(contract.SCHEMA_DIR.glob("*.schema.json")) - set(files))
    assert not stale and not extra, f"regenerate with `coderunner schema --write` (stale: {stale}, extra: {extra})"
    printed = subprocess.run(
        [sys.executable, "-m", "cli", "asyncapi"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert printed == contract.ASYNCAPI.read_text()


def test_family_schemas_accept_real_payloads_and_reject_wrong_ones() -> None:
    def validator(family: str) -> jsonschema_rs.Validator:
        return jsonschema_rs.validator_for(json.loads((contract.SCHEMA_DIR / f"{family}.schema.json").read_text()))

    finished = ExecutionFinished(job_id=JOB, verdict=Verdict.OK, exit_code=0, duration_ms=3, finished_at=NOW)
    executions = validator("executions")
    assert executions.is_valid(msgspec.to_builtins(finished))
    assert not executions.is_valid({**msgspec.to_builtins(finished), "verdict": "GREAT"})
    assert not executions.is_valid({"type": "execution.exploded", "jobId": JOB})
    deadletter = validator("deadletter")
    assert deadletter.is_valid(
        msgspec.to_builtins(
            DeadLetter(
                reason=DeadLetterReason.INVALID, stream="SUBMISSIONS", stream_seq=1, subject="s", consumer="runner",
                recorded_at=NOW,
            )
        )
    )  # fmt: skip
    assert not validator("submissions").is_valid(msgspec.to_builtins(finished))


def test_asyncapi_document_links_every_message_to_its_schema() -> None:
    doc = yaml.safe_load(contract.ASYNCAPI.read_text())
    assert doc["asyncapi"].startswith("3.") and doc["servers"]["nats"]["protocol"] == "nats"
    schemas = doc["components"]["schemas"]
    for channel in catalog.CHANNELS:
        spec = doc["channels"][channel.id]
        assert spec["address"] == channel.address
        if channel.stream:
            assert spec["x-jetstream"]["stream"] == channel.stream
            assert spec["x-jetstream"]["retention"] == "limits"
        for message in catalog.messages(channel):
            ref = doc["components"]["messages"][contract.message_id(message)]["payload"]["$ref"]
            assert ref.rsplit("/", 1)[1] in schemas
    # Operations: what each of our durables takes, read from its filters.
    grading = doc["operations"]["consumeGrading"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in grading["messages"]] == ["executionObserved", "executionFinished"]
    assert doc["operations"]["publishExecutions"]["action"] == "send"
    assert doc["operations"]["answerRunnerStats"]["reply"]


# The AsyncAPI tooling -------------------------------------------------------------------------------


def _asyncapi_validate(cli: Path, document: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # The CLI sends usage metrics unless its config file says no: a config of our own, in tmp.
    metrics = tmp_path / "asyncapi-analytics.json"
    metrics.write_text('{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "coderunner-tests"}')
    env = {**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(metrics)}
    return subprocess.run(
        [str(cli / "node_modules" / ".bin" / "asyncapi"), "validate", str(document), "--fail-severity=warn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.timeout(1200)  # the first run installs @asyncapi/cli from its lockfile (a few minutes)
def test_asyncapi_cli_validates_the_document_and_rejects_a_broken_one(tmp_path: Path) -> None:
    require_node()
    cli = npm_cached(ROOT / ".ci" / "asyncapi-cli")
    ok = _asyncapi_validate(cli, contract.ASYNCAPI, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "is valid" in ok.stdout, ok.stdout
    # The same document with one dangling $ref: the tool must notice, or the check above proves nothing.
    broken = tmp_path / "broken.yaml"
    text = contract.ASYNCAPI.read_text()
    assert "'#/components/schemas/ExecutionFinished'" in text
    broken.write_text(text.replace("'#/components/schemas/ExecutionFinished'", "'#/components/schemas/Nowhere'", 1))
    bad = _asyncapi_validate(cli, broken, tmp_path)
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "Nowhere" in bad.stdout + bad.stderr
