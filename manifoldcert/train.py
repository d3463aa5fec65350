"""Noise-augmented training of base classifiers (Cohen et al. 2019, Sec. 4; Lecuyer et al. 2019).

Each training example is perturbed by an independent draw of the smoothing noise at every step — through the
same ``noise.perturb`` the estimator uses, so any noise of :mod:`manifoldcert.noises` (and splitting noise
later) trains the model it will certify. Shuffling and noise come from one seeded ``torch.Generator``; weight
initialisation from the seed given to :func:`~manifoldcert.models.build_model`. Torch's global RNG is not
touched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from manifoldcert._validation import check_name, check_positive_float, check_positive_int
from manifoldcert.data import ImageDataset
from manifoldcert.estimator import batch_sizes, model_device
from manifoldcert.models import CheckpointInfo, build_model, load_checkpoint, save_checkpoint
from manifoldcert.noises import AbstractNoise

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch mean training loss and accuracy (on noisy inputs)."""

    losses: tuple[float, ...]
    accuracies: tuple[float, ...]


def _batches_of(
    images: torch.Tensor, levels: int, order: torch.Tensor, batch_size: int, device: torch.device
):
    start = 0
    for size in batch_sizes(order.numel(), batch_size):
        index = order[start : start + size]
        start += size
        yield index, images[index].to(device=device, dtype=torch.float32).div_(levels)


def train_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    noise: AbstractNoise | None,
    *,
    levels: int = 255,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with noise augmentation.

    Parameters
    ----------
    model : nn.Module
        Trained on its own device.
    images : Tensor, shape (N, C, H, W)
        Integer pixel values (uint8) divided by ``levels`` to give [0, 1] inputs, or floats with ``levels=1``.
    labels : Tensor, shape (N,)
    noise : AbstractNoise or None
        Smoothing noise added to every example at every step (``None`` trains on clean inputs).
    epochs, batch_size, lr, weight_decay : training schedule. ``sgd`` uses momentum 0.9 and a cosine decay of
        the learning rate; ``adam`` a constant rate.
    seed : int
        Seeds the generator of shuffling and noise.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_float(lr, "lr")
    check_name(optimizer, OPTIMIZERS, "optimizer")
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need as many labels as images (> 0), got {images.shape[0]} and {labels.shape[0]}")
    device = model_device(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    shuffle_generator = torch.Generator().manual_seed(seed)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = None
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    labels = labels.to(device)
    losses, accuracies = [], []
    model.train()
    bar = tqdm(range(epochs), desc="train", disable=not progress)
    for _ in bar:
        order = torch.randperm(images.shape[0], generator=shuffle_generator)
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device, dtype=torch.long)
        for index, inputs in _batches_of(images, levels, order, batch_size, device):
            if noise is not None:
                inputs = noise.perturb(inputs, generator=generator)
            logits = model(inputs)
            target = labels[index.to(device)]
            loss = nn.functional.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach() * index.numel()
            total_correct += (logits.argmax(1) == target).sum()
        if schedule is not None:
            schedule.step()
        losses.append(float(total_loss) / images.shape[0])
        accuracies.append(float(total_correct) / images.shape[0])
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracies[-1]:.3f}")
    model.eval()
    return TrainResult(tuple(losses), tuple(accuracies))


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: int = 255,
    noise: AbstractNoise | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> float:
    """Top-1 accuracy of the base classifier on clean (or, with ``noise``, once-perturbed) inputs."""
    device = model_device(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    model.eval()
    correct = 0
    order = torch.arange(images.shape[0])
    with torch.inference_mode():
        for index, inputs in _batches_of(images, levels, order, batch_size, device):
            if noise is not None:
                inputs = noise.perturb(inputs, generator=generator)
            correct += int((model(inputs).argmax(1).cpu() == labels[index]).sum())
    return correct / images.shape[0]


def train_checkpoint(
    arch: str,
    train: ImageDataset,
    noise: AbstractNoise | None,
    path: str | os.PathLike[str],
    *,
    test: ImageDataset | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    device: str | torch.device = "cpu",
    reuse: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, CheckpointInfo]:
    """Build ``arch`` for ``train``, train it with ``noise``, and save a checkpoint that records how.

    The checkpoint holds the architecture, data set, input shape, noise configuration, seed and the training
    schedule, plus the test accuracy (clean and under the noise) when ``test`` is given. With ``reuse=True`` an
    existing checkpoint at ``path`` is loaded instead of training again — if it was trained for the same
    architecture, data set and noise; otherwise that is an error rather than a silent mismatch.
    """
    noise_config = {"name": "none"} if noise is None else noise.config()
    if reuse and os.path.exists(path):
        model, info = load_checkpoint(path, device=device)
        wanted = (arch, train.name, _describe_noise(noise_config))
        if (info.arch, info.dataset, _describe_noise(info.noise)) != wanted:
            raise ValueError(
                f"{os.fspath(path)!r} holds {info.arch} on {info.dataset} trained with {info.noise}; "
                f"expected {wanted}: remove it or choose another path"
            )
        return model, info
    model = build_model(arch, train.input_shape, train.num_classes, seed=seed).to(device)
    start = time.perf_counter()
    result = train_model(
        model,
        train.images,
        train.labels,
        noise,
        levels=train.levels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        progress=progress,
    )
    training = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "final_loss": result.losses[-1],
        "seconds": time.perf_counter() - start,
    }
    if test is not None:
        training["test_accuracy_clean"] = accuracy(model, test.images, test.labels, levels=test.levels)
        training["test_accuracy_noisy"] = (
            accuracy(model, test.images, test.labels, levels=test.levels, noise=noise)
            if noise is not None
            else training["test_accuracy_clean"]
        )
    info = CheckpointInfo(
        arch, train.name, tuple(train.input_shape), train.num_classes, noise_config, seed, training=training
    )
    save_checkpoint(path, model, info)
    return model, info


def _describe_noise(config: dict[str, Any]) -> tuple[Any, ...]:
    """The scalar entries of a noise configuration, for comparing two of them."""
    return tuple(
        sorted(
            (k, round(v, 9) if isinstance(v, float) else v)
            for k, v in config.items()
            if isinstance(v, (str, int, float))
        )
    )
