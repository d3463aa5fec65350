"""The unit sphere S^{d−1}: the search space of UniCR's direction phase.

Torch-native geometry (the round metric inherited from R^d): ``Exp_x(v) = cos(‖v‖) x + sin(‖v‖) v/‖v‖``, the
Riemannian gradient ``g − <g, x> x``, the projection ``x/‖x‖`` and the vector transport by projection onto the
new tangent space. :meth:`Sphere.to_pymanopt` gives pymanopt's ``Sphere(d)`` for the derivative-free particle
swarm of :class:`manifoldcert.optimize.ParticleSwarm`.

References
----------
Absil, Mahony and Sepulchre (2008), Optimization Algorithms on Matrix Manifolds, Sec. 3.6 and Example 5.4.1.
Hong, Wang and Hong (2022), UniCR, ECCV — Sec. 3.1 (direction optimisation, symmetric initial positions).
"""

from __future__ import annotations

import math
from typing import Any, final

import numpy as np
import torch

from manifoldcert.geometry.base import Manifold

__all__ = ["Sphere", "sparse_diagonals"]


@final
class Sphere(Manifold):
    """The unit sphere ``{x ∈ R^dim : ‖x‖ = 1}``, points of shape ``[..., dim]``."""

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"the sphere needs dim >= 2, got {dim!r}")
        self.dim = dim

    @property
    def point_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(dim,)``: a point is a unit vector of ``R^dim``."""
        return (self.dim,)

    def __repr__(self) -> str:
        return f"Sphere({self.dim})"

    def check_point(self, point: torch.Tensor, name: str = "point") -> torch.Tensor:
        if not isinstance(point, torch.Tensor) or not point.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor")
        if point.shape[-1:] != (self.dim,):
            raise ValueError(f"{name} must have shape [..., {self.dim}], got {tuple(point.shape)}")
        error = float((point.norm(dim=-1) - 1).abs().max())
        if not error <= math.sqrt(torch.finfo(point.dtype).eps):
            raise ValueError(f"{name} is not on the unit sphere: | ‖x‖ − 1 | = {error:.3g}")
        return point

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return (tangent_vec_a * tangent_vec_b).sum(-1)

    def component_inner(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return self._point_broadcast(self.inner_product(tangent_vec_a, tangent_vec_b, base_point))

    def riemannian_gradient(self, euclidean_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        return self._to_tangent(euclidean_grad, base_point)

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        length = tangent_vec.norm(dim=-1, keepdim=True)
        direction = tangent_vec / torch.where(length > 0, length, torch.ones_like(length))
        return torch.cos(length) * base_point + torch.sin(length) * direction

    def project(self, point: torch.Tensor) -> torch.Tensor:
        return point / point.norm(dim=-1, keepdim=True)

    def transport(
        self, tangent_vec: torch.Tensor, base_point: torch.Tensor, point: torch.Tensor
    ) -> torch.Tensor:
        return self._to_tangent(tangent_vec, point)

    def radial_norm(self, base_point: torch.Tensor) -> torch.Tensor:
        return torch.ones(base_point.shape[:-1], dtype=base_point.dtype, device=base_point.device)

    def to_pymanopt(self) -> Any:
        """pymanopt's ``Sphere(dim)`` (float64 numpy on the CPU)."""
        from pymanopt.manifolds import Sphere as PymanoptSphere

        return PymanoptSphere(self.dim)

    @staticmethod
    def _to_tangent(vector: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        return vector - (vector * point).sum(-1, keepdim=True) * point


def sparse_diagonals(dim: int, *, max_count: int | None = None) -> list[np.ndarray]:
    """The symmetric starting positions ``(1, …, 1, 0, …, 0)/√k`` for ``k = 1, 2, 4, …, d`` (and ``k = d``).

    For noise with i.i.d. coordinates the radius along a direction is invariant to permuting or flipping
    coordinates, so these k-sparse diagonals stand for all the symmetric positions (axes, diagonals of faces, the
    main diagonal) that UniCR starts from.
    """
    sizes = sorted({min(2**j, dim) for j in range(int(math.log2(dim)) + 2)})
    if max_count is not None and len(sizes) > max_count:
        keep = np.unique(np.round(np.linspace(0, len(sizes) - 1, max_count)).astype(int))
        sizes = [sizes[i] for i in keep]
    directions = []
    for size in sizes:
        direction = np.zeros(dim)
        direction[:size] = 1.0 / math.sqrt(size)
        directions.append(direction)
    return directions
