"""SPD(n), the manifold of symmetric positive definite matrices, with a swappable metric and an eigenvalue floor.

RDDRS (Labarbarie, Hajri and Arnaudon, 2022) optimises a per-input Gaussian covariance ``C`` by Riemannian
gradient ascent on SPD(d), ``C ← Exp_C(γ ∇H(C))`` (their Eq. 6), under the constraint ``λ_i(C) ≥ σ*²``.
:class:`SPDMatrices` is that search space: its metric is any :class:`~manifoldcert.geometry.metrics.SPDMetric`
(by name, ours, a user's, or geomstats' through :class:`~manifoldcert.geometry.metrics.GeomstatsMetric`), and its
projection clips the eigenvalues at ``min_eigenvalue`` (the constraint set is closed and convex, and clipping is
its Frobenius projection). Everything is batched over ``[..., n, n]`` and runs in the inputs' dtype and device.

References
----------
Labarbarie, Hajri and Arnaudon (2022), Riemannian data-dependent randomized smoothing for neural networks
certification (RDDRS), Eq. 5–6.
Higham (1988), Computing a nearest symmetric positive semidefinite matrix (eigenvalue clipping).
"""

from __future__ import annotations

import math
from typing import Any, final

import torch

from manifoldcert.geometry._geomstats import import_geomstats_spd
from manifoldcert.geometry.base import OpenSetManifold
from manifoldcert.geometry.matrix_functions import check_square, symmetric_part
from manifoldcert.geometry.metrics import GeomstatsMetric, SPDMetric, resolve_metric

__all__ = ["SPDMatrices", "check_spd", "clip_eigenvalues"]

_GEOMSTATS_CLASSES = {
    "affine-invariant": "SPDAffineMetric",
    "log-euclidean": "SPDLogEuclideanMetric",
    "bures-wasserstein": "SPDBuresWassersteinMetric",
}


def _check_pair(first: Any, first_name: str, second: Any, second_name: str) -> None:
    check_square(first, first_name)
    check_square(second, second_name)
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(
            f"{first_name} is {first.shape[-1]}×{first.shape[-1]} but {second_name} is "
            f"{second.shape[-1]}×{second.shape[-1]}"
        )


def clip_eigenvalues(matrix: torch.Tensor, lower: float) -> torch.Tensor:
    """``U max(Λ, lower) Uᵀ`` of the symmetric part of ``matrix`` — the Frobenius-nearest matrix with every
    eigenvalue ``≥ lower``; returned unchanged (symmetrised) when a Cholesky factorisation of
    ``M − (1 − 1e-9)·lower·I`` already shows ``λ_min ≥ lower`` to that relative precision, which costs a tenth of
    the eigendecomposition."""
    symmetric = symmetric_part(matrix)
    eye = torch.eye(symmetric.shape[-1], dtype=symmetric.dtype, device=symmetric.device)
    _, info = torch.linalg.cholesky_ex(symmetric - (1 - 1e-9) * lower * eye)
    if not bool((info != 0).any()):
        return symmetric
    eigenvalues, vectors = torch.linalg.eigh(symmetric)
    return symmetric_part((vectors * eigenvalues.clamp_min(lower)[..., None, :]) @ vectors.mT)


def check_spd(matrix: torch.Tensor, name: str = "matrix", *, tol: float | None = None) -> torch.Tensor:
    """Return ``matrix`` after checking that it is a finite, symmetric, positive definite ``[..., n, n]`` tensor.

    Parameters
    ----------
    matrix : Tensor, shape [..., n, n]
    name : str
        The argument's name in error messages.
    tol : float, optional
        Allowed asymmetry ``max|M − Mᵀ| ≤ tol · max|M|``; default ``sqrt(eps)`` of the dtype.

    Raises
    ------
    ValueError
        When a matrix is not square, not finite, not symmetric or not positive definite (the message gives
        the smallest eigenvalue).
    """
    _smallest_eigenvalue(matrix, name, tol)
    return matrix


def _smallest_eigenvalue(matrix: torch.Tensor, name: str, tol: float | None = None) -> float:
    """The checks of :func:`check_spd`; returns the smallest eigenvalue (``inf`` for an empty batch)."""
    check_square(matrix, name)
    detached = matrix.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if detached.numel() == 0:
        return math.inf
    tol = math.sqrt(torch.finfo(matrix.dtype).eps) if tol is None else float(tol)
    asymmetry = float((detached - detached.mT).abs().max())
    allowed = tol * float(detached.abs().max())
    if asymmetry > allowed:
        raise ValueError(f"{name} is not symmetric: max |M − Mᵀ| = {asymmetry:.3g} > {allowed:.3g}")
    smallest = float(torch.linalg.eigvalsh(symmetric_part(detached.double())).min())
    if not smallest > 0:
        raise ValueError(f"{name} is not positive definite: its smallest eigenvalue is {smallest:.6g}")
    return smallest


@final
class SPDMatrices(OpenSetManifold):
    """SPD(n) equipped with one Riemannian metric, constrained to ``λ_min ≥ min_eigenvalue``.

    Parameters
    ----------
    n : int
        Matrix size.
    metric : str, SPDMetric, SPDMetric subclass, or geomstats SPD metric (class or instance)
        Anything :func:`~manifoldcert.geometry.metrics.resolve_metric` accepts; ``"affine-invariant"`` (RDDRS's)
        by default.
    min_eigenvalue : float
        The floor of the constraint set (0: none); :meth:`project` clips eigenvalues to it.

    Notes
    -----
    Points must be symmetric positive definite (only their symmetric part or lower triangle is read); a point
    that is not positive definite raises ``ValueError``. Results are symmetric, in the inputs' dtype and device.

    Examples
    --------
    One step of RDDRS's ascent (Eq. 6) from ``σ²I`` along the Riemannian gradient of a Euclidean gradient ``G``::

        spd = SPDMatrices(d, metric="log-euclidean", min_eigenvalue=0.25**2)
        start = 0.25**2 * torch.eye(d)
        covariance = spd.step(0.1 * spd.riemannian_gradient(G, start), start)
    """

    def __init__(self, n: int, metric: Any = "affine-invariant", *, min_eigenvalue: float = 0.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        min_eigenvalue = float(min_eigenvalue)
        if not (math.isfinite(min_eigenvalue) and min_eigenvalue >= 0):
            raise ValueError(f"min_eigenvalue must be a finite number >= 0, got {min_eigenvalue!r}")
        self.n = n
        self.metric: SPDMetric = resolve_metric(metric, n)
        self.min_eigenvalue = min_eigenvalue

    @property
    def point_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(n, n)``: a point is an ``n × n`` symmetric positive definite matrix."""
        return (self.n, self.n)

    def __repr__(self) -> str:
        return f"SPDMatrices({self.n}, metric={self.metric!r}, min_eigenvalue={self.min_eigenvalue:.6g})"

    def check_point(self, point: torch.Tensor, name: str = "point") -> torch.Tensor:
        smallest = _smallest_eigenvalue(point, name)
        if point.shape[-1] != self.n:
            raise ValueError(
                f"{name} is {point.shape[-1]}×{point.shape[-1]} but the manifold is SPD({self.n})"
            )
        if smallest < self.min_eigenvalue * (1 - 1e-9):
            raise ValueError(
                f"{name} violates the floor λ_min >= {self.min_eigenvalue:.6g}: its smallest eigenvalue is "
                f"{smallest:.6g}"
            )
        return point

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian exponential ``Exp_P(V)`` of the metric."""
        _check_pair(tangent_vec, "tangent_vec", base_point, "base_point")
        return self.metric.exp(tangent_vec, base_point)

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian logarithm ``Log_P(Q)``, the tangent vector at ``base_point`` with ``Exp_P(Log_P(Q)) = Q``."""
        _check_pair(point, "point", base_point, "base_point")
        return self.metric.log(point, base_point)

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        """Squared geodesic distance ``d(P, Q)²``, shape ``[...]``."""
        _check_pair(point_a, "point_a", point_b, "point_b")
        return self.metric.squared_distance(point_a, point_b)

    def distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        """Geodesic distance ``d(P, Q)``, shape ``[...]`` (its gradient is undefined at ``P = Q``)."""
        return self.squared_distance(point_a, point_b).sqrt()

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        _check_pair(tangent_vec_a, "tangent_vec_a", base_point, "base_point")
        _check_pair(tangent_vec_b, "tangent_vec_b", base_point, "base_point")
        return self.metric.inner_product(tangent_vec_a, tangent_vec_b, base_point)

    def component_inner(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return self._point_broadcast(self.inner_product(tangent_vec_a, tangent_vec_b, base_point))

    def riemannian_gradient(self, euclidean_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """The tangent vector ``G_R`` with ``<G_R, V>_P = <sym(G), V>_F`` for all symmetric ``V``.

        Only ``sym(G) = (G + Gᵀ)/2`` matters, since ``P`` moves among symmetric matrices. Affine-invariant:
        ``P sym(G) P``; log-Euclidean: ``(D logm_P)⁻²[sym G]``; Bures–Wasserstein: ``2 (P sym(G) + sym(G) P)``.
        """
        _check_pair(euclidean_grad, "euclidean_grad", base_point, "base_point")
        return self.metric.riemannian_gradient(symmetric_part(euclidean_grad), base_point)

    def project(self, point: torch.Tensor) -> torch.Tensor:
        """Eigenvalues clipped at ``min_eigenvalue`` (:func:`clip_eigenvalues`); symmetrised when there is no floor."""
        if self.min_eigenvalue > 0:
            return clip_eigenvalues(point, self.min_eigenvalue)
        return symmetric_part(point)

    def to_geomstats(self) -> Any:
        """geomstats 2.8's ``SPDMatrices(n)`` equipped with this metric (our built-in ones by their geomstats
        class; a :class:`GeomstatsMetric`'s own space) — for cross-checks. torch's default dtype is kept."""
        if isinstance(self.metric, GeomstatsMetric):
            return self.metric.geomstats_metric._space
        if self.metric.name not in _GEOMSTATS_CLASSES:
            raise ValueError(f"{self.metric!r} has no geomstats counterpart")
        spd_matrices = import_geomstats_spd()
        space = spd_matrices.SPDMatrices(self.n, equip=False)
        return space.equip_with_metric(getattr(spd_matrices, _GEOMSTATS_CLASSES[self.metric.name]))
