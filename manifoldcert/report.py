"""Read certification result files and turn them into tables, curves and summary scores.

A certification run writes one tab-separated file with one row per test example. The first six columns
are those of Cohen et al. (``idx label predict radius correct time``; ``predict`` is -1 on abstention),
followed by ``radius_l1 radius_l2 radius_linf p_lower norm method sigma`` and possibly method-specific
columns, which are ignored here.

Definitions (Cohen et al., 2019; Hong et al., ECCV 2022):

* certified accuracy at radius ``R``: fraction of *all* rows that are correct with certified radius ``>= R``;
* average certified radius (ACR): mean over all rows of ``radius * correct``;
* robustness score (UniCR, Eq. 5): ``∫_0^∞ max_σ Acc_σ(R) dR``, the area under the envelope of the certified
  accuracy curves of several runs (one per σ). For a single run it equals the ACR.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from manifoldcert._validation import check_alpha, check_name, check_output_path

NORMS = ("l1", "l2", "linf")
REQUIRED_COLUMNS = (
    "idx",
    "label",
    "predict",
    "radius",
    "correct",
    "time",
    "radius_l1",
    "radius_l2",
    "radius_linf",
    "p_lower",
    "norm",
    "method",
    "sigma",
)
ENVELOPE_NAME = "best over σ"
_RADIUS_FIELDS = tuple(f"radius_{n}" for n in NORMS)


@dataclass(frozen=True, eq=False)
class ResultTable:
    """The results of one certification run (one row per test example).

    Attributes
    ----------
    name : str
        Label used in legends and tables (by default the file stem).
    method : str
        Certification method (``""`` when the file has no rows).
    sigma : float
        Noise level of the run (NaN when the file has no rows, the column is empty, or σ varies per input as
        with input-dependent smoothing).
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

    def __post_init__(self) -> None:
        arrays = {
            k: getattr(self, k) for k in ("idx", "label", "predict", "correct", *_RADIUS_FIELDS, "time")
        }
        lengths = {k: np.shape(v) for k, v in arrays.items()}
        if len({s for s in lengths.values()}) != 1 or len(next(iter(lengths.values()))) != 1:
            raise ValueError(f"ResultTable arrays must be 1-D and of equal length, got shapes {lengths}")
        for k, v in arrays.items():  # freeze the arrays too, not only the attributes
            v = np.array(v, dtype=bool if k == "correct" else None, copy=True)
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


def _parse_float(text: str) -> float:
    return float(text) if text.strip() else math.nan


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


def read_results(path: str | os.PathLike[str], name: str | None = None) -> ResultTable:
    """Read a tab-separated certification result file.

    Parameters
    ----------
    path : str or PathLike
        The TSV file (header first; unknown extra columns are ignored).
    name : str, optional
        Label for legends and tables; defaults to the file stem.

    Returns
    -------
    ResultTable
        When a row's ``radius_<native norm>`` is empty or NaN, the ``radius`` column is used instead.

    Raises
    ------
    ValueError
        If required columns are missing, a value cannot be parsed, a radius is negative, or
        ``method``/``norm``/``sigma`` vary between rows.
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header with columns {' '.join(REQUIRED_COLUMNS)}")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})")
    col = {c: header.index(c) for c in REQUIRED_COLUMNS}

    parsed: dict[str, list] = {c: [] for c in REQUIRED_COLUMNS}
    parsers = {
        "idx": int,
        "label": int,
        "predict": int,
        "correct": _parse_bool,
        "norm": str.strip,
        "method": str.strip,
        "sigma": str.strip,
    }
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise ValueError(f"{path}, line {line_no}: {len(row)} fields, expected {len(header)}")
        for c in REQUIRED_COLUMNS:
            text = row[col[c]]
            try:
                parsed[c].append(parsers.get(c, _parse_float)(text))
            except ValueError as err:
                raise ValueError(f"{path}, line {line_no}, column {c!r}: cannot parse {text!r}") from err

    native = _single_value([s.lower() for s in parsed["norm"]], "norm", path)
    method = _single_value(parsed["method"], "method", path)
    # One σ per run, except for input-dependent smoothing where each row records its own σ(x).
    sigma_texts = set(parsed["sigma"])
    sigma_text = sigma_texts.pop() if len(sigma_texts) == 1 else ""
    try:
        sigma = _parse_float(sigma_text)
    except ValueError as err:
        raise ValueError(f"{path}: column 'sigma': cannot parse {sigma_text!r}") from err

    radii = {c: np.asarray(parsed[c], dtype=float) for c in _RADIUS_FIELDS}
    if native in NORMS:  # fall back on Cohen's `radius` column for the native norm
        r = radii[f"radius_{native}"]
        gap = np.isnan(r)
        r[gap] = np.asarray(parsed["radius"], dtype=float)[gap]
    for c, r in radii.items():
        if np.any(r < 0):
            raise ValueError(
                f"{path}: column {c!r} has negative radii (first at idx {parsed['idx'][np.argmax(r < 0)]})"
            )

    return ResultTable(
        name=Path(path).stem if name is None else name,
        method=method,
        sigma=sigma,
        idx=np.asarray(parsed["idx"], dtype=np.int64),
        label=np.asarray(parsed["label"], dtype=np.int64),
        predict=np.asarray(parsed["predict"], dtype=np.int64),
        correct=np.asarray(parsed["correct"], dtype=bool),
        time=np.asarray(parsed["time"], dtype=float),
        native_norm=native,
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


def clean_accuracy(table: ResultTable) -> float:
    """Fraction of rows correctly classified (certified accuracy at radius 0); NaN for an empty table."""
    return float(table.correct.mean()) if len(table) else math.nan


def average_certified_radius(table: ResultTable, norm: str = "l2") -> float:
    """Mean over all rows of ``radius * correct`` (wrong predictions and abstentions count 0).

    May be ``inf`` if a correct row has an infinite radius; NaN for an empty table.
    """
    r = _correct_radii(table, norm)
    return float(r.sum() / len(table)) if len(table) else math.nan


def envelope_certified_accuracy(
    tables: Sequence[ResultTable], radii: float | Sequence[float] | np.ndarray, norm: str = "l2"
) -> np.ndarray:
    """``max_σ Acc_σ(r)`` over ``tables`` at each radius (empty tables are ignored; NaN if all are empty)."""
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
        One run per candidate noise level σ (empty tables are ignored).
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
# Tables and plots


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def accuracy_table(
    tables: Sequence[ResultTable],
    radii: Sequence[float] | np.ndarray,
    norm: str = "l2",
    *,
    envelope: bool = True,
) -> str:
    """A Markdown table of certified accuracies, one row per run.

    Columns: name, method, σ, clean accuracy, certified accuracy at each of ``radii``, ACR, mean time per
    example (s).

    Parameters
    ----------
    tables : sequence of ResultTable
    radii : array_like
        Radii of the certified-accuracy columns.
    norm : {"l1", "l2", "linf"}
    envelope : bool
        With more than one table, add a last row "best over σ" holding the envelope ``max_σ``; its ACR
        column holds the area under the envelope, i.e. the robustness score (``inf`` if unbounded).

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
        "clean acc",
        *[f"r = {r:g}" for r in radii],
        f"ACR ({norm})",
        "time/ex (s)",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for t in tables:
        cells = [
            _md_cell(t.name),
            _md_cell(t.method),
            _fmt(t.sigma, "g"),
            _fmt(clean_accuracy(t)),
            *[_fmt(a) for a in certified_accuracy(t, radii, norm)],
            _fmt(average_certified_radius(t, norm)),
            _fmt(t.mean_time, ".4g"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if envelope and len(tables) > 1:
        acc0 = float(envelope_certified_accuracy(tables, 0.0, norm))
        cells = [
            ENVELOPE_NAME,
            "",
            "",
            _fmt(acc0),
            *[_fmt(a) for a in envelope_certified_accuracy(tables, radii, norm)],
            _fmt(_envelope_area(tables, norm)),
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

    With more than one table and ``envelope=True`` the envelope ``max_σ Acc_σ`` is drawn dashed (set it False
    when the tables are different methods rather than one method at several σ). Uses the Agg canvas directly,
    so pyplot's global state is left alone.

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
    check_name(norm, NORMS, "norm")
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
        ax.step(x, y, where="pre", label=t.name)
    if envelope and len(curves) > 1:
        x, y = _step_points([(r, len(t)) for t, r in curves], max_radius)
        ax.step(x, y, where="pre", linestyle="--", color="black", label=ENVELOPE_NAME)
    ax.set_xlim(0.0, max_radius)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"radius ({norm})")
    ax.set_ylabel("certified accuracy")
    ax.set_title(title if title is not None else f"Certified accuracy ({norm})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out_path, format="png", dpi=120)
    return out_path


def summarize(
    paths: Sequence[str | os.PathLike[str]],
    *,
    norm: str,
    radii: Sequence[float] | np.ndarray,
    out_png: str | os.PathLike[str] | None = None,
    high_probability: tuple[float, float] | None = None,
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

    Returns
    -------
    str
        The table of :func:`accuracy_table` followed by a line with the robustness score.
    """
    check_name(norm, NORMS, "norm")
    if out_png is not None:
        check_output_path(out_png)
    if not paths:
        raise ValueError("summarize needs at least one result file")
    tables = [read_results(p) for p in paths]
    text = accuracy_table(tables, radii, norm)
    score = _envelope_area(tables, norm)
    text += f"\nRobustness score ({norm}, UniCR Eq. 5, over {len(tables)} run(s)): {_fmt(score, '.4f')}\n"
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
