"""``functional``: Zhang et al.'s functional-optimisation certificate for the ‖z‖^-k noise families.

The smoothed top-class probability at ``x + δ`` is bounded below by the λ-dual of Theorem 1 (Eq. 6) with the
worst-case shift of Theorems 2 and 3; the bound depends on ``p_A``, the noise and the dimension only, so it is
computed from noise samples once per (noise, d) and then looked up (:mod:`.functional_bound`).

Supported noises and the norm each certifies: ``zhang-l2`` and ``gaussian`` (l2, Theorem 2 / Eq. 8),
``zhang-l1`` and ``laplace`` (l1, Theorem 2 / Eq. 7), ``zhang-mixed`` (l∞, Theorem 3), ``zhang-linf`` (l∞ with the
vertex shift; no theorem, ``guaranteed=False``). Radii in the other norms follow from norm inequalities; for the
l2 family against l∞ that conversion (``R₂/√d``) is exactly Proposition 4.

Confidence budget: ``certify(alpha=α)`` spends ``mc_alpha`` on the Monte Carlo estimate of the discrepancy term
(a DKW margin uniform over λ and over the radius grid) and ``α − mc_alpha`` on the Clopper–Pearson bound of
``p_A``; by the union bound a certificate is wrong with probability at most ``α``.

Reference: Zhang, Ye, Gong, Zhu and Liu (2020), Black-box certification with randomized smoothing: a functional
optimization based framework, NeurIPS.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from manifoldcert._validation import check_alpha, check_name, check_positive_int
from manifoldcert.certificate import NORMS
from manifoldcert.certifiers.base import DEFAULT_ALPHA, SmoothingCertifier, check_probability
from manifoldcert.certifiers.functional_bound import (
    CERTIFIED_NORM,
    SHIFTS,
    FunctionalBoundTable,
    worst_case_shift,
)
from manifoldcert.noises import AbstractNoise
from manifoldcert.noises import get as get_noise

#: Default share of the confidence budget spent on the Monte Carlo discrepancy term.
DEFAULT_MC_ALPHA = DEFAULT_ALPHA / 2


class Functional(SmoothingCertifier):
    """The functional-optimisation bound (Zhang et al. 2020) for a ‖z‖^-k noise, Gaussian or Laplace.

    Parameters
    ----------
    model : nn.Module or None
        Base classifier; ``None`` for :meth:`radius_for` queries only (then give ``input_shape``).
    noise : AbstractNoise or str
        The smoothing noise, or its registry name built with ``sigma``, ``scale`` and ``k``.
    sigma, scale, k : float, optional
        Parameters when ``noise`` is a name (``k`` only for the ``zhang-*`` families).
    mc_samples : int
        Samples of the noise for the discrepancy term (no forward passes; drawn once per input dimension).
    mc_alpha : float
        Confidence spent on the Monte Carlo term; ``certify`` needs ``alpha > mc_alpha``.
    grid_size : int
        Radii on the certification grid (the reported radius is a grid point; neighbours differ by
        ``10^(8/grid_size)``, 0.03 % at the default).
    **options
        ``batch_size``, ``num_classes``, ``input_shape``, ``seed``, ``soft`` as for every certifier.
    """

    name = "functional"
    native_norm = "l2"
    extra_columns = ("noise", "k", "smoothing")

    def __init__(
        self,
        model: nn.Module | None,
        *,
        noise: AbstractNoise | str = "zhang-l2",
        sigma: float | None = None,
        scale: float | None = None,
        k: float | None = None,
        mc_samples: int = 1_000_000,
        mc_alpha: float = DEFAULT_MC_ALPHA,
        grid_size: int = 1 << 16,
        **options: Any,
    ) -> None:
        noise = _build_noise(noise, sigma=sigma, scale=scale, k=k)
        if noise.name not in SHIFTS:
            raise ValueError(f"functional certifies the noises {sorted(SHIFTS)}, not {noise.name!r}")
        super().__init__(model, noise, **options)
        self.native_norm = CERTIFIED_NORM[noise.name]
        self.mc_samples = check_positive_int(mc_samples, "mc_samples")
        self.mc_alpha = check_alpha(mc_alpha, "mc_alpha")
        self.grid_size = check_positive_int(grid_size, "grid_size")
        self._tables: dict[int, FunctionalBoundTable] = {}
        self._last_dim: int | None = None  # σ of a noise built from its scale depends on d
        if self.input_shape is not None:
            worst_case_shift(noise, math.prod(self.input_shape))  # validates k against the dimension early

    @property
    def guaranteed(self) -> bool:
        return SHIFTS[self.noise.name].proven

    @property
    def sigma(self) -> float:
        """The noise's RMS per coordinate; for a ``‖z‖^-k`` family whose σ depends on ``d`` (Zhang et al. 2020,
        Eq. 10–13), at the input dimension when it is known (``input_shape``, or the last input certified).
        """
        dim = math.prod(self.input_shape) if self.input_shape is not None else self._last_dim
        if dim is not None and hasattr(self.noise, "sigma_for"):
            return float(self.noise.sigma_for(dim))
        return self.noise.sigma

    def params(self) -> dict[str, Any]:
        return {**super().params(), "k": float(getattr(self.noise, "k", 0.0))}

    def table(self, dim: int) -> FunctionalBoundTable:
        """The Monte Carlo table of thresholds for inputs of dimension ``dim`` (built on first use)."""
        if dim not in self._tables:
            generator = torch.Generator().manual_seed(self.seed + 7919 * dim)
            self._tables[dim] = FunctionalBoundTable(
                self.noise, dim, n_samples=self.mc_samples, grid_size=self.grid_size, generator=generator
            )
        return self._tables[dim]

    def _probability_alpha(self, alpha: float) -> float:
        if alpha <= self.mc_alpha:
            raise ValueError(
                f"alpha ({alpha}) must exceed mc_alpha ({self.mc_alpha}), the part spent on the Monte Carlo term"
            )
        return alpha - self.mc_alpha

    def certify(self, x: torch.Tensor, *, runner_up: bool = False, **options: Any):
        if runner_up:
            raise ValueError("the functional bound constrains p_A only; runner_up=True is not available")
        self._last_dim = x.numel()
        return super().certify(x, **options)

    def _native_radius(self, p_a: float, p_b: float) -> float:  # pragma: no cover - radius_for is overridden
        raise NotImplementedError

    def radius_for(
        self,
        p_a: float,
        p_b: float | None = None,
        *,
        norm: str | None = None,
        dim: int | None = None,
        estimate: bool = False,
    ) -> float:
        """Certified radius for a top-class probability (or its lower confidence bound) ``p_a``.

        Parameters
        ----------
        p_a : float
            (Lower bound of) the top-class probability.
        p_b : None
            Not used by this bound (``F_[0,1]`` constrains ``p_A`` only); a value is refused.
        norm : str, optional
            The norm of the answer; the family's certified norm when omitted.
        dim : int, optional
            Input dimension; taken from ``input_shape`` when omitted.
        estimate : bool
            True returns the Monte Carlo point estimate of the bound (no confidence margin; not a guarantee),
            False the radius that holds with probability ``>= 1 − mc_alpha`` over the noise samples.
        """
        if p_b is not None:
            raise ValueError("the functional bound uses p_A only; call radius_for(p_a)")
        norm = self.native_norm if norm is None else check_name(norm, NORMS, "norm")
        p_a = check_probability(p_a, "p_a")
        dim = self._resolve_dim(dim)
        if p_a <= 0.5:
            return 0.0
        table = self.table(dim)
        radius = table.radius(p_a, 0.0 if estimate else table.margin(self.mc_alpha))
        return self.convert_radius(radius, norm, dim)


def _build_noise(
    noise: AbstractNoise | str, *, sigma: float | None, scale: float | None, k: float | None
) -> AbstractNoise:
    if isinstance(noise, AbstractNoise):
        if sigma is not None or scale is not None or k is not None:
            raise ValueError("give sigma, scale and k only together with a noise name")
        return noise
    params: dict[str, Any] = {"sigma": sigma}
    if scale is not None:
        params["scale"] = scale
    if k is not None:
        params["k"] = k
    if sigma is None and scale is None:
        params["sigma"] = 0.25
    return get_noise(noise, **params)
