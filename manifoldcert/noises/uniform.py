"""Uniform noise on the cube ``[-λ, λ]^d``; ``sigma = λ / √3``.

Yang et al. (2020), "Randomized smoothing of all shapes and sizes"; Lee et al. (2019), "Tight certificates of
adversarial robustness for randomly smoothed classifiers".
"""

from __future__ import annotations

import math
from typing import Any

import torch

from manifoldcert.noises.base import AbstractNoise, Scale, as_float, resolve_dtype, sigma_or_scale


class Uniform(AbstractNoise):
    """i.i.d. uniform noise; give ``sigma`` (RMS per coordinate) or the half-width ``half_width = sigma·√3``."""

    name = "uniform"
    iid_coordinates = True
    symmetric = True

    def __init__(self, sigma: Scale | None = None, *, half_width: Scale | None = None) -> None:
        self.half_width = sigma_or_scale(sigma, half_width, "half_width", 1.0 / math.sqrt(3.0))
        # Keep the user's σ exactly (no round trip through the family's own scale) when it was given.
        self._sigma = as_float(sigma) if sigma is not None else None

    @property
    def sigma(self) -> float:
        return self._sigma if self._sigma is not None else as_float(self.half_width) / math.sqrt(3.0)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        u = torch.rand((n_samples, *shape), generator=generator, device=device, dtype=resolve_dtype(dtype))
        return (2.0 * u - 1.0) * self.half_width

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        half_width = torch.as_tensor(self.half_width, dtype=noise.dtype, device=noise.device)
        inside = (flat.abs() <= half_width).all(1)
        log_density = -flat.shape[1] * torch.log(2.0 * half_width)
        return torch.where(inside, log_density, torch.full_like(inside, -math.inf, dtype=noise.dtype))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
