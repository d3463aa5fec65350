"""Gaussian noises: isotropic ``N(0, σ²I)``, diagonal ``N(0, diag(θ)²)`` and full covariance ``N(0, Σ)``.

All three are reparameterised (``z = σ·ε``, ``z = θ ⊙ ε``, ``z = A ε`` with ``A Aᵀ = Σ``), so gradients of
smoothed probabilities flow to σ, θ or the covariance factor ``A`` when those tensors require grad — the
parameters DDRS (isotropic), ANCER (diagonal) and RDDRS (full covariance) optimise.

References
----------
Cohen, Rosenfeld and Kolter (2019), Certified adversarial robustness via randomized smoothing.
Eiras et al. (2021), ANCER: anisotropic certification via sample-wise volume maximization.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from manifoldcert.geometry.covariance import Covariance
from manifoldcert.noises.base import AbstractNoise, Scale, as_float, check_scale, resolve_dtype

_LOG_2PI = math.log(2.0 * math.pi)


def _standard_normal(n_samples, shape, generator, device, dtype) -> torch.Tensor:
    return torch.randn((n_samples, *shape), generator=generator, device=device, dtype=resolve_dtype(dtype))


class Gaussian(AbstractNoise):
    """Isotropic Gaussian ``N(0, σ²I)``; ``sigma`` may be a tensor that requires grad."""

    name = "gaussian"
    iid_coordinates = True
    symmetric = True

    def __init__(self, sigma: Scale) -> None:
        self.scale = check_scale(sigma, "sigma")

    @property
    def sigma(self) -> float:
        return as_float(self.scale)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        return _standard_normal(n_samples, shape, generator, device, dtype) * self.scale

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if isinstance(self.scale, torch.Tensor):
            return super().perturb(inputs, generator=generator)
        # Hot path of certification: draw into one buffer and scale/shift it in place.
        noisy = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return noisy.mul_(self.scale).add_(inputs)

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        scale = torch.as_tensor(self.scale, dtype=noise.dtype, device=noise.device)
        d = flat.shape[1]
        return -0.5 * (flat / scale).square().sum(1) - d * torch.log(scale) - 0.5 * d * _LOG_2PI

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class DiagonalGaussian(AbstractNoise):
    """Anisotropic Gaussian ``N(0, diag(θ)²)`` with one standard deviation per coordinate.

    Parameters
    ----------
    scales : Tensor, shape (d,) or the input's shape
        Standard deviations ``θ`` (ANCER's parameters); may require grad.
    """

    name = "diagonal-gaussian"
    symmetric = True

    def __init__(self, scales: torch.Tensor) -> None:
        self.scales: torch.Tensor = torch.as_tensor(check_scale(torch.as_tensor(scales), "scales"))

    @property
    def sigma(self) -> float:
        return float(self.scales.detach().square().mean().sqrt())

    def _scales_for(self, shape) -> torch.Tensor:
        size = math.prod(shape)
        if self.scales.numel() != size:
            raise ValueError(
                f"this noise has {self.scales.numel()} scales but the input has {size} coordinates"
            )
        return self.scales.reshape(shape)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        scales = self._scales_for(tuple(shape))
        eps = _standard_normal(n_samples, shape, generator, device or scales.device, dtype or scales.dtype)
        return eps * scales.to(eps.device)

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        scales = self.scales.reshape(-1).to(device=noise.device, dtype=noise.dtype)
        return (
            -0.5 * (flat / scales).square().sum(1) - torch.log(scales).sum() - 0.5 * flat.shape[1] * _LOG_2PI
        )

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "scales": self.scales.detach().cpu()}


class FullCovarianceGaussian(AbstractNoise):
    """Gaussian ``N(0, Σ)`` over the flattened input, given ``Σ`` or a factor ``A`` with ``A Aᵀ = Σ``.

    Parameters
    ----------
    covariance : Tensor, shape (d, d), optional
        Symmetric positive definite ``Σ``; its Cholesky factor is used for sampling.
    factor : Tensor, shape (d, d), optional
        Any square ``A`` with ``A Aᵀ = Σ`` (need not be triangular); samples are ``A ε``, so gradients flow to
        ``A`` when it requires grad. Give exactly one of ``covariance`` and ``factor``.
    """

    name = "full-gaussian"
    symmetric = True

    def __init__(self, covariance: torch.Tensor | None = None, *, factor: torch.Tensor | None = None) -> None:
        if (covariance is None) == (factor is None):
            raise ValueError("give exactly one of covariance and factor")
        if covariance is not None:
            covariance = torch.as_tensor(covariance)
            _check_square(covariance, "covariance")
            checked = Covariance.full(covariance, "covariance")  # finite, symmetric, positive definite
            assert checked.factor is not None  # a full covariance keeps its Cholesky factor
            factor = checked.factor.to(device=covariance.device, dtype=covariance.dtype)
        else:
            factor = torch.as_tensor(factor)
            _check_square(factor, "factor")
            if not _is_invertible(factor.detach()):
                raise ValueError("factor must be invertible so that A Aᵀ is positive definite")
        self.factor = factor

    @property
    def dim(self) -> int:
        """``d``, the dimension of the noise."""
        return int(self.factor.shape[0])

    @property
    def covariance(self) -> torch.Tensor:
        """``Σ = A Aᵀ`` from the factor ``A`` (:attr:`factor`), shape ``(d, d)``."""
        return self.factor @ self.factor.mT

    @property
    def sigma(self) -> float:
        return math.sqrt(float(self.factor.detach().square().sum()) / self.dim)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        if math.prod(shape) != self.dim:
            raise ValueError(
                f"this covariance is {self.dim}×{self.dim} but the input has {math.prod(shape)} coordinates"
            )
        eps = _standard_normal(
            n_samples, (self.dim,), generator, device or self.factor.device, dtype or self.factor.dtype
        )
        return (eps @ self.factor.to(eps.device).mT).reshape(n_samples, *shape)

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        cholesky = torch.linalg.cholesky(self.covariance.to(device=noise.device, dtype=noise.dtype))
        whitened = torch.linalg.solve_triangular(cholesky, flat.mT, upper=False)
        log_det = 2.0 * torch.log(torch.diagonal(cholesky)).sum()
        return -0.5 * whitened.square().sum(0) - 0.5 * log_det - 0.5 * self.dim * _LOG_2PI

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "factor": self.factor.detach().cpu()}


def _is_invertible(factor: torch.Tensor) -> bool:
    """Full rank, by ``matrix_rank``'s relative tolerance. A triangular factor (a Cholesky factor, rebuilt at every
    RDDRS step) is invertible exactly when its diagonal has no zero, so it is judged from the diagonal, with the
    same relative tolerance, instead of by an O(d³) SVD."""
    size = factor.shape[0]
    if torch.equal(factor, factor.tril()) or torch.equal(factor, factor.triu()):
        diagonal = factor.diagonal().double().abs()
        tolerance = float(diagonal.max()) * size * torch.finfo(factor.dtype).eps
        return bool((diagonal > tolerance).all())
    return int(torch.linalg.matrix_rank(factor.double())) == size


def _check_square(matrix: torch.Tensor, name: str) -> None:
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
