"""The README's main job: train on ``digits``, certify with cohen / laplace / uniform and with the manifold-backed
ANCER and RDDRS, print tables, plot.

Cohen's certifier also runs sequentially (``sequential=True``, the table's radii, ``max_n = n``) on the same points:
votes per image and certified accuracy beside the fixed-n run (``<out>/cohen_sequential.tsv``).

For each ball method a small MLP is trained with that method's noise at σ = 0.25 (Gaussian, Laplace, uniform: the
same RMS per pixel), the test points are certified with n0 = 100, ``n`` samples and α = 0.001, and the results
go to ``<out>/<method>.tsv``; the l2 and l1 certified-accuracy tables are printed and
``<out>/certified_accuracy_l2.png`` / ``_l1.png`` written. Then the geometry: the Gaussian model certifies the
first ``geometry_count`` test points with ``ancer`` (θ on the positive diagonals) and ``rddrs`` (Σ on SPD(64))
under two metrics, affine-invariant and log-Euclidean, at one relative step length; the ellipsoid table gives
the proxy radius ``r·det(Σ)^{1/(2d)}``, the certified l2 ball ``r·sqrt(λ_min Σ)`` and the time per image beside
Cohen's ball on the same points (``<out>/geometry_<method>.tsv``). Everything is seeded; outputs are overwritten.
"""

from __future__ import annotations

import csv
import os
import time
from typing import cast

from manifoldcert.certifiers import SmoothingCertifier, get_certifier
from manifoldcert.data import load_dataset
from manifoldcert.report import accuracy_table, certified_accuracy, plot_certified_accuracy, read_results
from manifoldcert.runs import certify_dataset
from manifoldcert.train import train_checkpoint

DEMO_SIGMA = 0.25
DEMO_METHODS = ("cohen", "laplace", "uniform")
TABLE_RADII = {"l2": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), "l1": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)}
#: The manifold-backed runs of the demo: (label, method, options). A reduced ascent budget keeps the demo short.
_INNER = {"iterations": 50, "opt_samples": 100}
GEOMETRY_RUNS = (
    ("ancer", "ancer", {"iterations": 50, "ddrs_options": _INNER}),
    ("rddrs-affine-invariant", "rddrs", {"metric": "affine-invariant"}),
    ("rddrs-log-euclidean", "rddrs", {"metric": "log-euclidean"}),
)
_RDDRS_BUDGET = {"iterations": 15, "opt_samples": 500, "ddrs_options": _INNER, "ancer_options": _INNER}


def run_demo(
    out_dir: str = "results/demo",
    *,
    n: int = 10_000,
    max_count: int | None = None,
    epochs: int = 40,
    device: str = "cpu",
    seed: int = 0,
    geometry_count: int = 30,
) -> dict[str, str]:
    """Run the demo; returns the TSV path of each run."""
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    inputs = test.inputs()
    paths: dict[str, str] = {}
    models = {}
    certifier_for = {}
    for method in DEMO_METHODS:
        start = time.perf_counter()
        # DEMO_METHODS are all fixed-noise smoothing certifiers.
        noise = cast(SmoothingCertifier, get_certifier(method, None, sigma=DEMO_SIGMA)).noise
        path = os.path.join(out_dir, "models", f"{method}.pt")
        model, info = train_checkpoint(
            "mlp",
            train,
            noise,
            path,
            test=test,
            epochs=epochs,
            batch_size=64,
            seed=seed,
            device=device,
            progress=False,
        )
        clean = info.training["test_accuracy_clean"]
        models[method] = model
        certifier = get_certifier(method, model, sigma=DEMO_SIGMA, input_shape=test.input_shape)
        certifier_for[method] = certifier
        path = _fresh_run(certifier, test, os.path.join(out_dir, f"{method}.tsv"), n, max_count, seed)
        paths[method] = path
        print(
            f"{method}: {noise!r}, base accuracy {clean:.3f}, trained and certified in "
            f"{time.perf_counter() - start:.1f} s"
        )
    tables = [read_results(paths[m], name=m) for m in DEMO_METHODS]
    for norm in ("l2", "l1"):
        print(f"\nCertified accuracy on digits (test), {norm} radius, σ = {DEMO_SIGMA}, n = {n:,}, α = 0.001")
        print(accuracy_table(tables, TABLE_RADII[norm], norm=norm, envelope=False))
        plot = plot_certified_accuracy(
            tables,
            os.path.join(out_dir, f"certified_accuracy_{norm}.png"),
            norm=norm,
            title=f"digits, σ = {DEMO_SIGMA}, {norm} radius",
            envelope=False,
        )
        print(f"plot: {plot}")
    paths["cohen-sequential"] = _sequential(
        certifier_for["cohen"], inputs, test, paths["cohen"], out_dir, n, max_count, seed
    )
    if max_count is not None:
        geometry_count = min(geometry_count, max_count)  # compared with Cohen's ball on the same points
    if geometry_count > 0:
        paths.update(_geometry(models["cohen"], test, paths["cohen"], out_dir, n, geometry_count, seed))
    return paths


def _fresh_run(certifier, test, path: str, n: int, max_count, seed: int, **options) -> str:
    """Certify the test points to ``path`` from scratch (n0 = 100, α = 0.001)."""
    if os.path.exists(path):
        os.remove(path)
    options = {"progress": True, **options}
    return certify_dataset(
        certifier,
        test.inputs(),
        test.labels,
        path,
        max_count=max_count,
        seed=seed,
        n0=100,
        n=n,
        alpha=0.001,
        **options,
    )


def _sequential(certifier, inputs, test, fixed_path: str, out_dir: str, n: int, max_count, seed: int) -> str:
    """Cohen's certifier again, sequentially (the table's l2 radii, max_n = n): votes per image and accuracy."""
    radii = TABLE_RADII["l2"]
    settle = certifier.reachable_radii(radii, max_n=n, dim=int(inputs[0].numel()))
    path = os.path.join(out_dir, "cohen_sequential.tsv")
    _fresh_run(certifier, test, path, n, max_count, seed, sequential=True, radii=settle, progress=False)
    fixed, sequential = _rows(fixed_path), _rows(path)
    votes = {
        label: sum(int(line["n0"]) + int(line["n"]) for line in lines) / len(lines)
        for label, lines in (("fixed", fixed), ("sequential", sequential))
    }
    print(
        f"\nSequential certification (cohen, mixture confidence sequence, max_n = {n:,}, settles at radii "
        f"{', '.join(f'{r:g}' for r in settle)}): "
        f"{votes['sequential']:,.0f} votes per image against {votes['fixed']:,.0f} "
        f"({votes['fixed'] / votes['sequential']:.1f}× fewer); certified accuracy (l2)"
    )
    print("| radius | " + " | ".join(f"{r:g}" for r in radii) + " |")
    print("|---|" + "---:|" * len(radii))
    for label, run in (("fixed n", fixed_path), ("sequential", path)):
        cells = certified_accuracy(read_results(run), radii, "l2")
        print(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return path


def _geometry(model, test, cohen_path: str, out_dir: str, n: int, count: int, seed: int) -> dict[str, str]:
    """ANCER and RDDRS (two metrics) on the first ``count`` test points, and the ellipsoid table."""
    inputs = test.inputs()
    paths = {}
    for label, method, options in GEOMETRY_RUNS:
        start = time.perf_counter()
        budget = _RDDRS_BUDGET if method == "rddrs" else {}
        certifier = get_certifier(
            method, model, sigma=DEMO_SIGMA, input_shape=test.input_shape, **budget, **options
        )
        path = os.path.join(out_dir, f"geometry_{label}.tsv")
        if os.path.exists(path):
            os.remove(path)
        certify_dataset(
            certifier, inputs, test.labels, path, max_count=count, seed=seed, n0=100, n=n, alpha=0.001
        )
        paths[label] = path
        print(f"{label}: certified {count} points in {time.perf_counter() - start:.1f} s")
    rows = {"cohen (ball)": _rows(cohen_path)[:count], **{label: _rows(p) for label, p in paths.items()}}
    print(
        f"\nEllipsoids on digits (test, first {count} points), σ₀ = {DEMO_SIGMA}, n = {n:,}, α = 0.001; "
        "RDDRS: relative step 0.1 in each metric's own norm"
    )
    print("| method | certified acc | mean proxy radius | mean certified l2 | s / image |")
    print("|---|---:|---:|---:|---:|")
    for label, lines in rows.items():
        correct = [line["correct"] == "1" for line in lines]
        l2 = [float(line["radius_l2"]) * c for line, c in zip(lines, correct, strict=True)]
        proxy = [
            float(line.get("proxy_radius") or line["radius_l2"]) * c
            for line, c in zip(lines, correct, strict=True)
        ]
        seconds = sum(float(line["time"]) for line in lines) / len(lines)
        print(
            f"| {label} | {sum(correct) / len(lines):.3f} | {sum(proxy) / len(lines):.3f} | "
            f"{sum(l2) / len(lines):.3f} | {seconds:.2f} |"
        )
    return paths


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return sorted(csv.DictReader(handle, delimiter="\t"), key=lambda line: int(line["idx"]))
