"""The manifold SPD(n) of symmetric positive definite matrices, with three Riemannian metrics, in torch.

RDDRS (Labarbarie, Hajri and Arnaudon, 2022) optimises a per-input Gaussian covariance ``C`` by Riemannian
gradient ascent on SPD(d), ``C ← Exp_C(γ ∇H(C))`` (their Eq. 6). :class:`SPDManifold` provides that step
(:meth:`SPDManifold.retract_step`) and its ingredients for three metrics:

``affine-invariant`` (Pennec, Fillard and Ayache, 2006)
    ``<V, W>_P = tr(P⁻¹ V P⁻¹ W)``; with ``L = cholesky(P)``, ``Exp_P(V) = L expm(L⁻¹ V L⁻ᵀ) Lᵀ``,
    ``Log_P(Q) = L logm(L⁻¹ Q L⁻ᵀ) Lᵀ`` and ``d(P, Q) = ‖logm(L⁻¹ Q L⁻ᵀ)‖_F``. The Cholesky factor stands
    in for ``P^{1/2}`` (the two differ by a rotation that cancels), so no square root of ``P`` is needed.
``log-euclidean`` (Arsigny, Fillard, Pennec and Ayache, 2007)
    the Frobenius metric pulled back by ``logm``: ``<V, W>_P = <D logm_P[V], D logm_P[W]>_F``,
    ``Exp_P(V) = expm(logm P + D logm_P[V])``, ``Log_P(Q) = D expm_{logm P}[logm Q − logm P]`` and
    ``d(P, Q) = ‖logm P − logm Q‖_F``.
``bures-wasserstein`` (Bhatia, Jain and Lim, 2019)
    ``<V, W>_P = ½ tr(L_P[V] W)`` with ``L_P[V]`` the solution ``X`` of ``P X + X P = V``;
    ``Exp_P(V) = P + V + L_P[V] P L_P[V]``, ``Log_P(Q) = (PQ)^{1/2} + (QP)^{1/2} − 2P`` and
    ``d(P, Q)² = tr P + tr Q − 2 tr (P^{1/2} Q P^{1/2})^{1/2}`` (the 2-Wasserstein distance between
    ``N(0, P)`` and ``N(0, Q)``).

Each convention, including the scale factors, is the one of geomstats 2.8 (``SPDAffineMetric``,
``SPDLogEuclideanMetric``, ``SPDBuresWassersteinMetric``); :meth:`SPDManifold.to_geomstats` returns the
matching geomstats space for cross-checks.

Everything is batched over leading dimensions ``[..., n, n]``, works in float32 and float64 and runs on the
inputs' device. Autograd stays finite at repeated eigenvalues (``P = σ²I``, the natural start of RDDRS), where
differentiating through ``torch.linalg.eigh`` gives NaN: the spectral functions :func:`logm`, :func:`expm`,
:func:`sqrtm` and their Fréchet derivatives are autograd Functions whose backward passes are the
Daleckii–Krein formulas ``D f_P[V] = U ((Uᵀ V U) ∘ F) Uᵀ``, ``F_ij = f[λ_i, λ_j]`` (first divided
differences, ``f'(λ_i)`` when ``λ_i = λ_j``; Bhatia, 1997, Sec. V.3), evaluated with divided differences that
are accurate when eigenvalues nearly coincide.

geomstats is imported lazily, by :meth:`SPDManifold.to_geomstats` only: it reads ``GEOMSTATS_BACKEND`` once,
at first import (this module asks for ``pytorch``), and switches torch's default dtype to float64, which this
module restores at once.

References
----------
Pennec, Fillard and Ayache (2006), A Riemannian framework for tensor computing, IJCV 66(1).
Arsigny, Fillard, Pennec and Ayache (2007), Geometric means in a novel vector space structure on symmetric
positive-definite matrices, SIAM J. Matrix Anal. Appl. 29(1).
Bhatia, Jain and Lim (2019), On the Bures–Wasserstein distance between positive definite matrices,
Expositiones Mathematicae 37(2).
Labarbarie, Hajri and Arnaudon (2022), Riemannian data-dependent randomized smoothing for neural networks
certification (RDDRS).
Bhatia (1997), Matrix Analysis, Sec. V.3 (Daleckii–Krein formulas); Higham (2008), Functions of Matrices.
"""

from __future__ import annotations

import abc
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import torch
from torch.autograd.function import once_differentiable

from manifoldcert._validation import check_name, check_positive_int

__all__ = [
    "METRICS",
    "CovarianceTooLargeError",
    "SPDManifold",
    "available_memory_bytes",
    "check_full_covariance_fits",
    "check_spd",
    "differential_expm",
    "differential_logm",
    "differential_sqrtm",
    "expm",
    "full_covariance_bytes",
    "logm",
    "sqrtm",
]

METRICS = ("affine-invariant", "log-euclidean", "bures-wasserstein")

_GEOMSTATS_METRICS = {
    "affine-invariant": "SPDAffineMetric",
    "log-euclidean": "SPDLogEuclideanMetric",
    "bures-wasserstein": "SPDBuresWassersteinMetric",
}

# Elements of one chunk of the n × n × n tensor of second divided differences (backward of a Fréchet derivative).
_CHUNK_ELEMENTS = 2**21


# ---------------------------------------------------------------------------------------------------------------
# Divided differences of the scalar functions log, exp and sqrt
# ---------------------------------------------------------------------------------------------------------------


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """``x`` with exact zeros replaced by 1, for denominators in the branch of a ``where`` not taken."""
    return torch.where(x == 0, torch.ones_like(x), x)


def _log_divided_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # (log a − log b) / (a − b) = 2 atanh(z) / (z (a + b)) with z = (a − b) / (a + b): no cancellation.
    total = a + b
    z = (a - b) / total
    ratio = torch.where(z.abs() < 1e-4, 1 + z * z / 3, torch.atanh(z) / _nonzero(z))
    return 2 * ratio / total


def _exp_divided_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # (e^a − e^b) / (a − b) = e^{(a+b)/2} sinh(h) / h with h = (a − b) / 2.
    half = (a - b) / 2
    ratio = torch.where(half.abs() < 1e-4, 1 + half * half / 6, torch.sinh(half) / _nonzero(half))
    return torch.exp((a + b) / 2) * ratio


def _sqrt_divided_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 / (a.sqrt() + b.sqrt())


def _log_derivative(order: int, x: torch.Tensor) -> torch.Tensor:
    return (-1) ** (order - 1) * math.factorial(order - 1) * x.pow(-order)


def _exp_derivative(order: int, x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


@dataclass(frozen=True)
class _ScalarFunction:
    """A scalar function applied to the eigenvalues of a symmetric matrix, with its divided differences.

    ``derivative(k, x)`` is the k-th derivative, used where three eigenvalues nearly coincide; ``relative``
    says whether "nearly" is measured relative to the eigenvalues' size (log, sqrt) or absolutely (exp).
    ``exact_second`` gives ``f[x, y, z]`` from the first divided differences when a closed form exists.
    """

    name: str
    value: Callable[[torch.Tensor], torch.Tensor]
    first_divided_difference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    derivative: Callable[[int, torch.Tensor], torch.Tensor] | None
    needs_positive: bool
    relative: bool
    exact_second: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


_LOG = _ScalarFunction("logm", torch.log, _log_divided_difference, _log_derivative, True, True)
_EXP = _ScalarFunction("expm", torch.exp, _exp_divided_difference, _exp_derivative, False, False)
# sqrt[x, y, z] = −1 / ((√x + √y)(√y + √z)(√x + √z)) = −sqrt[x, y] sqrt[y, z] sqrt[x, z].
_SQRT = _ScalarFunction(
    "sqrtm", torch.sqrt, _sqrt_divided_difference, None, True, True, lambda xy, yz, xz: -xy * yz * xz
)


def _first_divided_differences(func: _ScalarFunction, eigvals: torch.Tensor) -> torch.Tensor:
    """``F_ij = f[λ_i, λ_j]``, shape ``[..., n, n]``."""
    return func.first_divided_difference(eigvals[..., :, None], eigvals[..., None, :])


def _second_divided_differences(
    func: _ScalarFunction,
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    f_xy: torch.Tensor,
    f_yz: torch.Tensor,
    f_xz: torch.Tensor,
) -> torch.Tensor:
    """``f[x, y, z]`` (broadcast), from the first divided differences ``f_xy = f[x, y]`` etc.

    Away from coincidence, ``(f[p, r] − f[r, q]) / (p − q)`` over the most separated pair ``(p, q)``; when all
    three points lie within ``δ = eps^{1/6}`` (times their size for log/sqrt), the Taylor series about their
    mean ``m``: ``Σ_k f⁽ᵏ⁾(m)/k! · h_{k−2}(x−m, y−m, z−m)`` (complete homogeneous symmetric polynomials).
    """
    if func.exact_second is not None:
        return func.exact_second(f_xy, f_yz, f_xz)
    d_xz, d_xy, d_yz = x - z, x - y, y - z
    g_xz, g_xy, g_yz = d_xz.abs(), d_xy.abs(), d_yz.abs()
    use_xz = (g_xz >= g_xy) & (g_xz >= g_yz)
    use_xy = ~use_xz & (g_xy >= g_yz)
    far = torch.where(
        use_xz,
        (f_xy - f_yz) / _nonzero(d_xz),
        torch.where(use_xy, (f_xz - f_yz) / _nonzero(d_xy), (f_xy - f_xz) / _nonzero(d_yz)),
    )
    mean = (x + y + z) / 3
    e_x, e_y, e_z = x - mean, y - mean, z - mean
    p2 = e_x**2 + e_y**2 + e_z**2
    p3 = e_x**3 + e_y**3 + e_z**3
    p4 = e_x**4 + e_y**4 + e_z**4
    # h_0 = 1, h_1 = 0 (centred), h_2 = p2/2, h_3 = p3/3, h_4 = p2²/8 + p4/4.
    homogeneous = (1.0, 0.0, p2 / 2, p3 / 3, p2 * p2 / 8 + p4 / 4)
    near = sum(func.derivative(k, mean) / math.factorial(k) * homogeneous[k - 2] for k in (2, 4, 5, 6))
    gap = torch.maximum(torch.maximum(g_xz, g_xy), g_yz)
    scale = mean.abs() if func.relative else torch.ones_like(mean)
    threshold = torch.finfo(mean.dtype).eps ** (1 / 6) * scale
    return torch.where(gap <= threshold, near, far)


def _second_order_term(
    func: _ScalarFunction, eigvals: torch.Tensor, first: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """``H_ij = Σ_k f[λ_i, λ_k, λ_j] (A_ik B_kj + B_ik A_kj)`` (second-order Daleckii–Krein), chunked over k."""
    n = eigvals.shape[-1]
    batch = max(1, eigvals[..., 0].numel())
    chunk = max(1, _CHUNK_ELEMENTS // (batch * n * n))
    x = eigvals[..., :, None, None]
    z = eigvals[..., None, None, :]
    out = torch.zeros(torch.broadcast_shapes(a.shape, b.shape), dtype=a.dtype, device=a.device)
    for start in range(0, n, chunk):
        ks = slice(start, start + chunk)
        second = _second_divided_differences(
            func,
            x,
            eigvals[..., None, ks, None],
            z,
            first[..., :, ks, None],
            first[..., None, ks, :],
            first[..., :, None, :],
        )
        pairs = a[..., :, ks, None] * b[..., None, ks, :] + b[..., :, ks, None] * a[..., None, ks, :]
        out = out + (second * pairs).sum(-2)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Spectral matrix functions and their Fréchet derivatives, with backward passes stable at repeated eigenvalues
# ---------------------------------------------------------------------------------------------------------------


def _symmetric_part(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix + matrix.mT) / 2


def _to_eigenbasis(eigvecs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return eigvecs.mT @ matrix @ eigvecs


def _from_eigenbasis(eigvecs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return eigvecs @ matrix @ eigvecs.mT


def _from_eigenvalues(eigvecs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return (eigvecs * values[..., None, :]) @ eigvecs.mT


def _require_positive(eigvals: torch.Tensor, name: str) -> None:
    smallest = float(eigvals.detach().min()) if eigvals.numel() else 1.0
    if not smallest > 0:
        raise ValueError(f"{name} must be positive definite, but its smallest eigenvalue is {smallest:.6g}")


class _MatrixFunction(torch.autograd.Function):
    """``f(P) = U f(Λ) Uᵀ``; backward ``D f_P[Ḡ]`` through :class:`_FrechetDerivative` (twice differentiable)."""

    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, func: _ScalarFunction, name: str) -> torch.Tensor:
        eigvals, eigvecs = torch.linalg.eigh(matrix)
        if func.needs_positive:
            _require_positive(eigvals, name)
        ctx.func = func
        ctx.save_for_backward(matrix, eigvals, eigvecs)
        return _symmetric_part(_from_eigenvalues(eigvecs, func.value(eigvals)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        matrix, eigvals, eigvecs = ctx.saved_tensors
        return _FrechetDerivative.apply(matrix, _symmetric_part(grad), ctx.func, eigvals, eigvecs), None, None


class _FrechetDerivative(torch.autograd.Function):
    """``D f_P[V] = U ((Uᵀ V U) ∘ F) Uᵀ``; backward: ``D f_P[Ḡ]`` for ``V``, the second-order term for ``P``."""

    @staticmethod
    def forward(
        ctx: Any,
        base_point: torch.Tensor,
        tangent_vec: torch.Tensor,
        func: _ScalarFunction,
        eigvals: torch.Tensor | None = None,
        eigvecs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if eigvals is None:
            eigvals, eigvecs = torch.linalg.eigh(base_point)
            if func.needs_positive:
                _require_positive(eigvals, "base_point")
        first = _first_divided_differences(func, eigvals)
        rotated = _to_eigenbasis(eigvecs, tangent_vec)
        ctx.func = func
        ctx.save_for_backward(eigvals, eigvecs, first, rotated)
        return _from_eigenbasis(eigvecs, rotated * first)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        eigvals, eigvecs, first, rotated = ctx.saved_tensors
        rotated_grad = _to_eigenbasis(eigvecs, grad)
        grad_base = grad_tangent = None
        if ctx.needs_input_grad[1]:
            grad_tangent = _from_eigenbasis(eigvecs, rotated_grad * first)
        if ctx.needs_input_grad[0]:
            # <Ḡ, D²f_P[V, W]> = <U H(Vᵀ, Ḡ) Uᵀ, W> (second-order Daleckii–Krein; Bhatia, 1997, Sec. V.3).
            second = _second_order_term(ctx.func, eigvals, first, rotated.mT, rotated_grad)
            grad_base = _from_eigenbasis(eigvecs, second)
        return grad_base, grad_tangent, None, None, None


class _LyapunovSolve(torch.autograd.Function):
    """``X = L_P[V]`` solving ``P X + X P = V``; backward by implicit differentiation (no eigenvector terms)."""

    @staticmethod
    def forward(ctx: Any, base_point: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        eigvals, eigvecs = torch.linalg.eigh(base_point)
        _require_positive(eigvals, "base_point")
        denominators = eigvals[..., :, None] + eigvals[..., None, :]
        solution = _from_eigenbasis(eigvecs, _to_eigenbasis(eigvecs, matrix) / denominators)
        ctx.save_for_backward(eigvecs, denominators, solution)
        return solution

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eigvecs, denominators, solution = ctx.saved_tensors
        # dX = L_P[dV − dP X − X dP] and L_P is self-adjoint, so with Y = L_P[Ḡ]: ∂V = Y, ∂P = −(Y Xᵀ + Xᵀ Y).
        adjoint = _from_eigenbasis(eigvecs, _to_eigenbasis(eigvecs, grad) / denominators)
        return -(adjoint @ solution.mT + solution.mT @ adjoint), adjoint


def _matrix_function(matrix: torch.Tensor, func: _ScalarFunction, name: str) -> torch.Tensor:
    _check_square(matrix, name)
    return _MatrixFunction.apply(_symmetric_part(matrix), func, name)


def _frechet(tangent_vec: torch.Tensor, base_point: torch.Tensor, func: _ScalarFunction) -> torch.Tensor:
    _check_square(tangent_vec, "tangent_vec")
    _check_square(base_point, "base_point")
    base_point, tangent_vec = torch.broadcast_tensors(_symmetric_part(base_point), tangent_vec)
    return _FrechetDerivative.apply(base_point, tangent_vec, func)


def _lyapunov(base_point: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    base_point, matrix = torch.broadcast_tensors(_symmetric_part(base_point), matrix)
    return _LyapunovSolve.apply(base_point, matrix)


def logm(point: torch.Tensor) -> torch.Tensor:
    """Matrix logarithm of SPD matrices, ``U log(Λ) Uᵀ``.

    Parameters
    ----------
    point : Tensor, shape [..., n, n]
        Symmetric positive definite matrices (only the symmetric part is read).

    Returns
    -------
    Tensor, shape [..., n, n]
        Symmetric matrices; gradients are finite at repeated eigenvalues (Daleckii–Krein backward).
    """
    return _matrix_function(point, _LOG, "point")


def expm(matrix: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of symmetric matrices, ``U exp(Λ) Uᵀ`` (SPD), with a stable backward."""
    return _matrix_function(matrix, _EXP, "matrix")


def sqrtm(point: torch.Tensor) -> torch.Tensor:
    """Principal square root of SPD matrices, ``U Λ^{1/2} Uᵀ``, with a stable backward."""
    return _matrix_function(point, _SQRT, "point")


def differential_logm(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
    """Fréchet derivative ``D logm_P[V] = U ((Uᵀ V U) ∘ F) Uᵀ``, ``F_ij = log[λ_i, λ_j]`` (Daleckii–Krein).

    Parameters
    ----------
    tangent_vec : Tensor, shape [..., n, n]
        Direction ``V``.
    base_point : Tensor, shape [..., n, n]
        SPD matrix ``P = U Λ Uᵀ``.

    Returns
    -------
    Tensor, shape [..., n, n]
        Differentiable in both arguments, finitely at repeated eigenvalues (second divided differences).
    """
    return _frechet(tangent_vec, base_point, _LOG)


def differential_expm(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
    """Fréchet derivative ``D expm_S[V]`` at symmetric ``S``, ``F_ij = exp[λ_i, λ_j]``; as :func:`differential_logm`."""
    return _frechet(tangent_vec, base_point, _EXP)


def differential_sqrtm(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
    """Fréchet derivative ``D sqrtm_P[V]``, solving ``P^{1/2} X + X P^{1/2} = V``; see :func:`differential_logm`."""
    return _frechet(tangent_vec, base_point, _SQRT)


# ---------------------------------------------------------------------------------------------------------------
# The three metrics
# ---------------------------------------------------------------------------------------------------------------


def _frobenius(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((-2, -1))


def _trace(matrix: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(matrix, dim1=-2, dim2=-1).sum(-1)


def _cholesky(point: torch.Tensor, name: str) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(point)
    if bool((info != 0).any()):
        _require_positive(torch.linalg.eigvalsh(point.detach()), name)
        raise ValueError(f"{name} must be positive definite (its Cholesky factorisation failed)")
    return factor


def _whiten(factor: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``L⁻¹ M L⁻ᵀ`` for a lower-triangular ``L``."""
    half = torch.linalg.solve_triangular(factor, matrix, upper=False)
    return torch.linalg.solve_triangular(factor, half.mT, upper=False).mT


class _Metric(abc.ABC):
    """One metric's formulas; see the module docstring. Inputs are checked by :class:`SPDManifold`."""

    @staticmethod
    @abc.abstractmethod
    def exp(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor: ...

    @staticmethod
    @abc.abstractmethod
    def log(point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor: ...

    @staticmethod
    @abc.abstractmethod
    def squared_distance(point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor: ...

    @staticmethod
    @abc.abstractmethod
    def inner_product(
        tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor: ...

    @staticmethod
    @abc.abstractmethod
    def riemannian_gradient(symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor: ...


@final
class _AffineInvariant(_Metric):
    @staticmethod
    def exp(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        factor = _cholesky(base_point, "base_point")
        return _symmetric_part(factor @ expm(_whiten(factor, tangent_vec)) @ factor.mT)

    @staticmethod
    def log(point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        factor = _cholesky(base_point, "base_point")
        whitened = _MatrixFunction.apply(_symmetric_part(_whiten(factor, point)), _LOG, "point")
        return _symmetric_part(factor @ whitened @ factor.mT)

    @staticmethod
    def squared_distance(point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        factor = _cholesky(point_a, "point_a")
        whitened = _MatrixFunction.apply(_symmetric_part(_whiten(factor, point_b)), _LOG, "point_b")
        return whitened.square().sum((-2, -1))

    @staticmethod
    def inner_product(
        tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        factor = _cholesky(base_point, "base_point")
        return _frobenius(_whiten(factor, tangent_vec_a), _whiten(factor, tangent_vec_b))

    @staticmethod
    def riemannian_gradient(symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # tr(P⁻¹ G_R P⁻¹ V) = <G, V>_F for all symmetric V  ⇔  G_R = P G P.
        return _symmetric_part(base_point @ symmetric_grad @ base_point)


@final
class _LogEuclidean(_Metric):
    @staticmethod
    def exp(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        log_base = _MatrixFunction.apply(_symmetric_part(base_point), _LOG, "base_point")
        return expm(log_base + differential_logm(tangent_vec, base_point))

    @staticmethod
    def log(point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        log_base = _MatrixFunction.apply(_symmetric_part(base_point), _LOG, "base_point")
        log_point = _MatrixFunction.apply(_symmetric_part(point), _LOG, "point")
        return _symmetric_part(differential_expm(log_point - log_base, log_base))

    @staticmethod
    def squared_distance(point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        log_a = _MatrixFunction.apply(_symmetric_part(point_a), _LOG, "point_a")
        log_b = _MatrixFunction.apply(_symmetric_part(point_b), _LOG, "point_b")
        return (log_a - log_b).square().sum((-2, -1))

    @staticmethod
    def inner_product(
        tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return _frobenius(
            differential_logm(tangent_vec_a, base_point), differential_logm(tangent_vec_b, base_point)
        )

    @staticmethod
    def riemannian_gradient(symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # <D log_P[G_R], D log_P[V]>_F = <G, V>_F and D log_P is self-adjoint, so G_R = (D log_P)⁻²[G]; and
        # (D log_P)⁻¹ = D expm_{log P}, which keeps the result differentiable at repeated eigenvalues.
        log_base = _MatrixFunction.apply(_symmetric_part(base_point), _LOG, "base_point")
        once = differential_expm(symmetric_grad, log_base)
        return _symmetric_part(differential_expm(once, log_base))


@final
class _BuresWasserstein(_Metric):
    @staticmethod
    def exp(tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        lifted = _lyapunov(base_point, tangent_vec)
        return _symmetric_part(base_point + tangent_vec + lifted @ base_point @ lifted)

    @staticmethod
    def log(point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # With L = cholesky(P) and M = Lᵀ Q L, (PQ)^{1/2} = L M^{1/2} L⁻¹ (it squares to PQ and has positive
        # eigenvalues), so Log_P(Q) = X + Xᵀ − 2P with Xᵀ = L⁻ᵀ M^{1/2} Lᵀ.
        factor = _cholesky(base_point, "base_point")
        root = _MatrixFunction.apply(_symmetric_part(factor.mT @ point @ factor), _SQRT, "point")
        root_t = torch.linalg.solve_triangular(factor.mT, root @ factor.mT, upper=True)
        return _symmetric_part(root_t + root_t.mT) - 2 * base_point

    @staticmethod
    def squared_distance(point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        # tr (P^{1/2} Q P^{1/2})^{1/2} = tr (Lᵀ Q L)^{1/2}: the two matrices are similar to P Q.
        factor = _cholesky(point_a, "point_a")
        root = _MatrixFunction.apply(_symmetric_part(factor.mT @ point_b @ factor), _SQRT, "point_b")
        return (_trace(point_a) + _trace(point_b) - 2 * _trace(root)).clamp_min(0)

    @staticmethod
    def inner_product(
        tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        return _frobenius(_lyapunov(base_point, tangent_vec_a), tangent_vec_b) / 2

    @staticmethod
    def riemannian_gradient(symmetric_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        # ½ <L_P[G_R], V>_F = <G, V>_F for all symmetric V  ⇔  L_P[G_R] = 2G  ⇔  G_R = 2 (P G + G P).
        product = base_point @ symmetric_grad
        return 2 * (product + product.mT)


_METRIC_FORMULAS: dict[str, type[_Metric]] = {
    "affine-invariant": _AffineInvariant,
    "log-euclidean": _LogEuclidean,
    "bures-wasserstein": _BuresWasserstein,
}


@final
class SPDManifold:
    """SPD(n) equipped with one Riemannian metric; every method is batched over ``[..., n, n]``.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`: ``"affine-invariant"`` (default), ``"log-euclidean"`` or ``"bures-wasserstein"``.

    Notes
    -----
    Argument names and order follow geomstats (``exp(tangent_vec, base_point)``, ``log(point, base_point)``).
    Points must be symmetric positive definite (only their symmetric part or lower triangle is read); a
    point that is not positive definite raises ``ValueError``. Call :func:`check_spd` for a full check.
    Results are symmetric and in the inputs' dtype and device.

    Examples
    --------
    One step of RDDRS's gradient ascent (Eq. 6) from ``σ²I``, given the objective's Euclidean gradient::

        spd = SPDManifold("log-euclidean")
        covariance = spd.retract_step(0.25**2 * torch.eye(d), euclidean_grad, step_size=0.1)
    """

    def __init__(self, metric: str = "affine-invariant") -> None:
        self.metric = check_name(metric, METRICS, "SPD metric")
        self._formulas = _METRIC_FORMULAS[self.metric]

    def __repr__(self) -> str:
        return f"SPDManifold(metric={self.metric!r})"

    def exp(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian exponential ``Exp_P(V)``, shape ``[..., n, n]`` (formulas in the module docstring)."""
        _check_pair(tangent_vec, "tangent_vec", base_point, "base_point")
        return self._formulas.exp(tangent_vec, base_point)

    def log(self, point: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian logarithm ``Log_P(Q)``, the tangent vector at ``base_point`` with ``Exp_P(Log_P(Q)) = Q``."""
        _check_pair(point, "point", base_point, "base_point")
        return self._formulas.log(point, base_point)

    def squared_distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        """Squared geodesic distance ``d(P, Q)²``, shape ``[...]``; differentiable also at ``P = Q``."""
        _check_pair(point_a, "point_a", point_b, "point_b")
        return self._formulas.squared_distance(point_a, point_b)

    def distance(self, point_a: torch.Tensor, point_b: torch.Tensor) -> torch.Tensor:
        """Geodesic distance ``d(P, Q)``, shape ``[...]`` (its gradient is undefined at ``P = Q``)."""
        return self.squared_distance(point_a, point_b).sqrt()

    def inner_product(
        self, tangent_vec_a: torch.Tensor, tangent_vec_b: torch.Tensor, base_point: torch.Tensor
    ) -> torch.Tensor:
        """Riemannian inner product ``<V, W>_P``, shape ``[...]``."""
        _check_pair(tangent_vec_a, "tangent_vec_a", base_point, "base_point")
        _check_pair(tangent_vec_b, "tangent_vec_b", base_point, "base_point")
        return self._formulas.inner_product(tangent_vec_a, tangent_vec_b, base_point)

    def norm(self, tangent_vec: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian norm ``‖V‖_P``, shape ``[...]``."""
        return self.inner_product(tangent_vec, tangent_vec, base_point).clamp_min(0).sqrt()

    def riemannian_gradient(self, euclidean_grad: torch.Tensor, base_point: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient: the tangent vector ``G_R`` with ``<G_R, V>_P = <sym(G), V>_F`` for all symmetric ``V``.

        Parameters
        ----------
        euclidean_grad : Tensor, shape [..., n, n]
            Euclidean gradient ``G`` of a function of ``P`` (e.g. from autograd); only ``sym(G) = (G + Gᵀ)/2``
            matters, since ``P`` moves among symmetric matrices.
        base_point : Tensor, shape [..., n, n]
            SPD matrix ``P``.

        Returns
        -------
        Tensor, shape [..., n, n]
            affine-invariant ``P sym(G) P``; log-euclidean ``(D logm_P)⁻²[sym G]``, i.e. ``sym(G)`` divided
            entrywise in ``P``'s eigenbasis by ``log[λ_i, λ_j]²``; bures-wasserstein
            ``2 (P sym(G) + sym(G) P)`` (from ``<V, W>_P = ½ tr(L_P[V] W)``).
        """
        _check_pair(euclidean_grad, "euclidean_grad", base_point, "base_point")
        return self._formulas.riemannian_gradient(_symmetric_part(euclidean_grad), base_point)

    def retract_step(
        self, base_point: torch.Tensor, euclidean_grad: torch.Tensor, step_size: float | torch.Tensor
    ) -> torch.Tensor:
        """One Riemannian gradient-ascent step ``Exp_P(step_size · G_R)`` (RDDRS, Eq. 6).

        Parameters
        ----------
        base_point : Tensor, shape [..., n, n]
            Current SPD matrix ``P`` (e.g. RDDRS's covariance).
        euclidean_grad : Tensor, shape [..., n, n]
            Euclidean gradient of the objective at ``P``.
        step_size : float or Tensor
            ``γ``; negative for descent. A tensor of shape ``[...]`` gives one step size per matrix.
        """
        gradient = self.riemannian_gradient(euclidean_grad, base_point)
        step = torch.as_tensor(step_size, dtype=gradient.dtype, device=gradient.device)
        return self.exp(step[..., None, None] * gradient, base_point)

    def to_geomstats(self, n: int) -> Any:
        """The geomstats 2.8 space ``SPDMatrices(n)`` equipped with this metric (for cross-checks).

        Imports geomstats with its pytorch backend on first use; torch's default dtype is left unchanged.
        """
        n = check_positive_int(n, "n")
        spd_matrices = _import_geomstats_spd()
        space = spd_matrices.SPDMatrices(n, equip=False)
        return space.equip_with_metric(getattr(spd_matrices, _GEOMSTATS_METRICS[self.metric]))


# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------


def _check_square(matrix: Any, name: str) -> None:
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if not matrix.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {matrix.dtype}")
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"{name} must have shape [..., n, n] (square matrices), got {tuple(matrix.shape)}")


def _check_pair(first: Any, first_name: str, second: Any, second_name: str) -> None:
    _check_square(first, first_name)
    _check_square(second, second_name)
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(
            f"{first_name} is {first.shape[-1]}×{first.shape[-1]} but {second_name} is "
            f"{second.shape[-1]}×{second.shape[-1]}"
        )


def check_spd(matrix: torch.Tensor, name: str = "matrix", *, tol: float | None = None) -> torch.Tensor:
    """Return ``matrix`` after checking that it is a finite, symmetric, positive definite ``[..., n, n]`` tensor.

    Parameters
    ----------
    matrix : Tensor, shape [..., n, n]
        Matrix or batch of matrices to check.
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
    _check_square(matrix, name)
    detached = matrix.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if detached.numel() == 0:
        return matrix
    tol = math.sqrt(torch.finfo(matrix.dtype).eps) if tol is None else float(tol)
    asymmetry = float((detached - detached.mT).abs().max())
    allowed = tol * float(detached.abs().max())
    if asymmetry > allowed:
        raise ValueError(f"{name} is not symmetric: max |M − Mᵀ| = {asymmetry:.3g} > {allowed:.3g}")
    smallest = float(torch.linalg.eigvalsh(_symmetric_part(detached.double())).min())
    if not smallest > 0:
        raise ValueError(f"{name} is not positive definite: its smallest eigenvalue is {smallest:.6g}")
    return matrix


class CovarianceTooLargeError(MemoryError, ValueError):
    """A full ``d × d`` covariance (with its work matrices) would not fit in the available memory."""


def full_covariance_bytes(d: int, dtype: torch.dtype = torch.float32, *, n_matrices: int = 4) -> int:
    """Bytes taken by ``n_matrices`` dense ``d × d`` matrices of ``dtype``.

    The default 4 counts a covariance, its factor and two work matrices (a gradient, an update), what one
    RDDRS step on a full covariance holds at once.
    """
    d = check_positive_int(d, "d")
    n_matrices = check_positive_int(n_matrices, "n_matrices")
    return n_matrices * d * d * torch.empty((), dtype=dtype).element_size()


def available_memory_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory on ``device``: CUDA's free memory, or MemAvailable of /proc/meminfo; None if unknown."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_full_covariance_fits(
    d: int,
    dtype: torch.dtype = torch.float32,
    budget_bytes: int | None = None,
    *,
    n_matrices: int = 4,
    device: torch.device | str | None = None,
) -> int:
    """Return the bytes a full ``d × d`` covariance needs (see :func:`full_covariance_bytes`) if they fit.

    Parameters
    ----------
    d : int
        Input dimension (the covariance is ``d × d``).
    dtype : torch.dtype
        Dtype of the covariance.
    budget_bytes : int, optional
        Memory allowed; default :func:`available_memory_bytes` of ``device`` (no check when that is unknown).
    n_matrices : int
        Dense ``d × d`` matrices held at once.
    device : torch.device or str, optional
        Where the matrices live (CPU by default).

    Raises
    ------
    CovarianceTooLargeError
        (a ``MemoryError`` and a ``ValueError``) when they exceed the budget.
    """
    needed = full_covariance_bytes(d, dtype, n_matrices=n_matrices)
    budget = available_memory_bytes(device) if budget_bytes is None else int(budget_bytes)
    if budget is not None and needed > budget:
        raise CovarianceTooLargeError(
            f"a full {d}×{d} covariance in {dtype} needs {needed:,} bytes ({needed / 2**30:.2f} GiB: "
            f"{n_matrices} matrices of {d}×{d}, the covariance, its factor and work matrices) but only "
            f"{budget:,} bytes ({budget / 2**30:.2f} GiB) are available; use a diagonal or isotropic "
            "covariance (ancer, ddrs) or a lower-dimensional input"
        )
    return needed


# ---------------------------------------------------------------------------------------------------------------
# geomstats (cross-checks only)
# ---------------------------------------------------------------------------------------------------------------


def _import_geomstats_spd() -> Any:
    """Import ``geomstats.geometry.spd_matrices`` with the pytorch backend, keeping torch's default dtype."""
    backend = os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")
    if backend != "pytorch":
        raise RuntimeError(
            f"GEOMSTATS_BACKEND is set to {backend!r}; manifoldcert needs geomstats' 'pytorch' backend "
            "(unset the variable or set it to 'pytorch' before starting Python)"
        )
    default_dtype = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            # geomstats' backend importer triggers an ImportWarning (exec_module not found) on import.
            warnings.simplefilter("ignore")
            import geomstats.backend as geomstats_backend
            import geomstats.geometry.spd_matrices as spd_matrices
    finally:
        torch.set_default_dtype(default_dtype)  # geomstats switches it to float64
    loaded = geomstats_backend.__name__
    if loaded != "geomstats.pytorch":
        raise RuntimeError(
            f"geomstats was already imported with another backend ({loaded}); import manifoldcert's "
            "geometry before geomstats or set GEOMSTATS_BACKEND=pytorch"
        )
    return spd_matrices
