"""Positive reals and positive diagonals: the search spaces of DDRS's σ and ANCER's θ.

Both are products of copies of ``R_+`` with one of two metrics, per coordinate:

``"log"`` (the affine-invariant metric of SPD(1), Fisher–Rao for a Gaussian scale)
    ``<u, v>_θ = Σ u_i v_i / θ_i²``; gradient ``θ² ∘ g``; ``Exp_θ(v) = θ ∘ exp(v / θ)``. Gradient ascent with
    this metric is gradient ascent on ``log θ``: ``Exp_θ(γ θ² g) = exp(log θ + γ θ g)`` — DDRS's step on ``log σ``.
``"euclidean"``
    ``<u, v> = Σ u_i v_i``; gradient ``g``; ``Exp_θ(v) = θ + v`` (may leave the orthant: the projection onto
    ``θ_i ≥ min_value`` brings it back, so ``min_value`` must be > 0). ANCER's Adam steps on θ in this metric.

``min_value`` is the constraint ``θ_i ≥ min_value`` (ANCER's floor ``θ_i ≥ σ*``, DDRS's σ of the start when
wanted); :meth:`project` clamps to it.
"""

from __future__ import annotations

import abc
import math
from typing import final

import torch

from manifoldcert.geometry.base import OpenSetManifold

__all__ = ["ORTHANT_METRICS", "PositiveDiagonals", "PositiveReals"]

ORTHANT_METRICS = ("euclidean", "log")


class _PositiveOrthant(OpenSetManifold):
    """``R_+^shape`` with the ``"log"`` or ``"euclidean"`` metric and the floor ``min_value`` (module docstring)."""

    def __init__(self, *, metric: str, min_value: float) -> None:
        if metric not in ORTHANT_METRICS:
            raise ValueError(
                f"unknown metric {metric!r} for positive reals; known: {', '.join(ORTHANT_METRICS)}"
            )
        min_value = float(min_value)
        if not (math.isfinite(min_value) and min_value >= 0):
            raise ValueError(f"min_value must be a finite number >= 0, got {min_value!r}")
        if metric == "euclidean" and min_value == 0:
            raise ValueError(
                "the Euclidean metric on positive reals needs min_value > 0 (its steps can leave R_+)"
            )
        self.metric = metric
        self.min_value = min_value

    @property
    @abc.abstractmethod
    def point_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``()`` or ``(d,)``."""

    def __repr__(self) -> str:
        shape, name = self.point_shape, type(self).__name__
        return f"{name}(point_shape={shape}, metric={self.metric!r}, min_value={self.min_value})"

    def check_point(self, point: torch.Tensor, name: str = "point") -> torch.Tensor:
        if not isinstance(point, torch.Tensor) or not point.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor")
        if tuple(point.shape[point.dim() - len(self.point_shape) :]) != self.point_shape:
            raise ValueError(f"{name} must have shape [..., {self.point_shape}], got {tuple(point.shape)}")
        if not bool(torch.isfinite(point).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        smallest = float(point.min()) if point.numel() else 1.0
        if not smallest > 0 or smallest < self.min_value * (1 - 1e-12):
            raise ValueError(
                f"{name} must be > 0 and >= min_value = {self.min_value:.6g}; its smallest is {smallest:.6g}"
            )
        return point

    def _weights(self, base_point: torch.Tensor) -> torch.Tensor:
        return base_point.square().reciprocal() if self.metric == "log" else torch.ones_like(base_point)

    def component_inner(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return tangent_vec_a * tangent_vec_b * self._weights(base_point)

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        components = self.component_inner(tangent_vec_a, tangent_vec_b, base_point)
        return components.sum(tuple(range(-len(self.point_shape), 0))) if self.point_shape else components

    def riemannian_gradient(self, euclidean_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        return euclidean_grad / self._weights(base_point)

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        if self.metric == "log":
            return base_point * torch.exp(tangent_vec / base_point)
        return base_point + tangent_vec

    def project(self, point: torch.Tensor) -> torch.Tensor:
        return point.clamp_min(self.min_value) if self.min_value > 0 else point


@final
class PositiveReals(_PositiveOrthant):
    """``R_+`` (a scalar point, e.g. DDRS's σ); ``metric="log"`` by default (module docstring)."""

    def __init__(self, *, metric: str = "log", min_value: float = 0.0) -> None:
        super().__init__(metric=metric, min_value=min_value)

    @property
    def point_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return ()


@final
class PositiveDiagonals(_PositiveOrthant):
    """``R_+^d``: the standard deviations ``θ`` of a diagonal covariance ``diag(θ)²`` (ANCER).

    Parameters
    ----------
    dim : int
    metric : {"euclidean", "log"}
        ``"euclidean"`` (ANCER's) by default.
    min_value : float
        The floor ``θ_i ≥ min_value``.
    """

    def __init__(self, dim: int, *, metric: str = "euclidean", min_value: float = 0.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        super().__init__(metric=metric, min_value=min_value)

    @property
    def point_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.dim,)
