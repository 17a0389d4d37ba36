"""docs/api.md as a client author follows it, against a live stack with a runner: fetch the OpenAPI
document and generate a Python client with the doc's own commands (openapi-python-client), check
that the client has the modules the doc names, and run the doc's example program with it.

The commands, the table and the program are read from docs/api.md, so the doc cannot drift from
what is tested; only the gateway's address is replaced by this stack's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from local.lifetimes import die_with_parent
from tests.conftest import ROOT, App, Stack

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "api.md"
DOC_URL = "http://127.0.0.1:8000"  # the address the doc's commands and program use
BIN = Path(sys.executable).parent  # openapi-python-client, and the ruff it formats with
PACKAGE = "code_runner_client"
PROJECT = "code-runner-client"
MARK = "<!-- tests/test_api_client.py "


def _after(marker: str) -> str:
    """The doc's text after the comment that starts with ``marker``."""
    text = DOC.read_text()
    start = text.find(MARK + marker)
    assert start >= 0, f"docs/api.md lost the comment {MARK}{marker}…"
    return text[text.index("-->", start) + len("-->") :].lstrip("\n")


def _fenced(marker: str, language: str, url: str) -> str:
    match = re.match(rf"```{language}\n(.*?)^```$", _after(marker), re.S | re.M)
    assert match, f"docs/api.md: no ```{language} block after the comment {marker!r}"
    assert DOC_URL in match[1], f"docs/api.md's {language} block no longer uses {DOC_URL}"
    return match[1].replace(DOC_URL, url)


def _table(marker: str) -> list[tuple[str, str, str]]:
    """(method, path, module) for each row of the doc's table of generated modules."""
    table = _after(marker).split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([A-Z]+) (/\S*)` \| `([a-z_]+\.[a-z_]+)` \|$", table, re.M)
    assert len(rows) >= 10, table
    return rows


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``args`` to its end; it and whatever it started are killed if the test gives up on it."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{output[-6000:]}"
    return output


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def test_the_documented_client_is_generated_and_runs(seeded: Stack, runner: App, tmp_path: Path) -> None:
    assert shutil.which("curl"), "the doc fetches the document with curl"
    generate = _fenced("runs this block", "sh", seeded.base_url)
    program = _fenced("runs this program", "python", seeded.base_url)
    modules = _table("checks that the generated client")

    output = _run(["bash", "-euo", "pipefail", "-c", generate], tmp_path, _environment(), timeout=120)
    for trouble in ("Warning(s) encountered", "Unable to process", "will not be generated", "not in PATH"):
        assert trouble not in output, output
    assert (tmp_path / PROJECT / PACKAGE / "client.py").is_file(), output

    # The table's operations are the served document's, under the modules named after their ids.
    document = httpx.get(f"{seeded.base_url}/schema/openapi.json").raise_for_status().json()
    for method, path, module in modules:
        operation = document["paths"].get(path, {}).get(method.lower())
        assert operation, f"docs/api.md names {method} {path}, which the document does not have"
        tag, name = module.split(".")
        assert name == re.sub(r"(?<!^)(?=[A-Z])", "_", operation["operationId"]).lower(), (method, path, module)
        assert tag in operation["tags"], (method, path, module)
    check = (
        "import importlib, json, sys\n"
        f"for name in json.loads(sys.argv[1]):\n"
        f"    module = importlib.import_module('{PACKAGE}.api.' + name)\n"
        "    for function in ('sync', 'sync_detailed', 'asyncio', 'asyncio_detailed'):\n"
        "        assert callable(getattr(module, function, None)), (name, function)\n"
    )
    env = _environment(PYTHONPATH=str(tmp_path / PROJECT))
    _run([sys.executable, "-c", check, json.dumps([m for _, _, m in modules])], tmp_path, env, timeout=60)

    (tmp_path / "example.py").write_text(program)
    printed = _run([sys.executable, "example.py"], tmp_path, env, timeout=60)
    assert printed == "Hello, Ada!\n"
