"""Experiment scripts run end to end on a tiny budget (they are part of the library's surface)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mnist_cohen_tiny(tmp_path, capsys):
    module = _load("mnist_cohen")
    argv = [
        "--dataset",
        "mnist-5k",
        "--sigmas",
        "0.25",
        "--epochs",
        "1",
        "--max",
        "3",
        "--n",
        "200",
        "--skip",
        "100",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    assert "Certified accuracy (l2) on mnist-5k" in capsys.readouterr().out
    assert (tmp_path / "sigma_0.25.tsv").read_text().count("\n") == 4
    assert (tmp_path / "certified_accuracy_l2.png").exists()


@pytest.mark.slow
def test_bench_estimator_runs(capsys):
    assert _load("bench_estimator").main(["--n", "2000", "--repeats", "1"]) == 0
    assert "ratio" in capsys.readouterr().out


def test_dssn_l1_tiny(tmp_path, capsys):
    module = _load("dssn_l1")
    argv = [
        "--dataset",
        "digits",
        "--sigmas",
        "0.5",
        "--epochs",
        "1",
        "--max",
        "2",
        "--n",
        "100",
        "--skip",
        "50",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| dssn |" in out and "| ssn |" in out and "| uniform |" in out
    for method in ("uniform", "ssn", "dssn"):
        assert (tmp_path / f"{method}_sigma_0.5.tsv").read_text().count("\n") == 3


def test_input_dependent_tiny(tmp_path, capsys):
    module = _load("input_dependent")
    argv = [
        "--dataset",
        "digits",
        "--sigmas",
        "0.25",
        "--epochs",
        "1",
        "--max",
        "3",
        "--n",
        "200",
        "--skip",
        "50",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| 0.25 | constant |" in out and "| 0.25 | input-dependent |" in out and "NOT certified" in out


def test_functional_toy_tiny(tmp_path, capsys):
    module = _load("functional_toy")
    argv = [
        "--scales",
        "0.1",
        "0.3",
        "--ks",
        "0",
        "2",
        "--samples",
        "4000",
        "--eps",
        "0.1",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| zhang-mixed |" in out and "| zhang-linf |" in out and "| zhang-l2 |" in out
    assert (tmp_path / "functional_toy.tsv").read_text().count("\n") == 13  # header + 3 families × 2 k × 2 s
    assert (tmp_path / "functional_toy.png").exists()
    assert module.pareto_frontier(np.array([0.9, 0.5, 0.7]), np.array([0.1, 0.3, 0.05])).tolist() == [1, 0]


def test_functional_mnist_tiny(tmp_path, capsys):
    module = _load("functional_mnist")
    argv = ["--dataset", "digits", "--norms", "l2", "linf", "--sigmas", "0.5", "--ks", "8", "--epochs", "1"]
    argv += ["--max", "2", "--n", "100", "--skip", "50", "--mc-samples", "5000", "--out", str(tmp_path)]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| gaussian |" in out and "| zhang-l2 |" in out and "| zhang-mixed |" in out
    assert (tmp_path / "linf_functional_sigma_0.5_k_8.tsv").read_text().count("\n") == 3
