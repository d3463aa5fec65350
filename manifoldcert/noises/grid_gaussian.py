"""Gaussian smoothing that stays sound in floating point: a discretised Gaussian on the input's quantisation grid.

Why it is needed
----------------
``x + σ·randn`` is rounded to the floating-point grid, and how it is rounded depends on ``x``: near ``x = 0.5``
the sum of a float32 ``x`` and a noise ``n ≈ −x`` is exact and keeps ``x``'s coarse grid (multiples of 2⁻²⁵),
while near ``x = 0`` the noise keeps its own fine bits. A classifier that reads those bits is certified by
Cohen et al.'s theorem at a radius its own smoothed prediction breaks (``tests/test_float_soundness.py``: radius
1.906 at a point whose smoothed class flips at l2 distance 1.506, in float32 and float64). The theorem is about
exact Gaussian noise; the sampled law is not that (Voráček and Hein 2023, Sec. 3).

What is sampled
---------------
For an input on the grid ``{0, 1/L, …, 1}`` (8-bit images: ``L = 255``) the noisy input is

    x̃ = clip(round_L(x + σZ), −k, 1 + k),   Z ~ N(0, I),   k = max(1, ⌊6σ⌋)     (Voráček and Hein 2023, Sec. 5)

where ``round_L`` rounds each coordinate to the nearest multiple of ``1/L``. On the grid
``round_L(x + σZ) = x + J/L`` with ``J = round(LσZ)``: i.i.d. integers with
``P(J = j) = Φ((j + ½)/(Lσ)) − Φ((j − ½)/(Lσ))``. Whatever the classifier ``f`` computes in floating point, it is
evaluated at a deterministic function of the integers ``Lx + J``, so the smoothed score is
``E f(x̃) = E h(x + σZ)`` for the fixed function ``h(v) = f(clip(round_L(v)))``: a Gaussian smoothing in exact
arithmetic, to which Cohen et al.'s theorem applies for every ``x'`` (for which the smoothed classifier is
``E f(clip(round_L(x' + σZ)))``; on the grid, the one this noise samples).

How it is sampled
-----------------
``J`` is drawn by inverting its distribution function on the integers with integer arithmetic only: 62 random
bits per coordinate (``torch.randint(0, 2**62)``, exactly uniform because 2⁶² divides the generator's 2⁶⁴ raw
outputs) are compared with thresholds ``T_c = round(2⁶² Φ((c + ½)/(Lσ)))`` computed in 160-bit arithmetic
(mpmath). ``J`` is kept in ``[−(1 + k)L, (1 + k)L]``: the tails fold into the end values, which the clip maps to
the same noisy input as the tails themselves, so the fold is exact. The noisy input is ``fl(m / L)`` for the
integer ``m = clip(Lx + J)``: one correctly rounded division, the same value ``ToTensor`` gives a ``m``-valued pixel.

Rounding the thresholds to integers leaves the sampled law within total variation
``ε ≤ d · (2(1 + k)L + 1) · 2⁻⁶³`` of the exact discretised Gaussian; :meth:`GridGaussian.sampling_error` returns
it and the certifiers subtract it from ``p_A``'s lower bound (``P(f = A) ≥ Q(f = A) − ε``). It is ~10⁻¹² at
d = 3072, σ = 1. The only other assumption is the paper's: the generator's bits are fair coin flips.

References
----------
Voráček and Hein (2023), Sound randomized smoothing in floating-point arithmetic, ICLR.
Cohen, Rosenfeld and Kolter (2019), Certified adversarial robustness via randomized smoothing, ICML, Theorem 1.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from manifoldcert._validation import check_positive_int
from manifoldcert.noises.base import AbstractDensityFreeNoise, check_scale, resolve_dtype

#: Random bits per coordinate; 2**RANDOM_BITS divides 2**64, so ``torch.randint(0, 2**RANDOM_BITS)`` is exact.
RANDOM_BITS = 62
#: The top bits of a draw that index the bucket table of :meth:`GridGaussian._offsets` (2¹⁸ buckets, 1 MiB).
BUCKET_BITS = 18
#: Working precision (bits) of the threshold computation: far below the 2**-RANDOM_BITS rounding of a threshold.
THRESHOLD_PRECISION = 160
#: Largest distance (in grid steps) between an input value and its grid point that still counts as on the grid:
#: a float32 ``k/255`` is within 255·2⁻²⁴ ≈ 1.5·10⁻⁵ steps of ``k``.
GRID_TOLERANCE = 1e-3


def default_clip_margin(sigma: float) -> int:
    """``k = max(1, ⌊6σ⌋)``: noisy inputs are clipped to ``[−k, 1 + k]`` (Voráček and Hein's choice)."""
    return max(1, math.floor(6.0 * sigma))


@functools.lru_cache(maxsize=32)
def _thresholds(sigma: float, levels: int, half_width: int) -> tuple[int, ...]:
    """``T_c = round(2^62 Φ((j + ½)/(Lσ)))`` for ``j = −J … J − 1``: the integer CDF of ``J`` between its values."""
    import mpmath

    with mpmath.workprec(THRESHOLD_PRECISION):
        scale = mpmath.mpf(levels) * mpmath.mpf(sigma)  # σ is taken exactly as the float it is
        total = mpmath.mpf(2) ** RANDOM_BITS
        return tuple(
            int(mpmath.nint(total * mpmath.ncdf((mpmath.mpf(j) + mpmath.mpf(0.5)) / scale)))
            for j in range(-half_width, half_width)
        )


class GridGaussian(AbstractDensityFreeNoise):
    """``N(0, σ²I)`` rounded to the ``1/levels`` grid and clipped, sampled with integer arithmetic only.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian before rounding, in [0, 1] pixel units (the certificate's σ).
    levels : int
        Quantisation ``L``: inputs are multiples of ``1/L`` in [0, 1] (255 for 8-bit images; a data set's
        ``levels``). Inputs off the grid are refused.
    clip_margin : int, optional
        ``k``: noisy inputs are clipped to ``[−k, 1 + k]`` (default ``max(1, ⌊6σ⌋)``).

    Notes
    -----
    The law is discrete, so there is no density (``log_prob`` raises) and density-based certifiers do not apply;
    ``cohen`` with ``sampling="sound"`` certifies with it.
    """

    name = "grid-gaussian"
    density_note = "it is a discrete law on the input grid, with no density over perturbations"

    def __init__(self, sigma: float, *, levels: int = 255, clip_margin: int | None = None) -> None:
        self._sigma = float(check_scale(sigma, "sigma"))
        self.levels = check_positive_int(levels, "levels")
        self.clip_margin = (
            default_clip_margin(self._sigma)
            if clip_margin is None
            else check_positive_int(clip_margin, "clip_margin")
        )
        if self._sigma * self.levels < 1e-3:
            raise ValueError(
                f"sigma={self._sigma} is below 1/1000 of a grid step (1/{self.levels}): the rounded noise would be "
                "almost always 0"
            )
        #: ``J``'s values run over ``−half_width … half_width``.
        self.half_width = (1 + self.clip_margin) * self.levels
        self._table = torch.tensor(_thresholds(self._sigma, self.levels, self.half_width), dtype=torch.long)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def sigma(self) -> float:
        return self._sigma

    @property
    def num_values(self) -> int:
        """Number of values ``J`` can take: ``2(1 + k)L + 1``."""
        return 2 * self.half_width + 1

    def probabilities(self) -> torch.Tensor:
        """The sampled law of ``J``: ``P(J = j)`` for ``j = −J … J`` as exact multiples of ``2⁻⁶²`` (float64)."""
        edges = torch.cat([torch.zeros(1, dtype=torch.long), self._table, torch.full((1,), 2**RANDOM_BITS)])
        return edges.diff().double() / 2.0**RANDOM_BITS

    def sampling_error(self, dim: int) -> float:
        """Total variation between the sampled law of ``d`` coordinates and the exact discretised Gaussian.

        Each threshold is within ``2⁻⁶³`` of ``2⁶² Φ`` (plus the 160-bit computation's error), so each value's
        probability is off by at most ``2⁻⁶²`` and one coordinate's law by ``½ · num_values · 2⁻⁶²`` in total
        variation; ``d`` independent coordinates add up (a coupling argument). A 10⁻⁶ relative allowance covers
        the threshold computation.
        """
        dim = check_positive_int(dim, "dim")
        return dim * self.num_values * 2.0 ** -(RANDOM_BITS + 1) * (1.0 + 1e-6)

    def _lookup(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The thresholds on ``device`` and one code per bucket of the top :data:`BUCKET_BITS` random bits:
        ``2·i + 0`` when every draw of the bucket has index ``i`` (no threshold inside it), ``2·i + 1`` when a
        threshold falls inside (draws there are searched; ``i`` is then unused)."""
        if device not in self._tables:
            table = self._table.to(device)
            shift = RANDOM_BITS - BUCKET_BITS
            starts = torch.arange(2**BUCKET_BITS, dtype=torch.long, device=device) << shift
            first = torch.searchsorted(table, starts, right=True)
            last = torch.searchsorted(table, starts + ((1 << shift) - 1), right=True)
            self._tables[device] = (table, (2 * first + (first != last)).to(torch.int32))
        return self._tables[device]

    def _offsets(self, shape: tuple[int, ...], generator, device) -> torch.Tensor:
        """``J`` for every coordinate of ``shape``: 62 random bits each, located among the thresholds.

        The top bits pick a bucket; in the few buckets that hold a threshold (≲ 1 % of the draws for σ ≤ 1) the
        draw is located by binary search, elsewhere the bucket alone decides: the index a search of every draw
        gives, at a fraction of its cost.
        """
        bits = torch.randint(0, 2**RANDOM_BITS, shape, generator=generator, device=device, dtype=torch.long)
        return self.locate(bits)

    def locate(self, bits: torch.Tensor) -> torch.Tensor:
        """``J`` for uniform draws ``bits`` in ``[0, 2⁶²)``: the number of thresholds ``≤ bits``, minus ``J``'s half
        width (what :meth:`perturb` and :meth:`sample` apply to fresh draws)."""
        table, codes = self._lookup(bits.device)
        code = codes.take(bits >> (RANDOM_BITS - BUCKET_BITS))
        searched = (code & 1).bool()
        index = (code >> 1).long()
        index[searched] = torch.searchsorted(table, bits[searched], right=True)
        return index.sub_(self.half_width)

    def grid_indices(self, inputs: torch.Tensor) -> torch.Tensor:
        """``L·x`` as integers, or a ValueError when an input is not on the ``1/L`` grid of [0, 1]."""
        scaled = inputs.double() * self.levels
        indices = torch.round(scaled)
        if scaled.numel():
            # One host transfer for the three figures (the estimator checks once per forward batch).
            off, low, high = torch.stack(
                [(scaled - indices).abs().max(), indices.min(), indices.max()]
            ).tolist()
            if off > GRID_TOLERANCE or low < 0 or high > self.levels:
                raise ValueError(
                    f"{self.name} certifies quantised inputs: values must be multiples of 1/{self.levels} in "
                    f"[0, 1] (got values up to {off:.3g} grid steps off the grid, in [{low / self.levels:.4g}, "
                    f"{high / self.levels:.4g}]); quantise the input (torch.round(x * {self.levels}) / "
                    f"{self.levels}) or pass its own levels"
                )
        return indices.long()

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noisy inputs ``fl(clip(Lx + J) / L)`` of each row of ``inputs`` (all rows on the grid).

        Rows that are one input repeated (a stride-0 ``expand``, as the estimator passes them) are checked and
        converted once.
        """
        if not inputs.dtype.is_floating_point:
            raise TypeError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
        repeated = inputs.dim() > 0 and inputs.shape[0] > 0 and inputs.stride(0) == 0
        indices = self.grid_indices(inputs[:1] if repeated else inputs)
        noisy = self._offsets(tuple(inputs.shape), generator, inputs.device)
        noisy.add_(indices).clamp_(-self.clip_margin * self.levels, (1 + self.clip_margin) * self.levels)
        exact_dtype = inputs.dtype if inputs.dtype in (torch.float32, torch.float64) else torch.float32
        return (noisy.to(exact_dtype) / self.levels).to(inputs.dtype)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Grid perturbations ``J/L`` (before the clip, which depends on the input: :meth:`perturb` applies it)."""
        offsets = self._offsets((int(n_samples), *shape), generator, device)
        return offsets.to(resolve_dtype(dtype)) / self.levels

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sigma": self.sigma,
            "levels": self.levels,
            "clip_margin": self.clip_margin,
        }
