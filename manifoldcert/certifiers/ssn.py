"""``ssn``: smoothing with splitting noise, independent random splits (Levine and Feizi 2021, Theorem 2).

Each pixel is replaced by the centre of its piece of [0, 1] after cuts at ``s_i + 2λn`` with independent
``s_i ~ U(0, 2λ)`` (Eq. 27–28). The smoothed scores are ``1/(2λ)``-Lipschitz in l1, so with Cohen et al.'s
Monte Carlo protocol the radius is ``λ(p_A − p_B)``, ``2λ(p_A − 1/2)`` with ``p_B = 1 − p_A``. ``σ = λ/√3``
matches the uniform additive noise with the same λ. Inputs must lie in [0, 1].
"""

from __future__ import annotations

from typing import Any

from torch import nn

from manifoldcert.certifiers.base import SmoothingCertifier, lipschitz_l1_radius
from manifoldcert.noises import SplittingNoise


class SSN(SmoothingCertifier):
    """Randomised splitting-noise smoothing; give ``sigma`` (= λ/√3) or ``lambda_``."""

    name = "ssn"
    native_norm = "l1"
    requires_unit_range = True
    noise: SplittingNoise

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float | None = None,
        lambda_: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, SplittingNoise(sigma, lambda_=lambda_), **options)

    def _native_radius(self, p_a: float, p_b: float) -> float:
        return lipschitz_l1_radius(self.noise.lambda_, p_a, p_b)
