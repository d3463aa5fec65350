"""The toy example of Zhang et al.'s Fig. 3: accuracy / l∞-robustness Pareto frontiers of three ‖z‖^-k families.

The base classifier is ``f(x) = 1{‖x‖₂ ≤ 0.65}`` in d = 5 and the input is ``x₀ = 0``, so the smoothed
"accuracy" is ``A = P_{z∼π₀}(‖z‖₂ ≤ 0.65)``. For every family (Eq. 11 ``zhang-l2``, Eq. 12 ``zhang-linf``, Eq. 13
``zhang-mixed``) and every (s, k) on a grid, the script estimates ``A`` by Monte Carlo and the largest l∞ radius
at which the functional bound (Eq. 6) stays above 1/2 when ``p_A = A``: the l2 family through Proposition 4
(its l2 radius / √d), the other two with the vertex shift ``δ* = r·1`` (Theorem 3). Robustness is thus stated as a
radius rather than the paper's discrepancy term; both orderings agree (a larger radius means a smaller
discrepancy at the same accuracy). Radii are Monte Carlo point estimates (``estimate=True``): this is a
comparison of families, not a certificate.

Writes ``<out>/functional_toy.tsv`` (one row per configuration) and ``<out>/functional_toy.png`` (all points
and each family's Pareto frontier) and prints, per family, the best radius at accuracy levels 0.6 … 0.95.

    python experiments/functional_toy.py --out results/functional_toy
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from manifoldcert import noises
from manifoldcert.certifiers.functional import Functional

FAMILIES = ("zhang-l2", "zhang-linf", "zhang-mixed")
ACCURACY_LEVELS = (0.6, 0.7, 0.8, 0.9, 0.95)


def pareto_frontier(accuracy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (accuracy ↑, radius ↑), sorted by accuracy."""
    order = np.argsort(-accuracy, kind="stable")
    frontier, best = [], -np.inf
    for index in order:
        if radius[index] > best:
            frontier.append(index)
            best = radius[index]
    return np.array(frontier[::-1], dtype=int)


def evaluate(
    family: str, scale: float, k: float, *, dim: int, ball: float, samples: int, mc_samples: int, seed: int
) -> tuple[float, float]:
    """``(A, l∞ radius)`` of one configuration."""
    noise = noises.get(family, scale=scale, k=k)
    generator = torch.Generator().manual_seed(seed)
    z = noise.sample(samples, (dim,), generator=generator, dtype=torch.float64)
    accuracy = float((torch.linalg.vector_norm(z, dim=1) <= ball).double().mean())
    certifier = Functional(None, noise=noise, mc_samples=mc_samples, input_shape=(dim,), seed=seed)
    return accuracy, certifier.radius_for(accuracy, norm="linf", estimate=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--ball", type=float, default=0.65, help="f(x) = 1{‖x‖₂ ≤ ball}")
    parser.add_argument("--scales", type=float, nargs="+", default=list(np.geomspace(0.05, 1.0, 14)))
    parser.add_argument("--ks", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0, 4.5])
    parser.add_argument("--samples", type=int, default=200_000, help="samples for the accuracy A")
    parser.add_argument("--mc-samples", type=int, default=200_000, help="samples for the bound")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/functional_toy")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    rows = []
    start = time.perf_counter()
    for family in args.families:
        for k in args.ks:
            if k >= args.dim:
                continue
            for scale in args.scales:
                accuracy, radius = evaluate(
                    family,
                    float(scale),
                    k,
                    dim=args.dim,
                    ball=args.ball,
                    samples=args.samples,
                    mc_samples=args.mc_samples,
                    seed=args.seed,
                )
                rows.append(
                    {
                        "family": family,
                        "scale": float(scale),
                        "k": k,
                        "accuracy": accuracy,
                        "radius_linf": radius,
                    }
                )
    elapsed = time.perf_counter() - start

    path = os.path.join(args.out, "functional_toy.tsv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)

    print(f"d = {args.dim}, f = 1{{‖x‖₂ ≤ {args.ball}}}, {len(rows)} configurations in {elapsed:.0f} s")
    print("best l∞ radius with accuracy ≥ level (the (s, k) attaining it)")
    print("| family | " + " | ".join(f"A ≥ {level}" for level in ACCURACY_LEVELS) + " |")
    print("|---|" + "---|" * len(ACCURACY_LEVELS))
    frontiers = {}
    for family in args.families:
        chosen = [row for row in rows if row["family"] == family]
        accuracy = np.array([row["accuracy"] for row in chosen])
        radius = np.array([row["radius_linf"] for row in chosen])
        frontiers[family] = (accuracy, radius, pareto_frontier(accuracy, radius))
        cells = []
        for level in ACCURACY_LEVELS:
            feasible = np.flatnonzero(accuracy >= level)
            if feasible.size == 0:
                cells.append("—")
                continue
            best = feasible[np.argmax(radius[feasible])]
            cells.append(f"{radius[best]:.3f} (s={chosen[best]['scale']:.2f}, k={chosen[best]['k']:g})")
        print(f"| {family} | " + " | ".join(cells) + " |")
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
    axes.set_xlabel("accuracy A = P(‖z‖₂ ≤ 0.65)")
    axes.set_ylabel("certified l∞ radius (bound > 1/2)")
    axes.set_title(f"Pareto frontiers, d = {args.dim} (Zhang et al. Fig. 3)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
