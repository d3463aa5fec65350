"""Tests for manifoldcert.report against hand-computed values on small result files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from manifoldcert.report import (
    ResultTable,
    accuracy_table,
    average_certified_radius,
    certified_accuracy,
    clean_accuracy,
    envelope_certified_accuracy,
    plot_certified_accuracy,
    read_results,
    robustness_score,
    summarize,
)

HEADER = (
    "idx label predict radius correct time radius_l1 radius_l2 radius_linf p_lower norm method sigma".split()
)

# Run A (σ = 0.25): l2 radii of correct rows 0.5, 0.25, 1.0; one wrong (radius 0.8), one abstention.
# Acc_A(R) = 0.6 on [0, 0.25], 0.4 on (0.25, 0.5], 0.2 on (0.5, 1], 0 beyond; ACR_A = 1.75 / 5 = 0.35.
ROWS_A = [
    [0, 7, 7, 0.5, 1, 0.1, 0.6, 0.5, 0.05, 0.97, "l2", "cohen", 0.25],
    [1, 2, 2, 0.25, 1, 0.2, 0.3, 0.25, 0.02, 0.85, "l2", "cohen", 0.25],
    [2, 3, 5, 0.8, 0, 0.3, 0.9, 0.8, 0.08, 0.99, "l2", "cohen", 0.25],
    [3, 2, -1, 0.0, 0, 0.4, 0.0, 0.0, 0.0, 0.41, "l2", "cohen", 0.25],
    [4, 1, 1, 1.0, 1, 0.5, 1.2, 1.0, 0.10, 0.999, "l2", "cohen", 0.25],
]
# Run B (σ = 0.5): correct radii 2.0 and 0.1, two wrong. Acc_B = 0.5 on [0, 0.1], 0.25 on (0.1, 2].
ROWS_B = [
    [0, 7, 7, 2.0, 1, 1.0, 2.0, 2.0, 0.2, 0.99, "l2", "cohen", 0.5],
    [1, 2, 2, 0.1, 1, 1.0, 0.1, 0.1, 0.01, 0.6, "l2", "cohen", 0.5],
    [2, 3, 4, 0.3, 0, 1.0, 0.3, 0.3, 0.03, 0.7, "l2", "cohen", 0.5],
    [3, 2, 0, 0.2, 0, 1.0, 0.2, 0.2, 0.02, 0.65, "l2", "cohen", 0.5],
]
# Envelope: 0.6 on [0, 0.25], 0.4 on (0.25, 0.5], 0.25 on (0.5, 2] -> 0.15 + 0.1 + 0.375 = 0.625.
ENVELOPE_SCORE = 0.625


def write_tsv(path: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def table_a(tmp_path: Path) -> ResultTable:
    return read_results(write_tsv(tmp_path / "run_a.tsv", ROWS_A))


@pytest.fixture
def table_b(tmp_path: Path) -> ResultTable:
    return read_results(write_tsv(tmp_path / "run_b.tsv", ROWS_B))


def test_read_results_fields(table_a: ResultTable, tmp_path: Path) -> None:
    assert table_a.name == "run_a"
    assert (table_a.method, table_a.sigma, table_a.native_norm) == ("cohen", 0.25, "l2")
    assert len(table_a) == 5
    np.testing.assert_array_equal(table_a.predict, [7, 2, 5, -1, 1])
    np.testing.assert_array_equal(table_a.correct, [True, True, False, False, True])
    assert table_a.correct.dtype == bool
    np.testing.assert_allclose(table_a.radii("linf"), [0.05, 0.02, 0.08, 0.0, 0.10])
    np.testing.assert_allclose(table_a.radii("l1"), [0.6, 0.3, 0.9, 0.0, 1.2])
    with pytest.raises(ValueError, match="norm"):
        table_a.radii("l3")
    assert read_results(tmp_path / "run_a.tsv", name="Cohen σ=0.25").name == "Cohen σ=0.25"


def test_read_results_extra_columns_and_empty_values(tmp_path: Path) -> None:
    header = [*HEADER, "extra_stat"]
    rows = [
        # exact method: no p_lower; no l1 radius; empty radius_l2 falls back on the native `radius` column
        [0, 1, 1, 0.7, 1, 0.1, "nan", "", 0.07, "", "l2", "exact", 0.5, "foo"],
        [1, 1, 0, 0.0, 0, 0.1, "", 0.0, 0.0, "", "l2", "exact", 0.5, "bar"],
    ]
    t = read_results(write_tsv(tmp_path / "exact.tsv", rows, header))
    np.testing.assert_allclose(t.radii("l2"), [0.7, 0.0])
    assert np.isnan(t.radii("l1")).all()
    np.testing.assert_allclose(certified_accuracy(t, [0.7, 0.71], "l2"), [0.5, 0.0])
    with pytest.raises(ValueError, match="l1 radius"):
        certified_accuracy(t, [0.0], "l1")


def test_read_results_header_only(tmp_path: Path) -> None:
    t = read_results(write_tsv(tmp_path / "empty.tsv", []))
    assert len(t) == 0 and t.radii("l2").shape == (0,)
    assert np.isnan(clean_accuracy(t))


def test_read_results_missing_columns(tmp_path: Path) -> None:
    header = [c for c in HEADER if c not in ("radius_linf", "sigma")]
    path = write_tsv(tmp_path / "bad.tsv", [], header)
    with pytest.raises(ValueError, match="radius_linf, sigma"):
        read_results(path)


def test_read_results_bad_value(tmp_path: Path) -> None:
    rows = [list(ROWS_A[0])]
    rows[0][4] = "yes"
    with pytest.raises(ValueError, match="line 2, column 'correct'"):
        read_results(write_tsv(tmp_path / "bad.tsv", rows))


def test_certified_accuracy_boundaries_and_abstentions(table_a: ResultTable) -> None:
    radii = [0.0, 0.25, 0.26, 0.5, 0.50001, 1.0, 1.01]
    # `>=` counts radius exactly r; the wrong row (radius 0.8) and the abstention never count.
    expected = [0.6, 0.6, 0.4, 0.4, 0.2, 0.2, 0.0]
    np.testing.assert_allclose(certified_accuracy(table_a, radii, "l2"), expected)
    np.testing.assert_allclose(certified_accuracy(table_a, [0.3, 0.6], "l1"), [0.6, 0.4])
    np.testing.assert_allclose(certified_accuracy(table_a, 0.05, "linf"), 0.4)
    assert clean_accuracy(table_a) == pytest.approx(0.6)
    assert clean_accuracy(table_a) == pytest.approx(float(certified_accuracy(table_a, 0.0)))


def test_average_certified_radius(table_a: ResultTable, table_b: ResultTable) -> None:
    assert average_certified_radius(table_a, "l2") == pytest.approx(0.35)
    assert average_certified_radius(table_a, "linf") == pytest.approx(0.17 / 5)
    assert average_certified_radius(table_b, "l2") == pytest.approx(0.525)


def test_robustness_score_single_table_is_acr(table_a: ResultTable, table_b: ResultTable) -> None:
    for t in (table_a, table_b):
        for norm in ("l1", "l2", "linf"):
            assert robustness_score([t], norm) == pytest.approx(average_certified_radius(t, norm), abs=1e-12)
    assert robustness_score(table_a, "l2") == pytest.approx(0.35)


def test_robustness_score_envelope(table_a: ResultTable, table_b: ResultTable) -> None:
    score = robustness_score([table_a, table_b], "l2")
    assert score == pytest.approx(ENVELOPE_SCORE, abs=1e-12)
    assert robustness_score([table_b, table_a], "l2") == pytest.approx(score, abs=1e-12)

    # Independent check: midpoint Riemann sum of the envelope, computed directly from the rows.
    step = 1e-4
    grid = np.arange(step / 2, 3.0, step)

    def acc(t: ResultTable) -> np.ndarray:
        r = t.radii("l2")
        return ((r[None, :] >= grid[:, None]) & t.correct[None, :]).mean(axis=1)

    riemann = float(np.sum(np.maximum(acc(table_a), acc(table_b))) * step)
    assert abs(riemann - score) < 1e-3
    # The trapezoidal grid option agrees as well.
    assert robustness_score([table_a, table_b], "l2", radius_grid=np.linspace(0, 3, 30001)) == pytest.approx(
        score, abs=1e-3
    )
    np.testing.assert_allclose(
        envelope_certified_accuracy([table_a, table_b], [0.0, 0.1, 0.3, 0.75, 2.0, 2.1]),
        [0.6, 0.6, 0.4, 0.25, 0.25, 0.0],
    )


def test_robustness_score_infinite_radius(tmp_path: Path) -> None:
    rows = [list(ROWS_A[0]), list(ROWS_A[1])]
    rows[0][7] = "inf"
    t = read_results(write_tsv(tmp_path / "inf.tsv", rows))
    assert average_certified_radius(t, "l2") == math.inf
    with pytest.raises(ValueError, match="infinite"):
        robustness_score([t], "l2")
    # a finite grid still gives a finite approximation: 1.0 on [0, 0.25], 0.5 on (0.25, 1]
    assert robustness_score([t], "l2", radius_grid=np.linspace(0, 1, 100001)) == pytest.approx(
        0.625, abs=1e-4
    )


def test_accuracy_table_markdown(table_a: ResultTable, table_b: ResultTable) -> None:
    md = accuracy_table([table_a, table_b], [0.25, 0.5, 1.0], "l2")
    lines = md.strip().splitlines()
    assert len(lines) == 5  # header, separator, two runs, envelope
    assert lines[0].startswith("| name | method | σ | clean acc | r = 0.25 | r = 0.5 | r = 1 | ACR (l2)")
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(lines[2]) == ["run_a", "cohen", "0.25", "0.600", "0.600", "0.400", "0.200", "0.350", "0.3"]
    assert cells(lines[3]) == ["run_b", "cohen", "0.5", "0.500", "0.250", "0.250", "0.250", "0.525", "1"]
    assert cells(lines[4]) == ["best over σ", "", "", "0.600", "0.600", "0.400", "0.250", "0.625", ""]
    single = accuracy_table([table_a], [0.25], "l2")
    assert "best over σ" not in single and len(single.strip().splitlines()) == 3


def test_plot_writes_png(table_a: ResultTable, table_b: ResultTable, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    assert plot_certified_accuracy([table_a, table_b], out, norm="l2", title="test") == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out1 = plot_certified_accuracy([table_a], tmp_path / "one.png", norm="linf", max_radius=0.2)
    assert Path(out1).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_missing_folder(table_a: ResultTable, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        plot_certified_accuracy([table_a], tmp_path / "no_such_dir" / "curves.png")


def test_summarize(tmp_path: Path) -> None:
    paths = [write_tsv(tmp_path / "a.tsv", ROWS_A), write_tsv(tmp_path / "b.tsv", ROWS_B)]
    out = tmp_path / "summary.png"
    text = summarize(paths, norm="l2", radii=[0.5], out_png=out)
    assert "| a | cohen | 0.25 | 0.600 | 0.400 | 0.350 |" in text
    assert "Robustness score (l2" in text and "0.6250" in text
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError):
        summarize(paths, norm="l2", radii=[0.5], out_png=tmp_path / "missing" / "x.png")


def test_high_probability_accuracy_is_cohens_bernstein_bound(tmp_path):
    """â − α − sqrt(α(1 − α) log(1/ρ)/m) − log(1/ρ)/(3m), by hand for 4 rows of which 3 certify r = 0.5."""
    from manifoldcert.report import high_probability_accuracy, read_results, summarize

    path = tmp_path / "r.tsv"
    header = "idx label predict radius correct time radius_l1 radius_l2 radius_linf p_lower norm method sigma"
    rows = ["\t".join(header.split())] + [
        f"{i}\t1\t1\t{r}\t{c}\t0.1\t{r}\t{r}\t{r}\t0.9\tl2\tcohen\t0.25"
        for i, (r, c) in enumerate([(0.6, 1), (0.9, 1), (0.5, 1), (0.7, 0)])
    ]
    path.write_text("\n".join(rows) + "\n")
    table = read_results(path)
    alpha, rho, m = 0.001, 0.01, 4
    log_term = math.log(1 / rho)
    expected = 0.75 - alpha - math.sqrt(alpha * (1 - alpha) * log_term / m) - log_term / (3 * m)
    assert high_probability_accuracy(table, [0.5], alpha=alpha, rho=rho)[0] == pytest.approx(expected)
    assert "probability >= 0.99" in summarize([path], norm="l2", radii=[0.5], high_probability=(alpha, rho))
