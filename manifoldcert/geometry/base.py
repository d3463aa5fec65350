"""The manifold interface every optimiser of :mod:`manifoldcert.optimize` works with.

A manifold here is the search space of one certifier's parameters — positive reals (DDRS's σ), positive
diagonals (ANCER's θ), SPD(d) (RDDRS's covariance), the unit sphere (UniCR's direction) — together with the
geometry an optimiser needs: an inner product on tangent vectors, the Riemannian gradient of a function from its
Euclidean gradient, the exponential map, the projection onto a constraint set (e.g. the floor ``λ_i ≥ σ*²`` of
RDDRS), and a vector transport. Points are torch tensors of shape ``[..., *point_shape]``; tangent vectors have
the points' shape; results follow the inputs' dtype and device.

Names and argument order follow geomstats (``exp(tangent_vec, base_point)``, ``inner_product(tangent_vec_a,
tangent_vec_b, base_point)``).
"""

from __future__ import annotations

import abc

import torch

__all__ = ["Manifold", "OpenSetManifold"]


class Manifold(abc.ABC):
    """A Riemannian manifold of points ``[..., *point_shape]`` with an optional constraint set.

    The constraint set (a closed subset the optimisers stay in) is the image of :meth:`project`;
    :meth:`step` is the move every optimiser makes: ``project(exp(tangent_vec, base_point))``.
    """

    #: Shape of one point (``()`` for a scalar, ``(d,)`` for a vector, ``(n, n)`` for a matrix).
    point_shape: tuple[int, ...]

    @abc.abstractmethod
    def check_point(self, point: torch.Tensor, name: str = "point") -> torch.Tensor:
        """Return ``point`` if it lies on the manifold and in its constraint set; a ``ValueError`` naming ``name``
        otherwise (``TypeError`` for what is not a floating-point tensor of the right shape)."""

    @abc.abstractmethod
    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        """Riemannian inner product ``<V, W>_P``, shape ``[...]``."""

    @abc.abstractmethod
    def component_inner(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        """The inner product split into the manifold's product components, broadcastable to a point.

        A product of 1-D manifolds (positive diagonals) returns one value per coordinate; any other manifold
        returns ``inner_product`` with singleton point dimensions. Riemannian Adam keeps one second-moment
        estimate per component (Bécigneul and Ganea, 2019).
        """

    @abc.abstractmethod
    def riemannian_gradient(self, euclidean_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """The tangent vector ``G_R`` with ``<G_R, V>_P = <G, V>`` (Euclidean) for every tangent vector ``V``."""

    @abc.abstractmethod
    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian exponential ``Exp_P(V)`` (or, where stated, a retraction)."""

    @abc.abstractmethod
    def project(self, point: torch.Tensor) -> torch.Tensor:
        """The nearest point of the constraint set (the identity where there is no constraint)."""

    @abc.abstractmethod
    def transport(
        self, tangent_vec: torch.Tensor, base_point: torch.Tensor, point: torch.Tensor
    ) -> torch.Tensor:
        """A vector transport of ``tangent_vec`` from ``base_point`` to ``point`` (for momentum)."""

    @abc.abstractmethod
    def radial_norm(self, base_point: torch.Tensor) -> torch.Tensor:
        """The length that a relative step of 1 moves at ``base_point``, shape ``[...]``.

        For an open subset of a vector space it is ``‖P‖_P``, the norm of the scaling direction ``P`` itself, so a
        relative step ``t`` scales ``P`` by ``e^t`` to first order under every metric; on the sphere it is 1 (an
        angle).
        """

    def norm(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian norm ``‖V‖_P``, shape ``[...]``."""
        return self.inner_product(tangent_vec, tangent_vec, base_point).clamp_min(0).sqrt()

    def step(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """The optimisers' move: ``project(exp(tangent_vec, base_point))``."""
        return self.project(self.exp(tangent_vec, base_point))

    def _point_broadcast(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` of shape ``[...]`` with one singleton dimension per point dimension."""
        return value.reshape(*value.shape, *([1] * len(self.point_shape)))


class OpenSetManifold(Manifold):
    """An open subset of a vector space (every tangent space is the vector space itself): the transport is the
    identity and the radial norm is ``‖P‖_P``."""

    def transport(
        self, tangent_vec: torch.Tensor, base_point: torch.Tensor, point: torch.Tensor
    ) -> torch.Tensor:
        return tangent_vec

    def radial_norm(self, base_point: torch.Tensor) -> torch.Tensor:
        return self.norm(base_point, base_point)
