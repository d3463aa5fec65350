"""The toy example of Zhang et al.'s Fig. 3: accuracy / robustness trade-off of three ‖z‖^-k families against l∞.

The base classifier is ``f(x) = 1{‖x‖₂ ≤ 0.65}`` in d = 5 and the input is ``x₀ = 0``. For every family (Eq. 11
``zhang-l2``, Eq. 12 ``zhang-linf``, Eq. 13 ``zhang-mixed``) and every (s, k) on a grid the script estimates, by
Monte Carlo on one set of noise samples,

- the accuracy term of Eq. 9, ``A = f_π₀(x₀) = P(‖z‖₂ ≤ 0.65)``;
- the robustness term ``−D(λπ₀ ‖ π_δ*)`` at λ = 1 (the total variation between π₀ and its worst shift) for an l∞
  attack of radius ``eps``: the l2 family through Proposition 4 (the axis shift of length √d·eps), the other two
  with the vertex shift ``δ* = eps·1`` (Theorem 3; for Eq. 12 the vertex is checked numerically in the tests);
- the resulting lower bound of Eq. 6, ``L = max_λ λA − D(λ)``, on the smoothed classifier anywhere in the ball,
  made a valid bound at level α = 0.002 the same way as the certifier does it: ``A`` replaced by its
  Clopper–Pearson lower bound (α/2) and ``D`` by ``D̂ + λε`` (DKW, α/2). Without the margin the plug-in value can
  exceed 1 where the likelihood ratio is heavy-tailed (scales far below the attack radius).

Writes ``<out>/functional_toy.tsv`` and ``<out>/functional_toy.png`` (the (A, −TV) points and each family's Pareto
frontier at ``--plot-eps``) and prints the best ``L`` per family over the grid for each ``eps``. These are Monte
Carlo bounds on a toy classifier, comparing families.

    python experiments/functional_toy.py --out results/functional_toy
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from manifoldcert import noises
from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.certifiers.functional_bound import dkw_margin, dual_lower_bound, worst_case_shift

FAMILIES = ("zhang-l2", "zhang-linf", "zhang-mixed")
ALPHA = 0.002


def pareto_frontier(accuracy: np.ndarray, robustness: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (accuracy ↑, robustness ↑), sorted by accuracy."""
    order = np.argsort(-accuracy, kind="stable")
    frontier, best = [], -np.inf
    for index in order:
        if robustness[index] > best:
            frontier.append(index)
            best = robustness[index]
    return np.array(frontier[::-1], dtype=int)


def evaluate(
    family: str,
    scale: float,
    k: float,
    epsilons: Sequence[float],
    *,
    dim: int,
    ball: float,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Accuracy, −TV and the Eq. 6 bound at each l∞ radius for one configuration."""
    noise = noises.get(family, scale=scale, k=k)
    z = noise.sample(samples, (dim,), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    inside = int((torch.linalg.vector_norm(z, dim=1) <= ball).sum())
    accuracy = inside / samples
    # A valid lower bound on L at level ALPHA (over the eps values jointly, by the union bound).
    p_lower = clopper_pearson_lower(inside, samples, ALPHA / 2) - dkw_margin(
        samples, ALPHA / 2, len(epsilons)
    )
    shift = worst_case_shift(noise, dim)
    statistics = shift.statistics(z)
    row = {"family": family, "scale": scale, "k": k, "accuracy": accuracy}
    for eps in epsilons:
        # Proposition 4: the l2 family's l∞ ball of radius eps is as hard as its l2 ball of radius √d·eps.
        length = eps * math.sqrt(dim) if shift.norm == "l2" else eps
        log_ratios = shift.log_ratio(statistics, length)
        row[f"robustness_{eps:g}"] = -float((1.0 - log_ratios.exp()).clamp_min(0.0).mean())
        row[f"bound_{eps:g}"] = dual_lower_bound(log_ratios, p_lower)[0]
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--ball", type=float, default=0.65, help="f(x) = 1{‖x‖₂ ≤ ball}")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3], help="l∞ attack radii")
    parser.add_argument("--plot-eps", type=float, default=0.1, help="the l∞ radius of the frontier plot")
    parser.add_argument("--scales", type=float, nargs="+", default=list(np.geomspace(0.05, 1.0, 14)))
    parser.add_argument("--ks", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0, 4.5])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/functional_toy")
    args = parser.parse_args(argv)
    args.eps = sorted(set(args.eps) | {args.plot_eps})
    os.makedirs(args.out, exist_ok=True)

    start = time.perf_counter()
    rows = [
        evaluate(
            family,
            float(scale),
            k,
            args.eps,
            dim=args.dim,
            ball=args.ball,
            samples=args.samples,
            seed=args.seed,
        )
        for family in args.families
        for k in args.ks
        if k < args.dim
        for scale in args.scales
    ]
    elapsed = time.perf_counter() - start
    path = os.path.join(args.out, "functional_toy.tsv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)

    print(
        f"d = {args.dim}, f = 1{{‖x‖₂ ≤ {args.ball}}}, x₀ = 0: {len(rows)} configurations, "
        f"{args.samples:,} samples each, seed {args.seed}, {elapsed:.0f} s"
    )
    print(
        f"best lower bound L = max_λ λA − D(λ) on the l∞ ball at level α = {ALPHA} (the (s, k) attaining it)"
    )
    print("| family | " + " | ".join(f"eps = {eps:g}" for eps in args.eps) + " |")
    print("|---|" + "---|" * len(args.eps))
    frontiers = {}
    for family in args.families:
        chosen = [row for row in rows if row["family"] == family]
        cells = []
        for eps in args.eps:
            best = max(chosen, key=lambda row: row[f"bound_{eps:g}"])
            cells.append(f"{best[f'bound_{eps:g}']:.3f} (s={best['scale']:.2f}, k={best['k']:g})")
        print(f"| {family} | " + " | ".join(cells) + " |")
        accuracy = np.array([row["accuracy"] for row in chosen])
        robustness = np.array([row[f"robustness_{args.plot_eps:g}"] for row in chosen])
        frontiers[family] = (accuracy, robustness, pareto_frontier(accuracy, robustness))
    _plot(frontiers, os.path.join(args.out, "functional_toy.png"), args)
    print(f"wrote {path}")
    return 0


def _plot(frontiers: dict, path: str, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for family, (accuracy, radius, frontier) in frontiers.items():
        (line,) = axes.plot(accuracy[frontier], radius[frontier], marker="o", ms=3, label=family)
        axes.scatter(accuracy, radius, s=6, alpha=0.25, color=line.get_color())
    axes.set_xlabel(f"accuracy A = P(‖z‖₂ ≤ {args.ball})")
    axes.set_ylabel(f"robustness −TV(π₀, π_δ*), ‖δ‖∞ = {args.plot_eps:g}")
    axes.set_title(f"Pareto frontiers, d = {args.dim} (Zhang et al. Fig. 3)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
