"""The curriculum files: their rules, the documented example, and an idempotent seed."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bus import streams
from curriculum import files
from curriculum.model import Comparison, GradingMode
from schemas import subjects
from schemas.problems import ProblemChanged
from tests.conftest import ROOT
from tests.helpers import stored_messages

DOC = ROOT / "docs" / "curriculum.md"


def test_the_shipped_curriculum_is_complete() -> None:
    curriculum = files.load()
    problems = curriculum.problems
    assert len(problems) >= 36
    assert {level.slug for level in curriculum.levels} == {p.level for p in problems} == {"kids", "teens", "adults"}
    assert len(curriculum.sessions) >= 8
    topics = " ".join(s.id for s in curriculum.sessions)
    for topic in ("printing", "variables", "input", "conditions", "loops", "strings", "lists", "dictionaries",
                  "functions", "algorithms"):  # fmt: skip
        assert topic in topics, topic
    for p in problems:
        assert sum(t.public for t in p.tests) >= 3 and sum(not t.public for t in p.tests) >= 3, p.slug
        assert p.solution.strip() and p.wrong_solutions, p.slug
    # Every grading mode and comparison is used by some problem.
    assert {p.grading for p in problems} == set(GradingMode)
    used = {p.comparison_of(t) for p in problems for t in p.tests if t.script is None}
    assert used == set(Comparison)


def _example() -> str:
    match = re.search(r"## A problem file\n\n```toml\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/curriculum.md lost its example"
    return match[1]


def _content_with(tmp: Path, name: str, text: str) -> Path:
    root = tmp / "content"
    shutil.copytree(files.CONTENT, root)
    (root / "kids" / "01-printing" / name).write_text(text)
    return root


def test_the_documented_example_loads(tmp_path: Path) -> None:
    root = _content_with(tmp_path, "99-double-it.toml", _example())
    problem = next(p for p in files.load(root).problems if p.slug == "double-it")
    assert (problem.id, problem.level, problem.session, problem.order) == (150, "kids", "kids-printing", 99)
    assert [t.weight for t in problem.tests] == [1, 1, 1, 1, 2, 1]


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("99-x.toml", lambda t: t.replace('title = "Double it"\n', ""), r"99-x\.toml.*title"),
        ("99-x.toml", lambda t: "level = 'kids'\n" + t, r"99-x\.toml: `level` comes from the file's path"),
        ("x.toml", lambda t: t, r"x\.toml: name it NN-slug"),
        ("99-x.toml", lambda t: t.replace('stdin = "-7\\n"\n', 'stdin = "-7\\n"\nscript = "assert 1"\n'),
         r"99-x\.toml: tests\[3\]\.script: a hidden test cannot be a script"),
        ("99-x.toml", lambda t: t.replace("id = 150", "id = 101"), r"id 101"),
        ("99-x.toml", lambda t: t.replace('id = "h3"', 'id = "h2"'), r"unique"),
        ("99-x.toml", lambda t: t + "\ncolour = 'red'\n", r"colour"),
        ("99-x.toml", lambda t: t.replace('"""\nn = int', "'''\nn = int", 1), r"not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_file_is_named_with_its_field(tmp_path: Path, name: str, edit, message: str) -> None:
    root = _content_with(tmp_path, name, edit(_example()))
    with pytest.raises(files.CurriculumError, match=message):
        files.load(root)


def _seed(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "seed", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_seeding_is_idempotent_and_an_edit_publishes_a_change(
    tmp_path: Path, nats_url: str, shared_servers: dict[str, str]
) -> None:
    database = f"seed_{secrets.token_hex(4)}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "REDIS_", "MONGODB_"))},
        "NATS_URL": nats_url,
        "REDIS_URL": shared_servers["redis"],
        "MONGODB_URI": shared_servers["mongodb"].rstrip("/") + "/" + database,
        "PYTHONPATH": str(ROOT),
    }
    count = len(files.load().problems)
    assert f"{count} problems created, 0 updated, 0 unchanged" in _seed(env)
    assert f"0 problems created, 0 updated, {count} unchanged" in _seed(env)
    assert "already seeded" in _seed(env, "--if-empty")
    # An edited file: that problem (only) gets a new revision and a change event.
    root = tmp_path / "content"
    shutil.copytree(files.CONTENT, root)
    hello = root / "kids" / "01-printing" / "01-hello.toml"
    hello.write_text(hello.read_text().replace('title = "Say hello"', 'title = "Say hello!"'))
    assert f"0 problems created, 1 updated, {count - 1} unchanged" in _seed(env, "--path", str(root))
    events = [
        msgspec.json.decode(raw, type=ProblemChanged)
        for raw in stored_messages(nats_url, streams.PROBLEMS, subjects.problem_changed("101"))
    ]
    assert [(e.change, e.revision, e.changed_by) for e in events][-2:] == [
        ("created", 1, "seed"),
        ("updated", 2, "seed"),
    ]
    assert "Say hello!" not in msgspec.json.encode(events).decode()  # the event names the change only
