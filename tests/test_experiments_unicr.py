"""The UniCR experiment scripts (R–p_A curves, C-OPT / I-OPT) run end to end on a tiny budget."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_unicr_curves_tiny(tmp_path, capsys):
    module = _load("unicr_curves")
    argv = ["--dim", "4", "--mc-samples", "2000", "--table-size", "60", "--search", "symmetric"]
    argv += ["--noises", "gaussian", "laplace", "cauchy γ=1", "--norms", "l1", "l2"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| l2 | gaussian |" in out and "| l1 | laplace |" in out and "| l1 | cauchy γ=1 |" in out
    assert (tmp_path / "out" / "unicr_curves_l1.png").exists()
    assert (tmp_path / "out" / "unicr_curves_l2.png").exists()
    assert len(list((tmp_path / "cache").glob("unicr-*.json"))) == 6
    assert module.main(argv) == 0  # a rerun reads every table from the cache
    assert "cached" in capsys.readouterr().out


def test_unicr_opt_tiny(tmp_path, capsys):
    module = _load("unicr_opt")
    argv = ["--dataset", "digits", "--betas", "1", "2", "--sigmas", "0.25", "0.5", "--epochs", "1"]
    argv += ["--max", "2", "--skip", "50", "--n", "100", "--n0", "20", "--mc-samples", "1000"]
    argv += ["--table-size", "50", "--search", "symmetric", "--iopt-sigmas", "0.25", "--iopt-steps", "1"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "| vs. l1 |" in out and "| vs. l2 |" in out and "| vs. linf |" in out
    assert "| l2, I-OPT (NOT guaranteed) |" in out
    assert (tmp_path / "out" / "certify_beta_2_sigma_0.5.tsv").read_text().count("\n") == 3
    assert (tmp_path / "out" / "mlp_beta_1_sigma_0.25.pt").exists()
