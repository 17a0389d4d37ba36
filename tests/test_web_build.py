"""The committed browser build (gateway/static) is the build of the committed sources (web/).

``make web`` rebuilds it; ``make up`` serves it without Node. These tests need no Node either:
they recompute web/build.mjs's source hash in Python.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
STATIC = ROOT / "gateway" / "static"
# As SOURCE_FILES and SOURCE_DIRS in web/build.mjs.
SOURCE_FILES = ["build.mjs", "index.html", "package.json", "package-lock.json"]
SOURCE_DIRS = ["src"]


def source_hash() -> tuple[str, list[str]]:
    paths = [WEB / f for f in SOURCE_FILES]
    for d in SOURCE_DIRS:
        paths += [p for p in (WEB / d).rglob("*") if p.is_file()]
    entries = sorted((p.relative_to(WEB).as_posix(), p) for p in paths)
    digest = hashlib.sha256()
    for rel, path in entries:
        digest.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest(), [rel for rel, _ in entries]


def build_info() -> dict:
    return json.loads((STATIC / "build-info.json").read_text())


def test_the_committed_build_is_of_the_current_sources() -> None:
    expected, files = source_hash()
    info = build_info()
    assert info["sources"] == files, "web/ sources were added or removed since the build: run `make web`"
    assert info["sourceHash"] == expected, "gateway/static is older than web/: run `make web` and commit the result"


def test_the_built_files_are_the_ones_the_build_wrote() -> None:
    for name, digest in build_info()["outputs"].items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, (
            f"gateway/static/{name} was edited by hand: edit web/ and run `make web`"
        )


def test_dependencies_are_pinned_exactly_and_locked() -> None:
    package = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    for name, version in {**package.get("dependencies", {}), **package.get("devDependencies", {})}.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: {version!r} is not an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"{name}: the lock disagrees"


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script> (the CSP forbids it)"
    assert "<style" not in html and "style=" not in html, "inline styles (the CSP forbids them)"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "a request to another origin"


def test_our_sources_set_no_inline_styles() -> None:
    # CodeMirror sets its styles through the CSSOM (allowed); our pages use app.css's classes only.
    for path in (WEB / "src").rglob("*.js"):
        text = path.read_text()
        assert not re.search(r"""style=|setAttribute\(\s*["']style["']|["']style["']\s*:""", text), (
            f"inline style in {path}"
        )
