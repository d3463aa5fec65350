"""Shared fixtures: analytic classifiers whose smoothed probabilities are known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class LinearBinaryClassifier(nn.Module):
    """f(x) = 1 if wᵀx + b > 0 else 0, as two logits ±(wᵀx + b).

    Under N(0, σ²I) noise, P(f(x + z) = 1) = Φ((wᵀx + b) / (σ‖w‖)) exactly, and the smoothed classifier's
    decision boundary is the hyperplane itself, so its true l2 robust radius at x is |wᵀx + b| / ‖w‖.
    """

    def __init__(self, weight: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.reshape(-1).clone())
        self.register_buffer("bias", torch.tensor(float(bias), dtype=weight.dtype))

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin(x)
        return torch.stack([-m, m], dim=1)


class RandomFeatureClassifier(nn.Module):
    """A fixed random 3-class classifier of 3-dimensional inputs (random weights on random cosine features): a
    classifier with no structure a certificate could lean on, for exhaustive checks on tiny grids."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("w1", torch.randn(3, 16, generator=generator, dtype=torch.float64) * 4)
        self.register_buffer("w2", torch.randn(16, 3, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x.flatten(1) @ self.w1) @ self.w2


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def linear_classifier() -> LinearBinaryClassifier:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(10, generator=generator, dtype=torch.float64)
    return LinearBinaryClassifier(weight, 0.3)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
