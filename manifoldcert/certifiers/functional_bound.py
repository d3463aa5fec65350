"""Zhang et al.'s functional-optimisation lower bound, computed from noise samples alone.

For a smoothing density ``π₀`` and a shift ``δ``, Theorem 1 (Eq. 6) of Zhang et al. (2020) bounds the smoothed
probability of the top class at ``x + δ`` from below by

    L(p, δ) = max_{λ ≥ 0}  λ·p − D(λ, δ),     D(λ, δ) = E_{z∼π₀}[(λ − w_δ(z))₊],   w_δ = π₀(z − δ) / π₀(z),

where ``p`` is (a lower bound of) the top-class probability at ``x``. For the families of Eq. 10–13 the worst
shift over a ball of radius ``r`` is a single vector ``δ*(r)`` (Theorems 2 and 3), so ``x`` is certified at radius
``r`` when ``L(p, δ*(r)) > 1/2``. Nothing here depends on the classifier: the bound is a function of
``(p, r, noise, d)``.

How it is computed
------------------
``L(p) > 1/2`` ⇔ ``p > q*(r) := min_{λ>0} (1/2 + D(λ)) / λ``. With samples ``w_i`` the empirical ``D̂`` is
piecewise linear and convex in ``λ``, so ``q̂*`` is attained at a sample value; its location is the λ at which the
``π_δ``-mass ``E[w·1{w < λ}]`` reaches 1/2 (the Neyman–Pearson set). We find it on a sorted sub-sample and
evaluate ``(1/2 + D̂(λ))/λ`` on all samples there: ANY λ gives a valid bound, the optimum only makes it tight.

Confidence correction (Sec. 4.2, made uniform)
---------------------------------------------
``D(λ) = ∫₀^λ P(w < t) dt``, so the one-sided DKW inequality (Massart 1990) on the distribution function of
``w`` gives ``D(λ) ≤ D̂(λ) + λ·ε`` for every λ at once with probability ``≥ 1 − α/m``, with
``ε = sqrt(log(m/α) / (2n))``: the paper's Hoeffding interval, valid for the λ chosen from the same samples.
A union bound over a fixed grid of ``m`` radii makes every grid radius hold simultaneously, so the certificate is
``r_j`` for the largest grid index whose threshold satisfies ``p − ε > q̂*(r_j)``.

References
----------
Zhang, Ye, Gong, Zhu and Liu (2020), Black-box certification with randomized smoothing: a functional
optimization based framework, NeurIPS — Theorem 1 (Eq. 6), Theorems 2 and 3, Sec. 4.2.
Massart (1990), The tight constant in the Dvoretzky–Kiefer–Wolfowitz inequality, Ann. Probab.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import cast

import torch

from manifoldcert.noises import AbstractNoise, Laplace
from manifoldcert.noises.zhang import _ZhangNoise

#: Elements of one chunk of noise draws (rows × d): each float64 work array of the sampling loop is 32 MiB.
CHUNK_ELEMENTS = 1 << 22

#: Largest log likelihood ratio kept; larger ones are clipped, which only makes ``D̂`` larger (conservative).
_MAX_LOG_RATIO = 600.0


# -- worst-case shifts ------------------------------------------------------------------------------------------
class WorstCaseShift(abc.ABC):
    """The shift ``δ*(r)`` attaining ``max_{‖δ‖ ≤ r} D(λ, δ)`` for one noise family, and its likelihood ratios.

    ``statistics`` reduces a sample ``z`` to the few numbers the log-ratio needs, so that many radii can be
    evaluated on one set of samples at ``O(n)`` cost each. :meth:`log_ratio` must equal
    ``noise.log_prob(z − δ*(r)) − noise.log_prob(z)``; the tests check that against the noise itself.
    """

    #: The norm of the ball this shift is the worst case over.
    norm: str
    #: Number of statistics per sample (the columns of :meth:`statistics`).
    n_statistics: int
    #: Whether a theorem proves that ``δ*`` is the worst case (False: checked numerically only).
    proven: bool = True

    def __init__(self, k: float, scale: float, dim: int) -> None:
        self.k = float(k)
        self.scale = float(scale)
        self.dim = int(dim)

    @abc.abstractmethod
    def delta(self, radius: float) -> torch.Tensor:
        """The worst-case shift ``δ*(r)`` itself, shape ``(dim,)``."""

    @abc.abstractmethod
    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample statistics, shape ``(n, s)`` in float64, of flattened samples ``z`` of shape ``(n, d)``."""

    @abc.abstractmethod
    def log_ratio(self, statistics: torch.Tensor, radius: float) -> torch.Tensor:
        """``log π₀(z − δ*(r)) − log π₀(z)`` from :meth:`statistics`, shape ``(n,)``."""

    def _log_norm_ratio(self, shifted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """``−k·(log ‖z − δ‖ − log ‖z‖)``: the ``‖z‖^{-k}`` factor's contribution."""
        if self.k == 0.0:
            return torch.zeros_like(original)
        return -self.k * (torch.log(shifted) - torch.log(original))


def _axis_shift(radius: float, dim: int) -> torch.Tensor:
    delta = torch.zeros(dim, dtype=torch.float64)
    delta[0] = radius
    return delta


class AxisShiftL2(WorstCaseShift):
    """``δ* = r·e₁`` for ``π₀ ∝ ‖z‖₂^{-k} exp(−‖z‖₂²/2s²)`` against l2 (Theorem 2; k = 0 is Gaussian, Eq. 8)."""

    norm = "l2"
    n_statistics = 2

    def delta(self, radius: float) -> torch.Tensor:
        return _axis_shift(radius, self.dim)

    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return torch.stack([z.square().sum(1), z[:, 0]], dim=1)

    def log_ratio(self, statistics: torch.Tensor, radius: float) -> torch.Tensor:
        squared_norm, first = statistics.unbind(1)
        shifted = (squared_norm - 2.0 * radius * first + radius**2).clamp_min(0.0)
        # ‖z − δ‖² − ‖z‖² = r² − 2 r z₁ exactly, without cancellation.
        exponent = -(radius**2 - 2.0 * radius * first) / (2.0 * self.scale**2)
        return exponent + 0.5 * self._log_norm_ratio(shifted, squared_norm)


class AxisShiftL1(WorstCaseShift):
    """``δ* = r·e₁`` for ``π₀ ∝ ‖z‖₁^{-k} exp(−‖z‖₁/b)`` against l1 (Theorem 2; k = 0 is Laplace, Eq. 7)."""

    norm = "l1"
    n_statistics = 2

    def delta(self, radius: float) -> torch.Tensor:
        return _axis_shift(radius, self.dim)

    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return torch.stack([z.abs().sum(1), z[:, 0]], dim=1)

    def log_ratio(self, statistics: torch.Tensor, radius: float) -> torch.Tensor:
        l1_norm, first = statistics.unbind(1)
        change = (first - radius).abs() - first.abs()  # ‖z − δ‖₁ − ‖z‖₁
        shifted = (l1_norm + change).clamp_min(0.0)
        return -change / self.scale + self._log_norm_ratio(shifted, l1_norm)


class _VertexShift(WorstCaseShift):
    """``δ* = r·(1, …, 1)``, the vertex of the l∞ ball; statistics ``‖z‖∞, max z, min z, Σz, ‖z‖₂²``."""

    norm = "linf"
    n_statistics = 5

    def delta(self, radius: float) -> torch.Tensor:
        return torch.full((self.dim,), float(radius), dtype=torch.float64)

    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return torch.stack([z.abs().amax(1), z.amax(1), z.amin(1), z.sum(1), z.square().sum(1)], dim=1)

    @staticmethod
    def _shifted_linf(statistics: torch.Tensor, radius: float) -> torch.Tensor:
        _, largest, smallest, _, _ = statistics.unbind(1)
        return torch.maximum(largest - radius, radius - smallest)


class VertexShiftMixed(_VertexShift):
    """``δ* = r·1`` for the mixed family ``π₀ ∝ ‖z‖∞^{-k} exp(−‖z‖₂²/2s²)`` against l∞ (Theorem 3, Eq. 13)."""

    def log_ratio(self, statistics: torch.Tensor, radius: float) -> torch.Tensor:
        linf, _, _, total, _ = statistics.unbind(1)
        # ‖z − r1‖₂² − ‖z‖₂² = d r² − 2 r Σ z.
        exponent = -(self.dim * radius**2 - 2.0 * radius * total) / (2.0 * self.scale**2)
        return exponent + self._log_norm_ratio(self._shifted_linf(statistics, radius), linf)


class VertexShiftLinf(_VertexShift):
    """``δ = r·1`` for the l∞-radial family ``π₀ ∝ ‖z‖∞^{-k} exp(−‖z‖∞²/2s²)`` (Eq. 12).

    No theorem in the paper names this family's worst case (its Appendix A.5 argues the family is ill-suited to
    l∞); the vertex is the natural candidate by the argument of Theorem 3 and is checked numerically in the
    tests, so certificates built on it are marked ``guaranteed=False``.
    """

    proven = False

    def log_ratio(self, statistics: torch.Tensor, radius: float) -> torch.Tensor:
        linf = statistics[:, 0]
        shifted = self._shifted_linf(statistics, radius)
        exponent = -(shifted.square() - linf.square()) / (2.0 * self.scale**2)
        return exponent + self._log_norm_ratio(shifted, linf)


#: The worst-case shift of each supported noise family, by noise registry name.
SHIFTS: dict[str, type[WorstCaseShift]] = {
    "gaussian": AxisShiftL2,
    "zhang-l2": AxisShiftL2,
    "laplace": AxisShiftL1,
    "zhang-l1": AxisShiftL1,
    "zhang-mixed": VertexShiftMixed,
    "zhang-linf": VertexShiftLinf,
}

#: The norm each supported noise family is certified against by the functional bound.
CERTIFIED_NORM: dict[str, str] = {name: shift.norm for name, shift in SHIFTS.items()}


def noise_shape_parameters(noise: AbstractNoise, dim: int) -> tuple[float, float]:
    """``(k, scale)`` of a supported noise in dimension ``dim`` (Gaussian and Laplace are the k = 0 cases)."""
    if noise.name == "gaussian":
        return 0.0, noise.sigma
    if noise.name == "laplace":
        return 0.0, float(cast(Laplace, noise).scale)
    zhang = cast(_ZhangNoise, noise)  # the other SHIFTS names are the Zhang et al. families
    return float(zhang.k), float(zhang.scale_for(dim))


def worst_case_shift(noise: AbstractNoise, dim: int) -> WorstCaseShift:
    """The worst-case shift of ``noise``'s family in dimension ``dim`` (see :data:`SHIFTS`)."""
    if noise.name not in SHIFTS:
        raise ValueError(f"the functional bound supports the noises {sorted(SHIFTS)}, not {noise.name!r}")
    k, scale = noise_shape_parameters(noise, dim)
    return SHIFTS[noise.name](k, scale, dim)


def chunk_rows(dim: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Rows of one chunk of noise draws in dimension ``dim``: ``rows × dim ≤ chunk_elements`` (at least one row).

    Parameters
    ----------
    dim : int
        Input dimension.
    chunk_elements : int
        The element budget of one ``(rows, dim)`` array.

    Returns
    -------
    int
        ``max(1, chunk_elements // dim)``; a float64 ``(rows, dim)`` array then takes at most
        ``8·chunk_elements`` bytes (32 MiB at the default) whenever ``dim ≤ chunk_elements``.
    """
    return max(1, int(chunk_elements) // int(dim))


# -- the dual bound on samples ------------------------------------------------------------------------------------
def dkw_margin(n_samples: int, alpha: float, grid_size: int = 1) -> float:
    """``ε = sqrt(log(m/α) / (2n))``: with probability ``≥ 1 − α``, ``D(λ) ≤ D̂(λ) + λε`` for every λ and every
    one of ``m`` radii (one-sided DKW with Massart's constant, union bound over the radii)."""
    return math.sqrt(math.log(grid_size / alpha) / (2.0 * n_samples))


def dual_value(log_ratios: torch.Tensor, lam: float, p: float) -> float:
    """``λ·p − D̂(λ)``: the empirical dual objective of Eq. 6 at one λ."""
    weights = log_ratios.clamp_max(_MAX_LOG_RATIO).exp()
    return lam * p - float((lam - weights).clamp_min(0.0).mean())


def dual_threshold(log_ratios: torch.Tensor, *, subsample: int = 1 << 16) -> tuple[float, float]:
    """The probability a top class must exceed for the empirical bound to exceed 1/2: ``min_λ (1/2 + D̂(λ))/λ``.

    Parameters
    ----------
    log_ratios : Tensor, shape (n,)
        ``log w_i`` for samples ``z_i ∼ π₀``.
    subsample : int
        Size of the sorted sub-sample that locates the optimal λ; the value returned is evaluated on all samples
        at that λ, so it is a valid (at worst slightly conservative) threshold whatever the sub-sample.

    Returns
    -------
    (threshold, lam) : tuple of float
        ``p`` certifies (empirically) iff ``p > threshold``; ``lam`` is the λ used.
    """
    log_ratios = log_ratios.double().clamp_max(_MAX_LOG_RATIO)
    stride = max(1, log_ratios.numel() // subsample)
    lam = _optimal_lambda(log_ratios[::stride].exp())
    weights = log_ratios.exp()
    threshold = (0.5 + float((lam - weights).clamp_min(0.0).mean())) / lam
    return min(threshold, 1.0), lam


def dual_lower_bound(log_ratios: torch.Tensor, p: float) -> tuple[float, float]:
    """``max_{λ≥0} λ·p − D̂(λ)`` exactly (Eq. 6 on samples): the lower bound on the probability at ``x + δ``.

    ``D̂`` is piecewise linear with kinks at the sample values ``w_(j)``, so the maximum is at one of them (or at
    λ = 0). Returns ``(bound, λ)``.
    """
    ordered = torch.sort(log_ratios.double().clamp_max(_MAX_LOG_RATIO).exp()).values
    n = ordered.numel()
    below = torch.arange(n, dtype=ordered.dtype)
    values = ordered * p - (below * ordered - (torch.cumsum(ordered, 0) - ordered)) / n
    best = int(torch.argmax(values))
    if float(values[best]) <= 0.0:
        return 0.0, 0.0
    return float(values[best]), float(ordered[best])


def _optimal_lambda(weights: torch.Tensor) -> float:
    """The kink ``w_(j)`` minimising ``(1/2 + D̂(λ))/λ`` over the sorted sample (the exact empirical optimum)."""
    ordered = torch.sort(weights).values
    n = ordered.numel()
    below = torch.arange(n, dtype=ordered.dtype, device=ordered.device)
    # D̂(w_(j)) = (j·w_(j) − Σ_{i<j} w_(i)) / n for the 0-based index j.
    prefix = torch.cumsum(ordered, 0) - ordered
    objective = (0.5 + (below * ordered - prefix) / n) / ordered.clamp_min(torch.finfo(ordered.dtype).tiny)
    return float(ordered[int(torch.argmin(objective))].clamp_min(1e-300))


@dataclass
class RadiusGrid:
    """A fixed geometric grid of ``size`` radii from ``low`` to ``high`` (the union bound runs over it)."""

    low: float
    high: float
    size: int

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high or self.size < 2:
            raise ValueError("a radius grid needs 0 < low < high and at least two points")

    def __getitem__(self, index: int) -> float:
        return self.low * (self.high / self.low) ** (index / (self.size - 1))


class FunctionalBoundTable:
    """Thresholds ``q̂*(r_j)`` of one noise in one dimension, computed lazily on a fixed radius grid.

    Parameters
    ----------
    noise : AbstractNoise
        A supported noise (:data:`SHIFTS`).
    dim : int
        Input dimension.
    n_samples : int
        Monte Carlo samples of ``π₀`` (drawn once, reduced to a few statistics each).
    grid_size : int
        Number of radii on the grid; it enters the confidence margin through ``log(grid_size)``.
    span : tuple of float
        The grid covers ``[span[0]·scale, span[1]·scale]`` with ``scale`` the family's own scale (s or b).
    generator : torch.Generator, optional
        Source of the samples (CPU).
    chunk_elements : int
        Bound on the elements of one chunk of draws, ``rows × dim`` (see :func:`chunk_rows`); it sets the
        memory of the sampling loop (a few work arrays of ``8·chunk_elements`` bytes each), not the results
        of one setting, though a different value draws the samples in a different order.

    Attributes
    ----------
    statistics : Tensor, shape (n_samples, s)
        The per-sample statistics of :meth:`WorstCaseShift.statistics`, float64: the only per-sample state kept.
    """

    def __init__(
        self,
        noise: AbstractNoise,
        dim: int,
        *,
        n_samples: int = 1_000_000,
        grid_size: int = 1 << 16,
        span: tuple[float, float] = (1e-5, 1e3),
        generator: torch.Generator | None = None,
        chunk_elements: int = CHUNK_ELEMENTS,
    ) -> None:
        self.noise = noise
        self.dim = int(dim)
        self.n_samples = int(n_samples)
        self.shift = worst_case_shift(noise, self.dim)
        self.grid = RadiusGrid(span[0] * self.shift.scale, span[1] * self.shift.scale, int(grid_size))
        self.statistics = self._sample_statistics(generator, chunk_elements)
        self._thresholds: dict[int, float] = {}

    def _sample_statistics(self, generator: torch.Generator | None, chunk_elements: int) -> torch.Tensor:
        """Draw ``n_samples`` noise vectors chunk by chunk and keep only their statistics, shape ``(n, s)``.

        The result is allocated once, before the first draw, and each chunk's statistics are written into their
        rows, so the only long-lived allocation is ``n·s`` float64 (40 MB for 10⁶ samples and five statistics).
        Building it from a list of per-chunk pieces instead left many small blocks between the chunks' large,
        short-lived work arrays, and glibc's heap could neither reuse nor return the space around them: its peak
        grew with the sample count (about 2 GB at d = 784 and 4·10⁵ samples of ``zhang-mixed``, past 10 GB
        at d = 3072 and 10⁶). The chunk size depends on ``dim`` and ``chunk_elements`` only, so the draws, and
        hence the statistics, are the same bit for bit as with the list.
        """
        rows = chunk_rows(self.dim, chunk_elements)
        statistics = torch.empty((self.n_samples, self.shift.n_statistics), dtype=torch.float64)
        for start in range(0, self.n_samples, rows):
            stop = min(start + rows, self.n_samples)
            # float32 draws suffice: the statistics are accumulated in float64 and the ratios use exact identities.
            z = self.noise.sample(stop - start, (self.dim,), generator=generator, dtype=torch.float32)
            statistics[start:stop] = self.shift.statistics(z)
            del z  # the chunk's work arrays are gone before the next chunk allocates its own
        return statistics

    def margin(self, alpha: float) -> float:
        """The DKW margin ``ε`` at level ``alpha`` for this table's sample size and grid."""
        return dkw_margin(self.n_samples, alpha, self.grid.size)

    def threshold(self, index: int) -> float:
        """``q̂*(r_index)``: the (empirical) probability needed to certify grid radius ``index``."""
        if index not in self._thresholds:
            ratios = self.shift.log_ratio(self.statistics, self.grid[index])
            self._thresholds[index] = dual_threshold(ratios)[0]
        return self._thresholds[index]

    def radius(self, p: float, margin: float = 0.0) -> float:
        """Largest grid radius certified for top-class probability ``p`` (0.0 when none is).

        The search bisects the grid, assuming the thresholds increase with the radius (true of the exact bound,
        since larger balls contain smaller ones); whatever it finds is checked, so an unmonotone empirical
        threshold can only make the answer smaller, never unsound.
        """
        effective = p - margin
        if effective <= 0.5 or effective <= self.threshold(0):
            return 0.0
        low, high = 0, self.grid.size - 1
        if effective > self.threshold(high):
            return self.grid[high]
        while high - low > 1:  # invariant: low certified, high not
            middle = (low + high) // 2
            if effective > self.threshold(middle):
                low = middle
            else:
                high = middle
        return self.grid[low]
