"""The documentation site builds with ``mkdocs build --strict`` (no warning of any kind), the API reference covers
every public module, and no page points outside the project."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import manifoldcert

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Modules that are the command line's own (the CLI and what only it runs): documented by --help, not the API.
COMMAND_LINE_MODULES = {
    "manifoldcert.__main__",
    "manifoldcert.cli",
    "manifoldcert.bench",
    "manifoldcert.demo",
}


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = build.stdout + build.stderr
    assert "No module named mkdocs" not in output, 'mkdocs is not installed: pip install -e ".[docs]"'
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "certifiers.html").is_file()
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")


def _public_modules() -> list[str]:
    names = ["manifoldcert"]
    for info in pkgutil.walk_packages(manifoldcert.__path__, "manifoldcert."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


def test_api_reference_covers_every_public_module() -> None:
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented.update(
            re.findall(r"^::: *(manifoldcert[\w.]*)", page.read_text(encoding="utf-8"), flags=re.M)
        )
    for name in documented:  # every block names a module that exists
        importlib.import_module(name)
    missing = [
        name for name in _public_modules() if name not in documented and name not in COMMAND_LINE_MODULES
    ]
    missing = [
        name for name in missing if name != "manifoldcert"
    ]  # the package itself: its members have pages
    assert not missing, f"public modules without a '::: module' block in docs/api/*.md: {missing}"


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)[^)]*\)")


def test_no_link_points_outside_the_project() -> None:
    """Relative links and images in docs/**/*.md and README.md stay inside the repository; no page (and no
    module of the package) refers to a DESIGN.md, which does not exist: the design notes are docs/design.md."""
    problems = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:|#", target):
                continue  # a URL, or an anchor on the same page
            resolved = (page.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{page.relative_to(ROOT)}: link to {target} (outside the project)")
            elif not resolved.exists():
                problems.append(f"{page.relative_to(ROOT)}: link to {target} (no such file)")
        if "DESIGN.md" in text:
            problems.append(
                f"{page.relative_to(ROOT)}: refers to DESIGN.md (the design notes are docs/design.md)"
            )
    for source in sorted((ROOT / "manifoldcert").rglob("*.py")):
        if "DESIGN.md" in source.read_text(encoding="utf-8"):
            problems.append(
                f"{source.relative_to(ROOT)}: refers to DESIGN.md (the design notes are docs/design.md)"
            )
    assert not problems, "\n".join(problems)


def test_nav_globs_list_the_pages_the_nav_does_not_name() -> None:
    """mkdocs.yml's ``guides/*.md``-style entries (docs/api/hooks.py): named pages stay, the rest follow."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "api" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    files = ["index.md", "guides/b.md", "guides/a.md", "guides/index.md", "results/x.md", "results/y.md"]
    nav = [
        {"Home": "index.md"},
        {"Guides": "guides/*.md"},
        {"Results": [{"X": "results/x.md"}, "results/*.md"]},
        {"Empty": "nothing/*.md"},
    ]
    expanded = hooks._expand(nav, files, ["b"], hooks._explicit(nav))
    assert expanded == [
        {"Home": "index.md"},
        {"Guides": ["guides/index.md", "guides/b.md", "guides/a.md"]},
        {"Results": [{"X": "results/x.md"}, "results/y.md"]},
    ]


def test_docstring_tables_and_literal_blocks_become_markdown() -> None:
    """docs/api/griffe_roles.py: reStructuredText simple tables and ``::`` blocks of docstrings, as Markdown."""
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("docs_griffe_roles", DOCS / "api" / "griffe_roles.py")
    assert spec is not None and spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    table = "Text:\n\n====  =====\na     b\n====  =====\n``x``  one\n      two\ny     three\n====  =====\n\nAfter."
    assert roles._simple_tables(table) == (
        "Text:\n\n| a | b |\n| --- | --- |\n| ``x`` | one two |\n| y | three |\n\n\nAfter."
    )
    literal = "Quick start::\n\n    import manifoldcert\n    x = 1\n\nThen."
    assert (
        roles._literal_blocks(literal)
        == "Quick start:\n\n```python\nimport manifoldcert\nx = 1\n```\n\nThen."
    )
