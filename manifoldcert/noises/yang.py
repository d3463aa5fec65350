"""Norm-shaped smoothing noises of Yang et al. (2020) with closed-form radii: Exp2, ExpInf, uniform l2 ball, PowInf.

Yang, Duan, Hu, Salman, Razenshteyn and Li (2020), "Randomized smoothing of all shapes and sizes" (ICML),
Table 1 (and Theorems 3.x / Appendix tables of their code ``tonyduan/rs4a``, ``src/noises/noises.py``). With
``λ`` the family's scale and ``w = z/λ``:

================  ============================  ==============================  ======================================
name              density of ``z`` (∝)          law of ``‖w‖``                  ``σ = sqrt(E‖z‖²/d)``
================  ============================  ==============================  ======================================
``exp2``          ``exp(−‖z/λ‖₂)``              ``‖w‖₂ ~ Gamma(d)``             ``λ·sqrt(d + 1)``
``exp-inf``       ``exp(−‖z/λ‖∞)``              ``‖w‖∞ ~ Gamma(d)``             ``λ·sqrt((d + 1)(d + 2)/3)``
``uniform-ball``  ``1{‖z‖₂ ≤ λ}``               ``‖w‖₂ ~ U^{1/d}``              ``λ/sqrt(d + 2)``
``pow-inf``       ``(1 + ‖z/λ‖∞)^{−a}``, a > d  ``‖w‖∞ ~ BetaPrime(d, a − d)``  ``λ·sqrt((d+1)(d+2)/(3(b−1)(b−2)))``
================  ============================  ==============================  ======================================

(``b = a − d``.)

Each is radial in its norm, ``z = λ·R·u`` with ``R = ‖w‖`` independent of ``u``, which is uniform on the l2
sphere (a normalised Gaussian) or uniform on the surface of the cube ``[−1, 1]^d`` (one uniformly chosen
coordinate ``±1``, the others ``U[−1, 1]``; ``E‖u‖₂² = 1 + (d − 1)/3``). Volume elements: the l2 sphere of
radius r has area ``2π^{d/2}/Γ(d/2)·r^{d−1}``, the cube surface ``d·2^d·r^{d−1}``, which give the normalisers.
Draws are exact and made in float64 through the caller's generator (Gamma variates by Marsaglia–Tsang,
:func:`manifoldcert.noises.zhang.standard_gamma`), then cast to the requested dtype.

As for the Zhang et al. families, ``σ / λ`` depends on the dimension ``d``: a noise stores what it was given
(``sigma`` or ``scale = λ``) and resolves the other one per input dimension (:meth:`scale_for`,
:meth:`sigma_for`); ``dim=`` pins the dimension at construction, after which :attr:`sigma` and :attr:`scale`
are both defined. ``pow-inf`` takes its exponent as ``excess = a − d`` (so one noise serves every ``d``;
the variance is finite for ``excess > 2``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from manifoldcert.noises.base import AbstractNoise, Scale
from manifoldcert.noises.dimension_scaled import DimensionScaledNoise
from manifoldcert.noises.zhang import _set_one_coordinate, standard_gamma

_LOG_2 = math.log(2.0)
_LOG_PI = math.log(math.pi)


def _l2_sphere(n_samples: int, dim: int, generator, device, dtype) -> torch.Tensor:
    """``(n, d)`` draws uniform on the unit l2 sphere."""
    gaussian = torch.randn((n_samples, dim), generator=generator, device=device, dtype=dtype)
    return gaussian / gaussian.norm(dim=1, keepdim=True)


def _cube_surface(n_samples: int, dim: int, generator, device, dtype) -> torch.Tensor:
    """``(n, d)`` draws uniform on the surface of ``[−1, 1]^d`` (the cone measure of the l∞ sphere)."""
    cube = 2.0 * torch.rand((n_samples, dim), generator=generator, device=device, dtype=dtype) - 1.0
    return _set_one_coordinate(cube, torch.ones((n_samples, 1), device=device, dtype=dtype), generator)


def log_l2_sphere_area(dim: int) -> float:
    """``log(2π^{d/2}/Γ(d/2))``, the area of the unit l2 sphere in ``R^d``."""
    return _LOG_2 + 0.5 * dim * _LOG_PI - math.lgamma(0.5 * dim)


def log_cube_surface(dim: int) -> float:
    """``log(d·2^d)``: ``d/dr (2r)^d`` at ``r = 1``, the surface of ``[−1, 1]^d``."""
    return math.log(dim) + dim * _LOG_2


class Exp2(DimensionScaledNoise):
    """``exp2``: ``p(z) ∝ exp(−‖z/λ‖₂)`` (Yang et al. 2020, Table 1, "Exp2" with k = 1, j = 0), for l2.

    ``‖z‖₂/λ ~ Gamma(d)`` times a uniform direction; ``E‖z‖² = λ²d(d + 1)``, so ``σ = λ·sqrt(d + 1)``.
    Normaliser ``λ^d · 2π^{d/2}/Γ(d/2) · Γ(d)``. In ``d = 1`` it is Laplace(λ).
    """

    name = "exp2"
    norm = "l2"

    def _rms_per_scale(self, dim: int) -> float:
        return math.sqrt(dim + 1.0)

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        radius = standard_gamma(float(dim), n_samples, generator=generator, device=device, dtype=dtype)
        return radius[:, None] * _l2_sphere(n_samples, dim, generator, device, dtype)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        return -flat.norm(dim=1) - (log_l2_sphere_area(dim) + math.lgamma(dim))


class ExpInf(DimensionScaledNoise):
    """``exp-inf``: ``p(z) ∝ exp(−‖z/λ‖∞)`` (Yang et al. 2020, Table 1, "ExpInf" with k = 1, j = 0), for l∞ and l1.

    ``‖z‖∞/λ ~ Gamma(d)`` times a uniform point of the cube surface; ``E‖z‖² = λ²d(d + 1)(1 + (d − 1)/3)``, so
    ``σ = λ·sqrt((d + 1)(d + 2)/3)``. Normaliser ``λ^d · d·2^d · Γ(d)``.
    """

    name = "exp-inf"
    norm = "linf"

    def _rms_per_scale(self, dim: int) -> float:
        return math.sqrt((dim + 1.0) * (dim + 2.0) / 3.0)

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        radius = standard_gamma(float(dim), n_samples, generator=generator, device=device, dtype=dtype)
        return radius[:, None] * _cube_surface(n_samples, dim, generator, device, dtype)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        return -flat.abs().amax(1) - (log_cube_surface(dim) + math.lgamma(dim))


class UniformBall(DimensionScaledNoise):
    """``uniform-ball``: uniform on the l2 ball of radius ``λ`` (Yang et al. 2020, Table 1, "Uniform, l2 ball").

    ``‖z‖₂/λ = U^{1/d}`` times a uniform direction; ``E‖z‖² = λ²d/(d + 2)``, so ``σ = λ/sqrt(d + 2)``.
    Density ``Γ(d/2 + 1)/(π^{d/2}λ^d)`` inside the ball, 0 outside. In ``d = 1`` it is U[−λ, λ].
    """

    name = "uniform-ball"
    norm = "l2"
    iid_coordinates = False

    def _rms_per_scale(self, dim: int) -> float:
        return 1.0 / math.sqrt(dim + 2.0)

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        u = torch.rand(n_samples, generator=generator, device=device, dtype=dtype)
        radius = u.pow(1.0 / dim)
        return radius[:, None] * _l2_sphere(n_samples, dim, generator, device, dtype)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        inside = flat.norm(dim=1) <= 1.0
        log_density = math.lgamma(0.5 * dim + 1.0) - 0.5 * dim * _LOG_PI
        return torch.where(
            inside,
            torch.full_like(inside, log_density, dtype=flat.dtype),
            torch.full_like(inside, -math.inf, dtype=flat.dtype),
        )


class PowInf(DimensionScaledNoise):
    """``pow-inf``: ``p(z) ∝ (1 + ‖z/λ‖∞)^{−a}`` with ``a = d + excess`` (Yang et al. 2020, Table 1, "PowInf").

    ``‖z‖∞/λ ~ BetaPrime(d, a − d)`` (drawn as the ratio of ``Gamma(d)`` and ``Gamma(a − d)`` variates) times a
    uniform point of the cube surface; ``E R² = d(d + 1)/((a − d − 1)(a − d − 2))``, so
    ``σ = λ·sqrt((d + 1)(d + 2)/(3(a − d − 1)(a − d − 2)))`` (finite for ``excess > 2``).
    Normaliser ``λ^d · d·2^d · B(d, a − d)``.

    Parameters
    ----------
    excess : float
        ``a − d > 0`` (default 10); ``sigma=`` needs ``excess > 2``.
    """

    name = "pow-inf"
    norm = "linf"

    def __init__(
        self,
        sigma: Scale | None = None,
        *,
        scale: Scale | None = None,
        excess: float = 10.0,
        dim: int | None = None,
    ) -> None:
        if isinstance(excess, bool) or not isinstance(excess, (int, float)) or not math.isfinite(excess):
            raise ValueError(f"excess = a − d must be a finite number > 0, got {excess!r}")
        if not excess > 0 or (sigma is not None and not excess > 2):
            raise ValueError(
                f"pow-inf needs excess = a − d > 0 to be a density and > 2 for a finite sigma, got {excess!r}"
            )
        self.excess = float(excess)
        super().__init__(sigma, scale=scale, dim=dim)

    def exponent(self, dim: int) -> float:
        """``a = d + excess``."""
        return dim + self.excess

    def _rms_per_scale(self, dim: int) -> float:
        b = self.excess
        if not b > 2:
            raise ValueError(f"pow-inf with excess = a − d = {b:g} <= 2 has infinite variance")
        return math.sqrt((dim + 1.0) * (dim + 2.0) / (3.0 * (b - 1.0) * (b - 2.0)))

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        top = standard_gamma(float(dim), n_samples, generator=generator, device=device, dtype=dtype)
        bottom = standard_gamma(self.excess, n_samples, generator=generator, device=device, dtype=dtype)
        return (top / bottom)[:, None] * _cube_surface(n_samples, dim, generator, device, dtype)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        log_beta = math.lgamma(dim) + math.lgamma(self.excess) - math.lgamma(dim + self.excess)
        return -self.exponent(dim) * torch.log1p(flat.abs().amax(1)) - (log_cube_surface(dim) + log_beta)

    def _shape_params(self) -> dict[str, Any]:
        return {"excess": self.excess}


#: The noise classes defined here, for registration in :mod:`manifoldcert.noises`.
YANG_CLASSES: tuple[type[AbstractNoise], ...] = (Exp2, ExpInf, UniformBall, PowInf)
