"""Reference base classifiers and checkpoints that remember what they were trained for.

Architectures (``build_model(arch, input_shape, num_classes)``):

- ``mlp``: two hidden ReLU layers, any input shape;
- ``cnn``: LeNet-style, two 3×3 convolutions each followed by 2×2 pooling, for 8×8 and 28×28 inputs (any
  H, W divisible by 4);
- ``resnet20`` / ``resnet110``: the CIFAR ResNets of He et al. (2016, Sec. 4.2) with per-channel
  normalisation as the first layer (Cohen et al. 2019 keep normalisation inside the model so that noise is
  added in [0, 1] pixel space).

A checkpoint stores the weights with the architecture, data set, input shape, number of classes, training
noise and seed; :func:`load_checkpoint` rebuilds the model from the path alone and
:func:`check_compatible` refuses a data set the model was not trained for.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from manifoldcert._validation import check_name, check_output_path

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a layer, so the model accepts [0, 1] pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Flatten, ``len(hidden)`` ReLU layers, then a linear read-out."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        width = int(torch.tensor(input_shape).prod())
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallCNN(nn.Module):
    """LeNet-style CNN: conv3×3(16)–pool–conv3×3(32)–pool–fc128–fc, for inputs whose H and W divide by 4.

    Kept small on purpose: certification costs ``n`` forward passes per input, and on two CPU cores this net
    evaluates 10,000 MNIST-sized inputs in about 1.5 s.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"cnn needs H and W divisible by 4, got input shape {tuple(input_shape)}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (width_px // 4), 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 images (He et al. 2016, Sec. 4.2): 16/32/64 channels, n blocks per stage."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 20,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        channels = input_shape[0]
        layers: list[nn.Module] = [
            Normalize(mean, std),
            nn.Conv2d(channels, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        ]
        in_channels = 16
        for stage, out_channels in enumerate((16, 32, 64)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with no parameter requiring grad, for as long as the block runs.

    Gradients still flow through it to its inputs (an attack on it, a denoiser trained in front of it); its
    ``requires_grad`` flags and train/eval mode are restored on exit, also on error.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    was_training = model.training
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


ARCHITECTURES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "mlp": (MLP, {}),
    "cnn": (SmallCNN, {}),
    "resnet20": (CifarResNet, {"depth": 20}),
    "resnet110": (CifarResNet, {"depth": 110}),
}


def build_model(
    arch: str, input_shape: Sequence[int], num_classes: int, *, seed: int = 0, **options: Any
) -> nn.Module:
    """Build architecture ``arch`` with weights initialised from ``seed`` (torch's global RNG is left as it was)."""
    check_name(arch, ARCHITECTURES, "architecture")
    cls, defaults = ARCHITECTURES[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(tuple(input_shape), num_classes, **{**defaults, **options})


@dataclass
class CheckpointInfo:
    """What a checkpoint records beside the weights."""

    arch: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    noise: dict[str, Any]
    seed: int
    arch_options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, info: CheckpointInfo) -> str:
    """Write weights and :class:`CheckpointInfo` to ``path`` (its folder must exist)."""
    path = check_output_path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": "manifoldcert-checkpoint-1", "info": asdict(info), "state_dict": state}, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device | str | None = None
) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model saved at ``path`` (in eval mode, on ``device``) and return it with its info."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError) as error:
        # Truncated, corrupt or foreign files: one line that says which file, not an unpickler traceback.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read the checkpoint {os.fspath(path)!r}: {reason}") from error
    if not isinstance(payload, dict) or payload.get("format") != "manifoldcert-checkpoint-1":
        raise ValueError(f"{os.fspath(path)!r} is not a manifoldcert checkpoint")
    raw = dict(payload["info"])
    raw["input_shape"] = tuple(raw["input_shape"])
    info = CheckpointInfo(**raw)
    model = build_model(info.arch, info.input_shape, info.num_classes, **info.arch_options)
    model.load_state_dict(payload["state_dict"])
    return model.to(device or "cpu").eval(), info


def check_compatible(info: CheckpointInfo, dataset_name: str, input_shape: Sequence[int]) -> None:
    """Refuse to certify a data set (or input shape) other than the one the checkpoint was trained on."""
    if info.dataset != dataset_name:
        raise ValueError(
            f"this checkpoint was trained on {info.dataset!r}, not {dataset_name!r}; train a model for "
            f"{dataset_name!r} (manifoldcert train --dataset {dataset_name})"
        )
    if tuple(info.input_shape) != tuple(input_shape):
        raise ValueError(
            f"this checkpoint expects inputs of shape {tuple(info.input_shape)}, the data set has "
            f"{tuple(input_shape)}"
        )
