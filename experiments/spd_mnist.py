"""RS vs DDRS vs ANCER vs RDDRS: certified accuracy against the proxy radius, as in RDDRS's Fig. 2 (MNIST), and a
metric ablation at one step length.

For each training σ (``--sigmas``, the paper's {0.12, 0.25, 0.5}) one ``cnn`` is trained with Gaussian noise of
that σ (``train_checkpoint``, reused when ``<checkpoint-dir>/<dataset>_cnn_sigma_<σ>.pt`` exists). The same test
images — idx 0, skip, 2·skip, … (the first ``--counts[i]`` of them at ``--sigmas[i]``) — are certified by all
four methods from ONE run of the ``rddrs`` certifier's chain per image, since the chain is DDRS → ANCER → RDDRS:

- SELECT: the top class from n0 = 100 votes under ``N(0, σ²I)``;
- RS: CERTIFY under ``N(0, σ²I)``;
- DDRS, ANCER, RDDRS: CERTIFY under the covariance each stage of the chain chose (its CHOOSE step on
  independent votes, :mod:`manifoldcert.certifiers.data_dependent`) — exactly what the ``ddrs``, ``ancer`` and
  ``rddrs`` certifiers return, on other random streams.

Every CERTIFY uses ``--n`` fresh samples at α = ``--alpha``, no memory (certificates of the frozen-covariance
classifier, ``guaranteed=False``). Per image the samples come from a generator seeded by (seed, idx).

Metric ablation (``--ablation-sigma``, the first ``--ablation-count`` images): from each image's ANCER covariance
(the same start for every metric), only the RDDRS stage is run with each metric of ``--metrics`` — names of ours
and ``geomstats:<Class>`` for a geomstats metric through the adapter — at the same relative step length
``--rddrs-lr`` in each metric's own norm, on the same seed (so the first step's samples coincide).

Writes ``<out>/sigma_<σ>.tsv`` (one row per image and method, written as it goes; an existing file is resumed),
``<out>/ablation_sigma_<σ>.tsv``, ``<out>/certified_accuracy_proxy.png`` and prints Markdown tables.

    OMP_NUM_THREADS=1 python experiments/spd_mnist.py --sigmas 0.25 --counts 100 --skip 50 \
        --ablation-sigma 0.25 --ablation-count 30 --out results/spd_mnist
    OMP_NUM_THREADS=1 python experiments/spd_mnist.py --sigmas 0.12 0.5 --counts 50 50 --skip 50 --out results/spd_mnist
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from manifoldcert import noises
from manifoldcert.certifiers.data_dependent import RDDRS
from manifoldcert.data import load_train_test
from manifoldcert.geometry.covariance import Covariance
from manifoldcert.train import train_checkpoint

METHODS = ("RS", "DDRS", "ANCER", "RDDRS")
RADII = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
COLUMNS = (
    "idx",
    "label",
    "method",
    "metric",
    "prediction",
    "correct",
    "p_lower",
    "mahalanobis",
    "proxy",
    "l2",
    "sigma_min",
    "sigma_max",
    "chosen_step",
    "forward_passes",
    "seconds",
)


def row(
    idx: int,
    label: int,
    method: str,
    metric: str,
    top_class: int,
    p_lower: float,
    radius: float,
    covariance: Covariance,
    chosen_step: int,
    forward_passes: int,
    seconds: float,
) -> dict[str, Any]:
    """One TSV row: the certificate of ``method`` under ``covariance`` (radius 0 when abstaining)."""
    eigenvalues = covariance.eigenvalues()
    certified = radius > 0
    return {
        "idx": idx,
        "label": label,
        "method": method,
        "metric": metric,
        "prediction": top_class if certified else -1,
        "correct": int(certified and top_class == label),
        "p_lower": f"{p_lower:.6f}",
        "mahalanobis": f"{radius:.5f}",
        "proxy": f"{radius * covariance.proxy_scale():.5f}",
        "l2": f"{radius * math.sqrt(float(eigenvalues[0])):.5f}",
        "sigma_min": f"{math.sqrt(float(eigenvalues[0])):.5f}",
        "sigma_max": f"{math.sqrt(float(eigenvalues[-1])):.5f}",
        "chosen_step": chosen_step,
        "forward_passes": forward_passes,
        "seconds": f"{seconds:.2f}",
    }


class RowWriter:
    """Appends rows to a TSV as they come (header first); the set of (idx, method, metric) already written."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: set[tuple[int, str, str]] = set()
        if os.path.exists(path):
            with open(path, newline="") as handle:
                for line in csv.DictReader(handle, delimiter="\t"):
                    self.done.add((int(line["idx"]), line["method"], line["metric"]))
        else:
            with open(path, "w", newline="") as handle:
                handle.write("\t".join(COLUMNS) + "\n")

    def write(self, values: dict[str, Any]) -> None:
        """Append one row, unless a resumed file already holds it (an image interrupted after some methods)."""
        if (int(values["idx"]), values["method"], values["metric"]) in self.done:
            return
        with open(self.path, "a", newline="") as handle:
            handle.write("\t".join(str(values[c]) for c in COLUMNS) + "\n")
        self.done.add((int(values["idx"]), values["method"], values["metric"]))


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def certify_image(
    certifier: RDDRS,
    ablation: dict[str, RDDRS],
    x: torch.Tensor,
    idx: int,
    label: int,
    args: argparse.Namespace,
    writer: RowWriter,
    ablation_writer: RowWriter | None,
) -> None:
    """SELECT once, run the chain once, CERTIFY each stage's covariance; then the ablation's RDDRS stages."""
    estimator = certifier.require_estimator()
    generator = estimator.generator(args.seed * 1_000_003 + idx)
    metric = certifier.metric
    start = time.perf_counter()
    top_class = certifier.select(x, args.n0, generator=generator)
    options = {"n": args.n, "alpha": args.alpha, "generator": generator, "batch_size": args.batch_size}
    rs_covariance = Covariance.isotropic(certifier.sigma, x.numel())
    p_lower, radius = certifier.bound(x, top_class, rs_covariance, **options)
    writer.write(
        row(
            idx,
            label,
            "RS",
            "-",
            top_class,
            p_lower,
            radius,
            rs_covariance,
            0,
            0,
            time.perf_counter() - start,
        )
    )
    chain = certifier.optimise(
        x, top_class, n=args.n, alpha=args.alpha, generator=generator, batch_size=args.batch_size
    )
    # Time per method: SELECT and the stages up to this one, plus this method's CERTIFY.
    passes, elapsed = 0, time.perf_counter() - start - sum(result.seconds for result in chain.stages)
    for result in chain.stages:
        passes += result.forward_passes
        method = result.name.upper()
        began = time.perf_counter()
        p_lower, radius = certifier.bound(x, top_class, result.covariance, **options)
        elapsed += result.seconds + time.perf_counter() - began
        name = metric if method == "RDDRS" else "-"
        writer.write(
            row(
                idx,
                label,
                method,
                name,
                top_class,
                p_lower,
                radius,
                result.covariance,
                result.chosen_step,
                passes,
                elapsed,
            )
        )
    if ablation_writer is None:
        return
    ancer = chain.stages[-2].covariance
    for name, rddrs in ablation.items():
        if (idx, "RDDRS", name) in ablation_writer.done:
            continue
        began = time.perf_counter()
        # The same seed for every metric: the first ascent step runs on the same samples.
        metric_generator = estimator.generator(args.seed * 1_000_003 + idx + 500_000)
        result = rddrs.run_stage(
            x,
            top_class,
            ancer,
            floor=chain.stages[-1].floor,
            n=args.n,
            alpha=args.alpha,
            generator=metric_generator,
        )
        p_lower, radius = rddrs.bound(x, top_class, result.covariance, **options)
        ablation_writer.write(
            row(
                idx,
                label,
                "RDDRS",
                name,
                top_class,
                p_lower,
                radius,
                result.covariance,
                result.chosen_step,
                result.forward_passes,
                time.perf_counter() - began,
            )
        )


def summary(rows: list[dict[str, str]], key: str) -> dict[str, dict[int, dict[str, str]]]:
    """Rows grouped by ``key`` (method or metric), then by image index."""
    grouped: dict[str, dict[int, dict[str, str]]] = {}
    for line in rows:
        grouped.setdefault(line[key], {})[int(line["idx"])] = line
    return grouped


def certified_accuracy(lines: Sequence[dict[str, str]], radius: float) -> float:
    return float(np.mean([line["correct"] == "1" and float(line["proxy"]) >= radius for line in lines]))


def print_method_table(sigma: float, rows: list[dict[str, str]]) -> list[str]:
    """Certified accuracy at proxy radii, mean proxy and l2 radius (0 where abstaining or wrong), time per image,
    forward passes per image, and how often RDDRS ends below its ANCER start."""
    methods = summary(rows, "method")
    images = sorted(set.intersection(*(set(lines) for lines in methods.values())))
    output = []
    for method in METHODS:
        if method not in methods:
            continue
        lines = [methods[method][i] for i in images]
        mean_proxy = np.mean([float(line["proxy"]) * (line["correct"] == "1") for line in lines])
        mean_l2 = np.mean([float(line["l2"]) * (line["correct"] == "1") for line in lines])
        cells = " | ".join(f"{certified_accuracy(lines, r):.3f}" for r in RADII)
        seconds = np.mean([float(line["seconds"]) for line in lines])
        passes = np.mean([float(line["forward_passes"]) for line in lines])
        output.append(
            f"| {sigma} | {method} | {len(lines)} | {cells} | {mean_proxy:.3f} | {mean_l2:.3f} | {passes:,.0f} | "
            f"{seconds:.1f} |"
        )
    if "RDDRS" in methods and "ANCER" in methods:
        below = sum(float(methods["RDDRS"][i]["proxy"]) < float(methods["ANCER"][i]["proxy"]) for i in images)
        kept = sum(methods["RDDRS"][i]["chosen_step"] == "0" for i in images)
        output.append(
            f"|  | RDDRS < ANCER (per image) | {below} of {len(images)} | RDDRS kept its start on {kept} |"
        )
    return output


def plot(curves: dict[float, list[dict[str, str]]], path: str, title: str) -> str:
    """One panel per σ: certified accuracy against the proxy radius, one step curve per method."""
    figure = Figure(figsize=(4.2 * len(curves), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    top = max((float(line["proxy"]) for rows in curves.values() for line in rows), default=1.0)
    grid = np.linspace(0.0, 1.05 * max(top, 1e-3), 400)
    for axis, (sigma, rows) in zip(axes, sorted(curves.items()), strict=True):
        methods = summary(rows, "method")
        for method in METHODS:
            if method in methods:
                lines = list(methods[method].values())
                axis.plot(grid, [certified_accuracy(lines, r) for r in grid], label=method)
        axis.set_title(f"σ = {sigma} ({len(next(iter(methods.values())))} images)")
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
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 100, 50], help="images per σ")
    parser.add_argument("--skip", type=int, default=50, help="every skip-th test image")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rddrs-iterations", type=int, default=20)
    parser.add_argument("--rddrs-opt-samples", type=int, default=1000)
    parser.add_argument(
        "--rddrs-lr", type=float, default=0.1, help="relative step length in the metric's norm"
    )
    parser.add_argument("--choice-samples", type=int, default=1000)
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["affine-invariant"],
        help="RDDRS metric(s): the first is used in the method comparison, all of them in the ablation",
    )
    parser.add_argument("--ablation-sigma", type=float, default=None)
    parser.add_argument("--ablation-count", type=int, default=20)
    parser.add_argument("--checkpoint-dir", default=None, help="where the models are (default: --out)")
    parser.add_argument("--out", default="results/spd_mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.counts) != len(args.sigmas):
        parser.error("--counts needs one number per σ of --sigmas")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    checkpoint_dir = args.checkpoint_dir or args.out
    dataset, train, test = load_train_test(args.dataset, root=args.root, fallback="mnist-5k")
    inputs = test.inputs()
    budget = {
        "iterations": args.rddrs_iterations,
        "opt_samples": args.rddrs_opt_samples,
        "learning_rate": args.rddrs_lr,
        "choice_samples": args.choice_samples,
        "batch_size": args.batch_size,
        "input_shape": test.input_shape,
    }
    curves: dict[float, list[dict[str, str]]] = {}
    for sigma, count in zip(args.sigmas, args.counts, strict=True):
        model, _ = train_checkpoint(
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
        certifier = RDDRS(model, sigma=sigma, metric=args.metrics[0], **budget)
        ablation: dict[str, RDDRS] = {}
        ablation_writer = None
        if sigma == args.ablation_sigma:
            ablation = {
                name: RDDRS(model, sigma=sigma, metric=name, start="sigma", **budget) for name in args.metrics
            }
            ablation_writer = RowWriter(os.path.join(args.out, f"ablation_sigma_{sigma}.tsv"))
        writer = RowWriter(os.path.join(args.out, f"sigma_{sigma}.tsv"))
        indices = list(range(0, len(test.labels), args.skip))[:count]
        for position, idx in enumerate(tqdm(indices, desc=f"σ = {sigma}")):
            with_ablation = ablation_writer if position < args.ablation_count else None
            if (idx, "RDDRS", certifier.metric) in writer.done and (
                with_ablation is None
                or all((idx, "RDDRS", r.metric) in with_ablation.done for r in ablation.values())
            ):
                continue
            certify_image(
                certifier, ablation, inputs[idx], idx, int(test.labels[idx]), args, writer, with_ablation
            )
        curves[sigma] = read_rows(writer.path)

    header = "| σ | method | images | " + " | ".join(f"r = {r}" for r in RADII)
    print(f"\nCertified accuracy at proxy radius on {dataset} (n = {args.n:,}, α = {args.alpha})")
    print(header + " | mean proxy | mean l2 | forward passes / image | s / image |")
    print("|---|---|---:|" + "---:|" * (len(RADII) + 4))
    for sigma, rows in sorted(curves.items()):
        print("\n".join(print_method_table(sigma, rows)))
    path = plot(
        curves, os.path.join(args.out, "certified_accuracy_proxy.png"), f"{dataset}: RS, DDRS, ANCER, RDDRS"
    )
    print(f"plot: {path}")
    ablation_path = os.path.join(args.out, f"ablation_sigma_{args.ablation_sigma}.tsv")
    if os.path.exists(ablation_path):
        rows = read_rows(ablation_path)
        metrics = summary(rows, "metric")
        images = sorted(set.intersection(*(set(lines) for lines in metrics.values())))
        print(
            f"\nMetric ablation at σ = {args.ablation_sigma}, {len(images)} images, relative step {args.rddrs_lr}"
        )
        print("| metric | mean proxy | mean l2 | kept start | s / image |\n|---|---:|---:|---:|---:|")
        for name, by_idx in metrics.items():
            lines = [by_idx[i] for i in images]
            mean_proxy = np.mean([float(line["proxy"]) * (line["correct"] == "1") for line in lines])
            mean_l2 = np.mean([float(line["l2"]) * (line["correct"] == "1") for line in lines])
            kept = sum(line["chosen_step"] == "0" for line in lines)
            seconds = np.mean([float(line["seconds"]) for line in lines])
            print(f"| {name} | {mean_proxy:.3f} | {mean_l2:.3f} | {kept} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
