"""RS vs DDRS vs ANCER vs RDDRS: certified accuracy against the proxy radius, as in RDDRS's Fig. 2 (MNIST).

For each training σ (``--sigmas``, the paper's {0.12, 0.25, 0.5}) one ``cnn`` is trained with Gaussian noise of
that σ (``train_checkpoint``, reused when ``<checkpoint-dir>/<dataset>_cnn_sigma_<σ>.pt`` exists — the
checkpoint names of ``experiments/mnist_cohen.py``). The same test images (every ``--skip``-th, at most
``--max``) are certified with σ₀ = σ by

- ``cohen`` (RS, ``N(0, σ²I)``),
- ``ddrs`` (``N(0, σ_x²I)``; ``--iterations`` steps × ``--opt-samples`` samples, learning rate ``--ddrs-lr``),
- ``ancer`` (``N(0, diag θ_x²)``, start ``ddrs``; same budget, ``--ancer-lr``, κ = 2),
- ``rddrs`` (``N(0, C_x)``, start ``ancer``; ``--rddrs-iterations`` × ``--rddrs-opt-samples``, ``--rddrs-lr``,
  κ = 1e-6, metric ``--metrics[0]``; its inner DDRS and ANCER runs use the DDRS / ANCER settings above),

each with n0 = 100, ``--n`` certification samples, α = ``--alpha``, without a memory (certificates of the
frozen-covariance classifier, ``guaranteed=False``). Every image's samples come from a generator seeded by
``(seed, idx)``, so ANCER's inner DDRS run is the DDRS run and RDDRS starts from the ANCER result.
Writes ``<out>/<method>_sigma_<σ>.tsv`` (RDDRS: ``rddrs-<metric>_sigma_<σ>.tsv``) and prints a Markdown table of
certified accuracy at proxy radii ``r·det(Σ)^{1/(2d)}`` (the l2 radius for RS and DDRS), the mean proxy radius
over the images certified correctly by all four methods (and whether RS ≤ DDRS ≤ ANCER ≤ RDDRS holds), and
the time per image; ``<out>/certified_accuracy_proxy.png`` has one panel per σ. With more than one metric in
``--metrics``, RDDRS is also run with each of them at ``--ablation-sigma`` on the same images (metric table:
mean proxy radius, mean l2 radius, time per image).

    OMP_NUM_THREADS=1 python experiments/spd_mnist.py --dataset mnist --skip 1250 --max 8 \
        --rddrs-iterations 10 --rddrs-opt-samples 200 --ablation-sigma 0.25 --out results/spd_mnist \
        --metrics affine-invariant log-euclidean bures-wasserstein
    OMP_NUM_THREADS=1 python experiments/spd_mnist.py --dataset digits --skip 18 --max 20 \
        --rddrs-iterations 30 --rddrs-opt-samples 500 --ablation-sigma 0.25 --out results/spd_digits \
        --metrics affine-invariant log-euclidean bures-wasserstein

The defaults (every 1,250th test image, at most 8; RDDRS 10 steps × 200 samples instead of the class's
100 × 1,000) keep the MNIST run to about a quarter of an hour on two CPU cores: at d = 784 one RDDRS step
costs about a second (exponential map, Cholesky backward, two eigendecompositions) and at the class defaults
affine-invariant RDDRS took minutes per image (experiments/bench_rddrs.py).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from manifoldcert import noises
from manifoldcert.certifiers import AbstractCertifier, get_certifier
from manifoldcert.data import load_train_test
from manifoldcert.geometry.spd import METRICS
from manifoldcert.runs import add_run_arguments, certify_with_args
from manifoldcert.train import train_checkpoint

METHODS = ("cohen", "ddrs", "ancer", "rddrs")
LABELS = {"cohen": "RS", "ddrs": "DDRS", "ancer": "ANCER", "rddrs": "RDDRS"}
RADII = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


@dataclass(frozen=True)
class Run:
    """One certification TSV read back: per image index, correctness, proxy and l2 radius, seconds."""

    name: str
    idx: np.ndarray
    correct: np.ndarray
    proxy: np.ndarray
    l2: np.ndarray
    seconds: np.ndarray

    def certified_accuracy(self, radii: Sequence[float]) -> list[float]:
        """Fraction of the images that are correct with proxy radius ≥ r, for each r."""
        return [
            float(np.mean(self.correct & (self.proxy >= r))) if len(self.idx) else math.nan for r in radii
        ]


def read_run(path: str, name: str) -> Run:
    """Read a TSV of :func:`manifoldcert.runs.certify_dataset`; the proxy radius is the l2 one without the column."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows.sort(key=lambda row: int(row["idx"]))

    def column(key: str) -> np.ndarray:
        return np.array([float(row[key]) if row.get(key) else math.nan for row in rows])

    l2 = column("radius_l2")
    proxy = column("proxy_radius") if rows and "proxy_radius" in rows[0] else l2.copy()
    return Run(
        name=name,
        idx=np.array([int(row["idx"]) for row in rows], dtype=int),
        correct=np.array([row["correct"] == "1" for row in rows], dtype=bool),
        proxy=np.nan_to_num(proxy),
        l2=np.nan_to_num(l2),
        seconds=column("time"),
    )


def build_certifier(
    method: str, model: torch.nn.Module, sigma: float, metric: str, args: argparse.Namespace, input_shape
) -> AbstractCertifier:
    """The certifier of ``method`` with the command line's optimisation budgets."""
    common = {"sigma": sigma, "batch_size": args.batch_size, "input_shape": input_shape}
    ddrs = {"iterations": args.iterations, "opt_samples": args.opt_samples, "learning_rate": args.ddrs_lr}
    ancer = {"iterations": args.iterations, "opt_samples": args.opt_samples, "learning_rate": args.ancer_lr}
    if method == "cohen":
        return get_certifier("cohen", model, **common)
    if method == "ddrs":
        return get_certifier("ddrs", model, **common, **ddrs)
    if method == "ancer":
        return get_certifier("ancer", model, **common, **ancer, start="ddrs", ddrs_options=ddrs)
    return get_certifier(
        "rddrs",
        model,
        **common,
        metric=metric,
        start="ancer",
        iterations=args.rddrs_iterations,
        opt_samples=args.rddrs_opt_samples,
        learning_rate=args.rddrs_lr,
        ddrs_options=ddrs,
        ancer_options=ancer,
    )


def run_name(method: str, metric: str) -> str:
    return f"rddrs-{metric}" if method == "rddrs" else method


def common_means(runs: dict[str, Run]) -> tuple[int, dict[str, float], dict[str, float]]:
    """Number of images certified correctly by every run, and each run's mean proxy and l2 radius over them."""
    sets = [set(run.idx[run.correct].tolist()) for run in runs.values()]
    common = sorted(set.intersection(*sets)) if sets else []
    proxy, l2 = {}, {}
    for key, run in runs.items():
        mask = np.isin(run.idx, common)
        proxy[key] = float(run.proxy[mask].mean()) if common else math.nan
        l2[key] = float(run.l2[mask].mean()) if common else math.nan
    return len(common), proxy, l2


def plot_panels(curves: dict[float, dict[str, Run]], path: str, title: str) -> str:
    """One panel per σ: certified accuracy against the proxy radius, one step curve per method."""
    figure = Figure(figsize=(4.2 * len(curves), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    top = max(
        (float(run.proxy.max()) for runs in curves.values() for run in runs.values() if len(run.idx)),
        default=1,
    )
    grid = np.linspace(0.0, 1.05 * max(top, 1e-3), 400)
    for axis, (sigma, runs) in zip(axes, curves.items(), strict=True):
        for key, run in runs.items():
            axis.plot(grid, run.certified_accuracy(grid), label=LABELS.get(key.split("-")[0], key))
        axis.set_title(f"σ = {sigma}")
        axis.set_xlabel("proxy radius r·det(Σ)^{1/(2d)}")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("certified accuracy")
    axes[0].legend()
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.12, 0.25, 0.5])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=5)
    add_run_arguments(parser, n=10_000, skip=1250)
    parser.set_defaults(max=8)
    parser.add_argument("--iterations", type=int, default=100, help="DDRS and ANCER steps")
    parser.add_argument("--opt-samples", type=int, default=100, help="DDRS and ANCER samples per step")
    parser.add_argument("--ddrs-lr", type=float, default=0.1)
    parser.add_argument("--ancer-lr", type=float, default=0.04)
    parser.add_argument("--rddrs-iterations", type=int, default=10, help="RDDRS steps (class default 100)")
    parser.add_argument(
        "--rddrs-opt-samples", type=int, default=200, help="RDDRS samples per step (class default 1000)"
    )
    parser.add_argument("--rddrs-lr", type=float, default=1.0)
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["affine-invariant"],
        choices=list(METRICS),
        help="RDDRS metric(s); the first is used in the method comparison, all of them in the ablation",
    )
    parser.add_argument("--ablation-sigma", type=float, default=None, help="σ of the metric ablation")
    parser.add_argument("--checkpoint-dir", default=None, help="where the models are (default: --out)")
    parser.add_argument("--out", default="results/spd_mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    checkpoint_dir = args.checkpoint_dir or args.out
    dataset, train, test = load_train_test(args.dataset, root=args.root, fallback="mnist-5k")
    inputs = test.inputs()
    ablation_sigma = args.sigmas[0] if args.ablation_sigma is None else args.ablation_sigma
    sigmas = list(dict.fromkeys([*args.sigmas, ablation_sigma])) if len(args.metrics) > 1 else args.sigmas
    curves: dict[float, dict[str, Run]] = {}
    ablation: dict[str, Run] = {}
    clean: dict[float, float] = {}
    for sigma in sigmas:
        model, info = train_checkpoint(
            "cnn",
            train,
            noises.Gaussian(sigma),
            os.path.join(checkpoint_dir, f"{dataset}_cnn_sigma_{sigma}.pt"),
            test=test,
            epochs=args.epochs,
            seed=args.seed,
            device=device,
            reuse=True,
        )
        clean[sigma] = info.training["test_accuracy_clean"]
        jobs = [(m, args.metrics[0]) for m in args.methods] if sigma in args.sigmas else []
        if len(args.metrics) > 1 and sigma == ablation_sigma:
            jobs += [("rddrs", metric) for metric in args.metrics if ("rddrs", metric) not in jobs]
        for method, metric in jobs:
            name = run_name(method, metric)
            certifier = build_certifier(method, model, sigma, metric, args, test.input_shape)
            path = os.path.join(args.out, f"{name}_sigma_{sigma}.tsv")
            certify_with_args(certifier, inputs, test.labels, path, args)
            run = read_run(path, name)
            if sigma in args.sigmas and method in args.methods and metric == args.metrics[0]:
                curves.setdefault(sigma, {})[method] = run
            if method == "rddrs" and sigma == ablation_sigma:
                ablation[metric] = run

    count = len(next(iter(next(iter(curves.values())).values())).idx) if curves else 0
    print(
        f"\nCertified accuracy at proxy radius r·det(Σ)^(1/(2d)) on {dataset} test, every {args.skip}-th image "
        f"(at most {args.max}; {count} images), n0 = {args.n0}, n = {args.n:,}, α = {args.alpha}; "
        f"DDRS/ANCER {args.iterations} steps × {args.opt_samples} samples, RDDRS ({args.metrics[0]}) "
        f"{args.rddrs_iterations} steps × {args.rddrs_opt_samples} samples, lr {args.rddrs_lr}"
    )
    header = (
        "| σ | method | "
        + " | ".join(f"r = {r}" for r in RADII)
        + " | mean proxy (common) | mean l2 (common) | s / image |"
    )
    print(header)
    print("|---|---|" + "---:|" * (len(RADII) + 3))
    orderings = []
    for sigma, runs in curves.items():
        common, means, l2_means = common_means(runs)
        for method, run in runs.items():
            cells = " | ".join(f"{a:.3f}" for a in run.certified_accuracy(RADII))
            label = f"{LABELS[method]}" + (f" ({args.metrics[0]})" if method == "rddrs" else "")
            print(
                f"| {sigma} | {label} | {cells} | {means[method]:.3f} | {l2_means[method]:.3f} | "
                f"{np.mean(run.seconds):.2f} |"
            )
        values = [means[m] for m in METHODS if m in means]
        holds = all(a <= b for a, b in zip(values, values[1:], strict=False)) and len(values) == len(METHODS)
        orderings.append(
            f"σ = {sigma} (clean acc {clean[sigma]:.4f}): {common} images certified correctly by all of "
            f"{', '.join(LABELS[m] for m in runs)}; RS ≤ DDRS ≤ ANCER ≤ RDDRS on their mean proxy radius: "
            f"{'holds' if holds else 'does NOT hold'}"
        )
    print("\n" + "\n".join(orderings))

    if len(ablation) > 1:
        common, means, _ = common_means(ablation)
        print(
            f"\nRDDRS metric ablation at σ = {ablation_sigma} on the same images "
            f"(means over all {len(next(iter(ablation.values())).idx)} images, radius 0 when abstaining or wrong; "
            f"'common' over the {common} images all metrics certify correctly)"
        )
        print("| metric | certified acc | mean proxy | mean l2 | mean proxy (common) | s / image |")
        print("|---|---:|---:|---:|---:|---:|")
        for metric, run in ablation.items():
            proxy = float(np.mean(run.proxy * run.correct))
            l2 = float(np.mean(run.l2 * run.correct))
            print(
                f"| {metric} | {np.mean(run.correct):.3f} | {proxy:.3f} | {l2:.3f} | {means[metric]:.3f} | "
                f"{np.mean(run.seconds):.2f} |"
            )
    if curves:
        plot = plot_panels(
            curves,
            os.path.join(args.out, "certified_accuracy_proxy.png"),
            f"{dataset}: RS, DDRS, ANCER, RDDRS ({count} test images, n = {args.n:,})",
        )
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
