"""A griffe extension (``extensions:`` of the python handler in mkdocs.yml): the docstrings' reStructuredText bits
(Sphinx roles, simple tables, ``::`` literal blocks) rendered as Markdown.

The docstrings use Sphinx roles, ``:class:`Manifold```, ``:func:`~manifoldcert.bounds.clopper_pearson```,
``:meth:`certify```, which Markdown would print as they are. Each is resolved the way Sphinx would — a dotted
path as written, a bare name in the enclosing class, then in the module (imports included) — and becomes a
cross-reference to the object's entry in the API reference (``~`` shows only the last part); an attribute without
an entry of its own links to its class. A dotted path into the package that names nothing fails the strict build
(a warning naming the docstring); a bare name found nowhere, and roles to other objects (private ones, torch's),
stay inline code.

Simple tables (``=====  =====`` borders) become Markdown tables and literal blocks (``Quick start::`` followed by
an indented block) fenced Python code; the docstrings themselves stay plain reStructuredText for editors and
``help()``.
"""

from __future__ import annotations

import logging
import re
from html import escape
from pathlib import Path
from typing import Any

from griffe import Alias, Extension, Object

_log = logging.getLogger("mkdocs.plugins.griffe_roles")
_ROLE = re.compile(
    r":(?:py:)?(?P<kind>class|func|meth|mod|attr|data|exc|obj|const):`(?P<body>[^`]+)`",
)
_API = Path(__file__).resolve().parent


def _rendered_modules() -> set[str]:
    """The modules with a ``::: module`` block in docs/api/*.md (their public members are rendered)."""
    modules = set()
    for page in _API.glob("*.md"):
        modules.update(re.findall(r"^::: *([\w.]+)", page.read_text(encoding="utf-8"), flags=re.M))
    return modules


def _path_of(member: Any) -> str | None:
    """The canonical path of a griffe object or alias; ``None`` when an alias points outside what was loaded."""
    try:
        return member.final_target.path if isinstance(member, Alias) else member.path
    except Exception:  # an alias to a package that was not loaded (torch, numpy, ...)
        return member.target_path if isinstance(member, Alias) else None


_BORDER = re.compile(r"^ *=+( +=+)+ *$")


def _simple_tables(text: str) -> str:
    """reStructuredText simple tables (``=====  =====`` borders) as Markdown pipe tables.

    The columns are the runs of ``=`` of the first border; a line whose first column is blank continues the row
    above it; the rows between the first two borders are the header when the table has three borders."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        borders = [i]
        j = i + 1
        while j < len(lines) and len(borders) < 3:
            if _BORDER.match(lines[j]):
                borders.append(j)
            elif (
                not lines[j].strip() and len(borders) == 2 and j + 1 < len(lines) and not lines[j + 1].strip()
            ):
                break
            j += 1
        if len(borders) < 2:
            out.append(lines[i])
            i += 1
            continue
        if len(borders) == 3 and any(not line.strip() for line in lines[borders[0] + 1 : borders[1]]):
            borders = borders[
                :2
            ]  # a blank line in the "header": a headerless table ended at the second border
        spans = [m.span() for m in re.finditer(r"=+", lines[i])]

        def cells(line: str, spans: list[tuple[int, int]] = spans) -> list[str]:
            starts = [start for start, _ in spans] + [None]
            return [line[starts[k] : starts[k + 1]].strip() for k in range(len(spans))]

        def rows(block: list[str]) -> list[list[str]]:
            result: list[list[str]] = []
            for line in block:
                if not line.strip():
                    continue
                row = cells(line)
                if result and not row[0]:
                    result[-1] = [f"{a} {b}".strip() for a, b in zip(result[-1], row, strict=True)]
                else:
                    result.append(row)
            return result

        if len(borders) == 3:
            header = rows(lines[borders[0] + 1 : borders[1]])
            body = rows(lines[borders[1] + 1 : borders[2]])
            end = borders[2]
        else:
            header, body, end = [[""] * len(spans)], rows(lines[borders[0] + 1 : borders[1]]), borders[1]
        head = (
            [" ".join(column).strip() for column in zip(*header, strict=True)]
            if header
            else [""] * len(spans)
        )

        def markdown(row: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

        if out and out[-1].strip():
            out.append("")
        out += [markdown(head), "| " + " | ".join("---" for _ in spans) + " |", *map(markdown, body), ""]
        i = end + 1
    return "\n".join(out)


def _literal_blocks(text: str) -> str:
    """reStructuredText literal blocks (a paragraph ending in ``::``, then an indented block) as fenced Python."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 2 < len(lines) and not lines[i + 1].strip():
            indent = len(line) - len(line.lstrip())
            j = i + 2
            block: list[str] = []
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
            ):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                stripped = line.rstrip()[:-2]
                out.append(stripped.rstrip() if stripped.endswith(" ") or not stripped else stripped + ":")
                depth = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                pad = " " * indent
                out += [
                    "",
                    pad + "```python",
                    *(pad + b[depth:] if b.strip() else "" for b in block),
                    pad + "```",
                ]
                if j < len(lines) and lines[j].strip():
                    out.append("")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class SphinxRoles(Extension):
    """Rewrite every docstring of the loaded package: tables, literal blocks, and roles as cross-references."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered = _rendered_modules()

    def on_package(self, *, pkg: Object, loader: Any, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and everything under it, once the whole tree is loaded."""
        if not pkg.path.startswith("manifoldcert"):
            return
        self.collection = loader.modules_collection
        self._walk(pkg)

    def _walk(self, obj: Object) -> None:
        if obj.docstring is not None:
            text = _literal_blocks(_simple_tables(obj.docstring.value))
            obj.docstring.value = _ROLE.sub(lambda m: self._replace(m, obj), text)
        for member in obj.members.values():
            if not isinstance(member, Alias) and member.path.startswith(obj.path + "."):
                self._walk(member)

    def _lookup(self, scope: Object, name: str) -> str | None:
        head, _, rest = name.partition(".")
        members = scope.all_members if scope.is_class else scope.members  # a class's inherited ones too
        member = members.get(head)
        if member is None:
            return None
        path = _path_of(member)
        return None if path is None else (f"{path}.{rest}" if rest else path)

    def _resolve(self, target: str, obj: Object) -> str | None:
        if target.startswith("manifoldcert"):
            try:
                return _path_of(self.collection[target])
            except Exception:
                return None
        scope: Object | None = obj
        while scope is not None:  # the object itself (a class's members), its class, its module, the packages
            path = self._lookup(scope, target)
            if path is not None:
                return path
            scope = scope.parent
        return None

    def _anchor(self, path: str) -> tuple[str, bool]:
        """The identifier to link for ``path`` and whether the reference renders it.

        An attribute or method the reference leaves out (it has no docstring of its own) is linked through the
        nearest enclosing object that has an entry (its class, or its module)."""
        parts = path.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            return path, False
        if not any(".".join(parts[:i]) in self.rendered for i in range(1, len(parts) + 1)):
            return path, False
        while len(parts) > 1:
            try:
                found = self.collection[".".join(parts)]
            except Exception:
                return path, False
            if found.is_module or found.is_class or (found.docstring is not None and found.docstring.value):
                return ".".join(parts), True
            parts = parts[:-1]
        return path, False

    def _replace(self, match: re.Match[str], obj: Object) -> str:
        body = re.sub(r"\s+", " ", match["body"].strip())
        explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
        target = (
            (explicit["target"] if explicit else body).removeprefix("~").removesuffix("()").replace(" ", "")
        )
        if explicit:
            title = explicit["title"]
        elif body.startswith("~"):
            title = target.rsplit(".", 1)[-1]
        else:
            title = target
        path = self._resolve(target, obj)
        if path is None:
            if target.startswith("manifoldcert."):  # a dotted path into the package that leads nowhere
                _log.warning("%s: the role %s names nothing that exists", obj.path, match[0])
            return f"`{title}`"
        if not path.startswith("manifoldcert"):
            return f"`{title}`"
        identifier, rendered = self._anchor(path)
        optional = "" if rendered else " optional"
        return f'<autoref identifier="{escape(identifier)}"{optional}><code>{escape(title)}</code></autoref>'
