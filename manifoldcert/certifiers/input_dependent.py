"""``input-dependent``: a sound certificate for Gaussian smoothing with input-dependent scale ``σ(x)``.

The smoothed classifier is ``g(x) = argmax_c P(f(x + σ(x)ε) = c)``, ε ~ N(0, I). Moving from ``x₀`` to ``x₁``
changes both the mean and the scale of the noise, so Cohen et al.'s radius ``σ(x₀)Φ⁻¹(p_A)`` does not apply
(docs/methods/input-dependent.md shows it failing). Following Súkeník, Kuvshinov and Günnemann (ICML 2022):

1. ``σ`` must have bounded *semi-elasticity* ``r``: ``|log σ(x) − log σ(y)| ≤ r‖x − y‖₂``; so at distance ``R``,
   ``σ(x₁)/σ(x₀) ∈ [e^{−rR}, e^{rR}]``.
2. For given distance ``ρ = ‖x₁ − x₀‖/σ₀`` and ratio ``s = σ₁/σ₀``, the smallest probability of the top class at
   ``x₁`` among all base classifiers with ``P_{x₀}(A) = p_A`` is that of the likelihood-ratio set of the
   Neyman–Pearson lemma. For ``s ≠ 1`` the log-ratio of the two Gaussians is quadratic, so that set is a ball
   (``s > 1``) or the outside of a ball (``s < 1``) centred at ``x₀ − (x₁ − x₀)/(s² − 1)``, and both
   probabilities are non-central χ² distribution functions with ``d`` degrees of freedom
   (:func:`worst_case_top_probability`). For ``s = 1`` it is Cohen's ``Φ(Φ⁻¹(p_A) − ρ)``.
3. The certified radius is the largest ``R`` at which the worst case over ``s ∈ {e^{−rR}, 1, e^{rR}}`` stays above
   1/2, by bisection (:func:`input_dependent_radius`). The worst case over the whole interval of ``s`` is attained
   at its ends, and the worst case grows as ``R`` shrinks; tests/test_input_dependent.py checks both numerically
   for d ∈ {2, 784, 3072}.

SciPy's ``ncx2`` is checked against an independent one-dimensional quadrature at d = 784 and 3072 in the tests.
With ``r = 0`` (constant σ) the radius is exactly Cohen's.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from scipy import stats
from torch import nn

from manifoldcert._validation import check_positive_int
from manifoldcert.certificate import NORMS, Certificate, implied_radius
from manifoldcert.certifiers.base import (
    VoteOptions,
    VoteStreamCertifier,
    check_probability,
)
from manifoldcert.noises.input_dependent import InputDependentGaussian, MeanAbsSigma, SigmaFunction
from manifoldcert.sequential import CertificationStream, check_label, stream_params


def worst_case_top_probability(p_a: float, distance: float, sigma_ratio: float, dim: int) -> float:
    """Smallest ``P(f(x₁ + σ₁ε) = A)`` over classifiers with ``P(f(x₀ + σ₀ε) = A) = p_a``.

    Parameters
    ----------
    p_a : float
        Top-class probability at ``x₀``.
    distance : float
        ``‖x₁ − x₀‖ / σ₀``.
    sigma_ratio : float
        ``σ₁ / σ₀ > 0``.
    dim : int
        Input dimension ``d``.
    """
    rho, s = float(distance), float(sigma_ratio)
    if s == 1.0:
        return float(stats.norm.cdf(stats.norm.ppf(p_a) - rho))
    if s > 1.0:
        # A = ball around x₀ − (x₁ − x₀)/(s² − 1): noncentrality (ρ/(s² − 1))² under x₀, (ρs²/(s² − 1))²/s² under x₁.
        offset = rho / (s * s - 1.0)
        radius2 = _ncx2_ppf(p_a, dim, offset**2)
        return _ncx2_cdf(radius2 / s**2, dim, (rho + offset) ** 2 / s**2)
    # s < 1: A = outside of the ball around x₀ + (x₁ − x₀)/(1 − s²).
    offset = rho / (1.0 - s * s)
    radius2 = _ncx2_isf(p_a, dim, offset**2)
    return _ncx2_sf(radius2 / s**2, dim, (offset - rho) ** 2 / s**2)


def _ncx2_ppf(q: float, dim: int, nc: float) -> float:
    return float(stats.chi2.ppf(q, dim) if nc == 0 else stats.ncx2.ppf(q, dim, nc))


def _ncx2_isf(q: float, dim: int, nc: float) -> float:
    return float(stats.chi2.isf(q, dim) if nc == 0 else stats.ncx2.isf(q, dim, nc))


def _ncx2_cdf(x: float, dim: int, nc: float) -> float:
    return float(stats.chi2.cdf(x, dim) if nc == 0 else stats.ncx2.cdf(x, dim, nc))


def _ncx2_sf(x: float, dim: int, nc: float) -> float:
    return float(stats.chi2.sf(x, dim) if nc == 0 else stats.ncx2.sf(x, dim, nc))


def input_dependent_radius(
    p_a: float, sigma0: float, semi_elasticity: float, dim: int, *, tolerance: float = 1e-4
) -> float:
    """Largest l2 radius ``R`` (rounded down to ``tolerance·σ₀``) certified for input-dependent Gaussian smoothing.

    ``R`` is certified when the worst-case top-class probability stays above 1/2 for every ``‖x₁ − x₀‖ ≤ R`` and
    every ``σ₁/σ₀ ∈ [e^{−rR}, e^{rR}]``; see the module docstring. Returns 0 when ``p_a <= 1/2``; equals
    ``σ₀Φ⁻¹(p_a)`` when ``semi_elasticity = 0``.
    """
    p_a = check_probability(p_a, "p_a")
    check_positive_int(dim, "dim")
    if not sigma0 > 0 or not math.isfinite(sigma0):
        raise ValueError(f"sigma0 must be finite and > 0, got {sigma0!r}")
    if not semi_elasticity >= 0:
        raise ValueError(f"semi_elasticity must be >= 0, got {semi_elasticity!r}")
    if p_a <= 0.5 or math.isinf(semi_elasticity):
        return 0.0
    cohen = float(stats.norm.ppf(p_a))  # in units of σ₀; the s = 1 case alone allows no more
    if semi_elasticity == 0:
        return sigma0 * cohen
    kappa = semi_elasticity * sigma0

    def certified(rho: float) -> bool:
        ratios = (math.exp(-kappa * rho), 1.0, math.exp(kappa * rho))
        return min(worst_case_top_probability(p_a, rho, s, dim) for s in ratios) > 0.5

    low, high = 0.0, cohen
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if certified(middle) else (low, middle)
    return sigma0 * low


class InputDependentCertifier(VoteStreamCertifier):
    """Sound l2 certificates for Gaussian smoothing with scale ``σ(x)`` of declared semi-elasticity.

    Parameters
    ----------
    model : nn.Module or None
    sigma_function : SigmaFunction, optional
        ``σ(x)``; by default ``MeanAbsSigma(sigma, offset)``, i.e. ``sigma·(mean|x| + offset)``.
    sigma, offset : float
        Parameters of the default σ function.
    **options
        ``batch_size``, ``num_classes``, ``input_shape``, ``seed`` as for every certifier.

    Notes
    -----
    Each certificate also records, in ``params["naive_radius"]``, the radius the fixed-σ formula
    ``σ(x)Φ⁻¹(p_A)`` would claim — *not* a certificate, kept to show the difference.
    """

    name = "input-dependent"
    native_norm = "l2"
    extra_columns = ("semi_elasticity", "naive_radius")

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma_function: SigmaFunction | None = None,
        sigma: float = 0.25,
        offset: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.sigma_function = sigma_function if sigma_function is not None else MeanAbsSigma(sigma, offset)
        self.noise = InputDependentGaussian(self.sigma_function)

    def noise_for(self, x: torch.Tensor) -> InputDependentGaussian:
        return self.noise

    def radius_for(
        self,
        p_a: float,
        p_b: float | None = None,
        *,
        norm: str | None = None,
        dim: int | None = None,
        sigma0: float | None = None,
    ) -> float:
        """The sound radius for top-class probability ``p_a`` at an input with ``σ(x) = sigma0``, dimension ``dim``."""
        if p_b is not None:
            raise ValueError("input-dependent certificates use p_A only (p_B = 1 − p_A)")
        if sigma0 is None or dim is None:
            raise ValueError("radius_for needs sigma0 (σ at the input) and dim")
        radius = input_dependent_radius(p_a, sigma0, self.sigma_function.semi_elasticity(dim), dim)
        return implied_radius(radius, certified_norm="l2", norm=norm or "l2", dim=dim)

    def certify(self, x: torch.Tensor, **options: Any) -> Certificate:
        """Certify one input; the options (:class:`~manifoldcert.certifiers.base.VoteOptions`: fixed-n or
        ``sequential=``, ``label=``) are those of :meth:`~manifoldcert.certifiers.SmoothingCertifier.certify`
        without ``runner_up``. Requested ``radii`` are l2 radii; the sound radius is nondecreasing in ``p_A``, so
        its thresholds steer the stream."""
        return self._certify_stream(x, VoteOptions(**options))

    def open_stream(self, x: torch.Tensor, options: VoteOptions) -> CertificationStream:
        start = time.perf_counter()
        self.require_estimator()
        x, alpha = self._check_protocol(x, options.n0, options.n, options.alpha)
        if options.runner_up:
            raise ValueError("input-dependent certificates use p_A only; runner_up=True is not available")
        sigma0 = float(self.sigma_function.checked(x.unsqueeze(0))[0])
        self.sigma_function.verify(x.detach().cpu().double(), generator=torch.Generator().manual_seed(0))
        dim = x.numel()
        r = self.sigma_function.semi_elasticity(dim)
        plan = self._sequential_plan(
            options, alpha=alpha, radius_of=lambda p: input_dependent_radius(p, sigma0, r, dim)
        )
        stream = CertificationStream(
            x,
            self.noise,
            self._generator_for(options.generator),
            n0=options.n0,
            n=options.n,
            alpha=alpha,
            plan=plan,
            label=check_label(options.label),
        )
        stream.context.update(
            setup_seconds=time.perf_counter() - start, dim=dim, sigma0=sigma0, semi_elasticity=r, alpha=alpha
        )
        return stream

    def close_stream(self, stream: CertificationStream) -> Certificate:
        context = stream.context
        dim, sigma0, r, p_lower = (
            context["dim"],
            context["sigma0"],
            context["semi_elasticity"],
            stream.p_lower,
        )
        abstain = p_lower < 0.5
        l2 = 0.0 if abstain else input_dependent_radius(p_lower, sigma0, r, dim)
        naive = 0.0 if abstain else sigma0 * float(stats.norm.ppf(p_lower))
        return Certificate(
            prediction=None if abstain else stream.top_class,
            radius={norm: implied_radius(l2, certified_norm="l2", norm=norm, dim=dim) for norm in NORMS},
            p_lower=p_lower,
            method=self.name,
            n0=stream.n0_used,
            n=stream.n_used,
            alpha=context["alpha"],
            seconds=stream.seconds + context["setup_seconds"],
            params={
                "noise": self.noise.name,
                "sigma": sigma0,
                "sigma_function": self.sigma_function.config(),
                "semi_elasticity": r,
                "naive_radius": naive,
                **stream_params(stream),
            },
        )
