"""Model factories that tests/test_sources.py loads through import paths (``sources_factories:linear``)."""

from __future__ import annotations

import torch
from torch import nn


class DictOutput(nn.Module):
    """Wraps a model and returns ``{"logits": ..., "features": ...}``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(x), "features": x.flatten(1)}


def linear(num_classes: int = 3, channels: int = 3, size: int = 4) -> nn.Module:
    """A seeded linear classifier of ``(channels, size, size)`` images."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return model


def dict_model() -> nn.Module:
    return DictOutput(linear())


not_a_factory = 3


def returns_int() -> int:
    return 1


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised (nothing is downloaded), for 32×32 inputs."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes)
