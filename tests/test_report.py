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
    curve_style,
    envelope_certified_accuracy,
    envelope_groups,
    example_set_warning,
    legend_labels,
    norm_label,
    plot_certified_accuracy,
    read_results,
    robustness_score,
    smoothed_accuracy,
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
    assert np.isnan(smoothed_accuracy(t))


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
    assert smoothed_accuracy(table_a) == pytest.approx(0.6)
    assert smoothed_accuracy(table_a) == pytest.approx(float(certified_accuracy(table_a, 0.0)))
    assert clean_accuracy(table_a) == smoothed_accuracy(
        table_a
    )  # the former name, still used by experiments/


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


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_accuracy_table_markdown(table_a: ResultTable, table_b: ResultTable) -> None:
    md = accuracy_table([table_a, table_b], [0.25, 0.5, 1.0], "l2")
    lines = md.strip().splitlines()
    assert len(lines) == 5  # header, separator, two runs, envelope
    assert cells(lines[0]) == [
        "name",
        "method",
        "σ",
        "norm",
        "N",
        "base accuracy",
        "smoothed accuracy",
        "certified accuracy at r = 0.25",
        "certified accuracy at r = 0.5",
        "certified accuracy at r = 1",
        "ACR (l2)",
        "time/ex (s)",
    ]
    row_a = ["run_a", "cohen", "0.25", "l2", "5", "", "0.600", "0.600", "0.400", "0.200", "0.350", "0.3"]
    assert cells(lines[2]) == row_a
    assert cells(lines[3]) == [
        "run_b",
        "cohen",
        "0.5",
        "l2",
        "4",
        "",
        "0.500",
        "0.250",
        "0.250",
        "0.250",
        "0.525",
        "1",
    ]
    envelope = ["envelope of cohen over σ ∈ {0.25, 0.5}", "cohen", "", "l2", "", "", "0.600", "0.600", "0.400"]
    assert cells(lines[4]) == [*envelope, "0.250", "0.625", ""]
    single = accuracy_table([table_a], [0.25], "l2")
    assert "envelope" not in single and len(single.strip().splitlines()) == 3
    assert "envelope" not in accuracy_table([table_a, table_b], [0.25], "l2", envelope=False)


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
    assert "| a | cohen | 0.25 | l2 | 5 |  | 0.600 | 0.400 | 0.350 |" in text
    assert "Robustness score (l2" in text and "- envelope of cohen over σ ∈ {0.25, 0.5}: 0.6250" in text
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


# ------------------------------------------------------------------------------------------------------------
# Duplicates and example sets


def test_duplicate_idx_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two writers appending to one file: every idx twice would otherwise be counted twice."""
    from manifoldcert.cli import main

    rows = [list(r) for r in ROWS_A] + [list(r) for r in ROWS_A[:3]]
    path = write_tsv(tmp_path / "twice.tsv", rows)
    with pytest.raises(ValueError, match="3 duplicated idx value") as err:
        read_results(path)
    message = str(err.value)
    assert "twice.tsv" in message and "3 extra row(s) in 8" in message
    assert "idx 0 on lines 2, 7" in message and "idx 2 on lines 4, 9" in message
    assert main(["report", str(path)]) == 2 and "twice.tsv: 3 duplicated idx" in capsys.readouterr().err
    # Only the first few are listed.
    many = [[i % 40, *ROWS_A[0][1:]] for i in range(80)]
    with pytest.raises(ValueError, match="40 duplicated idx value.*; and 35 more"):
        read_results(write_tsv(tmp_path / "many.tsv", many))


def test_example_set_warning(table_a: ResultTable, table_b: ResultTable, tmp_path: Path) -> None:
    assert example_set_warning([table_a]) is None
    same = read_results(write_tsv(tmp_path / "same.tsv", ROWS_A))
    assert example_set_warning([table_a, same]) is None
    warning = example_set_warning([table_a, table_b])
    assert warning == (
        "warning: the files cover different examples: run_a.tsv 5, run_b.tsv 4 (4 in common); "
        "their accuracies are over different test sets"
    )
    paths = [write_tsv(tmp_path / "a.tsv", ROWS_A), write_tsv(tmp_path / "b.tsv", ROWS_B)]
    assert summarize(paths, norm="l2", radii=[0.5]).startswith("warning: the files cover different examples")
    assert "warning" not in summarize([paths[0], tmp_path / "same.tsv"], norm="l2", radii=[0.5])


# ------------------------------------------------------------------------------------------------------------
# Cohen et al.'s files (locuslab/smoothing certify.py: "{idx}\t{label}\t{predict}\t{radius:.3}\t{correct}\t{time}"
# with time = str(datetime.timedelta(seconds=...)))

COHEN_HEADER = ["idx", "label", "predict", "radius", "correct", "time"]
# Correct radii 0.521, 0.25, 1.23, 0.0399, 2.0 of 8 rows (one wrong with a large radius, one abstention).
COHEN_ROWS = [
    [0, 3, 3, 0.521, 1, "0:00:14.206886"],
    [10, 8, 8, 0.25, 1, "0:00:01"],
    [20, 0, 6, 0.9, 0, "0:01:02.5"],
    [30, 5, -1, 0.0, 0, "1 day, 2:03:04.500000"],
    [40, 1, 1, 1.23, 1, "0:00:14.2"],
    [50, 2, 2, 0.0399, 1, "12.5"],
    [60, 9, 9, 2.0, 1, "2 days, 0:00:00"],
    [70, 4, 7, 0.3, 0, "0:00:00.000001"],
]
COHEN_ACCURACY = {
    0.0: 5 / 8,
    0.25: 4 / 8,
    0.5: 3 / 8,
    0.75: 2 / 8,
    1.0: 2 / 8,
    1.5: 1 / 8,
    2.0: 1 / 8,
    2.01: 0.0,
}


@pytest.fixture
def cohen_path(tmp_path: Path) -> Path:
    return write_tsv(tmp_path / "noise_0.25.tsv", COHEN_ROWS, COHEN_HEADER)


def test_read_cohen_file(cohen_path: Path) -> None:
    t = read_results(cohen_path)
    assert (t.name, t.method, t.native_norm, len(t)) == ("noise_0.25", "cohen", "l2", 8)
    assert math.isnan(t.sigma) and t.guaranteed is None
    np.testing.assert_array_equal(t.idx, [0, 10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_allclose(
        t.time,
        [14.206886, 1.0, 62.5, 86400 + 7200 + 184.5, 14.2, 12.5, 2 * 86400, 1e-6],
        rtol=0,
        atol=1e-9,
    )
    radii = list(COHEN_ACCURACY)
    np.testing.assert_allclose(certified_accuracy(t, radii, "l2"), list(COHEN_ACCURACY.values()))
    assert smoothed_accuracy(t) == pytest.approx(0.625)
    assert average_certified_radius(t, "l2") == pytest.approx((0.521 + 0.25 + 1.23 + 0.0399 + 2.0) / 8)
    # An l2 ball of radius R contains the l1 ball of radius R; l∞ would need the input dimension.
    np.testing.assert_allclose(t.radii("l1"), t.radii("l2"))
    assert t.implied("l1") and not t.implied("l2")
    with pytest.raises(ValueError, match="no linf radius"):
        certified_accuracy(t, [0.1], "linf")
    given = read_results(cohen_path, sigma=0.25, method="cohen-resnet110")
    assert (given.sigma, given.method) == (0.25, "cohen-resnet110")


def test_cohen_file_bad_time(tmp_path: Path) -> None:
    rows = [list(r) for r in COHEN_ROWS]
    rows[2][5] = "14 seconds"
    with pytest.raises(ValueError, match=r"bad\.tsv, line 4, column 'time': cannot parse '14 seconds'"):
        read_results(write_tsv(tmp_path / "bad.tsv", rows, COHEN_HEADER))


def test_cohen_file_table_and_cli(cohen_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from manifoldcert.cli import main

    text = summarize([cohen_path], norm="l2", radii=[0.25, 0.5, 1.0], sigmas=[0.25])
    assert "| noise_0.25 | cohen | 0.25 | l2 | 8 |  | 0.625 | 0.500 | 0.375 | 0.250 | 0.505 |" in text
    plot = tmp_path / "cohen.png"
    argv = [
        "report",
        str(cohen_path),
        "--sigma",
        "0.25",
        "--radii",
        "0.5",
        "--norm",
        "l1",
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| noise_0.25 | cohen | 0.25 | l2→l1 (implied) | 8 |  | 0.625 | 0.375 |" in out
    assert "(implied): l1 radii that follow from the method's native norm" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one sigma per result file"):
        summarize([cohen_path], norm="l2", radii=[0.5], sigmas=[0.25, 0.5])


def test_sigma_and_method_given_must_agree_with_the_file(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "a.tsv", ROWS_A)
    assert read_results(path, sigma=0.25, method="cohen").sigma == 0.25
    with pytest.raises(ValueError, match=r"a\.tsv: sigma 0.5 given, but the file's 'sigma' column is 0.25"):
        read_results(path, sigma=0.5)
    with pytest.raises(ValueError, match="method 'dssn' given"):
        read_results(path, method="dssn")
    varying = [list(r) for r in ROWS_A]
    varying[0][12] = 0.3
    assert math.isnan(read_results(write_tsv(tmp_path / "v.tsv", varying)).sigma)
    with pytest.raises(ValueError, match="σ varies"):
        read_results(tmp_path / "v.tsv", sigma=0.25)
    empty = [[*r[:12], ""] for r in ROWS_A]
    assert read_results(write_tsv(tmp_path / "e.tsv", empty), sigma=0.25).sigma == 0.25


# ------------------------------------------------------------------------------------------------------------
# Marks: approximate rows, implied norms; legends; envelopes per method


def _with_guaranteed(rows: list[list], values: list[int]) -> list[list]:
    return [[*r, g] for r, g in zip(rows, values, strict=True)]


def test_guaranteed_column_marks_approximate_results(tmp_path: Path) -> None:
    header = [*HEADER, "n0", "n", "guaranteed"]
    rows = [[*r, 100, 1000] for r in ROWS_A]
    approx = read_results(write_tsv(tmp_path / "approx.tsv", _with_guaranteed(rows, [0] * 5), header))
    partly = read_results(write_tsv(tmp_path / "partly.tsv", _with_guaranteed(rows, [1, 0, 1, 1, 0]), header))
    sound = read_results(write_tsv(tmp_path / "sound.tsv", _with_guaranteed(rows, [1] * 5), header))
    old = read_results(write_tsv(tmp_path / "old.tsv", ROWS_A))
    np.testing.assert_array_equal(partly.guaranteed, [True, False, True, True, False])
    assert [t.approximate_rows for t in (approx, partly, sound, old)] == [5, 2, 0, 0]
    assert old.guaranteed is None
    md = accuracy_table([approx, partly, sound, old], [0.5], "l2", envelope=False).splitlines()
    assert [cells(line)[0] for line in md[2:]] == [
        "approx (approx.)",
        "partly (approx.: 2 of 5 rows)",
        "sound",
        "old",
    ]
    assert [curve_style(t, "l2") for t in (approx, sound, old)] == [(":", " (approx.)"), ("-", ""), ("-", "")]
    with pytest.raises(ValueError, match=r"line 3, column 'guaranteed'"):
        read_results(write_tsv(tmp_path / "bad.tsv", _with_guaranteed(rows, [1, 2, 1, 1, 1]), header))
    paths = [tmp_path / "approx.tsv", tmp_path / "sound.tsv"]
    assert "(approx.): the file marks these radii guaranteed = 0" in summarize(paths, norm="l2", radii=[0.5])
    assert "(approx.)" not in summarize([tmp_path / "sound.tsv"], norm="l2", radii=[0.5])


def test_implied_norm_is_marked(table_a: ResultTable) -> None:
    assert norm_label(table_a, "l2") == "l2" and norm_label(table_a, "l1") == "l2→l1 (implied)"
    md = accuracy_table([table_a], [0.3], "l1").splitlines()
    assert cells(md[2])[3] == "l2→l1 (implied)"
    assert curve_style(table_a, "l1") == ("--", " (l2→l1 implied)")
    assert "(implied)" not in summarize([table_a.source], norm="l2", radii=[0.3])


def _figure_lines(tables: list[ResultTable], norm: str = "l2") -> dict[str, str]:
    from manifoldcert.report import _certified_accuracy_figure

    fig = _certified_accuracy_figure(tables, norm, None, None, True)
    return {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}


def test_plot_styles_and_legend(table_a: ResultTable, tmp_path: Path) -> None:
    header = [*HEADER, "guaranteed"]
    approx = read_results(write_tsv(tmp_path / "ddrs.tsv", _with_guaranteed(ROWS_B, [0] * 4), header))
    lines = _figure_lines([table_a, approx])
    # same method, two σ: one envelope, drawn like its runs where they agree (here they do not: solid)
    assert lines == {
        "cohen σ=0.25": "-",
        "cohen σ=0.5 (approx.)": ":",
        "envelope of cohen over σ ∈ {0.25, 0.5}": "-",
    }
    assert _figure_lines([table_a], "l1") == {"cohen σ=0.25 (l2→l1 implied)": "--"}


def test_legend_labels(table_a: ResultTable, table_b: ResultTable, cohen_path: Path, tmp_path: Path) -> None:
    assert legend_labels([table_a, table_b]) == ["cohen σ=0.25", "cohen σ=0.5"]
    twin = read_results(write_tsv(tmp_path / "other_model.tsv", ROWS_A))
    # not unique: both fall back on the file stem; unknown σ: the stem; an explicit name is kept
    assert legend_labels([table_a, twin, table_b]) == ["run_a", "other_model", "cohen σ=0.5"]
    assert legend_labels([read_results(cohen_path)]) == ["noise_0.25"]
    assert legend_labels([read_results(cohen_path, sigma=0.25)]) == ["cohen σ=0.25"]
    assert legend_labels([read_results(tmp_path / "run_a.tsv", name="mine")]) == ["mine"]


def test_envelope_only_within_one_method(table_a: ResultTable, table_b: ResultTable, tmp_path: Path) -> None:
    other = [[*r[:11], "laplace", r[12]] for r in ROWS_B]
    laplace_b = read_results(write_tsv(tmp_path / "laplace_b.tsv", other))
    # one run per method: no envelope anywhere
    assert envelope_groups([table_a, laplace_b]) == []
    md = accuracy_table([table_a, laplace_b], [0.5], "l2")
    assert "envelope" not in md and len(md.strip().splitlines()) == 4
    assert set(_figure_lines([table_a, laplace_b])) == {"cohen σ=0.25", "laplace σ=0.5"}
    text = summarize([table_a.source, laplace_b.source], norm="l2", radii=[0.5])
    assert "- run_a (the only cohen run; its ACR): 0.3500" in text
    assert "- laplace_b (the only laplace run; its ACR): 0.5250" in text
    # two methods with two runs each: one envelope per method
    laplace_a = read_results(
        write_tsv(tmp_path / "laplace_a.tsv", [[*r[:11], "laplace", r[12]] for r in ROWS_A])
    )
    tables = [table_a, laplace_a, table_b, laplace_b]
    groups = envelope_groups(tables)
    assert [(label, [t.name for t in runs]) for label, runs in groups] == [
        ("envelope of cohen over σ ∈ {0.25, 0.5}", ["run_a", "run_b"]),
        ("envelope of laplace over σ ∈ {0.25, 0.5}", ["laplace_a", "laplace_b"]),
    ]
    md = accuracy_table(tables, [0.5], "l2").strip().splitlines()
    assert [cells(line)[:2] for line in md[-2:]] == [
        ["envelope of cohen over σ ∈ {0.25, 0.5}", "cohen"],
        ["envelope of laplace over σ ∈ {0.25, 0.5}", "laplace"],
    ]
    assert sum(label.startswith("envelope") for label in _figure_lines(tables)) == 2
    # σ unknown or repeated: named by the runs
    twin = read_results(write_tsv(tmp_path / "twin.tsv", ROWS_A))
    assert envelope_groups([table_a, twin])[0][0] == "envelope of cohen over runs run_a, twin"


def test_default_names_keep_cohens_sigma_suffix(tmp_path: Path) -> None:
    """Cohen et al. name files like noise_0.25/test/sigma_0.25: the ".25" is not an extension."""
    for model in ("noise_0.25", "noise_0.50"):
        (tmp_path / model / "test").mkdir(parents=True)
        write_tsv(tmp_path / model / "test" / "sigma_0.25", COHEN_ROWS, COHEN_HEADER)
    path = tmp_path / "noise_0.25" / "test" / "sigma_0.25"
    assert read_results(path).name == "sigma_0.25"
    assert read_results(write_tsv(tmp_path / "x.tsv", ROWS_A)).name == "x"
    # files of one name in different folders are told apart by their folders in the summary
    paths = [path, tmp_path / "noise_0.50" / "test" / "sigma_0.25"]
    text = summarize(paths, norm="l2", radii=[0.5], sigmas=[0.25])
    assert (
        "| noise_0.25/test/sigma_0.25 | cohen |" in text and "| noise_0.50/test/sigma_0.25 | cohen |" in text
    )
    # such names are still default names, so legends use method and σ; an explicit name is kept
    first = read_results(paths[0], "noise_0.25/test/sigma_0.25", sigma=0.25)
    assert legend_labels([first, read_results(paths[1], "other", sigma=0.5)]) == ["cohen σ=0.25", "other"]


def test_base_accuracy_comes_from_the_base_predict_column(tmp_path: Path) -> None:
    """manifoldcert's files record the base classifier's clean prediction; the table names three accuracies."""
    from manifoldcert.report import base_accuracy

    header = "idx label predict radius correct time radius_l1 radius_l2 radius_linf p_lower norm method sigma"
    rows = [
        "0 3 3 0.5 1 0.1 0.5 0.5 0.06 0.9 l2 cohen 0.25 1 3",
        "1 2 -1 0 0 0.1 0 0 0 0.4 l2 cohen 0.25 1 2",
        "2 1 1 0.2 1 0.1 0.2 0.2 0.02 0.7 l2 cohen 0.25 1 7",
        "3 0 5 0.1 0 0.1 0.1 0.1 0.01 0.6 l2 cohen 0.25 1 5",
    ]
    path = tmp_path / "run.tsv"
    path.write_text("\t".join((header + " guaranteed base_predict").split()) + "\n")
    with path.open("a") as handle:
        handle.writelines("\t".join(row.split()) + "\n" for row in rows)
    table = read_results(path)
    assert list(table.base_predict) == [3, 2, 7, 5]
    assert base_accuracy(table) == 0.5  # rows 0 and 1: the base classifier is right where the smoothed one abstains
    line = cells(accuracy_table([table], [0.25], "l2").splitlines()[2])
    assert line[5:7] == ["0.500", "0.500"]  # base accuracy, smoothed accuracy
