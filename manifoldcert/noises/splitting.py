"""Splitting noise (Levine and Feizi 2021): randomly split [0, 1] and replace each pixel by the centre of its piece.

For each coordinate a split position ``s_i ∈ [0, 2λ)`` cuts [0, 1] at ``s_i + 2λn`` (n ∈ ℕ); the noisy value is
the centre of the piece that holds ``x_i`` (Eq. 27–28, general case, every λ > 0):

    x̃_i = ( min(2λ⌈(x_i − s_i)/(2λ)⌉ + s_i, 1) + max(2λ(⌈(x_i − s_i)/(2λ)⌉ − 1) + s_i, 0) ) / 2,

which for λ ≥ 1/2 reduces to Eq. 7, ``x̃_i = (min(s_i, 1) + 1{x_i > s_i}) / 2``. Whatever the joint law of
``s``, as long as each ``s_i`` is uniform, ``p(x) = E_s[f(x̃)]`` is ``1/(2λ)``-Lipschitz in l1 (Theorem 2).

- :class:`SplittingNoise` (``splitting``, SSN): independent ``s_i ~ U(0, 2λ)``, for Monte Carlo certification.
- :class:`DerandomizedSplittingNoise` (``derandomized-splitting``, DSSN, Sec. 4.1): inputs on the grid
  ``{0, 1/q, …, 1}``, ``2λ`` rounded down to a multiple of ``1/q``, ``s_i = (s_base + v_i) mod 2λ`` with one scalar
  ``s_base`` on the half-step grid (Eq. 17–18) and a fixed offset vector ``v`` drawn from ``offset_seed``. Its
  support has ``2λq`` points, so the smoothed scores are computed exactly.

Splitting noise is not additive: ``sample`` returns split positions, ``perturb`` maps inputs to ``x̃``, and there is
no density over additive perturbations (``log_prob`` raises). ``sigma = λ/√3`` is the σ of the uniform additive
noise with the same λ, the correspondence the paper uses to compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from manifoldcert._validation import check_positive_int
from manifoldcert.noises.base import (
    AbstractDensityFreeNoise,
    AbstractFiniteNoise,
    resolve_dtype,
    sigma_or_scale,
)

#: Ways of drawing DSSN's offset vector from its seed (see :class:`DerandomizedSplittingNoise`).
OFFSET_CONVENTIONS = ("torch", "numpy-randomstate")


def _check_offset_vector(offsets: Sequence[int] | torch.Tensor, dim: int, num_splits: int) -> torch.Tensor:
    """An explicit offset vector as a long tensor of ``dim`` steps in ``{0, …, num_splits − 1}``, or a ValueError."""
    if isinstance(offsets, torch.Tensor):
        if offsets.dtype.is_floating_point or offsets.dtype.is_complex or offsets.dtype == torch.bool:
            raise ValueError(
                f"an explicit offsets vector must hold integers (grid steps), got dtype {offsets.dtype}"
            )
        values = offsets.detach().cpu()
    elif isinstance(offsets, np.ndarray):
        if offsets.dtype.kind not in "iu":
            raise ValueError(
                f"an explicit offsets vector must hold integers (grid steps), got dtype {offsets.dtype}"
            )
        values = torch.as_tensor(offsets.astype(np.int64))
    else:
        items = list(offsets)
        bad = [v for v in items if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if bad:
            raise ValueError(f"an explicit offsets vector must hold integers (grid steps), got {bad[0]!r}")
        values = torch.tensor([int(v) for v in items], dtype=torch.long)
    values = values.to(torch.long).reshape(-1)
    if values.numel() != dim:
        raise ValueError(
            f"the offsets vector has {values.numel()} entries but the input has {dim} coordinates"
        )
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_splits):
        raise ValueError(
            f"offsets must be integer steps in {{0, …, 2λq − 1}} = {{0, …, {num_splits - 1}}}, got values in "
            f"[{int(values.min())}, {int(values.max())}]"
        )
    return values.clone()


def split_centers(inputs: torch.Tensor, splits: torch.Tensor, two_lambda: float) -> torch.Tensor:
    """Eq. 27–28: the centre of the piece of [0, 1] holding each input when [0, 1] is cut at ``splits + 2λn``.

    Parameters
    ----------
    inputs : Tensor, values in [0, 1]
    splits : Tensor, broadcastable to ``inputs``, values in [0, 2λ)
    two_lambda : float
        ``2λ``, the period of the cuts.
    """
    periods = torch.ceil((inputs - splits) / two_lambda)
    upper = torch.clamp(two_lambda * periods + splits, max=1.0)
    lower = torch.clamp(two_lambda * (periods - 1) + splits, min=0.0)
    return (upper + lower) / 2


class _SplittingBase(AbstractDensityFreeNoise):
    density_note = (
        "splitting noise is not additive, it has no density over perturbations (use the uniform noise for "
        "density-based methods)"
    )


class SplittingNoise(_SplittingBase):
    """SSN: independent split positions ``s_i ~ U(0, 2λ)``; give ``sigma = λ/√3`` or ``lambda_``."""

    name = "splitting"

    def __init__(self, sigma: float | None = None, *, lambda_: float | None = None) -> None:
        self.lambda_ = float(sigma_or_scale(sigma, lambda_, "lambda_", 1.0 / math.sqrt(3.0)))
        self._sigma = None if sigma is None else float(sigma)

    @property
    def sigma(self) -> float:
        return self._sigma if self._sigma is not None else self.lambda_ / math.sqrt(3.0)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        u = torch.rand((n_samples, *shape), generator=generator, device=device, dtype=resolve_dtype(dtype))
        return u * (2.0 * self.lambda_)

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        splits = self.sample(
            inputs.shape[0], inputs.shape[1:], generator=generator, device=inputs.device, dtype=inputs.dtype
        )
        return split_centers(inputs, splits, 2.0 * self.lambda_)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class DerandomizedSplittingNoise(_SplittingBase, AbstractFiniteNoise):
    """DSSN's splitting noise on quantised inputs, with a fixed offset vector.

    Parameters
    ----------
    sigma, lambda_ : float
        Give one (``sigma = λ/√3``). λ is rounded down so that ``2λq`` is an integer (the paper's
        ``λ' = ⌊2λq⌋/(2q)``); :attr:`lambda_` is the value used, :attr:`requested_lambda` the one asked for.
    levels : int
        ``q``: inputs must be multiples of ``1/q`` in [0, 1] (255 for 8-bit images).
    offset_seed : int or None
        Seed of the offset vector ``v``; store it with the model (training and certification must share it).
        Not needed (and refused) when ``offsets`` is an explicit vector.
    offsets : {"torch", "numpy-randomstate"} or sequence of int
        How ``v`` is drawn from ``offset_seed``. ``"torch"`` (default): ``torch.randint(0, 2λq, (dim,))`` from a
        ``torch.Generator`` seeded with ``offset_seed``. ``"numpy-randomstate"``: the convention of Levine and
        Feizi's reference code, ``numpy.random.RandomState(offset_seed).randint(2λq, size=dim)`` (integers in
        ``{0, …, 2λq − 1}``, one per coordinate of the flattened input), so that a model trained with the reference
        implementation can be certified here. Or the integer steps ``j_i`` themselves (``v_i = j_i/q``): a
        sequence or integer tensor of length ``dim`` with values in ``{0, …, 2λq − 1}``. Any of these keeps each
        ``s_i`` uniform over ``s_base`` (Eq. 13), which is all the certificate needs.
    dim : int
        Number of input coordinates; ``v`` has one entry per coordinate, in row-major (``flatten``) order.
    """

    name = "derandomized-splitting"

    def __init__(
        self,
        sigma: float | None = None,
        *,
        lambda_: float | None = None,
        levels: int = 255,
        offset_seed: int | None = None,
        offsets: str | Sequence[int] | torch.Tensor = "torch",
        dim: int,
    ) -> None:
        self.levels = check_positive_int(levels, "levels")
        self.dim = check_positive_int(dim, "dim")
        explicit = not isinstance(offsets, str)
        if not explicit and offsets not in OFFSET_CONVENTIONS:
            raise ValueError(
                f"offsets must be one of {OFFSET_CONVENTIONS} or an explicit vector of integer steps, got {offsets!r}"
            )
        if explicit:
            if offset_seed is not None:
                raise ValueError("give either offset_seed or an explicit offsets vector, not both")
        elif isinstance(offset_seed, bool) or not isinstance(offset_seed, int):
            raise ValueError(f"offset_seed must be an integer, got {offset_seed!r}")
        elif offsets == "numpy-randomstate" and not 0 <= offset_seed < 2**32:
            raise ValueError(
                f"numpy's RandomState takes seeds in [0, 2**32 - 1], got offset_seed = {offset_seed}"
            )
        self.offset_seed = offset_seed
        #: ``"torch"``, ``"numpy-randomstate"`` or ``"explicit"``.
        self.offset_convention = "explicit" if explicit else offsets
        self.requested_lambda = float(sigma_or_scale(sigma, lambda_, "lambda_", 1.0 / math.sqrt(3.0)))
        #: ``2λq``: the number of split positions, i.e. of noisy inputs in the support.
        self.num_splits = math.floor(2.0 * self.requested_lambda * self.levels + 1e-9)
        if self.num_splits < 1:
            raise ValueError(
                f"λ = {self.requested_lambda:.4g} is below 1/(2q) = {1 / (2 * self.levels):.4g}: no split position "
                f"is left on the grid of q = {self.levels} levels"
            )
        self.lambda_ = self.num_splits / (2.0 * self.levels)
        # v_i = j_i / q with j_i in {0, …, 2λq − 1}; kept as the integers j_i.
        if not isinstance(offsets, str):  # explicit
            self.offset_steps = _check_offset_vector(offsets, self.dim, self.num_splits)
        elif offsets == "numpy-randomstate":
            draw = np.random.RandomState(offset_seed).randint(self.num_splits, size=self.dim)
            self.offset_steps = torch.as_tensor(draw.astype(np.int64))
        else:
            assert offset_seed is not None  # checked above for a named convention
            generator = torch.Generator().manual_seed(offset_seed)
            self.offset_steps = torch.randint(0, self.num_splits, (self.dim,), generator=generator)

    @property
    def sigma(self) -> float:
        return self.lambda_ / math.sqrt(3.0)

    @property
    def support_size(self) -> int:
        return self.num_splits

    def check_quantized(self, inputs: torch.Tensor) -> torch.Tensor:
        """The integer grid indices ``a = x·q`` of ``inputs``; a clear error for values off the grid."""
        if inputs[0].numel() != self.dim:
            raise ValueError(
                f"this noise's offset vector has {self.dim} entries but the input has {inputs[0].numel()} "
                "coordinates (was the model trained on inputs of another size?)"
            )
        scaled = inputs * self.levels
        steps = torch.round(scaled)
        if (
            bool(((scaled - steps).abs() > 1e-3).any())
            or bool((steps < 0).any())
            or bool((steps > self.levels).any())
        ):
            raise ValueError(
                f"DSSN needs inputs on the grid {{0, 1/q, …, 1}} with q = {self.levels}; got values off it "
                "(quantise the input, or pass the right number of levels)"
            )
        return steps.to(torch.long)

    def _centers(self, steps: torch.Tensor, base_indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Noisy inputs for grid indices ``steps`` (batch, *shape) and split indices ``base_indices`` (batch,).

        With ``M = 2λq`` and half-step split ``s_i = (2m_i + 1)/(2q)``, ``m_i = (k + j_i) mod M`` (Eq. 18), the
        ceiling of Eq. 27 is an integer ratio, ``⌈(2a_i − 2m_i − 1)/(2M)⌉``, computed exactly: its numerator is
        odd, so no input ever sits on a cut.
        """
        flat = steps.flatten(1)
        offsets = self.offset_steps.to(flat.device)
        m = (base_indices.to(flat.device).unsqueeze(1) + offsets.unsqueeze(0)) % self.num_splits
        numerator = 2 * flat - 2 * m - 1
        periods = -torch.div(-numerator, 2 * self.num_splits, rounding_mode="floor")  # exact integer ceiling
        scale = 1.0 / (2 * self.levels)
        upper = ((2 * self.num_splits * periods + 2 * m + 1).to(dtype) * scale).clamp_(max=1.0)
        lower = ((2 * self.num_splits * (periods - 1) + 2 * m + 1).to(dtype) * scale).clamp_(min=0.0)
        return ((upper + lower) / 2).reshape(steps.shape)

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Split positions ``s`` (n_samples, *shape): one random ``s_base`` per sample, shifted by ``v``."""
        base = torch.randint(0, self.num_splits, (n_samples, 1), generator=generator, device=device)
        m = (base + self.offset_steps.to(base.device).unsqueeze(0)) % self.num_splits
        return ((2 * m + 1).to(resolve_dtype(dtype)) / (2 * self.levels)).reshape(n_samples, *shape)

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random ``s_base`` per row (training and Monte Carlo use)."""
        steps = self.check_quantized(inputs)
        base = torch.randint(
            0, self.num_splits, (inputs.shape[0],), generator=generator, device=inputs.device
        )
        return self._centers(steps, base, inputs.dtype)

    def support(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The noisy inputs for ``s_base`` indices ``start … stop − 1`` (each of probability ``1/(2λq)``)."""
        steps = self.check_quantized(x.unsqueeze(0))
        base = torch.arange(start, stop, device=x.device)
        return self._centers(steps.expand(stop - start, *x.shape), base, x.dtype)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": self.name,
            "lambda_": self.lambda_,
            "levels": self.levels,
            "offset_seed": self.offset_seed,
            "dim": self.dim,
        }
        if self.offset_convention == "explicit":
            config["offsets"] = [int(j) for j in self.offset_steps]
        elif self.offset_convention != "torch":  # the default is left out: older checkpoints read the same
            config["offsets"] = self.offset_convention
        return config
