"""``cohen``: isotropic Gaussian smoothing certified in l2 (Cohen, Rosenfeld and Kolter 2019, Theorem 1).

With ``p_A`` and ``p_B`` the radius is ``R₂ = σ/2 · (Φ⁻¹(p_A) − Φ⁻¹(p_B))``; with ``p_B = 1 − p_A`` it is
``σ Φ⁻¹(p_A)``. The same certificate covers the l1 ball of radius ``R₂`` and the l∞ ball of radius ``R₂/√d``.

``sampling="sound"`` draws the noise as a Gaussian rounded to the input's quantisation grid with integer
arithmetic (:class:`~manifoldcert.noises.GridGaussian`, Voráček and Hein 2023), for which the theorem holds in
floating point; the default ``"float"`` adds ``σ·randn`` in floating point, which a classifier can exploit
(docs/conventions.md, "What guaranteed means in floating point").
"""

from __future__ import annotations

from typing import Any

from scipy.stats import norm as standard_normal
from torch import nn

from manifoldcert._validation import check_name
from manifoldcert.certifiers.base import SmoothingCertifier
from manifoldcert.noises import Gaussian, GridGaussian

#: ``Cohen(sampling=...)``: floating-point ``x + σ·randn``, or the grid sampler sound in floating point.
SAMPLINGS = ("float", "sound")


class Cohen(SmoothingCertifier):
    """Gaussian randomized smoothing ``N(0, σ²I)``; ``sigma`` in pixel units.

    Parameters
    ----------
    model : nn.Module or None
        Base classifier.
    sigma : float
        Noise level in [0, 1] pixel units.
    sampling : {"float", "sound"}
        ``"sound"``: inputs must be multiples of ``1/levels`` in [0, 1]; noisy inputs are rounded to that grid and
        clipped (:class:`~manifoldcert.noises.GridGaussian`), and the certificate holds in floating point.
    levels : int
        The quantisation of the inputs for ``sampling="sound"`` (255 for 8-bit images, a data set's ``levels``).
    **options
        Those of :class:`~manifoldcert.certifiers.base.SmoothingCertifier` (``soft``, ``batch_size``, ``seed``, …).
    """

    name = "cohen"
    native_norm = "l2"

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float = 0.25,
        sampling: str = "float",
        levels: int = 255,
        **options: Any,
    ) -> None:
        self.sampling = check_name(sampling, SAMPLINGS, "sampling")
        noise = Gaussian(sigma) if self.sampling == "float" else GridGaussian(sigma, levels=levels)
        super().__init__(model, noise, **options)
        if self.sampling == "sound" and self.input_range != (0.0, 1.0):
            raise ValueError(
                "sampling='sound' rounds noisy inputs to the grid of [0, 1]: input_range must be (0, 1)"
            )

    def params(self) -> dict[str, Any]:
        """The smoothing parameters, with the grid ``levels`` of the sound sampling."""
        params = super().params()
        if self.sampling == "sound":
            noise = self.noise
            assert isinstance(noise, GridGaussian)  # sampling="sound" builds a GridGaussian
            params["levels"] = noise.levels
        return params

    def _native_radius(self, p_a: float, p_b: float) -> float:
        return 0.5 * self.sigma * float(standard_normal.ppf(p_a) - standard_normal.ppf(p_b))
