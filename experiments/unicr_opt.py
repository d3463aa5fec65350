"""UniCR's noise optimisation (Hong et al. 2022): C-OPT (Table 2) and I-OPT (Table 3) with General Normal noise.

C-OPT: for each shape β of the General Normal noise ``∝ exp(−|x/α|^β)`` and each σ of ``--sigmas`` (α set from
σ), an ``--arch`` model is trained on ``--dataset`` with that noise (checkpoints reused) and certified on every
``--skip``-th test image (at most ``--max``): Cohen's protocol (``--n0`` votes select the class, ``--n`` fresh
votes give the one-sided Clopper–Pearson bound p_A at level ``--alpha``), radius from UniCR's table with
``p_B = 1 − p_A`` in l1, l2 and l∞. Printed: UniCR's robustness score (Eq. 5, area under the best-over-σ
certified-accuracy curve, :func:`manifoldcert.report.robustness_score`) per β and norm — the shape of Table 2.

I-OPT: for the models trained with β = ``--iopt-beta`` at each σ of ``--iopt-sigmas``, per input and per norm,
hill climbing over (α, β) from the training noise: each step tries α·(1 ± ``--iopt-alpha-step``) and
β ± ``--iopt-beta-step`` (``--n`` fresh votes per candidate, shared across norms) and moves to the best
certified radius until no neighbour improves or ``--iopt-steps`` steps. Printed: the mean radius of the top
20/40/60/80/100 % of inputs (wrong or abstained inputs count 0), training noise vs I-OPT. The I-OPT radii are
NOT guaranteed: the noise is chosen after seeing the input, over many Clopper–Pearson bounds each at level α.

Radii: General Normal is a scale family and UniCR's Monte Carlo samples are ``σ·ε`` for one seeded ``ε``, so
the boundary at σ is σ times the boundary at σ = 1: one table per (β, norm), built at σ = 1 with
``--mc-samples`` samples in d = 784 and cached in ``--cache-dir``, serves every σ and every α (the script checks
this once against a table built at the first σ). All UniCR radii are approximate (``guaranteed=False``).

    python experiments/unicr_opt.py --dataset mnist-5k --betas 0.5 1 1.5 2 2.5 --sigmas 0.12 0.25 0.5 1.0 \
        --skip 20 --max 50 --out results/unicr_opt
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

from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.certificate import NORMS
from manifoldcert.certifiers.unicr import RadiusTable, UniCR
from manifoldcert.data import load_train_test
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.noises import GeneralNormal
from manifoldcert.report import ResultTable, clean_accuracy, robustness_score
from manifoldcert.runs import add_run_arguments, example_seed
from manifoldcert.train import train_checkpoint

TOP_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


class RadiusOracle:
    """UniCR radii of General Normal noise for any (σ, β, norm): σ times the cached σ = 1 table of (β, norm)."""

    def __init__(self, dim: int, args: argparse.Namespace) -> None:
        self.dim = dim
        self.args = args
        self.tables: dict[tuple[float, str], RadiusTable] = {}

    def certifier(self, sigma: float, beta: float, norm: str) -> UniCR:
        return UniCR(
            None,
            noise=GeneralNormal(sigma=sigma, beta=beta),
            norm=norm,
            mc_samples=self.args.mc_samples,
            search=self.args.search,
            table_size=self.args.table_size,
            cache_dir=self.args.cache_dir,
            seed=self.args.seed,
        )

    def table(self, beta: float, norm: str) -> RadiusTable:
        key = (round(beta, 6), norm)
        if key not in self.tables:
            start = time.perf_counter()
            self.tables[key] = self.certifier(1.0, key[0], norm).table(self.dim)
            print(f"table β={key[0]:g} {norm}: {time.perf_counter() - start:.1f} s", flush=True)
        return self.tables[key]

    def radius(self, p_lower: float, sigma: float, beta: float, norm: str) -> float:
        """UniCR's radius for the bound ``p_lower`` (0 when it is below 1/2: abstain)."""
        if not p_lower > 0.5:
            return 0.0
        return sigma * self.table(beta, norm).lookup(p_lower)


def vote_bound(
    estimator: MonteCarloEstimator, x: torch.Tensor, noise, top: int, n: int, alpha: float, generator
) -> float:
    """The one-sided Clopper–Pearson lower bound on the probability of class ``top`` under ``noise``."""
    counts = estimator.class_counts(x, noise, n, generator=generator)
    return clopper_pearson_lower(int(counts[top]), n, alpha)


def certify(
    model: torch.nn.Module, noise: GeneralNormal, inputs, labels, indices: list[int], args, path: str
) -> list[dict]:
    """Cohen's CERTIFY with ``noise`` on ``indices``: rows of (idx, label, predict, p_lower, time) in a TSV."""
    if os.path.exists(path):
        with open(path, newline="") as handle:
            rows = [dict(r) for r in csv.DictReader(handle, delimiter="\t")]
        if [int(r["idx"]) for r in rows] == indices:
            return [{**r, "p_lower": float(r["p_lower"]), "time": float(r["time"])} for r in rows]
    estimator = MonteCarloEstimator(model, batch_size=args.batch_size)
    rows = []
    for idx in indices:
        start = time.perf_counter()
        generator = estimator.generator(example_seed(args.seed, idx))
        top = int(estimator.class_counts(inputs[idx], noise, args.n0, generator=generator).argmax())
        p_lower = vote_bound(estimator, inputs[idx], noise, top, args.n, args.alpha, generator)
        predict = top if p_lower > 0.5 else -1
        rows.append(
            {
                "idx": idx,
                "label": int(labels[idx]),
                "predict": predict,
                "p_lower": p_lower,
                "time": time.perf_counter() - start,
            }
        )
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def result_table(rows: list[dict], oracle: RadiusOracle, sigma: float, beta: float, name: str) -> ResultTable:
    """The rows as a :class:`ResultTable` with UniCR radii in every norm."""
    predict = np.array([int(r["predict"]) for r in rows])
    label = np.array([int(r["label"]) for r in rows])
    radii = {
        norm: np.array(
            [oracle.radius(r["p_lower"], sigma, beta, norm) if int(r["predict"]) >= 0 else 0.0 for r in rows]
        )
        for norm in NORMS
    }
    return ResultTable(
        name=name,
        method="unicr",
        sigma=sigma,
        idx=np.array([int(r["idx"]) for r in rows]),
        label=label,
        predict=predict,
        correct=(predict == label) & (predict >= 0),
        radius_l1=radii["l1"],
        radius_l2=radii["l2"],
        radius_linf=radii["linf"],
        time=np.array([r["time"] for r in rows]),
        native_norm="l2",
    )


def top_means(radii: np.ndarray) -> list[float]:
    """Mean of the largest 20/40/60/80/100 % of ``radii``."""
    ordered = np.sort(radii)[::-1]
    return [float(ordered[: max(1, round(f * ordered.size))].mean()) for f in TOP_FRACTIONS]


def hill_climb(evaluate, start: tuple[float, float], args) -> tuple[float, tuple[float, float]]:
    """Greedy ascent of ``evaluate(α, β)`` over the ±``alpha_step`` / ±``beta_step`` neighbours of ``start``."""
    current, best = start, evaluate(*start)
    for _ in range(args.iopt_steps):
        alpha, beta = current
        neighbours = [(alpha * (1 + args.iopt_alpha_step), beta), (alpha * (1 - args.iopt_alpha_step), beta)]
        neighbours += [
            (alpha, b)
            for b in (beta - args.iopt_beta_step, beta + args.iopt_beta_step)
            if args.iopt_beta_min <= b <= args.iopt_beta_max
        ]
        value, point = max((evaluate(*p), p) for p in neighbours)
        if value <= best:
            break
        current, best = point, value
    return best, current


def optimize_input(
    estimator: MonteCarloEstimator,
    oracle: RadiusOracle,
    x: torch.Tensor,
    label: int,
    train_noise: GeneralNormal,
    generator: torch.Generator,
    args: argparse.Namespace,
) -> tuple[dict[str, tuple[float, float, tuple[float, float]]], int]:
    """I-OPT at one input: per norm, (radius with the training noise, best radius found, its (α, β)).

    The class is selected once with the training noise (``n0`` votes); every candidate noise gets ``n`` fresh
    votes (its Clopper–Pearson bound is cached, so the norms share them). Wrong predictions count radius 0.
    Also returns how many noises were tried.
    """
    top = int(estimator.class_counts(x, train_noise, args.n0, generator=generator).argmax())
    correct = top == label
    bounds: dict[tuple[float, float], float] = {}

    def p_lower(alpha: float, beta: float) -> float:
        key = (round(alpha, 9), round(beta, 6))
        if key not in bounds:
            noise = GeneralNormal(alpha=key[0], beta=key[1])
            bounds[key] = vote_bound(estimator, x, noise, top, args.n, args.alpha, generator)
        return bounds[key]

    start = (train_noise.alpha, train_noise.beta)
    result = {}
    for norm in NORMS:

        def radius(alpha: float, beta: float, norm: str = norm) -> float:
            if not correct:
                return 0.0
            sigma = GeneralNormal(alpha=alpha, beta=beta).sigma
            return oracle.radius(p_lower(alpha, beta), sigma, beta, norm)

        best, point = hill_climb(radius, start, args)
        result[norm] = (radius(*start), best, point)
    return result, len(bounds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--root", default=None)
    parser.add_argument("--arch", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.12, 0.25, 0.5, 1.0])
    add_run_arguments(parser, n=1000, skip=20)
    parser.set_defaults(n0=64, max=50)
    parser.add_argument("--mc-samples", type=int, default=20_000, help="UniCR noise samples per table")
    parser.add_argument("--table-size", type=int, default=1000)
    parser.add_argument("--search", default="auto", choices=("auto", "symmetric", "pso"))
    parser.add_argument("--cache-dir", default="results/unicr_cache")
    parser.add_argument("--iopt-sigmas", type=float, nargs="*", default=[0.25, 0.5])
    parser.add_argument(
        "--iopt-beta", type=float, default=2.0, help="β of the training noise I-OPT starts from"
    )
    parser.add_argument("--iopt-max", type=int, default=None, help="images for I-OPT (default: --max)")
    parser.add_argument("--iopt-steps", type=int, default=3)
    parser.add_argument("--iopt-alpha-step", type=float, default=0.1)
    parser.add_argument("--iopt-beta-step", type=float, default=0.25)
    parser.add_argument("--iopt-beta-min", type=float, default=0.5)
    parser.add_argument("--iopt-beta-max", type=float, default=4.0)
    parser.add_argument("--out", default="results/unicr_opt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    dataset, train, test = load_train_test(args.dataset, root=args.root, fallback="mnist-5k")
    inputs, labels = test.inputs(), test.labels
    dim = math.prod(test.input_shape)
    indices = list(range(len(labels)))[:: args.skip][: args.max]
    oracle = RadiusOracle(dim, args)
    start_all = time.perf_counter()

    def model_for(beta: float, sigma: float) -> torch.nn.Module:
        noise = GeneralNormal(sigma=sigma, beta=beta)
        path = os.path.join(args.out, f"{args.arch}_beta_{beta:g}_sigma_{sigma:g}.pt")
        model, info = train_checkpoint(
            args.arch,
            train,
            noise,
            path,
            test=test,
            epochs=args.epochs,
            seed=args.seed,
            device=device,
            reuse=True,
            progress=False,
        )
        print(
            f"β={beta:g} σ={sigma:g}: test accuracy under noise {info.training['test_accuracy_noisy']:.4f}",
            flush=True,
        )
        return model.eval()

    # -- C-OPT -------------------------------------------------------------------------------------------------
    scores: dict[float, dict[str, float]] = {}
    accuracies: dict[float, list[float]] = {}
    start = time.perf_counter()
    for beta in args.betas:
        tables = []
        for sigma in args.sigmas:
            model = model_for(beta, sigma)
            rows = certify(
                model,
                GeneralNormal(sigma=sigma, beta=beta),
                inputs,
                labels,
                indices,
                args,
                os.path.join(args.out, f"certify_beta_{beta:g}_sigma_{sigma:g}.tsv"),
            )
            tables.append(result_table(rows, oracle, sigma, beta, f"β={beta:g} σ={sigma:g}"))
        scores[beta] = {norm: robustness_score(tables, norm) for norm in NORMS}
        accuracies[beta] = [clean_accuracy(t) for t in tables]
    copt_seconds = time.perf_counter() - start

    # The scale argument, checked once: a table built at σ against σ times the σ = 1 table.
    check_sigma = next((s for s in args.sigmas if s != 1.0), args.sigmas[0])
    direct = oracle.certifier(check_sigma, args.betas[0], "l2").table(dim)
    scaled = check_sigma * oracle.table(args.betas[0], "l2").radii
    inside = (direct.probabilities >= 0.55) & (direct.probabilities <= 0.999)
    scale_gap = float(np.max(np.abs(direct.radii[inside] - scaled[inside]) / direct.radii[inside]))

    print(
        f"\nC-OPT on {dataset} ({args.arch}, {args.epochs} epochs per (β, σ)), {len(indices)} test images "
        f"(every {args.skip}-th), n0 = {args.n0}, n = {args.n}, α = {args.alpha}, σ ∈ {args.sigmas}; UniCR tables "
        f"d = {dim}, {args.mc_samples:,} samples, seed {args.seed}; {copt_seconds:.0f} s"
    )
    print(
        f"(σ-scaling check, β = {args.betas[0]:g}, l2: table at σ = {check_sigma:g} vs σ × table at 1: "
        f"max rel. diff {100 * scale_gap:.2f} % over p_A ∈ [0.55, 0.999])"
    )
    print("| β | " + " | ".join(f"{b:g}" for b in args.betas) + " |")
    print("|---|" + "---:|" * len(args.betas))
    for norm in NORMS:
        best = max(args.betas, key=lambda b: scores[b][norm])
        cells = [
            (f"**{scores[b][norm]:.4f}**" if b == best else f"{scores[b][norm]:.4f}") for b in args.betas
        ]
        print(f"| vs. {norm} | " + " | ".join(cells) + " |")
    print(
        "| smoothed accuracy per σ | "
        + " | ".join("/".join(f"{a:.2f}" for a in accuracies[b]) for b in args.betas)
        + " |"
    )

    # -- I-OPT -------------------------------------------------------------------------------------------------
    iopt_indices = indices[: args.iopt_max or args.max]
    for sigma in args.iopt_sigmas:
        start = time.perf_counter()
        model = model_for(args.iopt_beta, sigma)
        estimator = MonteCarloEstimator(model, batch_size=args.batch_size)
        train_noise = GeneralNormal(sigma=sigma, beta=args.iopt_beta)
        base = {norm: [] for norm in NORMS}
        tuned = {norm: [] for norm in NORMS}
        chosen = {norm: [] for norm in NORMS}
        evaluations = []
        for idx in iopt_indices:
            generator = estimator.generator(example_seed(args.seed + 1, idx))
            result, tried = optimize_input(
                estimator, oracle, inputs[idx], int(labels[idx]), train_noise, generator, args
            )
            for norm, (start_radius, best, point) in result.items():
                base[norm].append(start_radius)
                tuned[norm].append(best)
                chosen[norm].append(point)
            evaluations.append(tried)
        seconds = time.perf_counter() - start
        print(
            f"\nI-OPT, {args.arch} trained with General Normal β = {args.iopt_beta:g}, σ = {sigma:g} "
            f"(α = {train_noise.alpha:.4g}); {len(iopt_indices)} images, n = {args.n} votes per candidate noise, "
            f"≤ {args.iopt_steps} steps of ±{100 * args.iopt_alpha_step:g} % α / ±{args.iopt_beta_step:g} β; "
            f"{np.mean(evaluations):.1f} noises tried per image; {seconds:.0f} s"
        )
        print(
            "| top radius | " + " | ".join(f"{100 * f:.0f} %" for f in TOP_FRACTIONS) + " | mean chosen β |"
        )
        print("|---|" + "---:|" * (len(TOP_FRACTIONS) + 1))
        for norm in NORMS:
            factor, suffix = (255.0, " ×255") if norm == "linf" else (1.0, "")
            b_cells = " | ".join(f"{factor * v:.3f}" for v in top_means(np.array(base[norm])))
            t_cells = " | ".join(f"{factor * v:.3f}" for v in top_means(np.array(tuned[norm])))
            beta_mean = np.mean([b for _, b in chosen[norm]])
            print(f"| {norm}{suffix}, training noise | {b_cells} | {args.iopt_beta:g} |")
            print(f"| {norm}{suffix}, I-OPT (NOT guaranteed) | {t_cells} | {beta_mean:.2f} |")
    print(f"\ntotal {time.perf_counter() - start_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
