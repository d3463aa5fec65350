"""Spectral matrix functions of symmetric matrices and their Fréchet derivatives, stable at repeated eigenvalues.

:func:`logm`, :func:`expm`, :func:`sqrtm` and their Fréchet derivatives :func:`differential_logm`,
:func:`differential_expm`, :func:`differential_sqrtm` are autograd Functions whose backward passes are the
Daleckii–Krein formulas ``D f_P[V] = U ((Uᵀ V U) ∘ F) Uᵀ``, ``F_ij = f[λ_i, λ_j]`` (first divided differences,
``f'(λ_i)`` when ``λ_i = λ_j``; Bhatia, 1997, Sec. V.3), evaluated with divided differences that are accurate
when eigenvalues nearly coincide. Differentiating through ``torch.linalg.eigh`` instead gives NaN at repeated
eigenvalues — at ``σ²I``, the natural start of RDDRS, and wherever a floor clips several eigenvalues.
Everything is batched over ``[..., n, n]`` and runs in the inputs' dtype and device.

References
----------
Bhatia (1997), Matrix Analysis, Sec. V.3 (Daleckii–Krein formulas); Higham (2008), Functions of Matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "differential_expm",
    "differential_logm",
    "differential_sqrtm",
    "expm",
    "logm",
    "sqrtm",
]

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
    # Only _SQRT lacks a derivative, and it has exact_second (handled above).
    assert func.derivative is not None
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


def symmetric_part(matrix: torch.Tensor) -> torch.Tensor:
    """``(M + Mᵀ) / 2``."""
    return (matrix + matrix.mT) / 2


def _to_eigenbasis(eigvecs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return eigvecs.mT @ matrix @ eigvecs


def _from_eigenbasis(eigvecs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return eigvecs @ matrix @ eigvecs.mT


def _from_eigenvalues(eigvecs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return (eigvecs * values[..., None, :]) @ eigvecs.mT


def require_positive(eigvals: torch.Tensor, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless every eigenvalue is > 0."""
    smallest = float(eigvals.detach().min()) if eigvals.numel() else 1.0
    if not smallest > 0:
        raise ValueError(f"{name} must be positive definite, but its smallest eigenvalue is {smallest:.6g}")


class _MatrixFunction(torch.autograd.Function):
    """``f(P) = U f(Λ) Uᵀ``; backward ``D f_P[Ḡ]`` through :class:`_FrechetDerivative` (twice differentiable)."""

    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, func: _ScalarFunction, name: str) -> torch.Tensor:
        eigvals, eigvecs = torch.linalg.eigh(matrix)
        if func.needs_positive:
            require_positive(eigvals, name)
        ctx.func = func
        ctx.save_for_backward(matrix, eigvals, eigvecs)
        return symmetric_part(_from_eigenvalues(eigvecs, func.value(eigvals)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        matrix, eigvals, eigvecs = ctx.saved_tensors
        return _FrechetDerivative.apply(matrix, symmetric_part(grad), ctx.func, eigvals, eigvecs), None, None


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
                require_positive(eigvals, "base_point")
        assert eigvecs is not None  # given together with eigvals
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
        require_positive(eigvals, "base_point")
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
    check_square(matrix, name)
    return _MatrixFunction.apply(symmetric_part(matrix), func, name)


def _frechet(tangent_vec: torch.Tensor, base_point: torch.Tensor, func: _ScalarFunction) -> torch.Tensor:
    check_square(tangent_vec, "tangent_vec")
    check_square(base_point, "base_point")
    base_point, tangent_vec = torch.broadcast_tensors(symmetric_part(base_point), tangent_vec)
    return _FrechetDerivative.apply(base_point, tangent_vec, func)


def lyapunov_solve(base_point: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``X = L_P[V]``, the solution of ``P X + X P = V`` (differentiable in both arguments)."""
    base_point, matrix = torch.broadcast_tensors(symmetric_part(base_point), matrix)
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


def frobenius(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<A, B>_F = tr(Aᵀ B)``, shape ``[...]``."""
    return (a * b).sum((-2, -1))


def trace(matrix: torch.Tensor) -> torch.Tensor:
    """``tr M``, shape ``[...]``."""
    return torch.diagonal(matrix, dim1=-2, dim2=-1).sum(-1)


def cholesky_factor(point: torch.Tensor, name: str) -> torch.Tensor:
    """Lower Cholesky factor of SPD ``point``; a ``ValueError`` naming ``name`` when it is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(point)
    if bool((info != 0).any()):
        require_positive(torch.linalg.eigvalsh(point.detach()), name)
        raise ValueError(f"{name} must be positive definite (its Cholesky factorisation failed)")
    return factor


def whiten(factor: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``L⁻¹ M L⁻ᵀ`` for a lower-triangular ``L``."""
    half = torch.linalg.solve_triangular(factor, matrix, upper=False)
    return torch.linalg.solve_triangular(factor, half.mT, upper=False).mT


def check_square(matrix: Any, name: str) -> None:
    """Raise unless ``matrix`` is a floating-point tensor of shape ``[..., n, n]``."""
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if not matrix.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {matrix.dtype}")
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"{name} must have shape [..., n, n] (square matrices), got {tuple(matrix.shape)}")


def spectral_log(point: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`logm` with ``name`` in the error raised for a matrix that is not positive definite."""
    return _matrix_function(point, _LOG, name)


def spectral_sqrt(point: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`sqrtm` with ``name`` in the error raised for a matrix that is not positive definite."""
    return _matrix_function(point, _SQRT, name)
