"""Riemannian metrics on SPD(n): the affine-invariant, log-Euclidean and Bures–Wasserstein metrics, a base class for
a user's own, and an adapter that makes any geomstats SPD metric one of ours.

``AffineInvariant`` (Pennec, Fillard and Ayache, 2006; the metric of RDDRS)
    ``<V, W>_P = tr(P⁻¹ V P⁻¹ W)``; with ``L = cholesky(P)``, ``Exp_P(V) = L expm(L⁻¹ V L⁻ᵀ) Lᵀ``,
    ``Log_P(Q) = L logm(L⁻¹ Q L⁻ᵀ) Lᵀ`` and ``d(P, Q) = ‖logm(L⁻¹ Q L⁻ᵀ)‖_F``. The Cholesky factor stands
    in for ``P^{1/2}`` (the two differ by a rotation that cancels), so no square root of ``P`` is needed.
``LogEuclidean`` (Arsigny, Fillard, Pennec and Ayache, 2007)
    the Frobenius metric pulled back by ``logm``: ``<V, W>_P = <D logm_P[V], D logm_P[W]>_F``,
    ``Exp_P(V) = expm(logm P + D logm_P[V])``, ``Log_P(Q) = D expm_{logm P}[logm Q − logm P]`` and
    ``d(P, Q) = ‖logm P − logm Q‖_F``.
``BuresWasserstein`` (Bhatia, Jain and Lim, 2019)
    ``<V, W>_P = ½ tr(L_P[V] W)`` with ``L_P[V]`` the solution ``X`` of ``P X + X P = V``;
    ``Exp_P(V) = P + V + L_P[V] P L_P[V]``, ``Log_P(Q) = (PQ)^{1/2} + (QP)^{1/2} − 2P`` and
    ``d(P, Q)² = tr P + tr Q − 2 tr (P^{1/2} Q P^{1/2})^{1/2}`` (the 2-Wasserstein distance between
    ``N(0, P)`` and ``N(0, Q)``).

Each convention, including the scale factors, is the one of geomstats 2.8 (``SPDAffineMetric``,
``SPDLogEuclideanMetric``, ``SPDBuresWassersteinMetric``). :class:`GeomstatsMetric` wraps a geomstats metric
so that ``exp``, ``log``, the inner product and the distance are geomstats' own; :func:`resolve_metric` turns
what a user passes as ``metric=`` (a name, one of our metrics or a subclass of :class:`SPDMetric`, a geomstats
SPD metric class or instance) into an :class:`SPDMetric`.

Arguments follow geomstats' names and order (``exp(tangent_vec, base_point)``, ``log(point, base_point)``);
everything is batched over ``[..., n, n]``, and autograd stays finite at repeated eigenvalues (the spectral
functions of :mod:`manifoldcert.geometry.matrix_functions`).

References
----------
Pennec, Fillard and Ayache (2006), A Riemannian framework for tensor computing, IJCV 66(1).
Arsigny, Fillard, Pennec and Ayache (2007), Geometric means in a novel vector space structure on symmetric
positive-definite matrices, SIAM J. Matrix Anal. Appl. 29(1).
Bhatia, Jain and Lim (2019), On the Bures–Wasserstein distance between positive definite matrices,
Expositiones Mathematicae 37(2).
Miolane et al. (2020), Geomstats: a Python package for Riemannian geometry in machine learning, JMLR 21.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, final

import torch

from manifoldcert.geometry._geomstats import import_geomstats_spd, is_geomstats_object
from manifoldcert.geometry.matrix_functions import (
    cholesky_factor,
    differential_expm,
    differential_logm,
    expm,
    frobenius,
    lyapunov_solve,
    spectral_log,
    spectral_sqrt,
    symmetric_part,
    trace,
    whiten,
)

__all__ = [
    "METRICS",
    "AffineInvariant",
    "BuresWasserstein",
    "GeomstatsMetric",
    "LogEuclidean",
    "SPDMetric",
    "resolve_metric",
    "riesz_gradient",
]


class SPDMetric(abc.ABC):
    """A Riemannian metric on SPD(n): what :class:`~manifoldcert.geometry.spd.SPDMatrices` and the optimisers
    need from it. Subclass it to ablate a metric of your own; every method is batched over ``[..., n, n]``.

    A subclass implements the five methods below. Where the Riemannian gradient has no closed form,
    :func:`riesz_gradient` computes it from :meth:`inner_product` alone (conjugate gradients).
    """

    #: Short name reported in certificates (``params["metric"]``).
    name: ClassVar[str] = "custom"

    @abc.abstractmethod
    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian exponential ``Exp_P(V)``, shape ``[..., n, n]``."""

    @abc.abstractmethod
    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian logarithm ``Log_P(Q)``: the tangent vector at ``P`` with ``Exp_P(Log_P(Q)) = Q``."""

    @abc.abstractmethod
    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        """Squared geodesic distance, shape ``[...]``."""

    @abc.abstractmethod
    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        """``<V, W>_P``, shape ``[...]``."""

    @abc.abstractmethod
    def riemannian_gradient(self, symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """The tangent vector ``G_R`` with ``<G_R, V>_P = <G, V>_F`` for every symmetric ``V`` (``G`` symmetric)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@final
class AffineInvariant(SPDMetric):
    """``<V, W>_P = tr(P⁻¹ V P⁻¹ W)``: the affine-invariant (Fisher–Rao) metric of RDDRS (module docstring)."""

    name = "affine-invariant"

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        factor = cholesky_factor(base_point, "base_point")
        return symmetric_part(factor @ expm(whiten(factor, tangent_vec)) @ factor.mT)

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        factor = cholesky_factor(base_point, "base_point")
        return symmetric_part(factor @ spectral_log(whiten(factor, point), "point") @ factor.mT)

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        factor = cholesky_factor(point_a, "point_a")
        return spectral_log(whiten(factor, point_b), "point_b").square().sum((-2, -1))

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        factor = cholesky_factor(base_point, "base_point")
        return frobenius(whiten(factor, tangent_vec_a), whiten(factor, tangent_vec_b))

    def riemannian_gradient(self, symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # tr(P⁻¹ G_R P⁻¹ V) = <G, V>_F for all symmetric V  ⇔  G_R = P G P.
        return symmetric_part(base_point @ symmetric_grad @ base_point)


@final
class LogEuclidean(SPDMetric):
    """``<V, W>_P = <D logm_P[V], D logm_P[W]>_F``: the log-Euclidean metric (module docstring)."""

    name = "log-euclidean"

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        log_base = spectral_log(base_point, "base_point")
        return expm(log_base + differential_logm(tangent_vec, base_point))

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        log_base = spectral_log(base_point, "base_point")
        log_point = spectral_log(point, "point")
        return symmetric_part(differential_expm(log_point - log_base, log_base))

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        return (spectral_log(point_a, "point_a") - spectral_log(point_b, "point_b")).square().sum((-2, -1))

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return frobenius(
            differential_logm(tangent_vec_a, base_point), differential_logm(tangent_vec_b, base_point)
        )

    def riemannian_gradient(self, symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # <D log_P[G_R], D log_P[V]>_F = <G, V>_F and D log_P is self-adjoint, so G_R = (D log_P)⁻²[G]; and
        # (D log_P)⁻¹ = D expm_{log P}, which keeps the result differentiable at repeated eigenvalues.
        log_base = spectral_log(base_point, "base_point")
        once = differential_expm(symmetric_grad, log_base)
        return symmetric_part(differential_expm(once, log_base))


@final
class BuresWasserstein(SPDMetric):
    """``<V, W>_P = ½ tr(L_P[V] W)``: the Bures–Wasserstein metric (module docstring)."""

    name = "bures-wasserstein"

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        lifted = lyapunov_solve(base_point, tangent_vec)
        return symmetric_part(base_point + tangent_vec + lifted @ base_point @ lifted)

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # With L = cholesky(P) and M = Lᵀ Q L, (PQ)^{1/2} = L M^{1/2} L⁻¹ (it squares to PQ and has positive
        # eigenvalues), so Log_P(Q) = X + Xᵀ − 2P with Xᵀ = L⁻ᵀ M^{1/2} Lᵀ.
        factor = cholesky_factor(base_point, "base_point")
        root = spectral_sqrt(factor.mT @ point @ factor, "point")
        root_t = torch.linalg.solve_triangular(factor.mT, root @ factor.mT, upper=True)
        return symmetric_part(root_t + root_t.mT) - 2 * base_point

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        # tr (P^{1/2} Q P^{1/2})^{1/2} = tr (Lᵀ Q L)^{1/2}: the two matrices are similar to P Q.
        factor = cholesky_factor(point_a, "point_a")
        root = spectral_sqrt(factor.mT @ point_b @ factor, "point_b")
        return (trace(point_a) + trace(point_b) - 2 * trace(root)).clamp_min(0)

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return frobenius(lyapunov_solve(base_point, tangent_vec_a), tangent_vec_b) / 2

    def riemannian_gradient(self, symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # ½ <L_P[G_R], V>_F = <G, V>_F for all symmetric V  ⇔  L_P[G_R] = 2G  ⇔  G_R = 2 (P G + G P).
        product = base_point @ symmetric_grad
        return 2 * (product + product.mT)


#: A ``metric=`` string naming a geomstats class: ``"geomstats:SPDLogEuclideanMetric"``.
GEOMSTATS_PREFIX = "geomstats:"

#: The metrics known by name.
METRICS: dict[str, type[SPDMetric]] = {
    "affine-invariant": AffineInvariant,
    "log-euclidean": LogEuclidean,
    "bures-wasserstein": BuresWasserstein,
}


def riesz_gradient(
    metric: SPDMetric,
    symmetric_grad: torch.Tensor,
    base_point: torch.Tensor,
    *,
    max_iterations: int = 200,
    tolerance: float = 1e-10,
) -> torch.Tensor:
    """The Riemannian gradient of any metric from its inner product alone: solve ``M_P[G_R] = G``.

    ``M_P`` is the metric's operator on symmetric matrices, ``<M_P[V], W>_F = <V, W>_P``; it is applied as the
    Frobenius gradient of ``½ <V, V>_P`` (autograd through :meth:`SPDMetric.inner_product`), and the symmetric
    positive definite system is solved by conjugate gradients (Hestenes and Stiefel, 1952) until the residual is
    below ``tolerance`` relative to ``‖G‖_F``. Costs one inner-product backward pass per iteration.

    Parameters
    ----------
    metric : SPDMetric
    symmetric_grad : Tensor, shape [n, n]
        ``G``, symmetric.
    base_point : Tensor, shape [n, n]
    """
    base_point = base_point.detach()

    def apply(vector: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = vector.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(metric.inner_product(leaf, leaf, base_point).sum() / 2, leaf)
        return symmetric_part(gradient)

    target = symmetric_part(symmetric_grad.detach())
    scale = float(target.norm())
    solution = torch.zeros_like(target)
    if scale == 0:
        return solution
    residual = target.clone()
    direction = residual.clone()
    residual_norm = float(frobenius(residual, residual))
    for _ in range(max_iterations):
        if math.sqrt(residual_norm) <= tolerance * scale:
            break
        image = apply(direction)
        curvature = float(frobenius(direction, image))
        if not curvature > 0:
            raise ValueError(f"{metric!r}: the inner product is not positive definite at base_point")
        step = residual_norm / curvature
        solution = solution + step * direction
        residual = residual - step * image
        new_norm = float(frobenius(residual, residual))
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return solution


@final
class GeomstatsMetric(SPDMetric):
    """A geomstats 2.8 SPD metric as an :class:`SPDMetric`: ``exp``, ``log``, the inner product and the squared
    distance are geomstats' own (pytorch backend, float64), so an ascent with this metric steps through geomstats'
    exponential map.

    The Riemannian gradient: for ``SPDAffineMetric``, ``SPDLogEuclideanMetric`` and
    ``SPDBuresWassersteinMetric`` it is the closed form of the matching metric above (the same convention); for
    any other geomstats metric it is :func:`riesz_gradient` through geomstats' inner product.

    Parameters
    ----------
    metric : geomstats metric class or instance
        A class such as ``SPDLogEuclideanMetric`` (equipped on ``SPDMatrices(n)`` here) or a metric already
        equipped on an ``SPDMatrices`` space.
    n : int, optional
        Matrix size; required with a class, checked against the space of an instance.
    """

    _CLOSED_FORMS: ClassVar[dict[str, type[SPDMetric]]] = {
        "SPDAffineMetric": AffineInvariant,
        "SPDLogEuclideanMetric": LogEuclidean,
        "SPDBuresWassersteinMetric": BuresWasserstein,
    }

    def __init__(self, metric: Any, n: int | None = None) -> None:
        spd_matrices = import_geomstats_spd()
        if isinstance(metric, type):
            if n is None:
                raise ValueError(f"a geomstats metric class ({metric.__name__}) needs the matrix size n")
            space = spd_matrices.SPDMatrices(int(n), equip=False)
            space.equip_with_metric(metric)
            metric = space.metric
        space = getattr(metric, "_space", None)
        if not isinstance(space, spd_matrices.SPDMatrices):
            raise TypeError(
                f"{type(metric).__name__} is not a metric on geomstats' SPDMatrices; pass an SPD metric class "
                "(e.g. SPDLogEuclideanMetric) or a metric equipped on SPDMatrices(n)"
            )
        if n is not None and int(space.n) != int(n):
            raise ValueError(
                f"the geomstats metric is defined on SPD({space.n}) but the matrices are {n}×{n}"
            )
        self.geomstats_metric = metric
        self.n = int(space.n)
        closed_form = self._CLOSED_FORMS.get(type(metric).__name__)
        self._gradient_formula = None if closed_form is None else closed_form()

    @property
    def name(self) -> str:  # type: ignore[override]
        """``geomstats:<Class>``, the name under which :func:`resolve_metric` builds this metric again."""
        return f"{GEOMSTATS_PREFIX}{type(self.geomstats_metric).__name__}"

    def __repr__(self) -> str:
        return f"GeomstatsMetric({type(self.geomstats_metric).__name__}, n={self.n})"

    def _check(self, matrix: torch.Tensor, name: str) -> None:
        if matrix.shape[-1] != self.n:
            raise ValueError(
                f"{name} is {matrix.shape[-1]}×{matrix.shape[-1]} but the geomstats metric is on SPD({self.n})"
            )

    def _call(self, method: str, *arguments: torch.Tensor) -> torch.Tensor:
        for argument in arguments:
            self._check(argument, method)
        dtype = arguments[0].dtype
        result = getattr(self.geomstats_metric, method)(*(a.to(torch.float64) for a in arguments))
        return torch.as_tensor(result).to(dtype)

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        return symmetric_part(self._call("exp", tangent_vec, base_point))

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        return symmetric_part(self._call("log", point, base_point))

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        return self._call("squared_dist", point_a, point_b)

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return self._call("inner_product", tangent_vec_a, tangent_vec_b, base_point)

    def riemannian_gradient(self, symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        self._check(base_point, "base_point")
        if self._gradient_formula is not None:
            return self._gradient_formula.riemannian_gradient(symmetric_grad, base_point)
        return riesz_gradient(self, symmetric_grad, base_point)


def resolve_metric(metric: Any, n: int | None = None) -> SPDMetric:
    """The :class:`SPDMetric` for what a user passes as ``metric=``.

    Accepted: a name of :data:`METRICS` (``"affine-invariant"``, ``"log-euclidean"``, ``"bures-wasserstein"``),
    or ``"geomstats:<Class>"`` for a class of ``geomstats.geometry.spd_matrices`` (``"geomstats:SPDAffineMetric"``);
    an :class:`SPDMetric` instance (ours or a user's subclass) or such a subclass (instantiated without
    arguments); a geomstats SPD metric class or instance (wrapped in :class:`GeomstatsMetric`; a class needs
    ``n``, an instance must be on ``SPDMatrices(n)``).
    """
    if isinstance(metric, str) and metric.startswith(GEOMSTATS_PREFIX):
        class_name = metric[len(GEOMSTATS_PREFIX) :]
        found = getattr(import_geomstats_spd(), class_name, None)
        if not (isinstance(found, type) and class_name.endswith("Metric")):
            raise ValueError(f"geomstats.geometry.spd_matrices has no metric class {class_name!r}")
        return GeomstatsMetric(found, n)
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(
                f"unknown SPD metric {metric!r}; known names: {', '.join(sorted(METRICS))}, or "
                "'geomstats:<Class>' (or pass an SPDMetric instance or subclass, or a geomstats SPD metric class "
                "or instance)"
            )
        return METRICS[metric]()
    if isinstance(metric, SPDMetric):
        if isinstance(metric, GeomstatsMetric) and n is not None and metric.n != int(n):
            raise ValueError(
                f"the geomstats metric is defined on SPD({metric.n}) but the matrices are {n}×{n}"
            )
        return metric
    if isinstance(metric, type) and issubclass(metric, SPDMetric) and not metric.__abstractmethods__:
        return metric()
    if is_geomstats_object(metric):
        return GeomstatsMetric(metric, n)
    raise TypeError(
        f"metric must be one of the names {sorted(METRICS)}, an SPDMetric instance or subclass, or a geomstats "
        f"SPD metric class or instance; got {metric!r}"
    )
