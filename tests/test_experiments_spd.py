"""The SPD experiment script (spd_mnist.py), ``bench rddrs`` and the docs' worked example, on a tiny budget."""

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
        "--counts",
        "2",
        "--epochs",
        "1",
        "--skip",
        "50",
        "--n",
        "100",
        "--rddrs-iterations",
        "2",
        "--rddrs-opt-samples",
        "50",
        "--choice-samples",
        "50",
        "--metrics",
        "affine-invariant",
        "log-euclidean",
        "geomstats:SPDAffineMetric",
        "--ablation-sigma",
        "0.25",
        "--ablation-count",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    for method in module.METHODS:
        assert f"| 0.25 | {method} | 2 |" in out
    assert "RDDRS < ANCER (per image)" in out
    for metric in ("affine-invariant", "log-euclidean", "geomstats:SPDAffineMetric"):
        assert f"| {metric} |" in out
    rows = module.read_rows(str(tmp_path / "sigma_0.25.tsv"))
    assert sorted({(int(r["idx"]), r["method"]) for r in rows}) == sorted(
        (idx, method) for idx in (0, 50) for method in module.METHODS
    )
    ablation = module.read_rows(str(tmp_path / "ablation_sigma_0.25.tsv"))
    assert [r["metric"] for r in ablation] == [
        "affine-invariant",
        "log-euclidean",
        "geomstats:SPDAffineMetric",
    ]
    # The forward passes grow along the chain, and the proxy radius is never below the certified l2 ball.
    by_method = {r["method"]: r for r in rows if r["idx"] == "0"}
    assert (
        int(by_method["DDRS"]["forward_passes"])
        < int(by_method["ANCER"]["forward_passes"])
        < int(by_method["RDDRS"]["forward_passes"])
    )
    assert all(float(r["proxy"]) >= float(r["l2"]) - 1e-6 for r in rows)
    assert (tmp_path / "certified_accuracy_proxy.png").stat().st_size > 0
    # A second run resumes: nothing is certified again.
    assert module.main(argv) == 0
    assert len(module.read_rows(str(tmp_path / "sigma_0.25.tsv"))) == len(rows)


def test_bench_rddrs_tiny():
    from manifoldcert.bench import bench_rddrs

    results = bench_rddrs(("affine-invariant", "geomstats:SPDAffineMetric"), steps=1, opt_samples=20)
    assert [r.metric for r in results] == ["affine-invariant", "geomstats:SPDAffineMetric"]
    for result in results:
        assert result.seconds_per_step > 0 and set(result.shares) >= {
            "estimator",
            "exp",
            "projection",
            "rest",
        }
        assert math.isclose(sum(result.shares.values()), 1.0, abs_tol=1e-6)
        assert result.shares["exp"] > 0 and "s/step" in result.line()


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
