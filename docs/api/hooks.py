"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml; no plugin dependency).

- **Globbed nav entries.** A nav entry whose file is a glob (``Guides: guides/*.md``, or ``results/*.md`` among a
  section's pages) becomes the pages it matches that the nav does not name elsewhere: those named in
  ``extra.nav_order`` first (in that order), the others by file name, an ``index.md`` before all; each is titled
  by its first heading. A glob that matches nothing drops its entry. So a page added to ``docs/guides/`` (or to
  ``docs/methods/``, ``docs/results/``) appears in the nav without editing mkdocs.yml.
- **Links to source files.** A page may link to a module of the package by its path
  (``[GridGaussian](../../manifoldcert/noises/grid_gaussian.py)``); the site has no source files, so such a link
  becomes a cross-reference to the module's API reference (resolved by mkdocs-autorefs, which fails the strict
  build if the module is not documented). Links to other files of the repository outside ``docs/`` become
  inline code of their repository path. Links that resolve to nothing are left alone, so the strict build
  reports them.
- **The command line.** ``<!-- docs: cli-reference -->`` on a page (docs/api/cli.md) becomes the ``--help`` of
  ``manifoldcert`` and of each of its commands, from :func:`manifoldcert.cli.build_parser`.
- **Sphinx roles.** The docstrings are written for reading in an editor and use Sphinx roles
  (``:class:`Manifold```, ``:func:`~manifoldcert.bounds.clopper_pearson```); in the rendered HTML the role
  prefix is dropped and ``~`` shortens a dotted path to its last part.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from pathlib import Path
from typing import Any

_GLOB_CHARS = re.compile(r"[*?\[]")
# [text](target) where target is a relative path (no scheme, no leading '#' or '/').
_LINK = re.compile(
    r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>(?![a-z][a-z0-9+.-]*:|#|/)[^)\s#]+)(?P<anchor>#[^)\s]*)?\)"
)
_ROLE_HTML = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):<code>(?P<tilde>~?)(?P<path>[^<]*)</code>"
)


def _explicit(entry: Any) -> set[str]:
    """The files a nav entry names without a glob."""
    if isinstance(entry, list):
        return set().union(*(_explicit(item) for item in entry)) if entry else set()
    if isinstance(entry, dict):
        return set().union(*(_explicit(value) for value in entry.values()))
    if isinstance(entry, str) and not _GLOB_CHARS.search(entry):
        return {entry}
    return set()


def _expand(entry: Any, files: list[str], order: list[str], listed: set[str]) -> Any:
    """The nav ``entry`` with every glob replaced by the pages it matches that the nav does not name elsewhere
    (``None`` where that leaves nothing)."""
    if isinstance(entry, list):
        items = []
        for item in entry:
            expanded = _expand(item, files, order, listed)
            if expanded is None:
                continue
            # a bare glob among a section's pages contributes its pages to the section itself
            items += expanded if isinstance(item, str) and isinstance(expanded, list) else [expanded]
        return items or None
    if isinstance(entry, dict):
        ((title, value),) = entry.items()
        value = _expand(value, files, order, listed)
        return None if value is None else {title: value}
    if isinstance(entry, str) and _GLOB_CHARS.search(entry):
        matches = [f for f in files if fnmatch.fnmatch(f, entry) and f not in listed]

        def key(path: str) -> tuple[bool, int, str]:
            stem = posixpath.splitext(posixpath.basename(path))[0]
            rank = order.index(stem) if stem in order else len(order)
            return (stem != "index", rank, path)

        return sorted(matches, key=key) or None
    return entry


def on_config(config: Any) -> Any:
    """Expand globbed nav entries against the Markdown files of ``docs_dir``."""
    docs_dir = Path(config["docs_dir"])
    files = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md"))
    order = list(config["extra"].get("nav_order", []))
    if config["nav"] is not None:
        config["nav"] = _expand(config["nav"], files, order, _explicit(config["nav"])) or []
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Turn links to repository files outside ``docs/`` into API cross-references or inline code."""
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = Path(config["config_file_path"]).resolve().parent
    page_dir = (docs_dir / page.file.src_uri).parent

    def replace(match: re.Match[str]) -> str:
        target = (page_dir / match["target"]).resolve()
        if target.is_relative_to(docs_dir) or not target.is_relative_to(repo) or not target.exists():
            return match[0]
        relative = target.relative_to(repo)
        if relative.parts[0] == "manifoldcert" and relative.suffix == ".py":
            module = ".".join(relative.with_suffix("").parts)
            module = module.removesuffix(".__init__")
            return f"[{match['text']}][{module}]"
        return f"{match['text']} (`{relative.as_posix()}`)"

    markdown = _LINK.sub(replace, markdown)
    if _CLI_MARKER in markdown:
        markdown = markdown.replace(_CLI_MARKER, _cli_reference())
    return markdown


_CLI_MARKER = "<!-- docs: cli-reference -->"


def _cli_reference() -> str:
    """``--help`` of ``manifoldcert`` and of each of its commands, as Markdown sections."""
    import argparse
    import os

    from manifoldcert.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal: a fixed width, the same on every machine
    try:
        parser = build_parser()
        sections = ["## manifoldcert", "", "```text", parser.format_help().rstrip(), "```", ""]
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sub in action.choices.items():
            sections += [f"## manifoldcert {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(sections)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Drop Sphinx role prefixes (``:class:``) from the rendered docstrings."""

    def replace(match: re.Match[str]) -> str:
        path = match["path"]
        if match["tilde"]:
            path = path.rsplit(".", 1)[-1]
        return f"<code>{path}</code>"

    return _ROLE_HTML.sub(replace, html)
