"""Closed-form certifiers of Yang et al. (2020) for the norm-shaped noises of :mod:`manifoldcert.noises.yang`.

Yang, Duan, Hu, Salman, Razenshteyn and Li (2020), "Randomized smoothing of all shapes and sizes" (ICML),
Table 1 (radii, with ``p = p_A`` and ``p_B = 1 − p_A``; re-derived from their Theorems and checked against
their code ``tonyduan/rs4a``, ``src/noises/noises.py``, and against :class:`~manifoldcert.certifiers.UniCR`
in ``tests/test_yang_families.py``). ``λ`` is the family's scale at the input's dimension ``d``
(:meth:`~manifoldcert.noises.yang.Exp2.scale_for`), ``B⁻¹_{a,b}`` the inverse regularised incomplete beta:

==================  ======  ==========================================================================
method              norm    radius
==================  ======  ==========================================================================
``exp2``            l2      ``λ(d − 1)·atanh(1 − 2B⁻¹_{(d−1)/2,(d−1)/2}(1 − p))`` (``d = 1``: ``−λ log(2(1 − p))``)
``uniform-ball``    l2      ``λ(2 − 4B⁻¹_{(d+1)/2,(d+1)/2}(3/4 − p/2))``
``exp-inf``         l∞      ``−λ log(2(1 − p))``; and l1 ``2dλ(p − 1/2)`` (``d > 1``)
``pow-inf``         l1      ``2dλ(p − 1/2)/(a − d)``; l∞ by a 1-D integral (:func:`pow_inf_linf_radius`)
==================  ======  ==========================================================================

The radii depend on ``d`` (through ``λ`` when the noise is given by ``sigma``, and through the formulas), so
:meth:`radius_for` needs ``dim=`` (or ``input_shape``). Where the closed form is stated for ``p_B = 1 − p_A``
only, a runner-up bound ``p_B`` is used through the effective probability ``min(p_A, 1 − p_B) = p_A`` (a
``p_B`` below ``1 − p_A`` only strengthens the hypothesis). For the uniform ball the overlap argument holds
with both bounds, and the effective probability is ``(1 + p_A − p_B)/2`` (see :class:`UniformBallCertifier`).
Other norms follow from the norm inequalities, except that ``exp-inf`` reports the better of its l∞ and l1
radii in l1 and l2.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from scipy import integrate
from scipy.special import betainc, betaincinv
from torch import nn

from manifoldcert._validation import check_name
from manifoldcert.certificate import NORMS, implied_radius
from manifoldcert.certifiers.base import SmoothingCertifier, check_probability
from manifoldcert.noises.dimension_scaled import DimensionScaledNoise
from manifoldcert.noises.yang import Exp2, ExpInf, PowInf, UniformBall


def exp2_l2_radius(scale: float, p: float, dim: int) -> float:
    """Yang et al. (2020), Table 1 (Exp2, k = 1): ``λ(d − 1)·atanh(1 − 2B⁻¹_{(d−1)/2,(d−1)/2}(1 − p))``.

    ``atanh(1 − 2q) = ½ log((1 − q)/q)`` is used for accuracy as ``q → 0``. In ``d = 1`` the noise is
    Laplace(λ) and the radius is Teng et al.'s ``−λ log(2(1 − p))``.
    """
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf
    if dim == 1:
        return -scale * math.log(2.0 * (1.0 - p))
    half = 0.5 * (dim - 1)
    q = float(betaincinv(half, half, 1.0 - p))
    return scale * (dim - 1) * 0.5 * (math.log1p(-q) - math.log(q))


def uniform_ball_l2_radius(scale: float, p: float, dim: int) -> float:
    """Yang et al. (2020), Table 1 (uniform l2 ball): ``λ(2 − 4B⁻¹_{(d+1)/2,(d+1)/2}(3/4 − p/2))``.

    Two balls of radius λ whose centres are ``t`` apart share the fraction ``2·P(w₁ > t/(2λ))`` of their volume,
    where ``(w₁ + 1)/2 ~ Beta((d + 1)/2, (d + 1)/2)`` is a coordinate of a uniform point of the unit ball; the
    worst case ``p_A − (1 − overlap) > 1/2`` gives the radius. ``p = 1`` gives ``λ(2 − 4B⁻¹(1/4))``.
    """
    if p <= 0.5:
        return 0.0
    half = 0.5 * (dim + 1)
    return scale * (2.0 - 4.0 * float(betaincinv(half, half, 0.75 - 0.5 * min(p, 1.0))))


def exp_inf_linf_radius(scale: float, p: float) -> float:
    """Yang et al. (2020), Table 1 (ExpInf, k = 1, l∞): ``−λ log(2(1 − p))``, whatever ``d``."""
    if p <= 0.5:
        return 0.0
    return math.inf if p >= 1.0 else -scale * math.log(2.0 * (1.0 - p))


def exp_inf_l1_radius(scale: float, p: float, dim: int) -> float:
    """Yang et al. (2020), Table 1 (ExpInf, k = 1, l1): ``2dλ(p − 1/2)`` for ``d > 1``.

    Their factor is ``d/(d − 1)·Γ(d)/Γ(d − 1) = d``. In ``d = 1`` (Laplace) the l∞ radius is the l1 one and is
    returned instead.
    """
    if p <= 0.5:
        return 0.0
    if dim == 1:
        return exp_inf_linf_radius(scale, p)
    return 2.0 * dim * scale * (p - 0.5)


def pow_inf_l1_radius(scale: float, p: float, dim: int, excess: float) -> float:
    """Yang et al. (2020), Table 1 (PowInf, l1): ``2dλ(p − 1/2)/(a − d)``."""
    if p <= 0.5:
        return 0.0
    return 2.0 * dim * scale * (p - 0.5) / excess


def pow_inf_linf_radius(scale: float, p: float, dim: int, excess: float) -> float:
    """Yang et al. (2020), PowInf against l∞ by their differential method (Sec. 4 / Appendix; ``PowInf.Phi_linf``).

    ``R∞ = λ ∫_{1−p}^{1/2} dq / Φ(q)`` with ``Φ(q) = (a − d)/2 · G(H⁻¹(2q))``, ``H = BetaPrime(d, a − d)`` (the
    law of ``‖w‖∞``) and ``G`` the CDF of ``BetaPrime(d, a + 1 − d)``. A BetaPrime(α, β) CDF at r is the
    regularised incomplete beta ``I_{r/(1+r)}(α, β)``, so ``G(H⁻¹(2q)) = I_x(d, a + 1 − d)`` at
    ``x = I⁻¹_{2q}(d, a − d)``. ``Φ(q)`` bounds the l1 norm of the gradient of a smoothed score of level ``q``, so
    the integral is a sound lower bound on the exact radius (not tight: 3–26 % below UniCR at d = 8, see the
    tests), computed by adaptive quadrature, less its error estimate. Not a closed form; ``inf`` at ``p = 1``.
    """
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf  # 1/Φ(q) ~ 1/q near 0: the integral diverges logarithmically

    def inverse_gradient(q: float) -> float:
        return 2.0 / (excess * float(betainc(dim, excess + 1.0, betaincinv(dim, excess, 2.0 * q))))

    value, error = integrate.quad(inverse_gradient, 1.0 - p, 0.5, epsabs=0.0, epsrel=1e-9, limit=200)
    return scale * max(value - error, 0.0)  # the quadrature's error estimate to the safe side


class _YangCertifier(SmoothingCertifier):
    """A Yang et al. noise whose radius depends on the dimension: :meth:`radius_for` needs ``dim``."""

    noise_class: ClassVar[type[DimensionScaledNoise]]
    noise: DimensionScaledNoise

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float = 0.25,
        noise_params: dict | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, self.noise_class(sigma, **(noise_params or {})), **options)

    def scale_for(self, dim: int) -> float:
        """The noise's ``λ`` at dimension ``dim``."""
        return self.noise.scale_for(dim)

    def _effective_probability(self, p_a: float, p_b: float) -> float:
        """``min(p_A, 1 − p_B)``: the closed forms are stated for ``p_B = 1 − p_A``."""
        return min(p_a, 1.0 - p_b)

    def _radius_at(self, p: float, dim: int) -> float:
        """The native radius at effective probability ``p`` in dimension ``dim``."""
        raise NotImplementedError

    def _native_radius(self, p_a: float, p_b: float) -> float:
        if self.input_shape is None:
            raise ValueError(f"{self.name}: the radius depends on the dimension; pass dim= to radius_for")
        return self._radius_at(self._effective_probability(p_a, p_b), math.prod(self.input_shape))

    def radius_for(
        self, p_a: float, p_b: float | None = None, *, norm: str | None = None, dim: int | None = None
    ) -> float:
        """Certified radius for ``p_A`` (and ``p_B``, ``1 − p_A`` when omitted) in dimension ``dim``.

        Parameters and returns as :meth:`SmoothingCertifier.radius_for`; ``dim`` is always needed (or the
        certifier's ``input_shape``), because ``λ`` and the closed forms depend on it.
        """
        norm = self.native_norm if norm is None else check_name(norm, NORMS, "norm")
        p_a = check_probability(p_a, "p_a")
        p_b = 1.0 - p_a if p_b is None else check_probability(p_b, "p_b")
        if p_a + p_b > 1.0 + 1e-12:
            raise ValueError(f"p_a + p_b must not exceed 1, got {p_a} + {p_b}")
        dim = self._resolve_dim(dim)
        if p_a <= p_b:
            return 0.0
        return self.convert_radius(self._radius_at(self._effective_probability(p_a, p_b), dim), norm, dim)


class Exp2Certifier(_YangCertifier):
    """``exp2`` smoothing, ``p(z) ∝ exp(−‖z/λ‖₂)``, certified in l2 (Yang et al. 2020, Table 1).

    ``sigma`` is the RMS per coordinate (``λ = σ/sqrt(d + 1)``): :func:`exp2_l2_radius`.
    """

    name = "exp2"
    native_norm = "l2"
    noise_class = Exp2

    def _radius_at(self, p: float, dim: int) -> float:
        return exp2_l2_radius(self.scale_for(dim), p, dim)


class UniformBallCertifier(_YangCertifier):
    """Uniform l2-ball smoothing certified in l2 (Yang et al. 2020, Table 1): :func:`uniform_ball_l2_radius`.

    ``sigma`` is the RMS per coordinate (``λ = σ·sqrt(d + 2)``). With a runner-up bound the overlap argument
    holds as is — class A loses, and class B gains, at most the mass outside the overlap — so the condition is
    ``overlap > 1 − (p_A − p_B)/2``, the single-probability condition at ``p = (1 + p_A − p_B)/2``, which lies in
    ``[p_A, 1 − p_B]``.
    """

    name = "uniform-ball"
    native_norm = "l2"
    noise_class = UniformBall

    def _effective_probability(self, p_a: float, p_b: float) -> float:
        return 0.5 * (1.0 + p_a - p_b)

    def _radius_at(self, p: float, dim: int) -> float:
        return uniform_ball_l2_radius(self.scale_for(dim), p, dim)


class ExpInfCertifier(_YangCertifier):
    """``exp-inf`` smoothing, ``p(z) ∝ exp(−‖z/λ‖∞)``, certified in l∞ and l1 (Yang et al. 2020, Table 1).

    ``sigma`` is the RMS per coordinate (``λ = σ·sqrt(3/((d + 1)(d + 2)))``). The native radius is the l∞ one,
    :func:`exp_inf_linf_radius`; in l1 the certificate is the larger of it (an l1 ball lies inside the l∞ ball of
    the same radius) and :func:`exp_inf_l1_radius`, and in l2 the larger of it and the l1 radius over ``√d``.
    """

    name = "exp-inf"
    native_norm = "linf"
    noise_class = ExpInf

    def _radius_at(self, p: float, dim: int) -> float:
        return exp_inf_linf_radius(self.scale_for(dim), p)

    def convert_radius(self, radius: float, norm: str, dim: int | None) -> float:
        """l∞ → l1 / l2 through the effective probability ``p = 1 − e^{−R∞/λ}/2`` and the l1 closed form."""
        if norm == "linf":
            return radius
        if dim is None:
            raise ValueError(f"converting an linf radius to {norm} needs the input dimension dim")
        if radius <= 0.0:
            return 0.0
        scale = self.scale_for(dim)
        p = 1.0 - 0.5 * math.exp(-radius / scale)
        l1 = max(radius, exp_inf_l1_radius(scale, p, dim))
        return (
            l1 if norm == "l1" else max(radius, implied_radius(l1, certified_norm="l1", norm="l2", dim=dim))
        )


class PowInfCertifier(_YangCertifier):
    """``pow-inf`` smoothing, ``p(z) ∝ (1 + ‖z/λ‖∞)^{−a}``, certified in l1 (Yang et al. 2020, Table 1).

    ``sigma`` is the RMS per coordinate; ``noise_params={"excess": a − d}`` (default 10). The l1 radius is
    :func:`pow_inf_l1_radius`; the l∞ one is the better of ``R₁/d`` and Yang et al.'s differential-method
    integral :func:`pow_inf_linf_radius` (a 1-D quadrature, not a closed form), and l2 the better of ``R₁/√d`` and
    the l∞ radius.
    """

    name = "pow-inf"
    native_norm = "l1"
    noise_class = PowInf
    noise: PowInf

    def _radius_at(self, p: float, dim: int) -> float:
        return pow_inf_l1_radius(self.scale_for(dim), p, dim, self.noise.excess)

    def convert_radius(self, radius: float, norm: str, dim: int | None) -> float:
        """l1 → l∞ / l2: the better of the norm inequality and :func:`pow_inf_linf_radius` at the effective
        probability ``p = 1/2 + R₁(a − d)/(2dλ)`` (an l2 ball lies inside the l∞ ball of the same radius)."""
        if norm == "l1":
            return radius
        if dim is None:
            raise ValueError(f"converting an l1 radius to {norm} needs the input dimension dim")
        if radius <= 0.0:
            return 0.0
        scale = self.scale_for(dim)
        p = min(0.5 + radius * self.noise.excess / (2.0 * dim * scale), 1.0)
        linf = max(radius / dim, pow_inf_linf_radius(scale, p, dim, self.noise.excess))
        return (
            linf
            if norm == "linf"
            else max(linf, implied_radius(radius, certified_norm="l1", norm="l2", dim=dim))
        )


#: The certifier classes defined here, for registration in :mod:`manifoldcert.certifiers`.
YANG_CERTIFIERS: tuple[type[SmoothingCertifier], ...] = (
    Exp2Certifier,
    ExpInfCertifier,
    UniformBallCertifier,
    PowInfCertifier,
)
