"""``dssn``: deterministic smoothing with splitting noise for quantised inputs (Levine and Feizi 2021, Sec. 4.1).

Inputs lie on the grid ``{0, 1/q, …, 1}`` (q = 255 for 8-bit images). The split positions are
``s_i = (s_base + v_i) mod 2λ`` (Eq. 18) with a fixed offset vector ``v`` drawn from ``offset_seed`` and a single
scalar ``s_base`` uniform on the ``2λq`` half-steps of ``[0, 2λ)`` (Eq. 17). Each ``s_i`` is then uniform on its
grid (Eq. 13), so the smoothed scores ``p_c(x) = E[1{f(x̃) = c}]`` are ``1/(2λ)``-Lipschitz in l1 on the grid
(Corollary 1, general case Eq. 27–28) — and they are computed *exactly*, by evaluating the base classifier on all
``2λq`` noisy inputs.

The smoothed classifier predicts ``argmax_c p_c(x)``, ties going to the lowest class index; its prediction is
constant on ``{x' on the grid : ‖x' − x‖₁ < λ(p_A − p_B)}`` with ``p_B`` the largest other score
(``radius="strict"``, the default). ``radius="grid-inclusive"`` certifies instead, as the reference code of Levine
and Feizi does, ``{x' on the grid : ‖x' − x‖₁ ≤ ⌊(c_A − c_B − [idx_B < idx_A])/2⌋ / q}`` with ``c`` the vote counts
out of ``2λq`` and ``idx_B`` the (lowest) index of the runner-up: never smaller, one grid step larger when
``c_A − c_B`` is even and the runner-up's index is above the top class's (proof in docs/methods/dssn.md). No
sampling, no confidence level: ``exact=True``, ``p_lower=None``. ``λ`` is rounded down so that ``2λq`` is an integer;
the λ used is reported in ``params["lambda"]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from manifoldcert.certificate import NORMS, Certificate, implied_radius
from manifoldcert.certifiers.base import (
    DEFAULT_ALPHA,
    DEFAULT_N,
    DEFAULT_N0,
    AbstractCertifier,
    check_probability,
    lipschitz_l1_radius,
)
from manifoldcert.noises import DerandomizedSplittingNoise

#: ``radius=`` options of :class:`DSSN`.
RADIUS_RULES = ("strict", "grid-inclusive")


class DSSN(AbstractCertifier):
    """Deterministic l1 certificates with splitting noise.

    Parameters
    ----------
    model : nn.Module or None
    sigma, lambda_ : float
        Give one (``sigma = λ/√3``); λ is rounded down to a multiple of ``1/(2q)``.
    levels : int
        ``q``, the number of quantisation steps of the inputs.
    offset_seed : int or None
        Seed of the offset vector ``v``: the one the model was trained with (its checkpoint records it). Not given
        when ``offsets`` is an explicit vector.
    offsets : {"torch", "numpy-randomstate"} or sequence of int
        How ``v`` comes from the seed: ``"torch"`` (this library's training), ``"numpy-randomstate"`` (the reference
        implementation's ``numpy.random.RandomState(seed).randint(2λq, size=d)``), or the integer steps of ``v``
        themselves (length ``d``, values in ``{0, …, 2λq − 1}``); see
        :class:`~manifoldcert.noises.DerandomizedSplittingNoise`.
    radius : {"strict", "grid-inclusive"}
        ``"strict"`` (default): ``‖δ‖₁ < λ(p_A − p_B)`` (Corollary 1). ``"grid-inclusive"``: grid perturbations with
        ``‖δ‖₁ ≤ ⌊(c_A − c_B − [idx_B < idx_A])/2⌋ / q`` (the reference code's certificate); the reported
        ``radius["l1"]`` is then that value and the ball is *closed* on the grid. Recorded in
        ``params["radius_rule"]``.
    **options
        ``batch_size``, ``num_classes``, ``input_shape`` as for every certifier.
    """

    name = "dssn"
    native_norm = "l1"
    requires_unit_range = True
    extra_columns = ("lambda", "levels", "offset_seed", "offsets", "radius_rule")

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float | None = None,
        lambda_: float | None = None,
        levels: int = 255,
        offset_seed: int | None = None,
        offsets: str | Sequence[int] | torch.Tensor = "torch",
        radius: str = "strict",
        **options: Any,
    ) -> None:
        if offset_seed is None and isinstance(offsets, str):
            raise ValueError(
                "dssn needs offset_seed, the seed of the offset vector the model was trained with (a checkpoint "
                "trained with the derandomized-splitting noise records it), or an explicit offsets vector"
            )
        if radius not in RADIUS_RULES:
            raise ValueError(f"radius must be one of {RADIUS_RULES}, got {radius!r}")
        super().__init__(model, **options)
        self.radius_rule = radius
        # Built once to validate λ, q, the seed and the offsets now (for a nominal dimension unless the offsets are
        # explicit, which fix it); rebuilt per input size below.
        self._noise = DerandomizedSplittingNoise(
            sigma,
            lambda_=lambda_,
            levels=levels,
            offset_seed=offset_seed,
            offsets=offsets,
            dim=1 if isinstance(offsets, str) else len(offsets),
        )
        self._noises: dict[int, DerandomizedSplittingNoise] = {}

    @property
    def lambda_(self) -> float:
        """The λ actually used (``⌊2λq⌋ / (2q)``)."""
        return self._noise.lambda_

    @property
    def levels(self) -> int:
        """``q``: inputs lie on the grid ``{0, 1/q, …, 1}`` (255 for 8-bit images)."""
        return self._noise.levels

    def noise_for(self, x: torch.Tensor) -> DerandomizedSplittingNoise:
        dim = x.numel()
        if self._noise.offset_convention == "explicit":
            if dim != self._noise.dim:
                raise ValueError(
                    f"the explicit offsets vector has {self._noise.dim} entries but the input has {dim} coordinates"
                )
            return self._noise
        if dim not in self._noises:
            self._noises[dim] = DerandomizedSplittingNoise(
                lambda_=self.lambda_,
                levels=self.levels,
                offset_seed=self._noise.offset_seed,
                offsets=self._noise.offset_convention,
                dim=dim,
            )
        return self._noises[dim]

    def params(self) -> dict[str, Any]:
        """What the TSV's method columns record: the noise, σ, the λ used, ``q``, the offset seed and convention,
        and the radius rule.
        """
        return {
            "noise": self._noise.name,
            "sigma": self._noise.sigma,
            "lambda": self.lambda_,
            "levels": self.levels,
            "offset_seed": self._noise.offset_seed,
            "offsets": self._noise.offset_convention,
            "radius_rule": self.radius_rule,
        }

    def radius_for(
        self,
        p_a: float,
        p_b: float | None = None,
        *,
        norm: str | None = None,
        dim: int | None = None,
        runner_up_below: bool = True,
    ) -> float:
        """The l1 radius for scores ``p_A``, ``p_B`` (``p_B = 1 − p_A`` when omitted); other norms implied.

        ``"strict"``: ``λ(p_A − p_B)``, 0 when ``p_A <= p_B``. ``"grid-inclusive"``: ``⌊(c_A − c_B − t)/2⌋ / q``
        with ``c = p·2λq`` rounded to the nearest count and ``t = runner_up_below`` (whether the runner-up's class
        index is below the top class's; the safe ``True`` unless known), 0 when negative.
        """
        p_a = check_probability(p_a, "p_a")
        p_b = 1.0 - p_a if p_b is None else check_probability(p_b, "p_b")
        if self.radius_rule == "grid-inclusive":
            m = self._noise.num_splits
            radius = grid_inclusive_steps(round(p_a * m), round(p_b * m), bool(runner_up_below)) / self.levels
        else:
            radius = max(0.0, lipschitz_l1_radius(self.lambda_, p_a, p_b))
        return implied_radius(radius, certified_norm="l1", norm=norm or "l1", dim=dim)

    def scores(self, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """The exact smoothed class scores ``p_c(x)`` (float64, sums to 1)."""
        estimator = self.require_estimator()
        x = self._check_x(x)
        noise = self.noise_for(x)
        counts = estimator.exact_class_counts(x, noise, batch_size=batch_size)
        return counts.double() / noise.support_size

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = DEFAULT_N0,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """Certify ``x`` exactly; ``n0``, ``n``, ``alpha`` and ``generator`` are accepted and ignored."""
        start = time.perf_counter()
        estimator = self.require_estimator()
        x = self._check_x(x)
        noise = self.noise_for(x)
        counts = estimator.exact_class_counts(x, noise, batch_size=batch_size)
        top_class = int(torch.argmax(counts))  # the first maximum: ties go to the lowest class index
        others = torch.cat([counts[:top_class], counts[top_class + 1 :]])
        runner_up = int(others.max()) if others.numel() else 0
        if self.radius_rule == "grid-inclusive":
            # idx_B: the lowest index among the runners-up; below idx_A iff some class < A has the runner-up count.
            below = bool((counts[:top_class] == runner_up).any()) if others.numel() else False
            l1 = grid_inclusive_steps(int(counts[top_class]), runner_up, below) / self.levels
        else:
            l1 = self.lambda_ * (int(counts[top_class]) - runner_up) / noise.support_size
        return Certificate(
            prediction=top_class,
            radius={
                norm: implied_radius(l1, certified_norm="l1", norm=norm, dim=x.numel()) for norm in NORMS
            },
            p_lower=None,
            method=self.name,
            n0=0,
            n=noise.support_size,
            alpha=0.0,
            seconds=time.perf_counter() - start,
            exact=True,
            params=self.params(),
        )

    def predict(self, x: torch.Tensor, **_: Any) -> int:
        """The smoothed class (exact; never abstains)."""
        return int(torch.argmax(self.scores(x)))


def grid_inclusive_steps(count_a: int, count_b: int, runner_up_below: bool) -> int:
    """``⌊(c_A − c_B − [idx_B < idx_A]) / 2⌋`` grid steps, at least 0: the reference code's DSSN certificate.

    Every grid point within that many l1 steps of ``x`` (inclusive) keeps the smoothed prediction: one grid step of
    one coordinate changes the noisy input for exactly one of the ``2λq`` split indices, so ``r`` steps move each
    count by at most ``r`` and ``c_A − c_C`` by at most ``2r`` (Levine and Feizi 2021, Sec. 4.1; proof sketch in
    docs/methods/dssn.md).

    Parameters
    ----------
    count_a, count_b : int
        Votes of the top class and of the runner-up, out of ``2λq``.
    runner_up_below : bool
        Whether a runner-up (a class other than A with ``count_b`` votes) has a lower index than A, which would win
        a tie.
    """
    return max(0, (count_a - count_b - int(runner_up_below)) // 2)


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Round ``x`` (values in [0, 1]) to the nearest multiple of ``1/levels``."""
    return torch.round(x.clamp(0, 1) * levels) / levels


__all__ = ["DSSN", "RADIUS_RULES", "grid_inclusive_steps", "quantize"]
