"""UniCR's R–p_A curves (Hong et al. 2022, Figs. 4 and 6–8): every noise of the zoo against l1, l2 and l∞.

Each (noise, norm) curve is one UniCR table (``p_B = 1 − p_A``, 1,000 grid points of ``p_A``, Monte Carlo
boundary on ``--mc-samples`` noise samples in dimension ``--dim``), cached in ``--cache-dir`` so reruns are
instant. All noises have σ = sqrt(E‖z‖²/d) = 1 except the Cauchy (no finite σ: scale γ = 1). Shape parameters:
General Normal β = 1.5 (the paper's), Pareto β = 3 (the paper's β = 1 has infinite variance in our
parameterisation — σ is finite only for β > 2), mixtures with their default weights 0.5 (Gaussian–Laplace;
exponential mixture of β = 1 and β = 2). Closed forms are overlaid where they exist: Gaussian l2 σΦ⁻¹(p) and l∞
σΦ⁻¹(p)/√d (Cohen), Laplace l1 −b·log(2(1 − p)) with b = σ/√2 (Teng), uniform l1 2λ(p − ½) with λ = σ√3 (Yang).
Writes ``<out>/unicr_curves_<norm>.png`` (l∞ radii ×255 in the plot only, as the paper) and prints the
largest relative gap to the closed form over p_A ∈ [0.55, 0.999], the build time of each curve and the radii
at a few p_A. A table whose build fails is caught and its curve marked ``failed``.

    python experiments/unicr_curves.py --dim 784 --mc-samples 20000 --out results/unicr_curves
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm as standard_normal

from manifoldcert import noises
from manifoldcert.certifiers.unicr import RadiusTable, UniCR

NORMS = ("l1", "l2", "linf")
#: (label, registry name, parameters) of every curve's noise.
NOISES: dict[str, tuple[str, dict[str, Any]]] = {
    "gaussian": ("gaussian", {"sigma": 1.0}),
    "laplace": ("laplace", {"sigma": 1.0}),
    "uniform": ("uniform", {"sigma": 1.0}),
    "general-normal β=1.5": ("general-normal", {"sigma": 1.0, "beta": 1.5}),
    "pareto β=3": ("pareto", {"sigma": 1.0, "beta": 3.0}),
    "cauchy γ=1": ("cauchy", {"scale": 1.0}),
    "gaussian-laplace mixture": ("gaussian-laplace-mixture", {"sigma": 1.0}),
    "exponential mixture": ("exponential-mixture", {"sigma": 1.0}),
    "hyperbolic-secant": ("hyperbolic-secant", {"sigma": 1.0}),
    "logistic": ("logistic", {"sigma": 1.0}),
}
GAP_RANGE = (0.55, 0.999)
REPORT_PROBABILITIES = (0.6, 0.9, 0.99, 0.999)


def closed_form(label: str, norm: str, dim: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """The exact radius of the curve at σ = 1, where one is known (Cohen, Teng, Yang); else ``None``."""
    sigma = 1.0
    if label == "gaussian" and norm == "l2":
        return lambda p: sigma * standard_normal.ppf(p)
    if label == "gaussian" and norm == "linf":
        return lambda p: sigma * standard_normal.ppf(p) / math.sqrt(dim)
    if label == "laplace" and norm == "l1":
        return lambda p: -(sigma / math.sqrt(2.0)) * np.log(2.0 * (1.0 - p))
    if label == "uniform" and norm == "l1":
        return lambda p: 2.0 * sigma * math.sqrt(3.0) * (p - 0.5)
    return None


@dataclass
class Curve:
    """One (noise, norm) curve: its table, or the error that stopped the build."""

    label: str
    norm: str
    table: RadiusTable | None
    seconds: float
    cached: bool
    error: str = ""

    def radius(self, p: float) -> float:
        return math.nan if self.table is None else self.table.lookup(p)


def build_curve(label: str, norm: str, args: argparse.Namespace) -> Curve:
    """Build (or load) the table of one curve, catching any failure of UniCR's boundary search."""
    name, params = NOISES[label]
    certifier = UniCR(
        None,
        noise=noises.get(name, **params),
        norm=norm,
        mc_samples=args.mc_samples,
        search=args.search,
        table_size=args.table_size,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    start = time.perf_counter()
    try:
        table = certifier.table(args.dim)
    except Exception as error:  # noqa: BLE001 - any failure marks the curve, the others still run
        return Curve(
            label, norm, None, time.perf_counter() - start, False, f"{type(error).__name__}: {error}"
        )
    elapsed = time.perf_counter() - start
    cached = elapsed < 0.5 * table.seconds
    return Curve(label, norm, table, table.seconds, cached)


def relative_gap(curve: Curve, dim: int) -> float | None:
    """Largest |R_UniCR − R_exact| / R_exact on the table grid within :data:`GAP_RANGE` (None: no closed form)."""
    exact = closed_form(curve.label, curve.norm, dim)
    if exact is None or curve.table is None:
        return None
    p = curve.table.probabilities
    inside = (p >= GAP_RANGE[0]) & (p <= GAP_RANGE[1])
    truth = exact(p[inside])
    return float(np.max(np.abs(curve.table.radii[inside] - truth) / truth))


def first_certified(curve: Curve) -> float:
    """The smallest grid p_A with a positive finite radius (NaN when none): below it UniCR found no boundary."""
    if curve.table is None:
        return math.nan
    ok = np.flatnonzero((curve.table.radii > 0) & np.isfinite(curve.table.radii))
    return float(curve.table.probabilities[ok[0]]) if ok.size else math.nan


def plot_curves(curves: list[Curve], norm: str, dim: int, path: str) -> str:
    """R against p_A for every noise (l∞ ×255), closed forms dashed, failed curves listed in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factor = 255.0 if norm == "linf" else 1.0
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(c for c in curves if c.norm == norm):
        color = colors[i % len(colors)]
        if curve.table is None:
            ax.plot([], [], color=color, label=f"{curve.label} (failed)")
            continue
        p = curve.table.probabilities
        keep = p <= 0.999
        ax.plot(p[keep], factor * curve.table.radii[keep], color=color, label=curve.label)
        exact = closed_form(curve.label, norm, dim)
        if exact is not None:
            ax.plot(p[keep], factor * exact(p[keep]), "k--", lw=1, label=f"{curve.label}: closed form")
    ax.set_xlabel("$p_A$ ($p_B = 1 - p_A$), up to 0.999")
    ax.set_ylabel(f"certified {norm} radius" + (" ×255" if norm == "linf" else ""))
    ax.set_title(f"UniCR R–$p_A$ curves, {norm}, d = {dim}, σ = 1")
    ax.set_xlim(0.5, 1.0)
    tops = [c.radius(0.999) for c in curves if c.norm == norm and not c.label.startswith("cauchy")]
    tops = [t for t in tops if math.isfinite(t)]
    ax.set_ylim(0, 1.15 * factor * max(tops) if tops else None)  # the Cauchy may run off the top
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=784, help="input dimension (784 as for MNIST)")
    parser.add_argument("--mc-samples", type=int, default=20_000, help="noise samples behind each boundary")
    parser.add_argument("--table-size", type=int, default=1000, help="grid points of p_A per table")
    parser.add_argument("--search", default="auto", choices=("auto", "symmetric", "pso"))
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    parser.add_argument("--noises", nargs="+", default=list(NOISES), choices=list(NOISES), metavar="NOISE")
    parser.add_argument("--cache-dir", default="results/unicr_cache")
    parser.add_argument("--out", default="results/unicr_curves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    curves = []
    for norm in args.norms:
        for label in args.noises:
            curve = build_curve(label, norm, args)
            state = curve.error or ("cached" if curve.cached else "built")
            print(f"{norm} {label}: {state} ({curve.seconds:.1f} s)", flush=True)
            curves.append(curve)

    print(
        f"\nUniCR R–p_A curves, d = {args.dim}, {args.mc_samples:,} Monte Carlo samples (antithetic pairs for "
        f"symmetric noises), {args.table_size} grid points, seed {args.seed}, search {args.search}"
    )
    ps = " | ".join(f"R(p_A={p})" for p in REPORT_PROBABILITIES)
    print(
        f"| norm | noise | {ps} | max rel. gap to closed form, p_A ∈ [0.55, 0.999] | first p_A with R > 0 "
        "| build time (s) |"
    )
    print("|---|---|" + "---:|" * (len(REPORT_PROBABILITIES) + 3))
    for curve in curves:
        radii = " | ".join(f"{curve.radius(p):.4g}" for p in REPORT_PROBABILITIES)
        gap = relative_gap(curve, args.dim)
        gap_cell = "—" if gap is None else f"{100 * gap:.2f} %"
        if curve.table is None:
            radii = " | ".join("failed" for _ in REPORT_PROBABILITIES)
            gap_cell = f"failed: {curve.error[:80]}"
        print(
            f"| {curve.norm} | {curve.label} | {radii} | {gap_cell} | {first_certified(curve):.4g} "
            f"| {curve.seconds:.1f} |"
        )

    print("\nLargest radius among the noises (σ = 1 noises only; Cauchy excluded):")
    print("| norm | " + " | ".join(f"p_A = {p}" for p in REPORT_PROBABILITIES) + " |")
    print("|---|" + "---|" * len(REPORT_PROBABILITIES))
    for norm in args.norms:
        cells = []
        for p in REPORT_PROBABILITIES:
            ranked = [(c.radius(p), c.label) for c in curves if c.norm == norm and c.table is not None]
            ranked = [r for r in ranked if not r[1].startswith("cauchy") and math.isfinite(r[0])]
            cells.append(max(ranked)[1] if ranked else "—")
        print(f"| {norm} | " + " | ".join(cells) + " |")

    for norm in args.norms:
        path = plot_curves(curves, norm, args.dim, os.path.join(args.out, f"unicr_curves_{norm}.png"))
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
