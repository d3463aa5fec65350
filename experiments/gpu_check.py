"""The device check of the GPU path: CIFAR-10 ResNet-20, fixed vs sequential certification, bf16 vs fp32.

Sized for ≤ 8 minutes on one H200 (``python experiments/gpu_check.py``): unpack the CIFAR-10 JPEG tree
(``../shared/data/cifar10-jpeg.tar.gz``), train ResNet-20 for 5 epochs with σ = 0.25 Gaussian noise, then
certify 200 test images with Cohen et al.'s protocol at n = 10,000 (n0 = 100, α = 0.001) — fixed n and
sequential (radii 0.25 / 0.5 / 0.75, max_n = n) — in fp32 and under bf16 autocast with channels-last, and print

- certified accuracy at r ∈ {0, 0.25, 0.5, 0.75} of each run,
- images per second and forward passes per image,
- certify / bare forward: the certification time over the time of the bare forward passes over as many noisy
  inputs, drawn beforehand, in the same batches (the estimator's overhead),
- bf16 against fp32 (speed, and how many certificates differ).

Every figure is measured in this one process. ``--out DIR`` (default ``$OUT`` when set) also receives
``gpu_check.json``. Small settings (``--train-limit 512 --images 4 --n 500 --epochs 1``) run on a CPU as a smoke
test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would crowd the device output

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.data import load_dataset
from manifoldcert.estimator import batch_sizes
from manifoldcert.models import build_model
from manifoldcert.runs import example_seed
from manifoldcert.train import accuracy, train_model

RADII = (0.0, 0.25, 0.5, 0.75)
ARCHIVE_CANDIDATES = ("../shared/data/cifar10-jpeg.tar.gz", "shared/data/cifar10-jpeg.tar.gz")


def find_archive(path: str | None) -> Path:
    """The CIFAR-10 JPEG archive: ``path``, else the first of :data:`ARCHIVE_CANDIDATES` that exists."""
    for candidate in [path] if path else ARCHIVE_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"no CIFAR-10 JPEG archive at {path or ' or '.join(ARCHIVE_CANDIDATES)}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def certify_run(certifier, inputs, labels, *, device, **options) -> dict:
    """Certify ``inputs`` with per-image generators; accuracies, passes and seconds of the run."""
    estimator = certifier.require_estimator()
    generators = [estimator.generator(example_seed(0, i)) for i in range(len(inputs))]
    synchronize(device)
    start = time.perf_counter()
    certificates = certifier.certify_batch(inputs, generators=generators, progress=False, **options)
    synchronize(device)
    seconds = time.perf_counter() - start
    passes = sum(c.n0 + c.n for c in certificates)
    accuracy_at = {
        r: sum(c.prediction == y and c.radius["l2"] >= r for c, y in zip(certificates, labels, strict=True))
        / len(labels)
        for r in RADII
    }
    return {
        "seconds": seconds,
        "images_per_second": len(inputs) / seconds,
        "passes_per_image": passes / len(inputs),
        "passes": passes,
        "accuracy": accuracy_at,
        "outcomes": [(c.prediction, round(c.radius["l2"], 6)) for c in certificates],
    }


def bare_forward_seconds(
    certifier, x: torch.Tensor, passes: int, batch_size: int, device: torch.device
) -> float:
    """Time of the bare forward passes (through the estimator's fast forward) over ``passes`` noisy copies of
    ``x`` drawn beforehand, in batches of ``batch_size``."""
    estimator = certifier.require_estimator()
    generator = estimator.generator(1)
    x = x.to(device=estimator.device, dtype=estimator.dtype)
    noisy = certifier.noise.perturb(x.unsqueeze(0).expand(batch_size, *x.shape), generator=generator)
    with torch.inference_mode():
        estimator._votes(noisy)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for size in batch_sizes(passes, batch_size):
            estimator._votes(noisy[:size])
        synchronize(device)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=None, help="cifar10-jpeg.tar.gz (default: ../shared/data/)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=10_000, help="noisy inputs per forward pass")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    began = time.perf_counter()
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    print(f"torch {torch.__version__} on {report['device']}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(find_archive(args.archive)) as archive:
            archive.extractall(folder, filter="data")
        root = next(p.parent for p in Path(folder).rglob("train") if p.is_dir())
        train = load_dataset("cifar10", "train", root=root)
        test = load_dataset("cifar10", "test", root=root)
    print(f"data loaded in {time.perf_counter() - began:.1f} s", flush=True)

    torch.manual_seed(0)
    model = build_model("resnet20", train.input_shape, 10).to(device)
    if args.train_limit is not None:
        train = train.subset(slice(0, args.train_limit))
    start = time.perf_counter()
    noise = noises.Gaussian(args.sigma)
    train_model(
        model,
        train,
        noise,
        epochs=args.epochs,
        batch_size=256,
        lr=0.1,
        optimizer="sgd",
        weight_decay=5e-4,
        progress=False,
    )
    synchronize(device)
    report["train_seconds"] = time.perf_counter() - start
    report["test_accuracy_noisy"] = accuracy(model, test.subset(slice(0, 2000)), noise=noise)
    print(
        f"ResNet-20, {args.epochs} epochs σ={args.sigma}: {report['train_seconds']:.1f} s, "
        f"noisy test accuracy {report['test_accuracy_noisy']:.3f}",
        flush=True,
    )

    count = min(args.images, len(test.labels))
    inputs = [test.images[i].float().div(255) for i in range(count)]
    wanted = [int(y) for y in test.labels[:count]]
    options = {"n0": 100, "n": args.n, "alpha": 0.001, "batch_size": args.batch_size}
    runs = {}
    for precision in ("fp32", "bf16"):
        fast = {"autocast": "bf16", "channels_last": True} if precision == "bf16" else {}
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print("bf16 is not supported on this device; skipped", flush=True)
            continue
        certifier = get_certifier("cohen", model, sigma=args.sigma, batch_size=args.batch_size, **fast)
        for mode, extra in (("fixed", {}), ("sequential", {"sequential": True, "radii": (0.25, 0.5, 0.75)})):
            result = certify_run(certifier, inputs, wanted, device=device, **options, **extra)
            forward = bare_forward_seconds(certifier, inputs[0], result["passes"], args.batch_size, device)
            result["certify_over_forward"] = result["seconds"] / forward
            runs[f"{precision} {mode}"] = result
            accuracies = "  ".join(f"r={r:g}: {a:.3f}" for r, a in result["accuracy"].items())
            print(
                f"{precision:>4} {mode:<10} {result['images_per_second']:8.2f} img/s  "
                f"{result['passes_per_image']:9,.0f} passes/img  certify/forward "
                f"{result['certify_over_forward']:.3f}  {accuracies}",
                flush=True,
            )
    for mode in ("fixed", "sequential"):
        if f"bf16 {mode}" in runs:
            fp32, bf16 = runs[f"fp32 {mode}"], runs[f"bf16 {mode}"]
            differ = sum(a != b for a, b in zip(fp32["outcomes"], bf16["outcomes"], strict=True))
            print(
                f"bf16 / fp32 ({mode}): {bf16['images_per_second'] / fp32['images_per_second']:.2f}× images "
                f"per second; {differ} of {count} certificates differ",
                flush=True,
            )
    fixed, sequential = runs["fp32 fixed"], runs["fp32 sequential"]
    print(
        f"sequential / fixed (fp32): {fixed['passes_per_image'] / sequential['passes_per_image']:.1f}× fewer "
        f"passes, {sequential['images_per_second'] / fixed['images_per_second']:.1f}× images per second",
        flush=True,
    )
    report["runs"] = {k: {key: v for key, v in r.items() if key != "outcomes"} for k, r in runs.items()}
    report["total_seconds"] = time.perf_counter() - began
    print(f"total {report['total_seconds']:.1f} s", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as handle:
            json.dump(report, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
