"""The ``‖z‖^{-k}`` smoothing families of Zhang et al. (2020), which pull probability mass towards the centre.

Zhang, Yu, Wu, Zhou, Gong and Liu (2020), "Black-box certification with randomized smoothing: a functional
optimization based framework", Sec. 4.2–4.3:

- :class:`ZhangL1` (``zhang-l1``, Eq. 10):   ``π(z) ∝ ‖z‖₁^{-k} exp(−‖z‖₁ / b)``, for l1 certification;
- :class:`ZhangL2` (``zhang-l2``, Eq. 11):   ``π(z) ∝ ‖z‖₂^{-k} exp(−‖z‖₂² / (2s²))``, for l2;
- :class:`ZhangLinf` (``zhang-linf``, Eq. 12): ``π(z) ∝ ‖z‖∞^{-k} exp(−‖z‖∞² / (2s²))``, for l∞;
- :class:`ZhangMixed` (``zhang-mixed``, Eq. 13): ``π(z) ∝ ‖z‖∞^{-k} exp(−‖z‖₂² / (2s²))``, for l∞.

The factor ``‖z‖^{-k}`` cancels part of the ``r^{d−1}`` surface term of the radial law (Proposition 3), so
``k`` moves the norm of the noise towards zero without shrinking its spread the way a smaller scale does.

The density is normalisable if and only if ``0 ≤ k < d`` (``k ≥ 0`` as in the paper; near 0 the norm has
density ``∝ r^{d−1−k}``). ``k = 0`` gives back known laws: ``zhang-l1`` is then i.i.d. Laplace(b),
``zhang-l2`` and ``zhang-mixed`` are ``N(0, s²I)``.

All four are scale families (``z = scale · w`` with ``w`` drawn at scale 1), so a scale given as a tensor that
requires grad gives reparameterised samples, as the other noises do.

Sampling is exact and vectorised (loops only over rejection rounds, never over samples):

- l1, l2, l∞ are radial in their own norm: ``z = R·u`` with ``R = ‖z‖_p`` of density ``∝ r^{d−1−k} φ(r)`` and
  ``u`` independent, uniform for the cone measure of the unit ``l_p`` sphere. ``R/b ~ Gamma(d − k)`` (l1) and
  ``R²/s² ~ χ²_{d−k}`` (l2, l∞), drawn by Marsaglia–Tsang rejection through the caller's generator.
- mixed is not radial. With ``t = ‖z‖∞``, ``t`` has density ``∝ t^{−k} g(t)`` where ``g`` is the density of
  ``max_i |z_i|`` under ``N(0, s²I)``, and given ``t`` one uniformly chosen coordinate is ``±t`` and the others
  are i.i.d. ``N(0, s²)`` truncated to ``[−t, t]``. ``t`` is drawn by rejection from a piecewise exponential
  envelope in ``log t`` (see :func:`_max_norm_law`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from manifoldcert.noises.base import Scale, resolve_dtype
from manifoldcert.noises.dimension_scaled import DimensionScaledNoise

_LOG_2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2_OVER_SQRT_PI = math.log(2.0 / math.sqrt(math.pi))
_SQRT_2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------------------
# Random variates drawn through an explicit generator
# ----------------------------------------------------------------------------------------------------------


def standard_gamma(
    shape_param: float,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``n_samples`` exact draws of ``Gamma(shape_param, 1)`` through ``generator``.

    Marsaglia and Tsang (2000), "A simple method for generating gamma variables": for ``α ≥ 1``, with
    ``c = α − 1/3``, ``v = (1 + x/√(9c))³`` for ``x ~ N(0, 1)`` is accepted when
    ``log U < x²/2 + c − c·v + c·log v`` and then ``c·v ~ Gamma(α)`` (acceptance ≥ 95 %). For ``α < 1``,
    ``Gamma(α) = Gamma(α + 1) · U^{1/α}``. Rejection runs in vectorised rounds until every draw is accepted.
    (``torch._standard_gamma`` and ``torch.distributions.Gamma`` take no generator.)

    Returns
    -------
    Tensor, shape (n_samples,)
    """
    if not shape_param > 0 or not math.isfinite(shape_param):
        raise ValueError(f"the gamma shape parameter must be finite and > 0, got {shape_param!r}")
    dtype = resolve_dtype(dtype)
    if shape_param < 1.0:
        boosted = standard_gamma(
            shape_param + 1.0, n_samples, generator=generator, device=device, dtype=dtype
        )
        u = torch.rand(n_samples, generator=generator, device=device, dtype=dtype)
        # U^{1/α} with U = 1 − u ∈ (0, 1]; in the log domain so that a tiny α does not overflow 1/α·log U.
        return boosted * torch.exp(torch.log1p(-u) / shape_param)
    c = shape_param - 1.0 / 3.0
    step = 1.0 / math.sqrt(9.0 * c)
    out = torch.empty(n_samples, device=device, dtype=dtype)
    filled = 0
    while filled < n_samples:
        need = n_samples - filled
        draws = need + need // 16 + 16
        x = torch.randn(draws, generator=generator, device=device, dtype=dtype)
        u = torch.rand(draws, generator=generator, device=device, dtype=dtype)
        v = (1.0 + step * x) ** 3
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        accept = positive & (torch.log1p(-u) < 0.5 * x * x + c - c * v + c * log_v)
        accepted = (c * v)[accept][:need]
        out[filled : filled + accepted.numel()] = accepted
        filled += accepted.numel()
    return out


def _random_signs(shape: tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype).mul_(2.0).sub_(1.0)


def _set_one_coordinate(values: torch.Tensor, magnitude: torch.Tensor, generator) -> torch.Tensor:
    """Overwrite one uniformly chosen coordinate per row of ``values`` (n, d) with ``±magnitude`` (n, 1)."""
    n, d = values.shape
    index = torch.randint(0, d, (n, 1), generator=generator, device=values.device)
    signs = _random_signs((n, 1), generator, values.device, values.dtype)
    return values.scatter(1, index, signs * magnitude)


# ----------------------------------------------------------------------------------------------------------
# The law of t = ‖w‖∞ under the mixed family at scale 1
# ----------------------------------------------------------------------------------------------------------


def _log_erf_of_exp(u: torch.Tensor) -> torch.Tensor:
    """``log erf(eᵘ/√2)``, accurate for every real ``u`` (no underflow of ``eᵘ`` for very negative ``u``)."""
    log_x = u - 0.5 * _LOG_2
    x = torch.exp(log_x)
    x2 = torch.exp(2.0 * log_x)
    # erf(x) = (2/√π)(x − x³/3 + x⁵/10 − …); the next term is x⁶/42 relative, below 1e-20 for x < 1e-3.
    series = _LOG_2_OVER_SQRT_PI + log_x + torch.log1p(x2 * (x2 / 10.0 - 1.0 / 3.0))
    middle = torch.log(torch.special.erf(x))
    upper = torch.log1p(-torch.special.erfc(x))
    return torch.where(x < 1e-3, series, torch.where(x > 1.0, upper, middle))


def _log_t_density(u: torch.Tensor, dim: int, k: float) -> torch.Tensor:
    """``ℓ(u) = log[t^{−k} g(t) · t]`` at ``t = eᵘ``: the unnormalised log density of ``u = log ‖w‖∞``.

    ``g(t) = d · erf(t/√2)^{d−1} · 2φ(t)`` is the density of ``max_i |w_i|`` for ``w ~ N(0, I_d)``, so
    ``∫ eˡ du = E[max_i |w_i|^{−k}]``.
    """
    return (
        (1.0 - k) * u
        + math.log(2.0 * dim)
        - 0.5 * _LOG_2PI
        - 0.5 * torch.exp(2.0 * u)
        + (dim - 1) * _log_erf_of_exp(u)
    )


def _log_t_density_slope(u: torch.Tensor, dim: int, k: float) -> torch.Tensor:
    """``ℓ'(u) = 1 − k − t² + (d − 1) ψ(t/√2)`` with ``ψ(x) = x·erf'(x)/erf(x)``."""
    log_x = u - 0.5 * _LOG_2
    x = torch.exp(log_x)
    x2 = torch.exp(2.0 * log_x)
    series = 1.0 + x2 * (8.0 * x2 / 45.0 - 2.0 / 3.0)  # ψ(x) = 1 − 2x²/3 + 8x⁴/45 + O(x⁶)
    direct = x * (2.0 / math.sqrt(math.pi)) * torch.exp(-x2) / torch.special.erf(x)
    psi = torch.where(x < 1e-3, series, direct)
    return (1.0 - k) - torch.exp(2.0 * u) + (dim - 1) * psi


def _truncated_variance(t: torch.Tensor) -> torch.Tensor:
    """``E[g² | |g| ≤ t]`` for ``g ~ N(0, 1)``: ``1 − 2tφ(t)/erf(t/√2)``, by its series ``t²/3 − 2t⁴/45`` for tiny t."""
    safe = torch.where(t < 1e-3, torch.ones_like(t), t)
    density = torch.exp(-0.5 * safe * safe - 0.5 * _LOG_2PI)
    direct = 1.0 - 2.0 * safe * density / torch.special.erf(safe / _SQRT_2)
    t2 = t * t
    return torch.where(t < 1e-3, t2 / 3.0 - 2.0 * t2 * t2 / 45.0, direct)


def _log_integral_exp(slope: torch.Tensor, width: float) -> torch.Tensor:
    """``log ∫₀^width e^{slope·v} dv``, stable for every sign and size of ``slope``."""
    safe = torch.where(slope == 0, torch.ones_like(slope), slope)
    positive = slope * width + torch.log(-torch.expm1(-safe.abs() * width)) - torch.log(safe.abs())
    negative = torch.log(-torch.expm1(-safe.abs() * width)) - torch.log(safe.abs())
    flat = torch.full_like(slope, math.log(width))
    return torch.where(slope > 0, positive, torch.where(slope < 0, negative, flat))


def _bisect(function, low: float, high: float, iterations: int = 200) -> float:
    """Root of a decreasing scalar function bracketed by ``function(low) > 0 > function(high)``."""
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if function(middle) > 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class _MaxNormLaw:
    """Tabulated law of ``u = log ‖w‖∞`` for the mixed family at scale 1 (see :func:`_max_norm_law`)."""

    dim: int
    k: float
    grid: torch.Tensor  # u_0 < … < u_{N−1}, equally spaced, float64 on the CPU
    log_density: torch.Tensor  # ℓ(u_i)
    slope: torch.Tensor  # ℓ'(u_i)
    piece_cdf: torch.Tensor  # cumulative envelope probabilities of the N + 1 pieces (last entry 1)
    log_normalizer: float  # log ∫ eˡ du = log E[max_i |w_i|^{−k}], w ~ N(0, I_d)
    mean_square_norm: float  # E‖w‖₂² under the mixed law at scale 1
    acceptance: float  # ∫ eˡ / ∫ envelope: the rejection sampler's acceptance rate

    @property
    def step(self) -> float:
        return float(self.grid[1] - self.grid[0])

    def sample_log_t(
        self, n_samples: int, *, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """``n_samples`` exact draws of ``u = log t`` by rejection from the piecewise exponential envelope."""
        grid, log_density, slope, piece_cdf = (
            tensor.to(device=device, dtype=dtype)
            for tensor in (self.grid, self.log_density, self.slope, self.piece_cdf)
        )
        last = grid.numel() - 1
        step = self.step
        out = torch.empty(n_samples, device=device, dtype=dtype)
        filled = 0
        while filled < n_samples:
            need = n_samples - filled
            draws = int(need / self.acceptance) + need // 16 + 16
            piece = torch.searchsorted(
                piece_cdf, torch.rand(draws, generator=generator, device=device, dtype=dtype), right=True
            ).clamp_(max=last + 1)
            # Piece 0 is the left tail (anchored at u_0), pieces 1 … N−1 the grid cells anchored at their left
            # end, piece N the right tail (anchored at u_{N−1}).
            anchor = (piece - 1).clamp(min=0, max=last)
            u0, l0, s = grid[anchor], log_density[anchor], slope[anchor]
            v = torch.rand(draws, generator=generator, device=device, dtype=dtype)
            safe = torch.where(s == 0, torch.ones_like(s), s)
            # Tails: an exponential law on a half line, u − u0 = log(1 − V)/s (s > 0 left, s < 0 right).
            tail = torch.log1p(-v) / safe
            # Cells: the exponential law e^{s(u − u0)} truncated to [0, step], by its inverse CDF.
            rising = step + torch.log1p((1.0 - v) * torch.expm1(-safe * step)) / safe
            falling = torch.log1p(v * torch.expm1(safe * step)) / safe
            cell = torch.where(s > 0, rising, torch.where(s < 0, falling, v * step))
            is_tail = (piece == 0) | (piece == last + 1)
            offset = torch.where(is_tail, tail, cell.clamp(min=0.0, max=step))
            u = u0 + offset
            envelope = l0 + s * offset
            w = torch.rand(draws, generator=generator, device=device, dtype=dtype)
            accept = torch.log1p(-w) < _log_t_density(u, self.dim, self.k) - envelope
            accepted = u[accept][:need]
            out[filled : filled + accepted.numel()] = accepted
            filled += accepted.numel()
        return out


@functools.lru_cache(maxsize=64)
def _max_norm_law(dim: int, k: float) -> _MaxNormLaw:
    """Tabulate the law of ``t = ‖w‖∞`` under ``π(w) ∝ ‖w‖∞^{−k} exp(−‖w‖₂²/2)`` (Eq. 13 at s = 1).

    In ``u = log t`` the density is ``eˡ⁽ᵘ⁾`` with ``ℓ(u) = (1 − k)u − t²/2 + (d − 1) log erf(t/√2) + const``.
    ``ℓ`` is strictly concave: ``−t²/2`` is, and ``u ↦ log erf(eᵘ/√2)`` is because ``x ↦ x·erf'(x)/erf(x)``
    is nonincreasing (with ``P(x) = ∫₀ˣ e^{−s²} ds`` that amounts to ``(1 − 2x²) P(x) ≤ x e^{−x²}``, true at
    0 and whose right side minus left side has derivative ``4x² e^{−x²}/(1 − 2x²)² ≥ 0`` for ``x² < 1/2``).
    Hence every tangent of ``ℓ`` lies above it, and the envelope made of the tangent at the left end of each
    cell of an equally spaced grid in ``u`` (plus the tangents at the two ends, extended to ±∞ as exponential
    tails) dominates ``eˡ``. Rejection from that envelope gives *exact* draws whatever the grid; the grid only
    sets the acceptance rate, ``≈ exp(−|ℓ''|h²/2)`` per cell, which a spacing ``h = 0.02/√|ℓ''(mode)|`` keeps
    above 99.9 %.

    The grid runs from where ``ℓ`` is 60 below its maximum on the right to, on the left, either the same level
    or the point below which ``ℓ`` is linear to within 1e-14 (it is ``(d − k)u + const − (1/2 + (d − 1)/6)t²
    + O(t⁴)`` near 0); the integrals ``E[t^{−k}]`` (log-density normaliser) and ``E‖w‖²`` are Simpson sums on
    the grid plus the tangent (exponential) tails beyond its ends (they agree with adaptive scipy quadrature
    to ~1e-13 for d = 1 … 784).
    """

    def ell(u: float) -> float:
        return float(_log_t_density(torch.tensor([u], dtype=torch.float64), dim, k))

    def slope(u: float) -> float:
        return float(_log_t_density_slope(torch.tensor([u], dtype=torch.float64), dim, k))

    low, high = -10.0, 2.0
    while slope(low) <= 0 and low > -700.0:
        low -= 10.0
    while slope(high) >= 0:
        high += 2.0
    mode = _bisect(slope, low, high)
    peak = ell(mode)
    target = peak - 60.0
    beta = 0.5 + (dim - 1) / 6.0
    linear_below = 0.5 * math.log(1e-14 / beta)
    distance = 1.0
    while ell(mode - distance) > target and mode - distance > linear_below:
        distance *= 2.0
    u_low = mode - distance
    distance = 0.25
    while ell(mode + distance) > target:
        distance *= 2.0
    u_high = mode + distance

    eps = 1e-5
    curvature = abs(slope(mode + eps) - slope(mode - eps)) / (2.0 * eps)
    spacing = 0.02 / math.sqrt(max(curvature, 1.0))
    n_cells = min(max(math.ceil((u_high - u_low) / spacing), 2048), 2**17)
    n_cells += n_cells % 2  # Simpson needs an even number of cells
    grid = torch.linspace(u_low, u_high, n_cells + 1, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    log_density = _log_t_density(grid, dim, k)
    slopes = _log_t_density_slope(grid, dim, k)
    if not (slopes[0] > 0 and slopes[-1] < 0):  # pragma: no cover - guaranteed by the choice of the range
        raise RuntimeError(f"could not bracket the law of ‖z‖∞ for d = {dim}, k = {k}")

    # Normaliser and E‖w‖² = E[t² + (d − 1) Var(g | |g| ≤ t)] by Simpson's rule plus exponential tails.
    weights = torch.ones(n_cells + 1, dtype=torch.float64)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    weights *= step / 3.0
    relative = torch.exp(log_density - peak)
    t = torch.exp(grid)
    energy = t * t + (dim - 1) * _truncated_variance(t)
    left_tail = float(relative[0] / slopes[0])
    right_tail = float(relative[-1] / -slopes[-1])
    mass = float((weights * relative).sum()) + left_tail + right_tail
    # Below u_0 the energy is ≈ c·t² (c = 1 + (d − 1)/3), so its tail integral carries a factor 1/(slope + 2).
    energy_mass = (
        float((weights * relative * energy).sum())
        + float(energy[0]) * float(relative[0] / (slopes[0] + 2.0))
        + float(energy[-1]) * right_tail
    )

    log_pieces = torch.cat(
        [
            (log_density[:1] - torch.log(slopes[:1])),
            log_density[:-1] + _log_integral_exp(slopes[:-1], step),
            (log_density[-1:] - torch.log(-slopes[-1:])),
        ]
    )
    log_envelope = float(torch.logsumexp(log_pieces, 0))
    piece_cdf = torch.cumsum(torch.exp(log_pieces - log_envelope), 0)
    piece_cdf /= piece_cdf[-1].clone()
    return _MaxNormLaw(
        dim=dim,
        k=k,
        grid=grid,
        log_density=log_density,
        slope=slopes,
        piece_cdf=piece_cdf,
        log_normalizer=peak + math.log(mass),
        mean_square_norm=energy_mass / mass,
        acceptance=min(1.0, math.exp(peak + math.log(mass) - log_envelope)),
    )


# ----------------------------------------------------------------------------------------------------------
# The noises
# ----------------------------------------------------------------------------------------------------------


def _check_k(k: float) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ValueError(f"k must be a finite number >= 0 (the density needs 0 <= k < d), got {k!r}")
    return float(k)


class _ZhangNoise(DimensionScaledNoise):
    """The four families' shared part: the exponent ``k`` (``0 ≤ k < d``) on top of the per-dimension σ ↔ scale
    resolution of :class:`~manifoldcert.noises.dimension_scaled.DimensionScaledNoise`.

    Parameters
    ----------
    sigma : float or one-element Tensor, optional
        The project-wide knob, RMS per coordinate ``sqrt(E‖z‖²/d)``.
    scale : float or one-element Tensor, optional
        The family's own scale (``b`` for l1, ``s`` for the others). Give exactly one of ``sigma`` and ``scale``.
    k : float
        Exponent of ``‖z‖^{-k}``, ``0 ≤ k < d``.
    dim : int, optional
        Number of input coordinates ``d``, if it is to be pinned now (``k < d`` is then checked at once).

    Notes
    -----
    ``log_prob`` is ``+inf`` at ``z = 0`` when ``k > 0``: the density is unbounded at the origin (``z = 0`` has
    probability 0 and is never drawn unless a radius underflows); ratios ``log π(z − δ) − log π(z)`` are finite
    for ``z ≠ 0, z ≠ δ``.
    """

    def __init__(
        self,
        sigma: Scale | None = None,
        *,
        scale: Scale | None = None,
        k: float = 0.0,
        dim: int | None = None,
    ) -> None:
        self.k = _check_k(k)
        super().__init__(sigma, scale=scale, dim=dim)

    def _validate_dim(self, dim: int) -> None:
        if not self.k < dim:
            raise ValueError(
                f"k = {self.k:g} makes the {self.name} density non-normalisable in d = {dim} dimensions: "
                f"it needs 0 <= k < d (here k < {dim})"
            )

    def _shape_params(self) -> dict[str, Any]:
        return {"k": self.k}

    def _power_term(self, log_norm: torch.Tensor) -> torch.Tensor:
        """``−k log‖w‖`` (exactly 0 for k = 0, also at w = 0)."""
        return -self.k * log_norm if self.k > 0 else torch.zeros_like(log_norm)


class ZhangL1(_ZhangNoise):
    """Eq. 10, ``π(z) ∝ ‖z‖₁^{-k} exp(−‖z‖₁/b)`` (Zhang et al. 2020), for l1 certification (Theorem 2).

    ``z = R·u``: ``R = ‖z‖₁ ~ Gamma(d − k, scale b)`` and ``u`` = random signs × Dirichlet(1, …, 1) (normalised
    Exp(1) draws), the cone measure of the l1 sphere. ``E‖z‖² = b²(d − k)(d − k + 1) · 2/(d + 1)``, so
    ``σ = b·sqrt(2(d − k)(d − k + 1)/(d(d + 1)))``; at ``k = 0`` this is i.i.d. Laplace(b), ``σ = b√2``.
    Normaliser: ``∫ ‖z‖₁^{-k} e^{−‖z‖₁/b} dz = (2^d/Γ(d)) b^{d−k} Γ(d − k)``.

    See :class:`_ZhangNoise` for the parameters and for how ``sigma`` and ``dim`` interact.
    """

    name = "zhang-l1"
    norm = "l1"
    scale_name = "b"

    def _rms_per_scale(self, dim: int) -> float:
        a = dim - self.k
        return math.sqrt(2.0 * a * (a + 1.0) / (dim * (dim + 1.0)))

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        radius = standard_gamma(dim - self.k, n_samples, generator=generator, device=device, dtype=dtype)
        exponential = -torch.log1p(
            -torch.rand((n_samples, dim), generator=generator, device=device, dtype=dtype)
        )
        direction = exponential / exponential.sum(1, keepdim=True)
        signs = _random_signs((n_samples, dim), generator, device, dtype)
        return radius[:, None] * signs * direction

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        norm = flat.abs().sum(1)
        log_normalizer = dim * _LOG_2 - math.lgamma(dim) + math.lgamma(dim - self.k)
        return self._power_term(torch.log(norm)) - norm - log_normalizer


def _chi_radius(dim: int, k: float, n_samples: int, generator, device, dtype) -> torch.Tensor:
    """``R`` with density ``∝ r^{d−1−k} e^{−r²/2}``, i.e. ``R² ~ χ²_{d−k} = 2·Gamma((d − k)/2)``."""
    gamma = standard_gamma(0.5 * (dim - k), n_samples, generator=generator, device=device, dtype=dtype)
    return torch.sqrt(2.0 * gamma)


def _log_chi_integral(dim: int, k: float) -> float:
    """``log ∫₀^∞ r^{d−1−k} e^{−r²/2} dr = log[2^{(d−k)/2 − 1} Γ((d − k)/2)]``."""
    a = dim - k
    return (0.5 * a - 1.0) * _LOG_2 + math.lgamma(0.5 * a)


class ZhangL2(_ZhangNoise):
    """Eq. 11, ``π(z) ∝ ‖z‖₂^{-k} exp(−‖z‖₂²/(2s²))`` (Zhang et al. 2020), for l2 certification (Theorem 2).

    ``z = R·u``: ``R²/s² ~ χ²_{d−k}`` and ``u`` uniform on the unit sphere (a normalised Gaussian).
    ``E‖z‖² = s²(d − k)``, so ``σ = s·sqrt((d − k)/d)``; at ``k = 0`` this is ``N(0, s²I)``.
    Normaliser: ``(2π^{d/2}/Γ(d/2)) s^{d−k} 2^{(d−k)/2−1} Γ((d − k)/2)``.

    See :class:`_ZhangNoise` for the parameters and for how ``sigma`` and ``dim`` interact.
    """

    name = "zhang-l2"
    norm = "l2"
    scale_name = "s"

    def _rms_per_scale(self, dim: int) -> float:
        return math.sqrt((dim - self.k) / dim)

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        radius = _chi_radius(dim, self.k, n_samples, generator, device, dtype)
        gaussian = torch.randn((n_samples, dim), generator=generator, device=device, dtype=dtype)
        return radius[:, None] * gaussian / gaussian.norm(dim=1, keepdim=True)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        square = flat.square().sum(1)
        log_sphere = _LOG_2 + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)
        log_normalizer = log_sphere + _log_chi_integral(dim, self.k)
        return self._power_term(0.5 * torch.log(square)) - 0.5 * square - log_normalizer


class ZhangLinf(_ZhangNoise):
    """Eq. 12, ``π(z) ∝ ‖z‖∞^{-k} exp(−‖z‖∞²/(2s²))`` (Zhang et al. 2020), for l∞ certification.

    ``z = R·u``: ``R = ‖z‖∞`` has the law of :class:`ZhangL2`'s radius (``R²/s² ~ χ²_{d−k}``) and ``u`` is
    uniform on the surface of the cube ``[−1, 1]^d`` (one uniformly chosen coordinate ``±1``, the others
    ``U[−1, 1]``). ``E‖u‖² = 1 + (d − 1)/3``, so ``σ = s·sqrt((d − k)(d + 2)/(3d))``.
    Normaliser: ``d·2^d · s^{d−k} 2^{(d−k)/2−1} Γ((d − k)/2)``.

    See :class:`_ZhangNoise` for the parameters and for how ``sigma`` and ``dim`` interact.
    """

    name = "zhang-linf"
    norm = "linf"
    scale_name = "s"

    def _rms_per_scale(self, dim: int) -> float:
        return math.sqrt((dim - self.k) * (dim + 2.0) / (3.0 * dim))

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        radius = _chi_radius(dim, self.k, n_samples, generator, device, dtype)
        cube = 2.0 * torch.rand((n_samples, dim), generator=generator, device=device, dtype=dtype) - 1.0
        face = _set_one_coordinate(cube, torch.ones((n_samples, 1), device=device, dtype=dtype), generator)
        return radius[:, None] * face

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        norm = flat.abs().amax(1)
        log_normalizer = math.log(dim) + dim * _LOG_2 + _log_chi_integral(dim, self.k)
        return self._power_term(torch.log(norm)) - 0.5 * norm.square() - log_normalizer


class ZhangMixed(_ZhangNoise):
    """Eq. 13, ``π(z) ∝ ‖z‖∞^{-k} exp(−‖z‖₂²/(2s²))`` (Zhang et al. 2020), for l∞ certification (Theorem 3).

    Not radial. With ``t = ‖z‖∞/s``: ``t`` has density ``∝ t^{−k} g(t)``, ``g`` the density of ``max_i |g_i|``
    for ``g ~ N(0, I_d)``; it is drawn exactly by rejection from a tangent envelope in ``log t``
    (:func:`_max_norm_law`, cached per ``(d, k)``). Given ``t``, one uniformly chosen coordinate is ``±t`` and
    the others are i.i.d. ``N(0, 1)`` truncated to ``[−t, t]``, drawn by inverse CDF (``erfinv`` near 0,
    ``ndtri`` of the upper tail otherwise, both accurate to float64 rounding); then ``z = s·w``.
    The normaliser ``(2π)^{d/2} s^{d−k} E[max_i |g_i|^{−k}]`` is a 1-D integral computed once per ``(d, k)``.
    ``E‖z‖² = s²(d − k)``, so ``σ = s·sqrt((d − k)/d)`` as for :class:`ZhangL2`: for any density
    ``∝ h(z) e^{−‖z‖²/(2s²)}`` with ``h`` homogeneous of degree ``−k`` the normaliser is ``c·s^{d−k}``, and
    differentiating it in ``s`` gives ``E‖z‖²/s³ = (d − k)/s``. (The tabulated law's own
    ``E[t² + (d − 1) Var(g | |g| ≤ t)]`` agrees with ``d − k`` to ~1e-14, a check of the quadrature.)
    At ``k = 0`` this is ``N(0, s²I)``.

    See :class:`_ZhangNoise` for the parameters and for how ``sigma`` and ``dim`` interact.
    """

    name = "zhang-mixed"
    norm = "linf"
    scale_name = "s"

    def _law(self, dim: int) -> _MaxNormLaw:
        return _max_norm_law(dim, self.k)

    def _rms_per_scale(self, dim: int) -> float:
        return math.sqrt((dim - self.k) / dim)

    def _standard_sample(self, n_samples, dim, generator, device, dtype) -> torch.Tensor:
        if self.k == 0:
            return torch.randn((n_samples, dim), generator=generator, device=device, dtype=dtype)
        t = torch.exp(self._law(dim).sample_log_t(n_samples, generator=generator, device=device, dtype=dtype))
        t = t[:, None]
        # |w_i| given |w_i| ≤ t: P(|g| ≤ x) = V·erf(t/√2). erfinv is accurate while V·erf(t/√2) < 1/2; beyond,
        # invert the upper tail P(|g| > x) = (1 − V) + V·erfc(t/√2) = 2Φ(−x) with ndtri.
        v = torch.rand((n_samples, dim), generator=generator, device=device, dtype=dtype)
        inside = v * torch.special.erf(t / _SQRT_2)
        lower = _SQRT_2 * torch.special.erfinv(inside.clamp(max=0.5))
        upper = -torch.special.ndtri(0.5 * ((1.0 - v) + v * torch.special.erfc(t / _SQRT_2)))
        magnitude = torch.minimum(torch.where(inside < 0.5, lower, upper), t)
        coordinates = magnitude * _random_signs((n_samples, dim), generator, device, dtype)
        return _set_one_coordinate(coordinates, t, generator)

    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        dim = flat.shape[1]
        log_normalizer = 0.5 * dim * _LOG_2PI + (self._law(dim).log_normalizer if self.k > 0 else 0.0)
        power = self._power_term(torch.log(flat.abs().amax(1)))
        return power - 0.5 * flat.square().sum(1) - log_normalizer
