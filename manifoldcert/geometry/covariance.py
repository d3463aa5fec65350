"""``Covariance``: one value type for the Gaussian covariances of smoothing — isotropic ``σ²I``, diagonal
``diag(θ)²`` or full ``Σ = LLᵀ`` (kept as its Cholesky factor) — so nothing has to guess from a tensor's rank
what it holds. Everything is float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from manifoldcert.geometry.spd import check_spd

__all__ = ["Covariance"]

KINDS = ("isotropic", "diagonal", "full")


def _float64(tensor: Any) -> torch.Tensor:
    return torch.as_tensor(tensor).detach().to(device="cpu", dtype=torch.float64)


@dataclass(frozen=True)
class Covariance:
    """A ``d × d`` covariance. Build it with :meth:`isotropic`, :meth:`diagonal`, :meth:`full` or :meth:`coerce`.

    Attributes
    ----------
    kind : {"isotropic", "diagonal", "full"}
    dim : int
    variances : Tensor, shape (d,)
        The diagonal (isotropic, diagonal kinds); ``None`` for a full covariance.
    factor : Tensor, shape (d, d)
        Lower Cholesky factor (full kind); ``None`` otherwise.
    """

    kind: str
    dim: int
    variances: torch.Tensor | None = None
    factor: torch.Tensor | None = None

    @classmethod
    def isotropic(cls, sigma: float, dim: int) -> Covariance:
        """``σ²I`` of size ``dim``."""
        sigma = float(sigma)
        # σ² must be finite and > 0 too: an ascent that blew σ up to 1e160 (σ² overflows) or down to 1e-170 (σ²
        # underflows to 0, a zero-noise "Gaussian") gives an invalid iterate here, not an error further on.
        if not (math.isfinite(sigma) and sigma > 0 and 0.0 < sigma * sigma < math.inf):
            raise ValueError(f"sigma must be > 0 with a finite, non-zero square, got {sigma!r}")
        return cls("isotropic", int(dim), variances=torch.full((int(dim),), sigma**2, dtype=torch.float64))

    @classmethod
    def diagonal(cls, scales: torch.Tensor) -> Covariance:
        """``diag(θ)²`` from the standard deviations ``θ`` (any shape, flattened)."""
        scales = _float64(scales).reshape(-1)
        variances = scales.square()
        if not bool(torch.isfinite(variances).all()) or not bool((variances > 0).all()):
            raise ValueError("standard deviations must be > 0 with finite, non-zero squares")
        return cls("diagonal", scales.numel(), variances=variances)

    @classmethod
    def full(cls, matrix: torch.Tensor, name: str = "covariance") -> Covariance:
        """A full SPD ``Σ`` (checked: finite, symmetric, positive definite)."""
        matrix = check_spd(_float64(matrix), name)
        if matrix.dim() != 2:
            raise ValueError(f"{name} must be one d×d matrix, got shape {tuple(matrix.shape)}")
        factor, info = torch.linalg.cholesky_ex((matrix + matrix.mT) / 2)
        if int(info) != 0:
            raise ValueError(f"{name} must be positive definite (its Cholesky factorisation failed)")
        return cls("full", matrix.shape[0], factor=factor)

    @classmethod
    def coerce(cls, value: Covariance | torch.Tensor | float, dim: int) -> Covariance:
        """``value`` itself, or a covariance read from a tensor: a scalar variance (``σ²I``), a ``(d,)`` vector of
        variances, or a ``(d, d)`` SPD matrix — the forms the public ellipsoid functions accept."""
        if isinstance(value, Covariance):
            if value.dim != dim:
                raise ValueError(f"the covariance is {value.dim}×{value.dim}, expected {dim}×{dim}")
            return value
        tensor = _float64(value)
        if tensor.dim() <= 1:
            variances = tensor.expand(dim) if tensor.dim() == 0 else tensor
            if variances.numel() != dim:
                raise ValueError(f"a diagonal covariance needs {dim} variances, got {variances.numel()}")
            if not bool(torch.isfinite(variances).all()) or not bool((variances > 0).all()):
                raise ValueError("variances must be finite and > 0")
            kind = "isotropic" if tensor.dim() == 0 else "diagonal"
            return cls(kind, dim, variances=variances.clone())
        if tuple(tensor.shape) != (dim, dim):
            raise ValueError(f"a full covariance must be {dim}×{dim}, got {tuple(tensor.shape)}")
        return cls.full(tensor, "the shape matrix")

    @property
    def is_diagonal(self) -> bool:
        """True for the isotropic and diagonal kinds."""
        return self.variances is not None

    def dense(self) -> torch.Tensor:
        """``Σ`` as a ``(d, d)`` matrix."""
        if self.variances is not None:
            return torch.diag(self.variances)
        factor = self.factor
        assert factor is not None  # exactly one of variances / factor is set
        return factor @ factor.mT

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of ``Σ``, ascending."""
        if self.variances is not None:
            return torch.sort(self.variances).values
        return torch.linalg.eigvalsh(self.dense())

    def scales(self) -> torch.Tensor:
        """Standard deviations ``sqrt(diag Σ)`` (the diagonal kinds' θ)."""
        if self.variances is None:
            raise ValueError("a full covariance has no per-coordinate standard deviations; use factor")
        return self.variances.sqrt()

    def log_det(self) -> float:
        """``log det Σ``."""
        if self.variances is not None:
            return float(self.variances.log().sum())
        factor = self.factor
        assert factor is not None  # exactly one of variances / factor is set
        return 2.0 * float(factor.diagonal().log().sum())

    def proxy_scale(self) -> float:
        """``det(Σ)^{1/(2d)}``: the radius of the ball with the volume of the unit ``Σ``-ellipsoid."""
        return math.exp(self.log_det() / (2 * self.dim))

    def whiten(self, vectors: torch.Tensor) -> torch.Tensor:
        """``L⁻¹ u`` for each row ``u`` of ``vectors`` (``Σ = LLᵀ``); ``‖L⁻¹u‖`` is the ``Σ``-Mahalanobis norm."""
        if self.variances is not None:
            return vectors / self.variances.sqrt()
        return torch.linalg.solve_triangular(self.factor, vectors.mT, upper=False).mT

    def mahalanobis(self, delta: torch.Tensor) -> float:
        """``sqrt(δᵀΣ⁻¹δ)`` for one vector ``δ``."""
        return float(self.whiten(delta.unsqueeze(0)).norm())
