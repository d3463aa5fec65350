"""Read certification result files and turn them into tables, curves and summary scores.

A certification run writes one tab-separated file with one row per test example. The first six columns
are those of Cohen et al. (``idx label predict radius correct time``; ``predict`` is -1 on abstention),
followed by ``radius_l1 radius_l2 radius_linf p_lower norm method sigma`` and possibly ``n0 n guaranteed``
and method-specific columns (docs/conventions.md, "Results files"); unknown columns are ignored here.

Two more kinds of file are read:

* Cohen et al.'s own ``certify.py`` output (locuslab/smoothing): only the six first columns, ``time`` written
  as a ``datetime.timedelta`` string (``0:00:14.206886``). Its ``radius`` is an l2 radius (Gaussian smoothing),
  the method is ``"cohen"`` and σ is unknown (NaN) unless given.
* Files with a ``guaranteed`` column (``1``/``0`` per row): rows with ``0`` hold approximate radii, not
  certificates at level 1 − α; tables mark them "(approx.)" and plots draw them dotted. Older files without
  the column are not marked.

Definitions (Cohen et al., 2019; Hong et al., ECCV 2022):

* base accuracy: fraction of rows where the base classifier is correct on the clean input (the file's
  ``base_predict`` column; blank for files without it, such as Cohen et al.'s);
* smoothed accuracy: fraction of rows where the smoothed classifier is correct (abstentions count as wrong);
  it equals the certified accuracy at radius 0;
* certified accuracy at radius ``R``: fraction of *all* rows that are correct with certified radius ``>= R``;
* average certified radius (ACR): mean over all rows of ``radius * correct``;
* robustness score (UniCR, Eq. 5): ``∫_0^∞ max_σ Acc_σ(R) dR``, the area under the envelope of the certified
  accuracy curves of several runs of one method (one per σ). For a single run it equals the ACR.

A radius in a norm other than the file's native ``norm`` follows from the norm inequalities of
docs/conventions.md ("Units"); tables mark such columns "l1→l2 (implied)" and plots draw them dashed.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from manifoldcert._validation import check_alpha, check_name, check_output_path
from manifoldcert.certificate import implied_radius

NORMS = ("l1", "l2", "linf")
#: Cohen et al.'s columns (locuslab/smoothing ``certify.py``), first in every results file.
COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
#: The columns manifoldcert adds after Cohen et al.'s (docs/conventions.md, "Results files").
EXTRA_COLUMNS = ("radius_l1", "radius_l2", "radius_linf", "p_lower", "norm", "method", "sigma")
REQUIRED_COLUMNS = COHEN_COLUMNS + EXTRA_COLUMNS
_RADIUS_FIELDS = tuple(f"radius_{n}" for n in NORMS)
_DUPLICATES_SHOWN = 5


@dataclass(frozen=True, eq=False)
class ResultTable:
    """The results of one certification run (one row per test example).

    Attributes
    ----------
    name : str
        Label used in tables (by default :func:`default_name`, the file stem).
    method : str
        Certification method (``""`` when the file has no rows; ``"cohen"`` for Cohen et al.'s files).
    sigma : float
        Noise level of the run (NaN when the file has no rows, the column is empty or absent, or σ varies per
        input as with input-dependent smoothing).
    idx, label, predict : ndarray of int
        Example index, true label and prediction (``-1`` on abstention).
    correct : ndarray of bool
        Whether the smoothed prediction is correct (never true on abstention).
    radius_l1, radius_l2, radius_linf : ndarray of float
        Certified radius in each norm; NaN where the method does not certify that norm.
    time : ndarray of float
        Certification time per example, in seconds.
    native_norm : str
        The norm the method certifies natively (``"l1"``, ``"l2"`` or ``"linf"``; ``""`` when no rows).
    guaranteed : ndarray of bool or None
        Per row, whether the radius is a certificate at level 1 − α (the file's ``guaranteed`` column);
        ``None`` when the file has no such column (written before it existed).
    base_predict : ndarray of int or None
        Per row, the base classifier's class on the clean input (the file's ``base_predict`` column); ``None``
        when the file has none.
    source : str
        The file the table was read from (``""`` when built in memory).
    """

    name: str
    method: str
    sigma: float
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    correct: np.ndarray
    radius_l1: np.ndarray
    radius_l2: np.ndarray
    radius_linf: np.ndarray
    time: np.ndarray
    native_norm: str
    guaranteed: np.ndarray | None = None
    base_predict: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        names = ("idx", "label", "predict", "correct", *_RADIUS_FIELDS, "time")
        arrays = {k: getattr(self, k) for k in names}
        for optional in ("guaranteed", "base_predict"):
            if getattr(self, optional) is not None:
                arrays[optional] = getattr(self, optional)
        lengths = {k: np.shape(v) for k, v in arrays.items()}
        if len({s for s in lengths.values()}) != 1 or len(next(iter(lengths.values()))) != 1:
            raise ValueError(f"ResultTable arrays must be 1-D and of equal length, got shapes {lengths}")
        for k, v in arrays.items():  # freeze the arrays too, not only the attributes
            v = np.array(v, dtype=bool if k in ("correct", "guaranteed") else None, copy=True)
            v.setflags(write=False)
            object.__setattr__(self, k, v)

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def radii(self, norm: str) -> np.ndarray:
        """Certified radii in ``norm`` (``"l1"``, ``"l2"`` or ``"linf"``), one per row."""
        check_name(norm, NORMS, "norm")
        return getattr(self, f"radius_{norm}")

    @property
    def mean_time(self) -> float:
        """Mean certification time per example in seconds (NaN for an empty table)."""
        return float(self.time.mean()) if len(self) else math.nan

    @property
    def approximate_rows(self) -> int:
        """Number of rows marked ``guaranteed = 0`` (0 when the file has no ``guaranteed`` column)."""
        return 0 if self.guaranteed is None else int(np.count_nonzero(~self.guaranteed))

    def implied(self, norm: str) -> bool:
        """Whether radii in ``norm`` are implied by norm inequalities from another, native norm."""
        check_name(norm, NORMS, "norm")
        return self.native_norm in NORMS and norm != self.native_norm


# ------------------------------------------------------------------------------------------------------------
# Reading

# str(datetime.timedelta): "[-]D day[s], H:MM:SS[.ffffff]" (days only when nonzero), as Cohen et al. write `time`.
_TIMEDELTA = re.compile(r"^(?:(-?\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d*)?)$")


def _parse_float(text: str) -> float:
    return float(text) if text.strip() else math.nan


def _parse_time(text: str) -> float:
    """Seconds from a float or a ``datetime.timedelta`` string (``0:00:14.206886``, ``1 day, 2:03:04.5``)."""
    t = text.strip()
    try:
        return _parse_float(t)
    except ValueError:
        pass
    m = _TIMEDELTA.match(t)
    if m is None:
        raise ValueError(f"expected seconds or a timedelta such as 0:00:14.206886, got {text!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true"):
        return True
    if t in ("0", "false"):
        return False
    raise ValueError(f"expected 0/1, got {text!r}")


def _single_value(values: list[str], column: str, path: str) -> str:
    distinct = sorted(set(values))
    if len(distinct) > 1:
        raise ValueError(f"{path}: column {column!r} must be the same on every row, found {distinct}")
    return distinct[0] if distinct else ""


def default_name(path: str | os.PathLike[str]) -> str:
    """A result file's default name: its file name without a ``.tsv``/``.txt``/``.csv`` extension.

    Other suffixes are kept: Cohen et al.'s files are named like ``noise_0.25/test/sigma_0.25``.
    """
    p = Path(path)
    return p.stem if p.suffix.lower() in (".tsv", ".txt", ".csv") else p.name


def _distinct_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Default names, with as many parent folders as it takes to tell apart files of the same name."""
    parts = [Path(os.path.abspath(p)).parts[:-1] for p in paths]
    names = [default_name(p) for p in paths]
    for depth in range(1, max(len(q) for q in parts) + 1):
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            break
        names = [
            "/".join([*q[-depth:], default_name(p)]) if default_name(p) in clashes or "/" in n else n
            for p, q, n in zip(paths, parts, names, strict=True)
        ]
    return names


def _check_unique_idx(idx: list[int], path: str) -> None:
    """Refuse a file listing an example twice (e.g. two writers appending to one file)."""
    lines: dict[int, list[int]] = {}
    for line_no, i in enumerate(idx, start=2):
        lines.setdefault(i, []).append(line_no)
    dup = {i: ls for i, ls in lines.items() if len(ls) > 1}
    if not dup:
        return
    extra = sum(len(ls) - 1 for ls in dup.values())
    shown = "; ".join(
        f"idx {i} on lines {', '.join(map(str, ls))}" for i, ls in list(dup.items())[:_DUPLICATES_SHOWN]
    )
    more = f"; and {len(dup) - _DUPLICATES_SHOWN} more" if len(dup) > _DUPLICATES_SHOWN else ""
    raise ValueError(
        f"{path}: {len(dup)} duplicated idx value(s), {extra} extra row(s) in {len(idx)}: {shown}{more}. "
        "Each example must appear once (were two runs written to one file?); the accuracies would count "
        "them twice"
    )


def read_results(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    method: str | None = None,
    sigma: float | None = None,
) -> ResultTable:
    """Read a tab-separated certification result file.

    Parameters
    ----------
    path : str or PathLike
        The TSV file (header first; unknown extra columns are ignored). Either manifoldcert's columns
        (docs/conventions.md, "Results files") or only Cohen et al.'s six ``idx label predict radius correct
        time`` (locuslab/smoothing ``certify.py``), whose ``radius`` is taken as l2 (it also certifies l1 at
        the same radius; l∞ would need the input dimension and is left NaN).
    name : str, optional
        Label for tables (and legends); defaults to :func:`default_name` (the file stem, or the file name
        when its suffix is not ``.tsv``/``.txt``/``.csv``).
    method : str, optional
        Method of a file without a ``method`` column (default ``"cohen"``); must agree with the column if
        there is one.
    sigma : float, optional
        σ of a file without a ``sigma`` column or with an empty one (default NaN, unknown); must agree with
        the column if there is one.

    Returns
    -------
    ResultTable
        When a row's ``radius_<native norm>`` is empty or NaN, the ``radius`` column is used instead. ``time``
        may be seconds or a ``datetime.timedelta`` string.

    Raises
    ------
    ValueError
        If required columns are missing, a value cannot be parsed, a radius is negative, an ``idx`` appears on
        more than one row, ``method``/``norm``/``sigma`` vary between rows, or ``method``/``sigma`` disagree
        with the file.
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header with columns {' '.join(REQUIRED_COLUMNS)}")
    header = [c.strip() for c in rows[0]]
    # Cohen et al.'s format: their six columns and none of ours.
    cohen_format = all(c in header for c in COHEN_COLUMNS) and not any(c in header for c in EXTRA_COLUMNS)
    columns = COHEN_COLUMNS if cohen_format else REQUIRED_COLUMNS
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})")
    columns = (*columns, *(c for c in ("guaranteed", "base_predict") if c in header))
    col = {c: header.index(c) for c in columns}

    parsed: dict[str, list] = {c: [] for c in columns}
    parsers: dict[str, Callable[[str], Any]] = {
        "idx": int,
        "label": int,
        "predict": int,
        "base_predict": int,
        "correct": _parse_bool,
        "guaranteed": _parse_bool,
        "time": _parse_time,
        "norm": str.strip,
        "method": str.strip,
        "sigma": str.strip,
    }
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise ValueError(f"{path}, line {line_no}: {len(row)} fields, expected {len(header)}")
        for c in columns:
            text = row[col[c]]
            try:
                parsed[c].append(parsers.get(c, _parse_float)(text))
            except ValueError as err:
                raise ValueError(f"{path}, line {line_no}, column {c!r}: cannot parse {text!r}") from err
    _check_unique_idx(parsed["idx"], path)
    n_rows = len(parsed["idx"])
    radius = np.asarray(parsed["radius"], dtype=float)

    if cohen_format:
        native = "l2" if n_rows else ""
        file_method = "cohen" if method is None else method
        file_sigma = math.nan if sigma is None else float(sigma)
        radii = {
            "radius_l2": radius.copy(),
            "radius_l1": np.array(
                [implied_radius(r, certified_norm="l2", norm="l1", dim=None) for r in radius]
            ),
            "radius_linf": np.full(n_rows, math.nan),
        }
    else:
        native = _single_value([s.lower() for s in parsed["norm"]], "norm", path)
        file_method = _single_value(parsed["method"], "method", path)
        if method is not None and n_rows and method != file_method:
            raise ValueError(
                f"{path}: method {method!r} given, but the file's 'method' column is {file_method!r}"
            )
        # One σ per run, except for input-dependent smoothing where each row records its own σ(x).
        sigma_texts = set(parsed["sigma"])
        sigma_text = sigma_texts.pop() if len(sigma_texts) == 1 else ""
        try:
            file_sigma = _parse_float(sigma_text)
        except ValueError as err:
            raise ValueError(f"{path}: column 'sigma': cannot parse {sigma_text!r}") from err
        if sigma is not None:
            if len(sigma_texts) > 0:
                raise ValueError(f"{path}: sigma {sigma:g} given, but σ varies between the file's rows")
            if not math.isnan(file_sigma) and not math.isclose(file_sigma, sigma):
                raise ValueError(
                    f"{path}: sigma {sigma:g} given, but the file's 'sigma' column is {file_sigma:g}"
                )
            file_sigma = float(sigma)
        radii = {c: np.asarray(parsed[c], dtype=float) for c in _RADIUS_FIELDS}
        if native in NORMS:  # fall back on Cohen's `radius` column for the native norm
            r = radii[f"radius_{native}"]
            gap = np.isnan(r)
            r[gap] = radius[gap]
    for c, r in radii.items():
        if np.any(r < 0):
            raise ValueError(
                f"{path}: column {c!r} has negative radii (first at idx {parsed['idx'][np.argmax(r < 0)]})"
            )

    return ResultTable(
        name=default_name(path) if name is None else name,
        method=file_method,
        sigma=file_sigma,
        idx=np.asarray(parsed["idx"], dtype=np.int64),
        label=np.asarray(parsed["label"], dtype=np.int64),
        predict=np.asarray(parsed["predict"], dtype=np.int64),
        correct=np.asarray(parsed["correct"], dtype=bool),
        time=np.asarray(parsed["time"], dtype=float),
        native_norm=native,
        guaranteed=np.asarray(parsed["guaranteed"], dtype=bool) if "guaranteed" in parsed else None,
        base_predict=np.asarray(parsed["base_predict"], dtype=np.int64) if "base_predict" in parsed else None,
        source=path,
        **radii,
    )


# ------------------------------------------------------------------------------------------------------------
# Scores


def _correct_radii(table: ResultTable, norm: str) -> np.ndarray:
    """Sorted radii of the correct rows; a correct row without a radius in ``norm`` is an error."""
    r = table.radii(norm)[table.correct]
    if np.isnan(r).any():
        raise ValueError(
            f"table {table.name!r} (method {table.method!r}) has no {norm} radius for "
            f"{int(np.isnan(r).sum())} correct row(s); does the method certify {norm}?"
        )
    return np.sort(r)


def _accuracy_at(sorted_radii: np.ndarray, n: int, radii: np.ndarray) -> np.ndarray:
    """Fraction of ``n`` rows whose (correct-row) radius is >= each of ``radii``."""
    if n == 0:
        return np.full(radii.shape, math.nan)
    return (sorted_radii.size - np.searchsorted(sorted_radii, radii, side="left")) / n


def certified_accuracy(
    table: ResultTable, radii: float | Sequence[float] | np.ndarray, norm: str = "l2"
) -> np.ndarray:
    """Certified accuracy at each radius: fraction of all rows with ``correct and radius >= r``.

    Parameters
    ----------
    table : ResultTable
    radii : float or array_like
        Radii at which to evaluate.
    norm : {"l1", "l2", "linf"}

    Returns
    -------
    ndarray of float, same shape as ``radii`` (NaN for an empty table).
    """
    radii = np.asarray(radii, dtype=float)
    return _accuracy_at(_correct_radii(table, norm), len(table), radii)


def high_probability_accuracy(
    table: ResultTable,
    radii: float | Sequence[float] | np.ndarray,
    *,
    alpha: float,
    rho: float = 0.001,
    norm: str = "l2",
) -> np.ndarray:
    """A lower bound on the certified accuracy of the *smoothed classifier* that holds with probability 1 − ρ.

    Each of the ``m`` certificates is wrong with probability at most ``alpha``, so the observed certified
    accuracy ``â`` may overstate the true one. Bernstein's inequality on the ``m`` independent failure
    indicators gives, with probability ``>= 1 − rho``,

    ``accuracy >= â − alpha − sqrt(alpha (1 − alpha) log(1/rho) / m) − log(1/rho) / (3 m)``

    (Cohen, Rosenfeld and Kolter 2019, Appendix — ``HighProbAccuracy`` of their analysis code). The result is
    not clipped at 0.
    """
    alpha = check_alpha(alpha)
    rho = check_alpha(rho, "rho")
    m = len(table)
    log_term = math.log(1.0 / rho)
    slack = alpha + math.sqrt(alpha * (1 - alpha) * log_term / m) + log_term / (3 * m)
    return certified_accuracy(table, radii, norm) - slack


def base_accuracy(table: ResultTable) -> float:
    """Accuracy of the base classifier on the clean inputs of the table's rows (``base_predict == label``).

    NaN for an empty table or a file without the ``base_predict`` column.
    """
    if table.base_predict is None or not len(table):
        return math.nan
    return float((table.base_predict == table.label).mean())


def smoothed_accuracy(table: ResultTable) -> float:
    """Accuracy of the smoothed classifier: the fraction of rows it classifies correctly.

    Abstentions count as wrong (Cohen et al., 2019), so this equals the certified accuracy at radius 0. NaN for
    an empty table.
    """
    return float(table.correct.mean()) if len(table) else math.nan


def clean_accuracy(table: ResultTable) -> float:
    """The former name of :func:`smoothed_accuracy` (kept for existing callers)."""
    return smoothed_accuracy(table)


def average_certified_radius(table: ResultTable, norm: str = "l2") -> float:
    """Mean over all rows of ``radius * correct`` (wrong predictions and abstentions count 0).

    May be ``inf`` if a correct row has an infinite radius; NaN for an empty table.
    """
    r = _correct_radii(table, norm)
    return float(r.sum() / len(table)) if len(table) else math.nan


def envelope_certified_accuracy(
    tables: Sequence[ResultTable], radii: float | Sequence[float] | np.ndarray, norm: str = "l2"
) -> np.ndarray:
    """``max_σ Acc_σ(r)`` over ``tables`` at each radius (empty tables are ignored; NaN if all are empty).

    Meant for runs of one method at several σ (:func:`envelope_groups` forms such groups from mixed tables).
    """
    radii = np.asarray(radii, dtype=float)
    curves = [certified_accuracy(t, radii, norm) for t in tables if len(t)]
    return np.max(curves, axis=0) if curves else np.full(radii.shape, math.nan)


def _envelope_area(tables: Sequence[ResultTable], norm: str) -> float:
    """Exact area under the envelope of the step curves; ``inf`` if any correct radius is infinite."""
    curves = [(_correct_radii(t, norm), len(t)) for t in tables if len(t)]
    if not curves:
        return math.nan
    all_r = np.concatenate([r for r, _ in curves])
    if np.isinf(all_r).any():
        return math.inf
    # Each Acc_σ is constant on (b_k, b_{k+1}] between consecutive breakpoints, equal to its value at b_{k+1}.
    breaks = np.unique(all_r[all_r > 0])
    if breaks.size == 0:
        return 0.0
    widths = np.diff(breaks, prepend=0.0)
    env = np.max([_accuracy_at(r, n, breaks) for r, n in curves], axis=0)
    return float(np.sum(widths * env))


def robustness_score(
    tables: ResultTable | Sequence[ResultTable],
    norm: str = "l2",
    radius_grid: Sequence[float] | np.ndarray | None = None,
) -> float:
    """UniCR's robustness score ``∫_0^∞ max_σ Acc_σ(R) dR`` (Hong et al., ECCV 2022, Eq. 5).

    Parameters
    ----------
    tables : ResultTable or sequence of ResultTable
        One run per candidate noise level σ, all of one method (empty tables are ignored; see
        :func:`envelope_groups`).
    norm : {"l1", "l2", "linf"}
    radius_grid : array_like, optional
        If given, approximate the integral with the trapezoidal rule on this increasing grid of radii
        ``>= 0`` (truncated to the grid's range, as in grid-based evaluations). By default the integral
        is computed exactly from the step functions.

    Returns
    -------
    float
        The score; for a single table it equals :func:`average_certified_radius`. NaN if all tables are empty.

    Raises
    ------
    ValueError
        If a correct row has an infinite radius (exact integral diverges), or the grid is invalid.
    """
    if isinstance(tables, ResultTable):
        tables = [tables]
    check_name(norm, NORMS, "norm")
    if radius_grid is not None:
        grid = np.asarray(radius_grid, dtype=float)
        if (
            grid.ndim != 1
            or grid.size < 2
            or not np.all(np.isfinite(grid))
            or grid[0] < 0
            or np.any(np.diff(grid) <= 0)
        ):
            raise ValueError("radius_grid must be a strictly increasing 1-D array of >= 2 finite radii >= 0")
        env = envelope_certified_accuracy(tables, grid, norm)
        return float(np.sum(np.diff(grid) * (env[1:] + env[:-1]) / 2))
    area = _envelope_area(tables, norm)
    if math.isinf(area):
        names = [t.name for t in tables if np.isinf(t.radii(norm)[t.correct]).any()]
        raise ValueError(
            f"robustness score is infinite: correct rows with infinite {norm} radius in {', '.join(names)}; "
            "pass radius_grid to integrate over a finite range"
        )
    return area


# ------------------------------------------------------------------------------------------------------------
# Labels, marks and groups


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def norm_label(table: ResultTable, norm: str) -> str:
    """``norm``, or e.g. ``"l1→l2 (implied)"`` when the radii follow from the table's native norm."""
    return f"{table.native_norm}→{norm} (implied)" if table.implied(norm) else norm


def approximation_mark(table: ResultTable) -> str:
    """``" (approx.)"`` when every row is ``guaranteed = 0``, ``" (approx.: k of N rows)"`` when some are."""
    k = table.approximate_rows
    if k == 0:
        return ""
    return " (approx.)" if k == len(table) else f" (approx.: {k} of {len(table)} rows)"


def _file_name(table: ResultTable) -> str:
    return Path(table.source).name if table.source else table.name


def _is_default_name(table: ResultTable) -> bool:
    """Whether the table's name is its file's default name, possibly prefixed by parent folders."""
    full = "/".join([*Path(os.path.abspath(table.source)).parts[:-1], default_name(table.source)])
    return full.endswith("/" + table.name)


def legend_labels(tables: Sequence[ResultTable]) -> list[str]:
    """Legend labels: ``"<method> σ=<sigma>"`` (e.g. ``"cohen σ=0.25"``).

    A table given an explicit name (other than its :func:`default_name`, with or without parent folders)
    keeps it; a table whose method or σ is unknown, or whose method-and-σ label another table shares, is
    labelled by its name (the file stem).
    """
    auto = [f"{t.method} σ={t.sigma:g}" if t.method and math.isfinite(t.sigma) else None for t in tables]
    labels = []
    for t, a in zip(tables, auto, strict=True):
        explicit = bool(t.source) and not _is_default_name(t)
        labels.append(t.name if explicit or a is None or auto.count(a) > 1 else a)
    return labels


def envelope_groups(tables: Sequence[ResultTable]) -> list[tuple[str, list[ResultTable]]]:
    """The runs over which a "best over σ" envelope is meaningful: one group per method with >= 2 runs.

    Empty tables are left out. Returns ``(label, tables)`` pairs in order of first appearance, labelled e.g.
    ``"envelope of cohen over σ ∈ {0.25, 0.5}"`` (``"... over runs a, b"`` when σ is unknown or repeated).
    An envelope across different methods would mix certificates of different meaning, so none is formed.
    """
    by_method: dict[str, list[ResultTable]] = {}
    for t in tables:
        if len(t):
            by_method.setdefault(t.method, []).append(t)
    groups = []
    for method, runs in by_method.items():
        if len(runs) < 2:
            continue
        sigmas = [t.sigma for t in runs]
        if all(math.isfinite(s) for s in sigmas) and len(set(sigmas)) == len(sigmas):
            over = "σ ∈ {" + ", ".join(f"{s:g}" for s in sorted(sigmas)) + "}"
        else:
            over = "runs " + ", ".join(t.name for t in runs)
        groups.append((f"envelope of {method or '(no method)'} over {over}", runs))
    return groups


def example_set_warning(tables: Sequence[ResultTable]) -> str | None:
    """A warning line when the tables cover different examples (``idx`` sets), else None.

    E.g. ``"warning: the files cover different examples: a.tsv 100, b.tsv 360 (100 in common)"``: their
    accuracies are over different test sets and not directly comparable.
    """
    if len(tables) < 2:
        return None
    sets = [set(t.idx.tolist()) for t in tables]
    if all(s == sets[0] for s in sets[1:]):
        return None
    common = set.intersection(*sets)
    counts = ", ".join(f"{_file_name(t)} {len(s)}" for t, s in zip(tables, sets, strict=True))
    return (
        f"warning: the files cover different examples: {counts} ({len(common)} in common); "
        "their accuracies are over different test sets"
    )


# ------------------------------------------------------------------------------------------------------------
# Tables and plots


def accuracy_table(
    tables: Sequence[ResultTable],
    radii: Sequence[float] | np.ndarray,
    norm: str = "l2",
    *,
    envelope: bool = True,
) -> str:
    """A Markdown table of accuracies, one row per run.

    Columns: name (marked "(approx.)" where the file says ``guaranteed = 0``), method, σ, norm (e.g.
    "l1→l2 (implied)" when converted from the native norm), N (rows), base accuracy (blank when the files do not
    record it), smoothed accuracy, certified accuracy at
    each of ``radii``, ACR, mean time per example (s).

    Parameters
    ----------
    tables : sequence of ResultTable
    radii : array_like
        Radii of the certified-accuracy columns.
    norm : {"l1", "l2", "linf"}
    envelope : bool
        Add a row per method with several runs (:func:`envelope_groups`) holding the envelope ``max_σ``; its
        ACR column holds the area under the envelope, i.e. the robustness score (``inf`` if unbounded).

    Returns
    -------
    str
        The Markdown table, ending with a newline.
    """
    check_name(norm, NORMS, "norm")
    radii = np.atleast_1d(np.asarray(radii, dtype=float))
    header = [
        "name",
        "method",
        "σ",
        "norm",
        "N",
        "base accuracy",
        "smoothed accuracy",
        *[f"certified accuracy at r = {r:g}" for r in radii],
        f"ACR ({norm})",
        "time/ex (s)",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|",
    ]
    for t in tables:
        cells = [
            _md_cell(t.name + approximation_mark(t)),
            _md_cell(t.method),
            _fmt(t.sigma, "g"),
            norm_label(t, norm),
            str(len(t)),
            "" if t.base_predict is None else _fmt(base_accuracy(t)),
            _fmt(smoothed_accuracy(t)),
            *[_fmt(a) for a in certified_accuracy(t, radii, norm)],
            _fmt(average_certified_radius(t, norm)),
            _fmt(t.mean_time, ".4g"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for label, runs in envelope_groups(tables) if envelope else []:
        approx = " (approx.)" if any(t.approximate_rows for t in runs) else ""
        norms = {norm_label(t, norm) for t in runs}
        cells = [
            _md_cell(label + approx),
            _md_cell(runs[0].method),
            "",
            norms.pop() if len(norms) == 1 else "",
            "",
            "",
            _fmt(float(envelope_certified_accuracy(runs, 0.0, norm))),
            *[_fmt(a) for a in envelope_certified_accuracy(runs, radii, norm)],
            _fmt(_envelope_area(runs, norm)),
            "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _step_points(curves: list[tuple[np.ndarray, int]], x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(x, y)`` of the envelope of the given curves, to draw with ``step(where="pre")``."""
    all_r = np.concatenate([r for r, _ in curves])
    breaks = np.unique(all_r[(all_r > 0) & (all_r < x_max)])
    x = np.concatenate([[0.0], breaks, [x_max]])
    y = np.max([_accuracy_at(r, n, x) for r, n in curves], axis=0)
    return x, y


def curve_style(table: ResultTable, norm: str) -> tuple[str, str]:
    """Line style and legend suffix of a table's curve in ``norm``.

    Solid for guaranteed radii in the native norm; dotted (``":"``) where some rows are approximate
    (``guaranteed = 0``); dashed (``"--"``) for radii implied by norm inequalities; dash-dotted (``"-."``) for
    both.
    """
    approx, implied = table.approximate_rows > 0, table.implied(norm)
    style = {(False, False): "-", (True, False): ":", (False, True): "--", (True, True): "-."}[
        (approx, implied)
    ]
    suffix = (" (approx.)" if approx else "") + (f" ({table.native_norm}→{norm} implied)" if implied else "")
    return style, suffix


def _certified_accuracy_figure(
    tables: Sequence[ResultTable],
    norm: str,
    title: str | None,
    max_radius: float | None,
    envelope: bool,
) -> Figure:
    """The figure of :func:`plot_certified_accuracy`."""
    check_name(norm, NORMS, "norm")
    labels = dict(zip(map(id, tables), legend_labels(tables), strict=True))
    curves = [(t, _correct_radii(t, norm)) for t in tables if len(t)]
    if not curves:
        raise ValueError("nothing to plot: no table has any rows")
    if max_radius is None:
        finite = np.concatenate([r[np.isfinite(r)] for _, r in curves])
        max_radius = 1.05 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    elif not max_radius > 0 or not math.isfinite(max_radius):
        raise ValueError(f"max_radius must be a finite number > 0, got {max_radius!r}")

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for t, r in curves:
        x, y = _step_points([(r, len(t))], max_radius)
        style, suffix = curve_style(t, norm)
        ax.step(x, y, where="pre", linestyle=style, label=labels[id(t)] + suffix)
    for label, runs in envelope_groups(tables) if envelope else []:
        x, y = _step_points([(_correct_radii(t, norm), len(t)) for t in runs], max_radius)
        styles = {curve_style(t, norm)[0] for t in runs}
        style = styles.pop() if len(styles) == 1 else "-"
        ax.step(
            x, y, where="pre", linestyle=style, color="black", alpha=0.35, linewidth=4, zorder=1, label=label
        )
    ax.set_xlim(0.0, max_radius)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"radius ({norm})")
    ax.set_ylabel("certified accuracy")
    ax.set_title(title if title is not None else f"Certified accuracy ({norm})")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_certified_accuracy(
    tables: Sequence[ResultTable],
    out_path: str | os.PathLike[str],
    norm: str = "l2",
    title: str | None = None,
    max_radius: float | None = None,
    *,
    envelope: bool = True,
) -> str:
    """Plot certified accuracy against radius (one step curve per table) and write it as a PNG.

    Curves are labelled by :func:`legend_labels` and styled by :func:`curve_style` (dotted: approximate,
    dashed: implied by norm inequalities). With ``envelope=True`` each method with several runs also gets its
    envelope ``max_σ Acc_σ`` (:func:`envelope_groups`), drawn as a thick grey line behind; no envelope spans two
    methods. Uses the Agg canvas directly, so pyplot's global state is left alone.

    Parameters
    ----------
    tables : sequence of ResultTable
    out_path : str or PathLike
        Where to write the PNG; its folder must exist.
    norm : {"l1", "l2", "linf"}
    title : str, optional
        Figure title (default: "Certified accuracy (<norm>)").
    max_radius : float, optional
        Right end of the radius axis (default: 5% beyond the largest finite certified radius).

    Returns
    -------
    str
        ``out_path``.

    Raises
    ------
    FileNotFoundError
        If the folder of ``out_path`` does not exist.
    """
    out_path = check_output_path(out_path)
    fig = _certified_accuracy_figure(tables, norm, title, max_radius, envelope)
    fig.savefig(out_path, format="png", dpi=120)
    return out_path


def summarize(
    paths: Sequence[str | os.PathLike[str]],
    *,
    norm: str,
    radii: Sequence[float] | np.ndarray,
    out_png: str | os.PathLike[str] | None = None,
    high_probability: tuple[float, float] | None = None,
    sigmas: Sequence[float] | None = None,
) -> str:
    """Read result files and return a Markdown summary; optionally write the certified-accuracy plot.

    Parameters
    ----------
    paths : sequence of path
        Result TSV files (one per run, e.g. one per σ).
    norm : {"l1", "l2", "linf"}
    radii : array_like
        Radii of the certified-accuracy columns.
    out_png : path, optional
        Where to write the plot (its folder must exist; checked before any work).
    high_probability : (alpha, rho), optional
        Also list :func:`high_probability_accuracy` per file at these levels.
    sigmas : sequence of float, optional
        σ of each file (one value per file, or one for all), for files that do not record it (Cohen et al.'s);
        passed to :func:`read_results`.

    Returns
    -------
    str
        Warnings (files covering different examples, :func:`example_set_warning`), the table of
        :func:`accuracy_table`, notes on its marks, and the robustness score of each method.
    """
    check_name(norm, NORMS, "norm")
    if out_png is not None:
        check_output_path(out_png)
    if not paths:
        raise ValueError("summarize needs at least one result file")
    if sigmas is None:
        per_file: list[float | None] = [None] * len(paths)
    elif len(sigmas) in (1, len(paths)):
        per_file = list[float | None]([float(s) for s in sigmas]) * (len(paths) if len(sigmas) == 1 else 1)
    else:
        raise ValueError(f"give one sigma per result file ({len(paths)}) or one for all, got {len(sigmas)}")
    names = _distinct_names(paths)
    tables = [read_results(p, n, sigma=s) for p, n, s in zip(paths, names, per_file, strict=True)]
    warning = example_set_warning(tables)
    text = f"{warning}\n\n" if warning else ""
    text += accuracy_table(tables, radii, norm)
    notes = []
    if any(t.approximate_rows for t in tables):
        notes.append(
            "(approx.): the file marks these radii guaranteed = 0, an approximation rather than a certificate "
            "at level 1 − α; dotted in the plot."
        )
    if any(t.implied(norm) for t in tables if len(t)):
        notes.append(
            f"(implied): {norm} radii that follow from the method's native norm by "
            "‖δ‖∞ ≤ ‖δ‖₂ ≤ ‖δ‖₁ ≤ √d‖δ‖₂ ≤ d‖δ‖∞ (docs/conventions.md); dashed in the plot."
        )
    if notes:
        text += "\n" + "\n".join(notes) + "\n"

    text += f"\nRobustness score ({norm}, UniCR Eq. 5, area under the best-over-σ curve of one method):\n"
    grouped = {id(t) for _, runs in envelope_groups(tables) for t in runs}
    for label, runs in envelope_groups(tables):
        text += f"- {label}: {_fmt(_envelope_area(runs, norm), '.4f')}\n"
    for t in tables:
        if id(t) not in grouped:
            score = _fmt(_envelope_area([t], norm), ".4f")
            text += f"- {t.name} (the only {t.method or '(no method)'} run; its ACR): {score}\n"
    if high_probability is not None:
        alpha, rho = high_probability
        text += (
            f"\nCertified accuracy of the smoothed classifier with probability >= {1 - rho:g} "
            f"(Cohen et al.'s high-probability bound, per-certificate alpha = {alpha:g}):\n"
        )
        for table in tables:
            values = high_probability_accuracy(table, radii, alpha=alpha, rho=rho, norm=norm)
            cells = "  ".join(f"r={r:g}: {_fmt(float(v))}" for r, v in zip(radii, values, strict=True))
            text += f"- {table.name} (N = {len(table)}): {cells}\n"
    if out_png is not None:
        plot_certified_accuracy(tables, out_png, norm=norm)
    return text
