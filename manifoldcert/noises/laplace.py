"""Laplace noise with i.i.d. coordinates, density ``exp(-|z_i| / b) / (2b)``; ``sigma = b·√2``.

Teng, Lee, Fan and Zhang (2020), "ℓ1 adversarial robustness certificates: a randomized smoothing approach".
"""

from __future__ import annotations

import math
from typing import Any

import torch

from manifoldcert.noises.base import AbstractNoise, Scale, as_float, resolve_dtype, sigma_or_scale


def standard_laplace(
    shape: tuple[int, ...] | torch.Size, *, generator=None, device=None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """i.i.d. draws of the standard Laplace law (scale 1) by its inverse CDF, one uniform draw per coordinate."""
    dtype = resolve_dtype(dtype)
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    u.clamp_(min=torch.finfo(dtype).tiny)
    return torch.where(u < 0.5, torch.log(2.0 * u), -torch.log(2.0 - 2.0 * u))


class Laplace(AbstractNoise):
    """i.i.d. Laplace noise; give ``sigma`` (RMS per coordinate) or the scale ``b = sigma / √2``."""

    name = "laplace"
    iid_coordinates = True
    symmetric = True

    def __init__(self, sigma: Scale | None = None, *, scale: Scale | None = None) -> None:
        self.scale = sigma_or_scale(sigma, scale, "scale", math.sqrt(2.0))
        # Keep the user's σ exactly (no round trip through the family's own scale) when it was given.
        self._sigma = as_float(sigma) if sigma is not None else None

    @property
    def sigma(self) -> float:
        return self._sigma if self._sigma is not None else as_float(self.scale) * math.sqrt(2.0)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        return (
            standard_laplace((n_samples, *shape), generator=generator, device=device, dtype=dtype)
            * self.scale
        )

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        scale = torch.as_tensor(self.scale, dtype=noise.dtype, device=noise.device)
        return -(flat.abs() / scale).sum(1) - flat.shape[1] * torch.log(2.0 * scale)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
