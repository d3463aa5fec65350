"""``uniform``: additive uniform smoothing ``U[−λ, λ]^d`` certified in l1, and exactly in l∞.

The smoothed class probabilities are ``1/(2λ)``-Lipschitz in l1 (Lee et al. 2019; in the form of Levine and
Feizi 2021, Theorem 1), so the radius is ``λ (p_A − p_B)``, i.e. ``2λ (p_A − 1/2)`` with ``p_B = 1 − p_A``
(Yang et al. 2020). ``λ = σ√3``.

The l∞ radius is not the norm inequality ``R₁/d`` but the exact cube-overlap radius of Yang et al. (2020),
"Randomized smoothing of all shapes and sizes" (ICML), Table 1 (uniform noise, l∞ row; their code's
``Uniform.certify_linf``): ``R∞ = 2λ (1 − (3/2 − p_A)^{1/d})``; see :meth:`UniformCertifier.convert_radius`.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from manifoldcert.certifiers.base import SmoothingCertifier, lipschitz_l1_radius
from manifoldcert.noises import Uniform


def uniform_linf_radius(half_width: float, p_a: float, dim: int) -> float:
    """Exact l∞ radius of cube smoothing ``U[−λ, λ]^d`` at top-class probability ``p_A`` (``p_B = 1 − p_A``).

    Yang et al. (2020), Table 1 (uniform, l∞): ``R∞ = 2λ (1 − (3/2 − p_A)^{1/d})`` for ``p_A > 1/2``.

    Derivation: the cubes centred at ``x`` and ``x + δ`` share the fraction ``Π_i (1 − |δ_i|/(2λ))`` of their
    volume, so (mass of class A moved out of the overlap first) ``p_A(x + δ) ≥ p_A − (1 − Π_i (1 − |δ_i|/(2λ)))``;
    over ``‖δ‖∞ ≤ r`` the product is smallest at ``|δ_i| = r`` for all i, and ``p_A(x + δ) > 1/2`` as long as
    ``(1 − r/(2λ))^d > 3/2 − p_A``. The bound is tight (a base classifier that puts class B on the part of the
    shifted cube outside the overlap attains it).

    Parameters
    ----------
    half_width : float
        ``λ``.
    p_a : float
        (Lower bound of) the top-class probability.
    dim : int
        Input dimension ``d``.

    Returns
    -------
    float
        The radius; 0 for ``p_A ≤ 1/2``; ``2λ(1 − 2^{−1/d})`` at ``p_A = 1``.
    """
    if p_a <= 0.5:
        return 0.0
    # 1 − (3/2 − p)^{1/d} = −expm1(log(3/2 − p)/d): accurate for large d, where the radius is ~ 2λ log(…)/d.
    return -2.0 * half_width * math.expm1(math.log(1.5 - min(p_a, 1.0)) / dim)


class UniformCertifier(SmoothingCertifier):
    """Uniform additive smoothing; ``sigma`` is the RMS per coordinate (half-width ``λ = sigma·√3``)."""

    name = "uniform"
    native_norm = "l1"

    def __init__(self, model: nn.Module | None, *, sigma: float = 0.25, **options: Any) -> None:
        super().__init__(model, Uniform(sigma), **options)

    @property
    def half_width(self) -> float:
        """The half-width ``λ`` of the cube."""
        return self.sigma * math.sqrt(3.0)

    def _native_radius(self, p_a: float, p_b: float) -> float:
        return lipschitz_l1_radius(self.half_width, p_a, p_b)

    def convert_radius(self, radius: float, norm: str, dim: int | None) -> float:
        """The radius in ``norm`` implied by the l1 radius ``radius``; exact (Yang et al. 2020) in l∞.

        For ``norm == "linf"`` the l1 radius ``R₁ = λ(p_A − p_B)`` is turned back into the effective probability
        ``p = 1/2 + R₁/(2λ)`` and the exact cube radius :func:`uniform_linf_radius` of ``p`` is returned,
        ``R∞ = 2λ (1 − (1 − R₁/(2λ))^{1/d})`` (Yang et al. 2020, Table 1), which is ``≥ R₁/d`` (Bernoulli's
        inequality ``(1 − x)^{1/d} ≤ 1 − x/d``), strictly for ``d > 1`` and ``R₁ > 0``.

        With ``p_B = 1 − p_A`` the effective ``p`` is ``p_A`` itself. With a separate runner-up bound
        ``p_B < 1 − p_A`` (``runner_up=True``) it is ``(1 + p_A − p_B)/2``, which lies in ``[p_A, 1 − p_B]``, and
        the certificate is still sound: the overlap argument of :func:`uniform_linf_radius` with both bounds
        (class A loses, and class B gains, at most the mass ``1 − Π(1 − |δ_i|/(2λ))`` outside the overlap)
        certifies exactly while ``Π(1 − |δ_i|/(2λ)) > 1 − (p_A − p_B)/2 = 3/2 − p``: the single-probability
        condition at ``p`` (the radius is monotone in ``p``). The l2 radius keeps the norm inequality ``R₁/√d``.
        """
        if norm != "linf":
            return super().convert_radius(radius, norm, dim)
        if dim is None:
            raise ValueError("converting an l1 radius to linf needs the input dimension dim")
        if radius <= 0.0:
            return 0.0
        p = 0.5 + min(radius / (2.0 * self.half_width), 0.5)
        return uniform_linf_radius(self.half_width, p, dim)
