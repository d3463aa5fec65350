"""Denoised smoothing on MNIST: a CNN trained without noise, certified alone and behind a DnCNN denoiser.

Salman et al. (2020) certify an off-the-shelf classifier ``f`` by smoothing ``f ∘ D`` with a Gaussian denoiser
``D``. This script trains the ``cnn`` on clean MNIST, a :class:`~manifoldcert.denoise.DnCNN` with the MSE objective
at σ (and, with ``--stability-epochs``, a copy fine-tuned with the stability objective), then certifies with
Cohen et al.'s protocol at the same σ the classifier alone and each ``DenoisedClassifier`` on the same test images
(every ``--skip``-th), writing ``<out>/<name>.tsv`` as rows come and printing the certified-accuracy table.
Checkpoints are cached in ``<out>`` and reused; ``<out>/training.json`` records the seconds per epoch and the
accuracy on once-noised test inputs. ``--certify`` chooses which of the models are certified.

    OMP_NUM_THREADS=1 python experiments/mnist_denoised.py --out results/mnist_denoised
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.data import load_train_test
from manifoldcert.denoise import DenoisedClassifier, DnCNN, train_denoiser
from manifoldcert.report import accuracy_table, read_results
from manifoldcert.runs import certify_dataset
from manifoldcert.train import accuracy, train_checkpoint

RADII = (0.0, 0.25, 0.5, 0.75)


def denoiser_checkpoint(
    path: str,
    config: dict[str, Any],
    train: Any,
    noise: noises.AbstractNoise,
    *,
    start: nn.Module | None,
    classifier: nn.Module | None,
    device: str,
) -> tuple[DnCNN, dict[str, Any]]:
    """Load the denoiser saved at ``path`` if it was trained with ``config``; otherwise train and save it."""
    denoiser = DnCNN(1, config["depth"], config["width"], seed=config["seed"]).to(device)
    if os.path.exists(path):
        payload = torch.load(path, map_location=device, weights_only=True)
        if payload["config"] != config:
            raise ValueError(f"{path} was trained with {payload['config']}, not {config}: remove it")
        denoiser.load_state_dict(payload["state_dict"])
        return denoiser.eval(), payload["training"]
    if start is not None:
        denoiser.load_state_dict(start.state_dict())
    result = train_denoiser(
        denoiser,
        train,
        noise,
        objective=config["objective"],
        classifier=classifier,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=config["lr"],
        seed=config["seed"],
    )
    training = {"losses": list(result.losses), "seconds_per_epoch": list(result.seconds)}
    state = {k: v.detach().cpu() for k, v in denoiser.state_dict().items()}
    torch.save({"config": config, "state_dict": state, "training": training}, path)
    return denoiser.eval(), training


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3, help="classifier epochs (clean inputs)")
    parser.add_argument("--depth", type=int, default=4, help="DnCNN convolutions")
    parser.add_argument("--width", type=int, default=16, help="DnCNN hidden channels")
    parser.add_argument("--denoiser-epochs", type=int, default=1, help="MSE epochs")
    parser.add_argument(
        "--stability-epochs", type=int, default=0, help="stability fine-tune epochs (0: none)"
    )
    parser.add_argument(
        "--certify",
        nargs="+",
        choices=("alone", "mse", "stability"),
        default=["alone", "mse", "stability"],
        help="which models to certify (stability only with --stability-epochs)",
    )
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy inputs per forward pass")
    parser.add_argument("--skip", type=int, default=100, help="certify every skip-th test image")
    parser.add_argument("--out", default="results/mnist_denoised")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    dataset, train, test = load_train_test(args.dataset, fallback="mnist-5k")
    noise = noises.Gaussian(args.sigma)
    inputs = test.inputs()
    summary: dict[str, Any] = {"dataset": dataset, "sigma": args.sigma, "threads": torch.get_num_threads()}

    classifier_path = os.path.join(args.out, f"{dataset}_cnn_clean.pt")
    classifier, info = train_checkpoint(
        "cnn",
        train,
        None,
        classifier_path,
        test=test,
        epochs=args.epochs,
        seed=args.seed,
        device=device,
        reuse=True,
    )
    summary["classifier"] = {
        "epochs": args.epochs,
        "seconds_per_epoch": info.training["seconds_per_epoch"],
        "test_accuracy_clean": info.training["test_accuracy_clean"],
        "test_accuracy_noisy": accuracy(classifier, test, noise=noise, seed=args.seed),
    }
    print(f"classifier: {summary['classifier']}")

    runs: list[tuple[str, str, nn.Module, str]] = [("alone", "classifier alone", classifier, classifier_path)]
    base = {"depth": args.depth, "width": args.width, "sigma": args.sigma, "seed": args.seed, "lr": 1e-3}
    mse_config = {**base, "objective": "mse", "epochs": args.denoiser_epochs, "batch_size": 128}
    mse_path = os.path.join(args.out, f"{dataset}_dncnn_mse_sigma_{args.sigma}.pt")
    mse, mse_training = denoiser_checkpoint(
        mse_path, mse_config, train, noise, start=None, classifier=None, device=device
    )
    denoised_mse = DenoisedClassifier(mse, classifier).eval()
    summary["denoiser_mse"] = {
        **mse_training,
        "test_accuracy_noisy": accuracy(denoised_mse, test, noise=noise, seed=args.seed),
    }
    print(f"MSE denoiser: {summary['denoiser_mse']}")
    runs.append(("mse", "denoised (MSE)", denoised_mse, mse_path))
    if args.stability_epochs > 0:
        stab_config = {**base, "objective": "stability", "epochs": args.stability_epochs, "batch_size": 128}
        stab_config["start"] = os.path.basename(mse_path)
        stab_path = os.path.join(args.out, f"{dataset}_dncnn_stab_sigma_{args.sigma}.pt")
        stab, stab_training = denoiser_checkpoint(
            stab_path,
            stab_config,
            train,
            noise,
            start=copy.deepcopy(mse),
            classifier=classifier,
            device=device,
        )
        denoised_stab = DenoisedClassifier(stab, classifier).eval()
        summary["denoiser_stability"] = {
            **stab_training,
            "test_accuracy_noisy": accuracy(denoised_stab, test, noise=noise, seed=args.seed),
        }
        print(f"MSE + stability denoiser: {summary['denoiser_stability']}")
        runs.append(("stability", "denoised (MSE + stability)", denoised_stab, stab_path))
    with open(os.path.join(args.out, "training.json"), "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)

    tables = []
    for key, name, model, checkpoint in runs:
        if key not in args.certify:
            continue
        certifier = get_certifier(
            "cohen", model, sigma=args.sigma, batch_size=args.batch_size, input_shape=test.input_shape
        )
        path = os.path.join(args.out, name.replace(" ", "_").replace("(", "").replace(")", "") + ".tsv")
        certify_dataset(
            certifier,
            inputs,
            test.labels,
            path,
            skip=args.skip,
            seed=args.seed,
            dataset=dataset,
            split="test",
            checkpoint=checkpoint,
            n0=args.n0,
            n=args.n,
            alpha=args.alpha,
            batch_size=args.batch_size,
        )
        tables.append(read_results(path, name=name))
        print(
            f"\nCohen et al. at σ = {args.sigma} on {dataset} test, every {args.skip}-th image, "
            f"n0 = {args.n0}, n = {args.n:,}, α = {args.alpha}"
        )
        print(accuracy_table(tables, RADII, norm="l2", envelope=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
