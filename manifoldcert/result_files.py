"""Result files that cannot be corrupted and describe themselves: locking, repair, run descriptions, merging.

A certification run writes a TSV (one row per example, see :mod:`manifoldcert.runs`) and beside it a JSON *run
description* ``<file>.json``:

- ``config``: what the rows depend on — method, its parameters, n0, n, α, seed, the certify options, data set,
  split, the checkpoint's SHA-256. Resuming a file written with another configuration is refused, and so is
  merging shards whose configurations differ.
- ``about``: what describes the run without changing its rows — versions of manifoldcert and torch, the git commit
  when run from a checkout, the command line, ``guaranteed`` / ``exact``, the shard, the planned indices.

:class:`ResultFile` holds an exclusive lock (``fcntl.flock``) on the TSV while a run appends to it, so a second
writer gets a clear error instead of interleaving rows; a partial last line (a killed or pre-empted job) is dropped
before resuming; every row is flushed and fsynced as it is written. :func:`merge_results` joins shard files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

try:  # POSIX; elsewhere files are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Version of the run-description format.
DESCRIPTION_FORMAT = 1


class ResultFileLockedError(RuntimeError):
    """Another process is writing the result file."""


def description_path(path: str | os.PathLike[str]) -> str:
    """The run description of the result file ``path``: ``<path>.json``."""
    return os.fspath(path) + ".json"


def shard_path(path: str | os.PathLike[str], index: int, count: int) -> str:
    """The file of shard ``index`` of ``count``: ``results.tsv`` → ``results.shard-03-of-16.tsv``."""
    stem, extension = os.path.splitext(os.fspath(path))
    width = len(str(count - 1))
    return f"{stem}.shard-{index:0{width}d}-of-{count:0{width}d}{extension}"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the manifoldcert checkout in use (with ``+dirty`` when it has changes), or None."""
    folder = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def jsonable(value: Any) -> Any:
    """``value`` with tensors, arrays, tuples and other objects turned into JSON values (repr as a last resort)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return repr(value)


def environment_about() -> dict[str, Any]:
    """Versions, commit and command line: the ``about`` part every run description carries."""
    import torch

    from manifoldcert import __version__

    return {
        "manifoldcert": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "git_commit": git_commit(),
        "command": list(sys.argv),
    }


def _config_differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted(set(found) | set(wanted))
    return [
        f"{k}: file has {found.get(k)!r}, this run {wanted.get(k)!r}"
        for k in keys
        if found.get(k) != wanted.get(k)
    ]


def _write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (never half-written)."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_description(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run description of result file ``path``, or None when it has none."""
    try:
        with open(description_path(path), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


class ResultFile:
    """A TSV result file opened for appending rows, locked, repaired and checked against its run description.

    Parameters
    ----------
    path : str
        The TSV; its folder must exist.
    header : sequence of str
        The columns; an existing file with another header is refused.
    config, about : dict
        The run description (see the module notes). An existing file must have been written with an equal
        ``config``; ``about["indices"]`` (the indices this run plans) is merged into the stored list.

    Notes
    -----
    Use as a context manager: on entry the file is locked and its rows read (:attr:`finished`); on exit the lock
    is released, and a file this run created without writing a row is removed with its description.
    """

    def __init__(
        self, path: str, header: Sequence[str], config: dict[str, Any], about: dict[str, Any] | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.header = tuple(header)
        self.config = jsonable(config)
        self.about = jsonable(about or {})
        self.finished: set[int] = set()
        self.rows_written = 0
        self._handle: io.TextIOWrapper | None = None
        self._created = False
        self._has_content = False

    # -- opening --------------------------------------------------------------------------------------------
    def __enter__(self) -> ResultFile:
        self._created = not os.path.exists(self.path)
        handle = open(self.path, "a+", newline="", encoding="utf-8")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._created = False  # the file is the other writer's
                    raise ResultFileLockedError(
                        f"{self.path!r} is being written by another process (it holds the file's lock); wait for "
                        "it to finish, or write to another file (shards: --num-shards / --shard-index)"
                    ) from None
            self._handle = handle
            self._read_existing()
            self._check_description()
        except BaseException:
            self._close(remove_if_empty=True)
            if not handle.closed:
                handle.close()
            raise
        return self

    def _read_existing(self) -> None:
        handle = self._handle
        assert handle is not None
        handle.seek(0)
        text = handle.read()
        if text and not text.endswith("\n"):
            keep = text.rfind("\n") + 1
            dropped = text[keep:]
            handle.truncate(len(text[:keep].encode("utf-8")))
            text = text[:keep]
            logger.warning(
                "%s: dropped a partial last line %r (an interrupted write)", self.path, dropped[:60]
            )
        self._has_content = bool(text)
        lines = list(csv.reader(io.StringIO(text), delimiter="\t"))
        if not lines:
            return
        if tuple(lines[0]) != self.header:
            raise ValueError(
                f"{self.path!r} holds results with other columns ({' '.join(lines[0])}); use another output file "
                "to certify with this method"
            )
        for line_no, row in enumerate(lines[1:], start=2):
            if len(row) != len(self.header):
                raise ValueError(
                    f"{self.path}, line {line_no}: {len(row)} fields, expected {len(self.header)}: the file is "
                    "corrupted (not an interrupted write, which would be the last line); repair or remove it"
                )
            idx = int(row[0])
            if idx in self.finished:
                raise ValueError(
                    f"{self.path}, line {line_no}: example {idx} appears twice; the file is corrupted"
                )
            self.finished.add(idx)

    def _check_description(self) -> None:
        has_content = self._has_content
        stored = read_description(self.path)
        if has_content:
            if stored is None:
                raise ValueError(
                    f"{self.path!r} has no run description ({description_path(self.path)}), so whether it was "
                    "written with these settings cannot be checked; certify into a new file"
                )
            differences = _config_differences(stored.get("config", {}), self.config)
            if differences:
                raise ValueError(
                    f"{self.path!r} was written with other settings; resuming would mix rows of two runs "
                    "(use another output file): " + "; ".join(differences)
                )
            planned = sorted(
                set(stored.get("about", {}).get("indices", [])) | set(self.about.get("indices", []))
            )
            about = {**stored.get("about", {}), **self.about, "indices": planned}
        else:
            about = self.about
        _write_atomically(
            description_path(self.path),
            json.dumps({"format": DESCRIPTION_FORMAT, "config": self.config, "about": about}, indent=1)
            + "\n",
        )
        if not has_content:
            self.write_row(self.header, count=False)

    # -- writing --------------------------------------------------------------------------------------------
    def write_row(self, row: Iterable[Any], *, count: bool = True) -> None:
        """Append one row, flushed and fsynced: after a crash the file holds it whole or (partly) as its last line."""
        handle = self._handle
        if handle is None:
            raise RuntimeError("the result file is not open (use it as a context manager)")
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t", lineterminator="\n").writerow([str(v) for v in row])
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
        if count:
            self.rows_written += 1

    def __exit__(self, *exc_info: object) -> None:
        self._close(remove_if_empty=True)

    def _close(self, *, remove_if_empty: bool) -> None:
        handle, self._handle = self._handle, None
        if handle is not None and not handle.closed:
            handle.close()  # closing releases the lock
        if remove_if_empty and self._created and self.rows_written == 0:
            for leftover in (self.path, description_path(self.path)):
                if os.path.exists(leftover):
                    os.remove(leftover)


def _read_rows(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        text = handle.read()
    if text and not text.endswith("\n"):
        raise ValueError(f"{path}: the last line is partial (an interrupted write); resume the run first")
    lines = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not lines:
        raise ValueError(f"{path}: empty file")
    return lines[0], lines[1:]


def merge_results(
    paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]
) -> dict[str, Any]:
    """Merge shard result files into one, ordered by example index.

    Identical rows (``time`` aside) of one example are kept once; two different rows of one example, files with
    other columns or run configurations (apart from the shard) are refused. Indices a shard planned but holds no
    row for are reported as missing.

    Returns
    -------
    dict
        ``rows`` (written), ``duplicates`` (identical rows dropped), ``missing`` (sorted planned indices without a
        row).
    """
    files = [os.fspath(p) for p in paths]
    out_path = os.fspath(out_path)
    if not files:
        raise ValueError("give the shard files to merge")
    if os.path.abspath(out_path) in {os.path.abspath(p) for p in files}:
        raise ValueError(f"the merged file {out_path!r} is one of the inputs")
    if os.path.exists(out_path):
        raise ValueError(f"{out_path!r} exists; remove it or choose another output file")
    header: list[str] | None = None
    config: dict[str, Any] | None = None
    planned: set[int] = set()
    rows: dict[int, list[str]] = {}
    duplicates = 0
    for path in files:
        found_header, found_rows = _read_rows(path)
        description = read_description(path)
        if description is None:
            raise ValueError(
                f"{path}: no run description ({description_path(path)}); cannot check it matches"
            )
        if header is None:
            header, config = found_header, description["config"]
            time_column = header.index("time") if "time" in header else -1
        elif found_header != header:
            raise ValueError(f"{path}: other columns than {files[0]} ({' '.join(found_header)})")
        elif config is None or description["config"] != config:
            differences = _config_differences(description["config"], config or {})
            raise ValueError(f"{path}: another run configuration than {files[0]}: " + "; ".join(differences))
        planned.update(int(i) for i in description.get("about", {}).get("indices", []))
        for row in found_rows:
            if len(row) != len(header):
                raise ValueError(f"{path}: a row with {len(row)} fields, expected {len(header)}")
            idx = int(row[0])
            if idx in rows:
                other = rows[idx]
                same = all(
                    a == b for k, (a, b) in enumerate(zip(row, other, strict=True)) if k != time_column
                )
                if not same:
                    raise ValueError(f"example {idx} has two different rows (in {path} and an earlier file)")
                duplicates += 1
                continue
            rows[idx] = row
    if header is None or config is None:  # pragma: no cover - files is not empty
        raise ValueError("nothing to merge")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    for idx in sorted(rows):
        writer.writerow(rows[idx])
    missing = sorted(planned - set(rows))
    _write_atomically(out_path, buffer.getvalue())
    about = {**environment_about(), "merged_from": files, "indices": sorted(planned | set(rows))}
    _write_atomically(
        description_path(out_path),
        json.dumps({"format": DESCRIPTION_FORMAT, "config": config, "about": about}, indent=1) + "\n",
    )
    return {"rows": len(rows), "duplicates": duplicates, "missing": missing}
