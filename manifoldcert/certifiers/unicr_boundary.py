"""UniCR's robustness boundary (Hong et al. 2022, Theorem 1 and Eq. 3–4), estimated from noise samples.

For a noise density μ and a shift δ, the Neyman–Pearson worst case puts class A on the set ``S_A`` of lowest
likelihood ratio ``ρ(z) = μ(z − δ)/μ(z)`` with ``P_μ(S_A) = p_A`` and class B on the set ``S_B`` of highest ratio
with ``P_μ(S_B) = p_B``; the smoothed prediction at ``x + δ`` provably stays A when

    K(δ) = P_{z∼μ}(ρ(z + δ) ∈ S_A) − P_{z∼μ}(ρ(z + δ) ∈ S_B) > 0.

``t_A``, ``t_B`` are the ``p_A``- and ``(1 − p_B)``-quantiles of ``log ρ(z)`` (Eq. 3); ties (uniform noise, where ρ
takes a few values) are split fractionally, as the randomised Neyman–Pearson test does. The *scalar phase* scales a
direction u until ``K(λu) = 0``; the radius along u is ``λ*·‖u‖_p``; the *direction phase* minimises it over the
sphere (:mod:`manifoldcert.geometry.sphere`). Every quantity here is a Monte Carlo estimate on ONE set of noise
samples (common random numbers across λ, directions and probabilities), so the boundary is an approximation —
UniCR's certificates are ``guaranteed=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from manifoldcert.noises import AbstractNoise

#: Rows per chunk when evaluating log densities on the stored samples.
_CHUNK_ROWS = 4096


class UnreachableToleranceError(RuntimeError):
    """The scalar phase could not bring ``|K|`` within the tolerance (Monte Carlo granularity, a flat K)."""


def lp_norm(vector: np.ndarray, p: float) -> float:
    """``‖v‖_p`` for any ``p > 0`` (a quasi-norm below 1) and ``p = inf``."""
    magnitudes = np.abs(np.asarray(vector, dtype=np.float64))
    if math.isinf(p):
        return float(magnitudes.max())
    return float(np.sum(magnitudes**p) ** (1.0 / p))


class SortedRatioLaws:
    """The two laws of ``log ρ`` — under the noise at ``x`` and at ``x + δ`` — sorted once for many queries."""

    def __init__(self, log_ratio_x: torch.Tensor, log_ratio_y: torch.Tensor | None = None) -> None:
        self.x = torch.sort(log_ratio_x.double()).values
        # A symmetric noise's antithetic sample has the law at x + δ exactly mirrored: no second sort.
        self.y = -self.x.flip(0) if log_ratio_y is None else torch.sort(log_ratio_y.double()).values

    def lowest_set_mass(self, masses: np.ndarray | float) -> np.ndarray:
        """``P_Y(S)`` for the set S of lowest ratio with ``P_X(S) = mass``; the tie at the threshold is split."""
        n = self.x.numel()
        targets = torch.as_tensor(np.atleast_1d(masses), dtype=torch.float64) * n
        threshold = self.x[(torch.ceil(targets) - 1).clamp(0, n - 1).long()]
        below_x = torch.searchsorted(self.x, threshold, side="left")
        tied_x = torch.searchsorted(self.x, threshold, side="right") - below_x
        fraction = ((targets - below_x) / tied_x.clamp_min(1)).clamp(0.0, 1.0)
        below_y = torch.searchsorted(self.y, threshold, side="left")
        tied_y = torch.searchsorted(self.y, threshold, side="right") - below_y
        return ((below_y + fraction * tied_y) / self.y.numel()).numpy()

    def highest_set_mass(self, masses: np.ndarray | float) -> np.ndarray:
        """``P_Y(S)`` for the set S of highest ratio with ``P_X(S) = mass`` (ties split)."""
        n = self.x.numel()
        targets = torch.as_tensor(np.atleast_1d(masses), dtype=torch.float64) * n
        threshold = self.x[(n - torch.ceil(targets)).clamp(0, n - 1).long()]
        above_x = n - torch.searchsorted(self.x, threshold, side="right")
        tied_x = torch.searchsorted(self.x, threshold, side="right") - torch.searchsorted(self.x, threshold)
        fraction = ((targets - above_x) / tied_x.clamp_min(1)).clamp(0.0, 1.0)
        m = self.y.numel()
        above_y = m - torch.searchsorted(self.y, threshold, side="right")
        tied_y = torch.searchsorted(self.y, threshold, side="right") - torch.searchsorted(self.y, threshold)
        return ((above_y + fraction * tied_y) / m).numpy()

    def gap(self, p_a: np.ndarray | float, p_b: np.ndarray | float) -> np.ndarray:
        """``K = P_Y(S_A) − P_Y(S_B)`` (Eq. 4) per pair ``(p_A, p_B)``; the shift is certified while ``K > 0``."""
        return self.lowest_set_mass(p_a) - self.highest_set_mass(p_b)


def boundary_gap(
    log_ratio_x: torch.Tensor,
    log_ratio_y: torch.Tensor | None,
    p_a: np.ndarray | float,
    p_b: np.ndarray | float,
) -> np.ndarray:
    """``K`` of Eq. 4 from samples of ``log ρ`` at x and at x + δ (``None``: the mirror of the first)."""
    return SortedRatioLaws(log_ratio_x, log_ratio_y).gap(p_a, p_b)


class ShiftedLogRatios:
    """Noise samples drawn once, and the log likelihood ratios of any shift on them.

    Parameters
    ----------
    noise : AbstractNoise
        Any noise with a log density. With ``noise.iid_coordinates`` a shift touching k coordinates costs O(n·k)
        (and O(n·k) memory traffic only when those are the first k, as for the sparse diagonals); with
        ``noise.symmetric`` every sample also stands for its mirror image ``−z`` (antithetic pairs), which
        doubles the sample at no cost: over the pairs the law at ``x + δ`` is exactly the mirror of the law at x.
    dim : int
        Input dimension.
    n_samples : int
        Monte Carlo samples drawn (stored in float32 when ``n_samples·dim`` is large).
    seed : int
        Seed of the samples. For i.i.d. coordinates they are drawn lazily, 64 coordinates at a time from
        ``(seed, block)``-seeded generators, so a direction supported on the first k coordinates never
        allocates the others (an axis at d = 784 costs as much memory as at d = 1).
    """

    #: Coordinates drawn together when the samples are extended (i.i.d. noise).
    BLOCK = 64

    def __init__(self, noise: AbstractNoise, dim: int, n_samples: int, seed: int = 0) -> None:
        self.noise = noise
        self.dim = int(dim)
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.dtype = torch.float64 if self.n_samples * self.dim <= 1 << 24 else torch.float32
        self._blocks: list[torch.Tensor] = []
        self._samples = torch.empty(self.n_samples, 0, dtype=self.dtype)
        if not noise.iid_coordinates:
            generator = torch.Generator().manual_seed(self.seed)
            self._samples = noise.sample(self.n_samples, (self.dim,), generator=generator, dtype=self.dtype)
        self._base: dict[tuple, torch.Tensor] = {}

    def columns(self, width: int) -> torch.Tensor:
        """The samples' first ``width`` coordinates, shape ``(n_samples, width)`` (drawn on first use)."""
        if self._samples.shape[1] < width:
            while sum(block.shape[1] for block in self._blocks) < width:
                drawn = sum(block.shape[1] for block in self._blocks)
                size = min(self.BLOCK, self.dim - drawn)
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + len(self._blocks))
                self._blocks.append(
                    self.noise.sample(self.n_samples, (size,), generator=generator, dtype=self.dtype)
                )
            self._samples = torch.cat(self._blocks, dim=1)
        return self._samples[:, :width]

    @property
    def samples(self) -> torch.Tensor:
        """All ``(n_samples, dim)`` samples."""
        return self.columns(self.dim)

    @property
    def effective_samples(self) -> int:
        """Samples behind each estimated law (twice the draws for a symmetric noise)."""
        return 2 * self.n_samples if self.noise.symmetric else self.n_samples

    def _columns(self, direction: torch.Tensor) -> slice | torch.Tensor:
        if not self.noise.iid_coordinates:
            return slice(None)
        support = torch.nonzero(direction, as_tuple=True)[0]
        if support.numel() and int(support[-1]) == support.numel() - 1:
            return slice(0, support.numel())  # a prefix: a view, no gather
        return support

    def _log_prob(self, columns: slice | torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        width = columns.stop if isinstance(columns, slice) and columns.stop is not None else self.dim
        samples = self.columns(width)
        parts = []
        for start in range(0, self.n_samples, _CHUNK_ROWS):
            block = samples[start : start + _CHUNK_ROWS, columns].double()
            parts.append(self.noise.log_prob(block if shift is None else block + shift))
        return torch.cat(parts)

    def __call__(
        self, direction: np.ndarray | torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log ρ(z), log ρ(z + δ))`` for ``δ = scale·direction``: samples of the ratio's law at x and x + δ."""
        direction = torch.as_tensor(np.asarray(direction, dtype=np.float64))
        if direction.shape != (self.dim,):
            raise ValueError(f"direction must have shape ({self.dim},), got {tuple(direction.shape)}")
        columns = self._columns(direction)
        key = (columns.start, columns.stop) if isinstance(columns, slice) else tuple(columns.tolist())
        if key not in self._base:
            self._base = {
                key: self._log_prob(columns, None)
            }  # keep one: sparse diagonals are visited in turn
        base = self._base[key]
        shift = scale * direction[columns]
        # ρ(z) = μ(z − δ)/μ(z); at x + δ the noisy point is z + δ, where ρ(z + δ) = μ(z)/μ(z + δ).
        toward, away = self._log_prob(columns, -shift) - base, base - self._log_prob(columns, shift)
        if self.noise.symmetric:
            # The mirror −z has ρ(−z) = μ(z + δ)/μ(z) = exp(−away) and ρ(−z + δ) = exp(−toward).
            return torch.cat([toward, -away]), None
        return toward, away

    def gap(self, direction, scale: float, p_a: float, p_b: float) -> float:
        """``K`` of Eq. 4 at ``δ = scale·direction``."""
        return float(boundary_gap(*self(direction, scale), p_a, p_b)[0])


@dataclass(frozen=True)
class BoundaryPoint:
    """The scale ``λ*`` putting ``λ*·u`` on the estimated boundary, with ``K`` just inside and just outside."""

    scale: float
    gap_inside: float
    gap_outside: float


def scale_to_boundary(
    ratios: ShiftedLogRatios,
    direction: np.ndarray,
    p_a: float,
    p_b: float,
    *,
    tolerance: float = 0.02,
    start: float = 1.0,
    relative_precision: float = 1e-5,
) -> BoundaryPoint:
    """UniCR's scalar phase: bisection on λ ≥ 0 for ``K(λu) = 0`` (Eq. 4), returning the last λ inside.

    ``K(0) = p_A − p_B > 0`` and K decreases with λ. The bracket is found by doubling from ``start``; bisection
    stops at ``relative_precision``. Raises :class:`UnreachableToleranceError` when neither end of the final
    bracket has ``|K| ≤ tolerance`` (reporting the best K reached).
    """
    low, high = 0.0, float(start)
    gap_low, gap_high = p_a - p_b, ratios.gap(direction, high, p_a, p_b)
    doublings = 0
    while gap_high > 0:
        low, gap_low = high, gap_high
        high *= 2.0
        gap_high = ratios.gap(direction, high, p_a, p_b)
        doublings += 1
        if doublings > 60:
            raise UnreachableToleranceError(
                f"K stays positive up to λ = {high:.3g}: the boundary is not reached"
            )
    while high - low > relative_precision * high:
        middle = 0.5 * (low + high)
        gap = ratios.gap(direction, middle, p_a, p_b)
        if gap > 0:
            low, gap_low = middle, gap
        else:
            high, gap_high = middle, gap
    best = min(abs(gap_low), abs(gap_high))
    if best > tolerance:
        raise UnreachableToleranceError(
            f"|K| = {best:.4g} at the boundary bracket [{low:.6g}, {high:.6g}] exceeds the tolerance {tolerance}; "
            "raise mc_samples or the tolerance"
        )
    return BoundaryPoint(low, gap_low, gap_high)


def boundary_scales(
    ratios: ShiftedLogRatios,
    direction: np.ndarray,
    p_as: np.ndarray,
    p_bs: np.ndarray,
    *,
    grid_size: int = 48,
) -> np.ndarray:
    """The scalar phase for many ``(p_A, p_B)`` at once: λ* for each pair (0 where ``p_A ≤ p_B``).

    The extreme pairs are solved by bisection; between them K is evaluated on a geometric grid of λ — each
    evaluation serves every pair — and each pair's crossing is interpolated linearly in log λ.
    """
    p_as, p_bs = np.asarray(p_as, dtype=np.float64), np.asarray(p_bs, dtype=np.float64)
    valid = p_as > p_bs
    scales = np.zeros_like(p_as)
    if not valid.any():
        return scales
    margins = p_as - p_bs
    smallest, largest = int(np.argmin(np.where(valid, margins, np.inf))), int(np.argmax(margins))
    # The extremes only delimit the grid: a coarse bisection suffices.
    low = scale_to_boundary(
        ratios, direction, p_as[smallest], p_bs[smallest], tolerance=1.0, relative_precision=0.02
    ).scale
    high = scale_to_boundary(
        ratios, direction, p_as[largest], p_bs[largest], tolerance=1.0, relative_precision=0.02
    ).scale
    low, high = max(low, 1e-12) / 1.5, max(high, low) * 1.5
    grid = np.geomspace(low, high, grid_size)
    gaps = np.empty((grid_size, p_as.size))
    for row, scale in enumerate(grid):
        gaps[row] = np.where(valid, boundary_gap(*ratios(direction, float(scale)), p_as, p_bs), -1.0)
    log_grid = np.log(grid)
    for j in np.flatnonzero(valid):
        column = gaps[:, j]
        outside = np.flatnonzero(column <= 0)
        if outside.size == 0:
            scales[j] = grid[-1]
            continue
        first = int(outside[0])
        if first == 0:
            scales[j] = 0.0
            continue
        g0, g1 = column[first - 1], column[first]
        weight = g0 / (g0 - g1)
        scales[j] = math.exp(log_grid[first - 1] + weight * (log_grid[first] - log_grid[first - 1]))
    return scales
