"""Certified training on MNIST: Gaussian augmentation vs consistency vs MACER vs SmoothAdv at one σ.

Trains the same architecture for the same epochs from the same seed with each recipe of
:mod:`manifoldcert.recipes` (checkpoints reused when present, each recording its recipe and seconds per epoch),
then certifies the same evenly spaced test images with Cohen et al.'s protocol (n0 = 100, n = 10,000,
α = 0.001) and prints certified accuracy, ACR and training seconds per epoch. Hyper-parameters are Jeong & Shin
(2020)'s MNIST settings, with MACER's deferral and SmoothAdv's warm-up scaled to the number of epochs (their
runs: 90 epochs, MACER deferred 30, SmoothAdv warm-up 10).

    python experiments/mnist_recipes.py --out results/mnist_recipes
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence

import torch

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.data import load_train_test
from manifoldcert.recipes import AbstractRecipe, get_recipe
from manifoldcert.report import (
    accuracy_table,
    average_certified_radius,
    plot_certified_accuracy,
    read_results,
)
from manifoldcert.runs import add_run_arguments, certify_with_args
from manifoldcert.train import train_checkpoint

RADII = (0.0, 0.5, 1.0, 1.5, 2.0)
RECIPES = ("gaussian", "consistency", "macer", "smoothadv")


def recipes_for(epochs: int) -> dict[str, AbstractRecipe]:
    """Jeong & Shin's MNIST hyper-parameters, the schedules scaled from their 90 epochs to ``epochs``."""
    return {
        "gaussian": get_recipe("gaussian"),
        "consistency": get_recipe("consistency", m=2, lbd=20.0, eta=0.5),
        "macer": get_recipe("macer", m=16, lbd=16.0, gamma=8.0, beta=16.0, deferred_epochs=epochs // 3),
        "smoothadv": get_recipe("smoothadv", m=4, epsilon=255 / 256, steps=10, warmup=math.ceil(epochs / 9)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    add_run_arguments(parser, n=10_000, skip=20)
    parser.add_argument("--out", default="results/mnist_recipes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    dataset, train, test = load_train_test(args.dataset, fallback="mnist-5k")
    noise = noises.Gaussian(args.sigma)
    recipes = recipes_for(args.epochs)
    paths, seconds = [], {}
    for name in args.recipes:
        checkpoint = os.path.join(args.out, f"{dataset}_{args.arch}_{name}_sigma_{args.sigma}.pt")
        model, info = train_checkpoint(
            args.arch,
            train,
            noise,
            checkpoint,
            test=test,
            recipe=recipes[name],
            epochs=args.epochs,
            seed=args.seed,
            device=device,
            reuse=True,
        )
        seconds[name] = info.training["seconds_per_epoch"]
        print(
            f"{name}: {recipes[name]!r}, {sum(seconds[name]) / len(seconds[name]):.1f} s per epoch, test accuracy "
            f"{info.training['test_accuracy_clean']:.4f} clean, {info.training['test_accuracy_noisy']:.4f} noisy",
            flush=True,
        )
        certifier = get_certifier(
            "cohen", model, sigma=args.sigma, batch_size=args.batch_size, input_shape=test.input_shape
        )
        path = os.path.join(args.out, f"{name}.tsv")
        certify_with_args(certifier, test.inputs(), test.labels, path, args)
        paths.append(path)
    tables = [read_results(p, name=name) for p, name in zip(paths, args.recipes, strict=True)]
    print(
        f"\nCertified accuracy (l2) on {dataset} test, every {args.skip}-th image, {args.arch}, σ = {args.sigma}, "
        f"{args.epochs} epochs, n = {args.n:,}, α = {args.alpha}"
    )
    print(accuracy_table(tables, RADII, norm="l2", envelope=False))
    for name, table in zip(args.recipes, tables, strict=True):
        per_epoch = seconds[name]
        print(
            f"{name:12s} ACR {average_certified_radius(table):.3f}   training "
            f"{sum(per_epoch) / len(per_epoch):.1f} s/epoch (min {min(per_epoch):.1f}, max {max(per_epoch):.1f})"
        )
    plot = plot_certified_accuracy(
        tables,
        os.path.join(args.out, "certified_accuracy_l2.png"),
        norm="l2",
        title=f"Training recipes on {dataset}: {args.arch}, σ = {args.sigma}, n = {args.n:,}",
    )
    print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
