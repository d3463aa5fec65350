"""The SPD experiment scripts (spd_mnist.py, bench_rddrs.py) and the docs' worked example, on a tiny budget."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_spd_mnist_tiny_on_digits_with_the_metric_ablation(tmp_path, capsys):
    module = _load("spd_mnist")
    argv = [
        "--dataset",
        "digits",
        "--sigmas",
        "0.25",
        "--epochs",
        "1",
        "--max",
        "2",
        "--skip",
        "50",
        "--n",
        "100",
        "--iterations",
        "2",
        "--rddrs-iterations",
        "2",
        "--rddrs-opt-samples",
        "50",
        "--metrics",
        "affine-invariant",
        "log-euclidean",
        "bures-wasserstein",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    for label in (
        "| 0.25 | RS |",
        "| 0.25 | DDRS |",
        "| 0.25 | ANCER |",
        "| 0.25 | RDDRS (affine-invariant) |",
    ):
        assert label in out
    assert "RS ≤ DDRS ≤ ANCER ≤ RDDRS on their mean proxy radius" in out
    for metric in ("affine-invariant", "log-euclidean", "bures-wasserstein"):
        assert f"| {metric} |" in out
        assert (tmp_path / f"rddrs-{metric}_sigma_0.25.tsv").read_text().count("\n") == 3
    for method in ("cohen", "ddrs", "ancer"):
        assert (tmp_path / f"{method}_sigma_0.25.tsv").read_text().count("\n") == 3
    assert (tmp_path / "certified_accuracy_proxy.png").stat().st_size > 0
    # Every method certified the same images, and the proxy radius of RDDRS is read from its own column.
    runs = {m: module.read_run(str(tmp_path / f"{m}_sigma_0.25.tsv"), m) for m in ("cohen", "ddrs")}
    assert runs["cohen"].idx.tolist() == runs["ddrs"].idx.tolist() == [0, 50]
    rddrs = module.read_run(str(tmp_path / "rddrs-affine-invariant_sigma_0.25.tsv"), "rddrs")
    assert (rddrs.proxy >= rddrs.l2 - 1e-6).all()  # det(Σ)^{1/(2d)} ≥ λ_min(Σ)^{1/2}


def test_bench_rddrs_tiny(capsys):
    module = _load("bench_rddrs")
    argv = [
        "--input-shape",
        "1",
        "8",
        "8",
        "--images",
        "1",
        "--iterations",
        "2",
        "--inner-iterations",
        "2",
        "--opt-samples",
        "50",
        "--n",
        "200",
    ]
    assert module.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "s/image" in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "affine-invariant",
        "log-euclidean",
        "bures-wasserstein",
    ]
    for line in lines:
        shares = [float(part.split()[-1].rstrip("%")) for part in line.split("|")[1:5]]
        assert all(share >= 0 for share in shares[:3])
        assert math.isclose(sum(shares), 100.0, abs_tol=0.5)


def test_stopwatch_counts_nested_calls_once():
    stopwatch = _load("bench_rddrs").Stopwatch()
    inner = stopwatch.wrap("key", lambda: sum(range(1000)))
    outer = stopwatch.wrap("key", lambda: inner() + inner())
    outer()
    assert stopwatch.totals["key"] > 0 and set(stopwatch.totals) == {"key"}


def test_docs_worked_example_runs():
    """The example of docs/methods/data-dependent.md (kept in sync by hand), with its printed numbers."""
    import tempfile

    from manifoldcert import noises
    from manifoldcert.certifiers import get_certifier
    from manifoldcert.data import load_train_test
    from manifoldcert.train import train_checkpoint

    _, train, test = load_train_test("digits")  # 8×8 inputs: d = 64
    with tempfile.TemporaryDirectory() as folder:  # a small cnn trained with N(0, 0.25²I), a few seconds
        model, _ = train_checkpoint(
            "cnn", train, noises.Gaussian(0.25), f"{folder}/cnn.pt", epochs=5, progress=False
        )
    x, label = test.inputs()[0], int(test.labels[0])
    certifiers = {
        "ddrs": get_certifier("ddrs", model, sigma=0.25, iterations=20, seed=0),
        "ancer": get_certifier("ancer", model, sigma=0.25, iterations=20, seed=0),
        "rddrs": get_certifier(
            "rddrs", model, sigma=0.25, iterations=5, opt_samples=200, metric="log-euclidean", seed=0
        ),
        "rddrs+memory": get_certifier(
            "rddrs", model, sigma=0.25, iterations=5, opt_samples=200, memory=True, seed=0
        ),
    }
    for name, certifier in certifiers.items():
        cert = certifier.certify(x, n=1000)
        assert cert.prediction == label == 7 and cert.guaranteed == (name == "rddrs+memory")
        region = cert.region  # Ellipsoid(Σ, r), Σ of shape (64, 64)
        assert region.shape_matrix.shape == (64, 64)
        assert math.isclose(cert.radius["l2"], region.l2_ball_radius, rel_tol=1e-6)
        assert math.isclose(cert.params["proxy_radius"], region.proxy_radius, rel_tol=1e-6)
        assert cert.params["proxy_radius"] >= cert.radius["l2"] * (1 - 1e-9)
