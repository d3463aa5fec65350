"""Every code example of the documentation runs as written.

- **Python blocks.** Every fenced ```` ```python ```` block of ``docs/**/*.md`` and ``README.md`` (indented ones in
  list items included) is executed: the blocks of one page in order, in one namespace, as one test case whose id
  is the page's path, in a fresh temporary working directory, with one torch thread. Tracebacks point at the
  page's own line numbers. A block that must not run carries a visible marker on the line just before its fence,
  ``<!-- docs-test: skip (the reason, e.g. needs ImageNet) -->``; it is still compiled (so it is valid Python),
  and :func:`test_skipped_blocks_are_marked_and_counted` lists every such block. The target is that none are.
- **Shell blocks** (```` ```bash ````, ``sh``, ``shell``, ``console``) are not run, but every ``manifoldcert
  <command>`` (or ``python -m manifoldcert <command>``) in them, and in inline code of the prose, must name a real
  command of :func:`manifoldcert.cli.build_parser` with options that command takes (and a real benchmark after
  ``bench``), and every ``make <target>`` a target of the Makefile.

tests/test_readme.py, tests/test_sequential.py, tests/test_float_soundness.py and tests/test_experiments_spd.py
also execute some of these blocks and check what they print; this file checks that all of them run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PYTHON_LANGUAGES = {"python", "py", "python3"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
SKIP_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
_OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: its language, first line of code (1-based) and source."""

    page: str
    language: str
    line: int
    source: str
    skip_reason: str | None  # None: run it; else the marker's reason ("" when it gives none)


def pages() -> list[Path]:
    """The Markdown pages whose examples are checked: docs/**/*.md and README.md."""
    return sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order, dedented to their fence's indentation."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    blocks = []
    i = 0
    while i < len(lines):
        opening = _OPENING.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].lstrip("{.").rstrip("}").lower()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : j]
        ]
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = SKIP_MARKER.match(lines[k]) if k >= 0 else None
        reason = None if marker is None else (marker["reason"] or "").strip()
        blocks.append(Block(name, language, i + 2, "\n".join(body) + "\n", reason))
        i = j + 1
    return blocks


def _python_blocks() -> dict[str, list[Block]]:
    found = {}
    for path in pages():
        blocks = [b for b in code_blocks(path) if b.language in PYTHON_LANGUAGES]
        if blocks:
            found[path.relative_to(ROOT).as_posix()] = blocks
    return found


PYTHON_BLOCKS = _python_blocks()


@pytest.fixture
def quiet_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh working directory, one torch / OpenMP thread and a non-interactive matplotlib backend."""
    monkeypatch.chdir(tmp_path)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tmp_path
    finally:
        torch.set_num_threads(threads)
        import matplotlib.pyplot as plt

        plt.close("all")


@pytest.mark.parametrize("page", sorted(PYTHON_BLOCKS))
def test_page_python_blocks_run(page: str, quiet_process: Path) -> None:
    namespace: dict = {"__name__": "__main__"}
    blocks = PYTHON_BLOCKS[page]
    start = time.perf_counter()
    for number, block in enumerate(blocks, 1):
        # Leading newlines make the code's line numbers the page's, so a traceback points at the page.
        code = compile("\n" * (block.line - 1) + block.source, str(ROOT / page), "exec")
        if block.skip_reason is not None:
            continue
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(
                f"{page}:{block.line}: python block {number} of {len(blocks)} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    skipped = sum(block.skip_reason is not None for block in blocks)
    print(
        f"{page}: {len(blocks) - skipped} of {len(blocks)} blocks run in {time.perf_counter() - start:.1f} s"
    )


def test_skipped_blocks_are_marked_and_counted() -> None:
    """Every skip marker gives its reason and stands just before a python block; the counts are printed."""
    problems = []
    for path in pages():
        text = path.read_text(encoding="utf-8").splitlines()
        marked_lines = {b.line - 1 for b in code_blocks(path) if b.skip_reason is not None}
        for index, line in enumerate(text):
            match = SKIP_MARKER.match(line)
            if match is None:
                continue
            name = f"{path.relative_to(ROOT).as_posix()}:{index + 1}"
            if not (match["reason"] or "").strip():
                problems.append(f"{name}: a docs-test skip marker without a (reason)")
            following = next((n for n in range(index + 1, len(text)) if text[n].strip()), None)
            if following is None or following + 1 not in marked_lines:
                problems.append(f"{name}: a docs-test skip marker that stands before no code block")
    assert not problems, "\n".join(problems)
    every = [b for blocks in PYTHON_BLOCKS.values() for b in blocks]
    skipped = [b for b in every if b.skip_reason is not None]
    print(
        f"python blocks: {len(every)} found on {len(PYTHON_BLOCKS)} pages, {len(every) - len(skipped)} executed, "
        f"{len(skipped)} skipped"
    )
    for b in skipped:
        print(f"  skipped {b.page}:{b.line} ({b.skip_reason})")


# -- shell blocks: the commands they name exist -------------------------------------------------------------


def _cli() -> tuple[dict[str, argparse.ArgumentParser], dict[str, list[str]]]:
    """The commands of ``manifoldcert`` and, for those with a positional choice (``bench``), its choices."""
    from manifoldcert.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(action.choices)
    choices = {}
    for name, sub in commands.items():
        for a in sub._actions:
            if not a.option_strings and a.choices is not None:
                choices[name] = list(a.choices)
    return commands, choices


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))


def _shell_commands(source: str) -> list[str]:
    """Commands of a shell block: continuation lines joined, comments dropped, split at ; && || |."""
    source = re.sub(r"\\\n", " ", source)
    commands = []
    for line in source.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # a comment (not a '#' inside a word)
        commands += [part.strip() for part in re.split(r"&&|\|\||;|\|", line) if part.strip()]
    return commands


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _check_invocation(words: list[str], where: str, check_options: bool) -> tuple[list[str], int]:
    """Problems with each ``manifoldcert <command> ...`` in ``words``, and how many invocations it holds."""
    commands, choices = _cli()
    problems, count = [], 0
    for index, word in enumerate(words):
        is_script = word == "manifoldcert" or word.endswith("/manifoldcert")
        is_module = word == "manifoldcert" and index > 0 and words[index - 1] == "-m"
        if not (is_script or is_module) or index + 1 >= len(words):
            continue
        command = words[index + 1]
        if command.startswith("-") or command in {"...", "…"}:
            continue  # --help, or a placeholder
        count += 1
        if command not in commands:
            problems.append(
                f"{where}: `manifoldcert {command}` is not a command ({', '.join(sorted(commands))})"
            )
            continue
        rest = words[index + 2 :]
        if command in choices and rest and not rest[0].startswith("-") and rest[0] not in {"...", "…"}:
            if rest[0] not in choices[command]:
                problems.append(f"{where}: `manifoldcert {command} {rest[0]}`: not one of {choices[command]}")
        if check_options:
            known = commands[command]._option_string_actions
            for option in rest:
                name = option.split("=", 1)[0]
                if name.startswith("--") and len(name) > 2 and name not in known:
                    problems.append(f"{where}: `manifoldcert {command}` has no option {name}")
    return problems, count


def test_shell_blocks_name_real_commands() -> None:
    problems, invocations, blocks = [], 0, 0
    targets = _make_targets()
    for path in pages():
        for block in code_blocks(path):
            if block.language not in SHELL_LANGUAGES:
                continue
            blocks += 1
            for command in _shell_commands(block.source):
                words = [w for w in _words(command) if w not in {"$", "exec", "sudo"}]
                where = f"{block.page}:{block.line}"
                found, count = _check_invocation(words, where, check_options=True)
                problems += found
                invocations += count
                if words and words[0] == "make":
                    for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
                        if target not in targets:
                            problems.append(f"{where}: `make {target}` is not a Makefile target")
    assert not problems, "\n".join(problems)
    assert invocations > 0
    print(f"shell blocks: {blocks}, manifoldcert invocations checked: {invocations}")


def test_inline_code_names_real_commands() -> None:
    """``manifoldcert <command>`` in the prose's inline code names a real command (its options are checked
    where the span is a whole command line)."""
    problems, count = [], 0
    for path in pages():
        text = path.read_text(encoding="utf-8")
        prose = re.sub(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", "", text, flags=re.M | re.S)
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose):
            if not re.search(r"(^|\s)manifoldcert\s+[a-z]", span):
                continue
            found, n = _check_invocation(
                _words(span), f"{path.relative_to(ROOT).as_posix()}: `{span}`", False
            )
            problems += found
            count += n
    assert not problems, "\n".join(problems)
    print(f"inline manifoldcert commands checked: {count}")


def test_collector_reads_indented_and_marked_blocks(tmp_path: Path) -> None:
    """The collector itself: indented fences in list items, longer fences, skip markers, line numbers."""
    page = tmp_path / "page.md"
    text = (
        "# t\n\n- item\n\n  ```python\n  x = 1\n  ```\n\n<!-- docs-test: skip (needs a GPU) -->\n\n"
        "````py\ny = 2\n````\n\n```bash\nmanifoldcert report r.tsv\n```\n"
    )
    page.write_text(text, encoding="utf-8")
    blocks = code_blocks(page)
    assert [(b.language, b.line, b.source, b.skip_reason) for b in blocks] == [
        ("python", 6, "x = 1\n", None),
        ("py", 12, "y = 2\n", "needs a GPU"),
        ("bash", 16, "manifoldcert report r.tsv\n", None),
    ]
    problems, count = _check_invocation(["manifoldcert", "bench", "nothing", "--no-such"], "t", True)
    assert count == 1 and len(problems) == 2
