"""l1 certificates from splitting noise: uniform additive (Monte Carlo) vs SSN vs DSSN, as in Levine & Feizi's Table 1.

For each σ (λ = σ√3) three ``cnn`` models are trained: with uniform additive noise, with independent splitting
noise (SSN) and with derandomised splitting noise (DSSN, offset seed stored in the checkpoint). Each is certified
with its own method on the same evenly spaced test images: ``uniform`` and ``ssn`` by Monte Carlo (n0 = 100,
``--n`` samples, α = 0.001), ``dssn`` exactly (2λq forward passes). Writes ``<out>/<method>_sigma_<σ>.tsv``, prints
the best certified accuracy over σ at l1 radii per method (with the σ and smoothed accuracy that attain it) and the
time per image, and plots ``<out>/certified_accuracy_l1.png``.

    python experiments/dssn_l1.py --dataset mnist --sigmas 0.5 1.0 2.0 --out results/dssn_l1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import torch

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.data import load_train_test
from manifoldcert.report import certified_accuracy, plot_certified_accuracy, read_results
from manifoldcert.runs import add_run_arguments, certify_with_args
from manifoldcert.train import train_checkpoint

RADII = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
METHODS = {
    "uniform": "uniform",
    "ssn": "splitting",
    "dssn": "derandomized-splitting",
}  # method -> training noise


def _noise(name: str, sigma: float, train, offset_seed: int):
    if name == "derandomized-splitting":
        dim = int(np.prod(train.input_shape))
        return noises.get(name, sigma=sigma, levels=train.levels, offset_seed=offset_seed, dim=dim)
    return noises.get(name, sigma=sigma)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=5)
    add_run_arguments(parser, n=10_000, skip=100)
    parser.add_argument("--offset-seed", type=int, default=0)
    parser.add_argument("--out", default="results/dssn_l1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    dataset, train, test = load_train_test(args.dataset, root=args.root, fallback="mnist-5k")
    inputs = test.inputs()
    tables = {method: [] for method in args.methods}
    for sigma in args.sigmas:
        for method in args.methods:
            noise = _noise(METHODS[method], sigma, train, args.offset_seed)
            arch = "resnet20" if train.input_shape[0] == 3 else "cnn"
            checkpoint = os.path.join(args.out, f"{method}_sigma_{sigma}.pt")
            model, info = train_checkpoint(
                arch,
                train,
                noise,
                checkpoint,
                test=test,
                epochs=args.epochs,
                seed=args.seed,
                device=device,
                reuse=True,
            )
            print(f"{noise!r}: test accuracy under noise {info.training['test_accuracy_noisy']:.4f}")
            options = {"levels": train.levels, "offset_seed": args.offset_seed} if method == "dssn" else {}
            certifier = get_certifier(
                method,
                model,
                sigma=sigma,
                batch_size=args.batch_size,
                input_shape=test.input_shape,
                **options,
            )
            path = os.path.join(args.out, f"{method}_sigma_{sigma}.tsv")
            certify_with_args(certifier, inputs, test.labels, path, args)
            tables[method].append(read_results(path, name=f"{method} σ={sigma}"))

    print(
        f"\nBest certified accuracy over σ ∈ {args.sigmas} (l1) on {dataset}, every {args.skip}-th test image; "
        f"uniform and ssn with n = {args.n:,}, α = {args.alpha}; dssn exact"
    )
    header = "| method | " + " | ".join(f"r = {r}" for r in RADII) + " | time / image (s) |"
    print(header)
    print("|---|" + "---:|" * (len(RADII) + 1))
    for method, method_tables in tables.items():
        curves = np.array([certified_accuracy(t, RADII, norm="l1") for t in method_tables])
        best = curves.argmax(0)
        cells = [f"{curves[b, i]:.3f} (σ={args.sigmas[b]})" for i, b in enumerate(best)]
        seconds = np.mean([t.mean_time for t in method_tables])
        print(f"| {method} | " + " | ".join(cells) + f" | {seconds:.3f} |")
    all_tables = [t for method_tables in tables.values() for t in method_tables]
    plot = plot_certified_accuracy(
        all_tables,
        os.path.join(args.out, "certified_accuracy_l1.png"),
        norm="l1",
        title=f"{dataset}: uniform vs SSN vs DSSN (l1)",
        envelope=False,
    )
    print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
