"""Training base classifiers for smoothing: one loop, any recipe, any noise, any data.

:func:`train_model` runs an objective of :mod:`manifoldcert.recipes` — Gaussian (noise) augmentation
(Cohen et al. 2019, Sec. 4; Lecuyer et al. 2019), consistency regularisation (Jeong & Shin 2020), MACER
(Zhai et al. 2020) or SmoothAdv (Salman et al. 2019) — over a data source:

- an :class:`~manifoldcert.data.ImageDataset` (read from memory in shuffled batches, fast),
- any map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (read through a ``DataLoader``), or
- a ``DataLoader`` (or any re-iterable of ``(x, y)`` batches) that the user built, with its own workers,
  pinned memory and transforms.

Inputs are float in ``[0, 1]`` (docs/conventions.md); noise is drawn through the same ``noise.perturb`` the
estimator uses, so the model is trained on the noise it will be certified with. An ``augment`` hook (e.g.
:class:`RandomCropFlip` for CIFAR) transforms each clean batch first. Shuffling, augmentation and noise come
from seeded generators; torch's global RNG is not touched. Mixed precision (``mixed_precision=True``) uses
``torch.autocast`` with a gradient scaler and needs CUDA.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from manifoldcert._validation import check_name, check_positive_float, check_positive_int
from manifoldcert.data import ImageDataset
from manifoldcert.estimator import batch_sizes, model_device
from manifoldcert.models import CheckpointInfo, build_model, load_checkpoint, save_checkpoint
from manifoldcert.noises import AbstractNoise
from manifoldcert.recipes import AbstractRecipe, GaussianAugmentation, recipe_from_config

OPTIMIZERS = ("adam", "sgd")

#: What :func:`train_model`, :func:`accuracy` and :func:`iterate_batches` read.
TrainingData = ImageDataset | Dataset | Iterable[tuple[torch.Tensor, torch.Tensor]]
#: ``augment(inputs, generator) -> inputs``: a transformation of a clean batch (shape kept).
Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch mean training loss, accuracy on the recipe's noisy inputs, and seconds."""

    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    seconds: tuple[float, ...]


def iterate_batches(
    data: TrainingData,
    *,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``data`` as ``(inputs, labels)`` batches on ``device``.

    Parameters
    ----------
    data : ImageDataset, Dataset of (x, y) or DataLoader
        An ``ImageDataset`` is batched from memory (pixels divided by its ``levels``), a map-style ``Dataset``
        is read through a ``DataLoader`` of ``batch_size``; any other iterable is taken to yield ``(x, y)``
        batches already (its own batch size, order and workers are kept).
    batch_size : int
        Used for ``ImageDataset`` and ``Dataset`` inputs.
    device : torch.device or str
        Where the batches go (``non_blocking`` copies from pinned memory).
    generator : torch.Generator, optional
        A CPU generator for the shuffling order of ``ImageDataset`` and ``Dataset`` inputs.
    shuffle : bool
        Shuffle (``ImageDataset`` and ``Dataset`` inputs); a user's ``DataLoader`` keeps its own order.

    Yields
    ------
    inputs : Tensor, float32, shape (b, *input_shape)
    labels : Tensor, int64, shape (b,)

    Raises
    ------
    TypeError
        An item of the data is not an ``(x, y)`` pair of tensors / integers.
    """
    check_positive_int(batch_size, "batch_size")
    if isinstance(data, ImageDataset):
        count = len(data)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        start = 0
        for size in batch_sizes(count, batch_size):
            index = order[start : start + size]
            start += size
            images = data.images[index].to(device=device, dtype=torch.float32).div_(data.levels)
            yield images, data.labels[index].to(device)
        return
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    for position, batch in enumerate(data):
        yield _checked_batch(batch, position, device)


def _checked_batch(
    batch: Any, position: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"training data must yield (x, y) pairs; batch {position} is a {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        )
    inputs, labels = batch
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(f"batch {position}: x must be a float tensor in [0, 1], got {_describe(inputs)}")
    labels = torch.as_tensor(labels)
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or labels.shape != (
        inputs.shape[0],
    ):
        raise TypeError(
            f"batch {position}: y must hold one integer class per input ({inputs.shape[0]}), "
            f"got {_describe(labels)}"
        )
    non_blocking = inputs.is_pinned()
    return (
        inputs.to(device, dtype=torch.float32, non_blocking=non_blocking),
        labels.to(device, dtype=torch.int64, non_blocking=non_blocking),
    )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class RandomCropFlip:
    """Random crop after zero padding, and a random horizontal flip: the standard CIFAR augmentation.

    Vectorised over the batch (one crop offset and one coin per example, from the training generator).

    Parameters
    ----------
    padding : int
        Pixels of zero padding on each side before cropping back to the input size (4 for CIFAR-10).
    flip : bool
        Flip each example left-right with probability 1/2.
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        self.padding = padding
        self.flip = flip

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the augmented batch (same shape as ``inputs``, shape (b, C, H, W))."""
        batch, _, height, width = inputs.shape
        device = inputs.device
        if self.padding:
            padded = nn.functional.pad(inputs, (self.padding,) * 4)
            span = 2 * self.padding + 1
            top = torch.randint(span, (batch, 1), generator=generator, device=device)
            left = torch.randint(span, (batch, 1), generator=generator, device=device)
            rows = (top + torch.arange(height, device=device))[:, None, :, None]
            cols = (left + torch.arange(width, device=device))[:, None, None, :]
            examples = torch.arange(batch, device=device)[:, None, None, None]
            channels = torch.arange(inputs.shape[1], device=device)[None, :, None, None]
            inputs = padded[examples, channels, rows, cols]
        if self.flip:
            coins = torch.rand(batch, generator=generator, device=device) < 0.5
            inputs = torch.where(coins[:, None, None, None], inputs.flip(-1), inputs)
        return inputs

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this augmentation, as checkpoints record it."""
        return {"name": "crop-flip", "padding": self.padding, "flip": self.flip}


def train_model(
    model: nn.Module,
    data: TrainingData,
    noise: AbstractNoise | None,
    *,
    recipe: AbstractRecipe | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    augment: Augmentation | None = None,
    mixed_precision: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with a recipe of :mod:`manifoldcert.recipes`.

    Parameters
    ----------
    model : nn.Module
        Trained on its own device; left in eval mode.
    data : ImageDataset, Dataset of (x, y) or DataLoader
        See :func:`iterate_batches`.
    noise : AbstractNoise or None
        The smoothing noise; ``None`` trains on clean inputs (Gaussian-augmentation recipe only).
    recipe : AbstractRecipe, optional
        The objective; :class:`~manifoldcert.recipes.GaussianAugmentation` (cross-entropy on one noisy copy)
        by default.
    epochs, batch_size, lr, weight_decay : training schedule. ``sgd`` uses momentum 0.9 and a cosine decay of
        the learning rate; ``adam`` a constant rate.
    augment : callable, optional
        ``augment(inputs, generator)`` applied to each clean batch before the recipe (e.g.
        :class:`RandomCropFlip`).
    mixed_precision : bool
        Forward passes under ``torch.autocast`` (float16) with a gradient scaler; needs a CUDA model.
    seed : int
        Seeds the generators of shuffling, augmentation and noise.
    progress : bool
        Show a progress bar over the epochs.

    Returns
    -------
    TrainResult
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_float(lr, "lr")
    check_name(optimizer, OPTIMIZERS, "optimizer")
    recipe = recipe if recipe is not None else GaussianAugmentation()
    if not isinstance(recipe, AbstractRecipe):
        raise TypeError(
            f"recipe must be an AbstractRecipe (manifoldcert.recipes), got {type(recipe).__name__}"
        )
    recipe.check_noise(noise)
    if isinstance(data, ImageDataset | Dataset) and len(data) == 0:  # type: ignore[arg-type]
        raise ValueError("the training data is empty")
    device = model_device(model)
    if mixed_precision and device.type != "cuda":
        raise ValueError(f"mixed_precision needs a CUDA model; this one is on {device}")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    shuffle_generator = torch.Generator().manual_seed(seed)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = None
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=mixed_precision)
    losses, accuracies, seconds = [], [], []
    bar = tqdm(range(epochs), desc=f"train ({recipe.name})", disable=not progress)
    for epoch in bar:
        model.train()
        start = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device, dtype=torch.long)
        total_count = 0
        for inputs, targets in iterate_batches(
            data, batch_size=batch_size, device=device, generator=shuffle_generator
        ):
            if augment is not None:
                inputs = augment(inputs, generator)
            with torch.autocast(device.type, dtype=torch.float16, enabled=mixed_precision):
                step = recipe.loss(model, inputs, targets, noise, generator=generator, epoch=epoch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(step.loss).backward()
            scaler.step(opt)
            scaler.update()
            total_loss += step.loss.detach().float() * targets.numel()
            total_correct += step.correct
            total_count += targets.numel()
        if schedule is not None:
            schedule.step()
        if total_count == 0:
            raise ValueError("the training data yielded no batch")
        losses.append(float(total_loss) / total_count)
        accuracies.append(float(total_correct) / (total_count * step.copies))
        seconds.append(time.perf_counter() - start)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracies[-1]:.3f}")
    model.eval()
    return TrainResult(tuple(losses), tuple(accuracies), tuple(seconds))


def accuracy(
    model: nn.Module,
    data: TrainingData,
    *,
    noise: AbstractNoise | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> float:
    """Top-1 accuracy of the base classifier on clean (or, with ``noise``, once-perturbed) inputs of ``data``."""
    device = model_device(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for inputs, targets in iterate_batches(data, batch_size=batch_size, device=device, shuffle=False):
            if noise is not None:
                inputs = noise.perturb(inputs, generator=generator)
            correct += int((model(inputs).argmax(1) == targets).sum())
            total += targets.numel()
    if total == 0:
        raise ValueError("the data is empty")
    return correct / total


def train_checkpoint(
    arch: str,
    train: ImageDataset,
    noise: AbstractNoise | None,
    path: str | os.PathLike[str],
    *,
    test: ImageDataset | None = None,
    recipe: AbstractRecipe | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    augment: RandomCropFlip | None = None,
    mixed_precision: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    reuse: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, CheckpointInfo]:
    """Build ``arch`` for ``train``, train it with ``recipe`` and ``noise``, and save a checkpoint that records how.

    The checkpoint holds the architecture, data set, input shape, noise configuration, seed, the recipe with its
    hyper-parameters, the augmentation and the training schedule with the seconds per epoch, plus the test
    accuracy (clean and under the noise) when ``test`` is given. With ``reuse=True`` an existing checkpoint at
    ``path`` is loaded instead of training again — if it was trained for the same architecture, data set, noise
    and recipe; otherwise that is an error rather than a silent mismatch.
    """
    recipe = recipe if recipe is not None else GaussianAugmentation()
    noise_config = {"name": "none"} if noise is None else noise.config()
    if reuse and os.path.exists(path):
        model, info = load_checkpoint(path, device=device)
        wanted = (arch, train.name, _describe_config(noise_config), _describe_config(recipe.config()))
        recorded_recipe = info.training.get("recipe", GaussianAugmentation().config())
        found = (info.arch, info.dataset, _describe_config(info.noise), _describe_config(recorded_recipe))
        if found != wanted:
            raise ValueError(
                f"{os.fspath(path)!r} holds {info.arch} on {info.dataset} trained with {info.noise} and the "
                f"recipe {recorded_recipe}; expected {wanted}: remove it or choose another path"
            )
        return model, info
    model = build_model(arch, train.input_shape, train.num_classes, seed=seed).to(device)
    result = train_model(
        model,
        train,
        noise,
        recipe=recipe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        augment=augment,
        mixed_precision=mixed_precision,
        seed=seed,
        progress=progress,
    )
    training: dict[str, Any] = {
        "recipe": recipe.config(),
        "augment": None if augment is None else augment.config(),
        "mixed_precision": mixed_precision,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "final_loss": result.losses[-1],
        "seconds": sum(result.seconds),
        "seconds_per_epoch": list(result.seconds),
    }
    if test is not None:
        training["test_accuracy_clean"] = accuracy(model, test)
        training["test_accuracy_noisy"] = (
            accuracy(model, test, noise=noise) if noise is not None else training["test_accuracy_clean"]
        )
    info = CheckpointInfo(
        arch, train.name, tuple(train.input_shape), train.num_classes, noise_config, seed, training=training
    )
    save_checkpoint(path, model, info)
    return model, info


def checkpoint_recipe(info: CheckpointInfo) -> AbstractRecipe:
    """The recipe a checkpoint was trained with (Gaussian augmentation for checkpoints older than recipes)."""
    config = info.training.get("recipe")
    return GaussianAugmentation() if config is None else recipe_from_config(config)


def _describe_config(config: dict[str, Any]) -> tuple[Any, ...]:
    """The scalar entries of a noise or recipe configuration, for comparing two of them."""
    return tuple(
        sorted(
            (k, round(v, 9) if isinstance(v, float) else v)
            for k, v in config.items()
            if isinstance(v, (str, int, float))
        )
    )
