"""A zoo of i.i.d.-coordinate noise densities for the UniCR certifier and its R–p_A curves.

Hong, Wang and Hong (2022), "UniCR: universally approximated certified robustness via randomized smoothing"
(ECCV), Sec. 5.2 and Figs. 4, 6–8, compare the certified radii of many smoothing densities at equal
``σ = sqrt(E‖z‖²/d)``; its Table 7 (Appendix D.3), which lists them, is missing from our copy of the paper, so
the parameterisations below follow Yang et al. (2020), "Randomized smoothing of all shapes and sizes" (ICML),
and the textbook forms. Every coordinate is drawn independently from a symmetric density ``f`` on the real
line, so ``log p(z) = Σᵢ log f(zᵢ)``:

==============================  ==========================================================  =====================
name                            density of one coordinate                                   σ (RMS)
==============================  ==========================================================  =====================
``general-normal``              ``β / (2αΓ(1/β)) · exp(−|x/α|^β)``                          ``α·sqrt(Γ(3/β)/Γ(1/β))``
``pareto``                      ``β / (2α) · (1 + |x|/α)^{−(β+1)}``                         ``α·sqrt(2/((β−1)(β−2)))``
``cauchy``                      ``1 / (πγ(1 + (x/γ)²))``                                    none (infinite)
``gaussian-laplace-mixture``    ``w·N(0, σ²) + (1 − w)·Laplace(σ/√2)``                      ``σ``
``exponential-mixture``         ``w·GN(β₁) + (1 − w)·GN(β₂)``, both of variance ``σ²``      ``σ``
``hyperbolic-secant``           ``1/(2s) · sech(πx/(2s))``                                  ``s``
``logistic``                    ``e^{−x/s} / (s(1 + e^{−x/s})²)``                           ``πs/√3``
==============================  ==========================================================  =====================

All seven are scale families, ``z = scale·ε`` with ``ε`` drawn at scale 1 without grad, so a scale (``sigma``
or the family's own ``alpha`` / ``scale``) given as a tensor that requires grad gives reparameterised samples
and a differentiable ``log_prob``. Shape parameters (``β``, mixture weights) are plain floats. Draws are exact
(inverse CDF, or a gamma variate for the generalised normal) and made in float64 through the caller's
generator, then cast to the requested dtype, so float32 and float64 draws from the same seed agree to float32
rounding.

A noise remembers whether it was given ``sigma`` or the family's own scale and :meth:`config` stores that
value, so ``noises.get(**noise.config())`` draws the very same samples from the same seed.

Only the Cauchy and the Pareto with ``β ≤ 2`` (which the paper's Pareto setting ``β = 1`` would be in this
parameterisation) have infinite variance: there :attr:`sigma` raises a ``ValueError`` rather than return
``inf``, because a silent infinite σ would poison every σ-scaled radius and every "best over σ" grouping.
Such noises are built from their own scale only.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from manifoldcert.noises.base import (
    AbstractNoise,
    Scale,
    as_float,
    check_scale,
    resolve_dtype,
    sigma_or_scale,
)
from manifoldcert.noises.zhang import standard_gamma

_LOG_2 = math.log(2.0)
_LOG_PI = math.log(math.pi)


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _check_shape_param(value: float, name: str, family: str) -> float:
    """A finite shape parameter > 0 (β of the generalised normal and the Pareto)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{family}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_weight(value: float, name: str = "weight") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a mixing probability and must lie in [0, 1], got {value!r}")
    return float(value)


def _work(device: torch.device | str | None) -> tuple[torch.device, torch.dtype]:
    """The resolved device and the dtype internal draws are made in (float64, except on MPS)."""
    device = torch.empty(0, device=device).device
    return device, torch.float32 if device.type == "mps" else torch.float64


def _uniform(count: int, generator, device, dtype) -> torch.Tensor:
    """``count`` draws of U[0, 1)."""
    return torch.rand(count, generator=generator, device=device, dtype=dtype)


def _random_signs(count: int, generator, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, (count,), generator=generator, device=device).to(dtype).mul_(2.0).sub_(1.0)


def _log_cosh(y: torch.Tensor) -> torch.Tensor:
    """``log cosh y = |y| + log1p(e^{−2|y|}) − log 2`` without overflow."""
    a = y.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - _LOG_2


# ----------------------------------------------------------------------------------------------------------
# Standard laws at scale 1, shared by the single families and the mixtures
# ----------------------------------------------------------------------------------------------------------


class _GeneralNormalLaw:
    """``f(x) = β/(2Γ(1/β)) · exp(−|x|^β)``; ``|x|^β ~ Gamma(1/β)`` with a random sign."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.log_normalizer = math.log(2.0) + math.lgamma(1.0 / beta) - math.log(beta)
        # sqrt(E x²) = sqrt(Γ(3/β)/Γ(1/β)), through lgamma so that small β does not overflow.
        self.rms = math.exp(0.5 * (math.lgamma(3.0 / beta) - math.lgamma(1.0 / beta)))

    def sample(self, count: int, generator, device, dtype) -> torch.Tensor:
        gamma = standard_gamma(1.0 / self.beta, count, generator=generator, device=device, dtype=dtype)
        return _random_signs(count, generator, device, dtype) * gamma.pow(1.0 / self.beta)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        return -x.abs().pow(self.beta) - self.log_normalizer


# ----------------------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------------------


class _ScaleFamily(AbstractNoise):
    """i.i.d. noise ``z = scale·ε``, ``ε`` from a fixed standard law with RMS ``_rms_per_scale``.

    Subclasses call :meth:`_resolve` with the user's ``sigma`` or family scale and the law's RMS at scale 1
    (``inf`` when the variance is infinite), and implement the standard law.
    """

    iid_coordinates = True  # log_prob of any subset of coordinates is their own joint log density
    symmetric = True
    _scale_name: str = "scale"

    _given: tuple[str, Scale]  # the (keyword, value) the user gave, which config() stores
    _rms_per_scale: float

    def _resolve(self, sigma: Scale | None, scale: Scale | None, rms_per_scale: float) -> None:
        sigma_or_scale(sigma, scale, self._scale_name, rms_per_scale)  # checks exactly one, finite and > 0
        self._rms_per_scale = rms_per_scale
        if sigma is not None:
            keyword, value = "sigma", sigma
        else:
            assert scale is not None  # sigma_or_scale checked that exactly one is given
            keyword, value = self._scale_name, scale
        self._given = (keyword, check_scale(value, keyword))  # a number becomes a float; a tensor is kept

    @property
    def _scale(self) -> Scale:
        """The family's own scale, recomputed from the given value at each use so that a tensor σ that requires
        grad gets a fresh graph for every sample / log_prob call."""
        keyword, value = self._given
        return value / self._rms_per_scale if keyword == "sigma" else value

    def _infinite_variance(self) -> str:
        """Why σ is undefined (only called when ``_rms_per_scale`` is infinite)."""
        return f"the {self.name} noise has infinite variance"

    @property
    def sigma(self) -> float:
        keyword, value = self._given
        if keyword == "sigma":
            return as_float(value)
        if not math.isfinite(self._rms_per_scale):
            raise ValueError(
                f"{self._infinite_variance()}, so it has no finite sigma = sqrt(E‖z‖²/d); "
                f"use its {self._scale_name} ({as_float(self._scale):g}) instead"
            )
        return as_float(self._scale) * self._rms_per_scale

    def _standard_sample(self, count: int, generator, device, dtype) -> torch.Tensor:
        """``count`` i.i.d. draws of ``ε`` (1-D) in ``dtype`` on ``device``."""
        raise NotImplementedError

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise log density of ``ε``."""
        raise NotImplementedError

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        shape = (n_samples, *shape)
        device, work = _work(device)
        dtype = resolve_dtype(dtype)
        eps = self._standard_sample(math.prod(shape), generator, device, work).to(dtype).reshape(shape)
        scale = self._scale
        if isinstance(scale, torch.Tensor):
            scale = scale.to(device=device, dtype=dtype)
        return eps * scale

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        scale = torch.as_tensor(self._scale, dtype=flat.dtype, device=flat.device)
        return self._standard_log_density(flat / scale).sum(1) - flat.shape[1] * torch.log(scale)

    def _shape_params(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        keyword, value = self._given
        return {"name": self.name, keyword: as_float(value), **self._shape_params()}


# ----------------------------------------------------------------------------------------------------------
# Single families
# ----------------------------------------------------------------------------------------------------------


class GeneralNormal(_ScaleFamily):
    """Generalised normal noise, ``f(x) = β/(2αΓ(1/β)) · exp(−|x/α|^β)`` per coordinate.

    The "General Normal" of UniCR (Hong et al. 2022, Table 2 and Sec. 4–5: ``∝ e^{−|x/α|^β}``), the
    exponential family of Yang et al. (2020); ``β = 2`` is ``N(0, α²/2)``, ``β = 1`` is Laplace(α), ``β → ∞``
    tends to U[−α, α]. ``σ = α·sqrt(Γ(3/β)/Γ(1/β))``. Sampler: ``|x/α|^β ~ Gamma(1/β)``, random sign.

    Parameters
    ----------
    sigma : float or Tensor, optional
        RMS per coordinate. Give exactly one of ``sigma`` and ``alpha``; either may require grad.
    alpha : float or Tensor, optional
        The scale ``α``.
    beta : float
        The shape ``β > 0`` (default 2, the Gaussian).
    """

    name = "general-normal"
    _scale_name = "alpha"

    def __init__(self, sigma: Scale | None = None, *, alpha: Scale | None = None, beta: float = 2.0) -> None:
        self.beta = _check_shape_param(beta, "beta", self.name)
        self._law = _GeneralNormalLaw(self.beta)
        self._resolve(sigma, alpha, self._law.rms)

    @property
    def alpha(self) -> Scale:
        """The scale ``α`` of ``∝ e^{−|x/α|^β}`` (Hong et al. 2022, Table 2)."""
        return self._scale

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        return self._law.sample(count, generator, device, dtype)

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        return self._law.log_density(x)

    def _shape_params(self) -> dict[str, Any]:
        return {"beta": self.beta}


class Pareto(_ScaleFamily):
    """Symmetric Pareto (power-law) noise, ``f(x) = β/(2α) · (1 + |x|/α)^{−(β+1)}`` per coordinate.

    Yang et al. (2020)'s Pareto noise: ``|x| + α`` follows the Pareto law of scale ``α`` and index ``β``
    (their ``λ`` and ``a``), i.e. ``|x|/α`` is Lomax(β), with a random sign. ``E|x|^k`` is finite iff
    ``β > k``; ``σ = α·sqrt(2/((β − 1)(β − 2)))`` for ``β > 2``. Sampler: ``|x| = α(U^{−1/β} − 1)``.

    Parameters
    ----------
    sigma : float or Tensor, optional
        RMS per coordinate; needs ``β > 2``. Give exactly one of ``sigma`` and ``alpha``.
    alpha : float or Tensor, optional
        The scale ``α``; any ``β > 0`` is then allowed, but for ``β ≤ 2`` :attr:`sigma` raises.
    beta : float
        The tail index ``β > 0``. Default 3, as in Yang et al.'s code: the smallest integer with finite
        variance, so the heaviest-tailed Pareto comparable at equal σ (its fourth moment is infinite).
    """

    name = "pareto"
    _scale_name = "alpha"

    def __init__(self, sigma: Scale | None = None, *, alpha: Scale | None = None, beta: float = 3.0) -> None:
        self.beta = _check_shape_param(beta, "beta", self.name)
        if sigma is not None and self.beta <= 2.0:
            raise ValueError(
                f"a Pareto noise with beta = {self.beta:g} has infinite variance (sigma is finite only for "
                f"beta > 2): give alpha instead of sigma, or a beta > 2"
            )
        rms = math.sqrt(2.0 / ((self.beta - 1.0) * (self.beta - 2.0))) if self.beta > 2.0 else math.inf
        self._resolve(sigma, alpha, rms)

    @property
    def alpha(self) -> Scale:
        """The scale ``α`` (Yang et al. 2020's ``λ``): ``|x| + α`` is Pareto of scale ``α`` and index ``β``."""
        return self._scale

    def _infinite_variance(self) -> str:
        return f"a Pareto noise with beta = {self.beta:g} <= 2 has infinite variance"

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        u = _uniform(count, generator, device, dtype)
        magnitude = torch.expm1(-torch.log1p(-u) / self.beta)  # U' = 1 − u ∈ (0, 1]: U'^{−1/β} − 1
        return _random_signs(count, generator, device, dtype) * magnitude

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        return math.log(self.beta / 2.0) - (self.beta + 1.0) * torch.log1p(x.abs())

    def _shape_params(self) -> dict[str, Any]:
        return {"beta": self.beta}


class Cauchy(_ScaleFamily):
    """Cauchy noise, ``f(x) = 1/(πγ(1 + (x/γ)²))`` per coordinate.

    UniCR's Figs. 6–8 include it as the heavy-tailed outlier. Its variance is infinite, so it takes only its
    scale ``γ`` (its half-width at half-maximum, also its interquartile half-range); :attr:`sigma` raises a
    ``ValueError`` (see the module notes), and ``sigma=`` is accepted only to refuse it with that explanation.
    Sampler: ``x = γ·tan(π(U − 1/2))``.

    Parameters
    ----------
    scale : float or Tensor
        ``γ > 0``; may require grad.
    """

    name = "cauchy"

    def __init__(self, sigma: Scale | None = None, *, scale: Scale | None = None) -> None:
        if sigma is not None:
            raise ValueError(
                "the Cauchy noise has infinite variance, so no sigma = sqrt(E‖z‖²/d) describes it: "
                "give its scale gamma as scale=..."
            )
        if scale is None:
            raise ValueError("give the Cauchy noise's scale gamma as scale=...")
        self._resolve(None, scale, math.inf)

    @property
    def scale(self) -> Scale:
        """The scale ``γ``: the half-width at half-maximum."""
        return self._scale

    def _infinite_variance(self) -> str:
        return "the Cauchy noise has infinite variance"

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        return torch.tan(math.pi * (_uniform(count, generator, device, dtype) - 0.5))

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        # log(1 + x²), written as 2 log|x| + log1p(x⁻²) for |x| > 1 so that huge draws do not overflow x².
        a = x.abs()
        big = a > 1.0
        safe = torch.where(big, a, torch.ones_like(a))
        log_term = torch.where(
            big, 2.0 * torch.log(safe) + torch.log1p(safe.pow(-2)), torch.log1p(a.square())
        )
        return -_LOG_PI - log_term


class HyperbolicSecant(_ScaleFamily):
    """Hyperbolic secant noise, ``f(x) = 1/(2s) · sech(πx/(2s))`` per coordinate; variance ``s²``, so ``σ = s``.

    Exponential tails like the Laplace but smooth at 0 like the Gaussian. CDF ``F(x) = 1/2 + gd(πx/(2s))/π``
    (``gd`` the Gudermannian); sampler ``x = (2s/π)·asinh(tan(π(U − 1/2)))``.

    Parameters
    ----------
    sigma : float or Tensor, optional
        RMS per coordinate, equal to ``s``. Give exactly one of ``sigma`` and ``scale``.
    scale : float or Tensor, optional
        ``s``.
    """

    name = "hyperbolic-secant"

    def __init__(self, sigma: Scale | None = None, *, scale: Scale | None = None) -> None:
        self._resolve(sigma, scale, 1.0)

    @property
    def scale(self) -> Scale:
        """The scale ``s`` (equal to σ)."""
        return self._scale

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        u = _uniform(count, generator, device, dtype)
        return (2.0 / math.pi) * torch.asinh(torch.tan(math.pi * (u - 0.5)))

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        return -_LOG_2 - _log_cosh(0.5 * math.pi * x)


class Logistic(_ScaleFamily):
    """Logistic noise, ``f(x) = e^{−x/s} / (s(1 + e^{−x/s})²)`` per coordinate; ``σ = πs/√3``.

    Sampler: ``x = s·log(U/(1 − U))``.

    Parameters
    ----------
    sigma : float or Tensor, optional
        RMS per coordinate. Give exactly one of ``sigma`` and ``scale``.
    scale : float or Tensor, optional
        ``s``.
    """

    name = "logistic"

    def __init__(self, sigma: Scale | None = None, *, scale: Scale | None = None) -> None:
        self._resolve(sigma, scale, math.pi / math.sqrt(3.0))

    @property
    def scale(self) -> Scale:
        """The scale ``s`` (``σ = πs/√3``)."""
        return self._scale

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        u = _uniform(count, generator, device, dtype).clamp_(min=torch.finfo(dtype).tiny)
        return torch.log(u) - torch.log1p(-u)

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        a = x.abs()
        return -a - 2.0 * torch.log1p(torch.exp(-a))


# ----------------------------------------------------------------------------------------------------------
# Mixtures of two generalised normals of equal variance
# ----------------------------------------------------------------------------------------------------------


class _EqualVarianceMixture(_ScaleFamily):
    """``w·GN(β₁) + (1 − w)·GN(β₂)`` per coordinate, each component of variance ``σ²``: ``z = σ·ε``.

    Both components have RMS σ, so the mixture does too, whatever ``w``. Sampler: each coordinate picks its
    component with one uniform draw; the coordinates of each component are then drawn in one batch.
    """

    _scale_name = "sigma"

    def _build(self, sigma: Scale | None, beta1: float, beta2: float, weight: float) -> None:
        if sigma is None:
            raise ValueError(f"the {self.name} noise is parameterised by sigma (the RMS of both components)")
        self.weight = _check_weight(weight)
        self._laws = (_GeneralNormalLaw(beta1), _GeneralNormalLaw(beta2))
        self._resolve(sigma, None, 1.0)

    def _standard_sample(self, count, generator, device, dtype) -> torch.Tensor:
        first = _uniform(count, generator, device, dtype) < self.weight
        out = torch.empty(count, device=device, dtype=dtype)
        for mask, law in zip((first, ~first), self._laws, strict=True):
            n = int(mask.sum())
            out[mask] = law.sample(n, generator, device, dtype) / law.rms
        return out

    def _standard_log_density(self, x: torch.Tensor) -> torch.Tensor:
        terms = []
        for w, law in zip((self.weight, 1.0 - self.weight), self._laws, strict=True):
            log_w = math.log(w) if w > 0 else -math.inf
            # Component of unit variance: density rms·f(rms·x) of the scale-1 law.
            terms.append(log_w + math.log(law.rms) + law.log_density(law.rms * x))
        return torch.logaddexp(*terms)


class GaussianLaplaceMixture(_EqualVarianceMixture):
    """Gaussian–Laplace mixture noise, ``w·N(0, σ²) + (1 − w)·Laplace(σ/√2)`` per coordinate.

    UniCR's "Gaussian-Laplace mixture" (Hong et al. 2022, Sec. 5.2, Figs. 6–8, 13). The two components have
    the same variance σ² (Gaussian standard deviation ``σ``, Laplace scale ``b = σ/√2``), so σ is exact for
    every weight. ``w = 1`` is :class:`~manifoldcert.noises.Gaussian`, ``w = 0`` is
    :class:`~manifoldcert.noises.Laplace`. The paper's single mixture parameter ("β = 0.5 for the mixture
    distributions") is read as the weight.

    Parameters
    ----------
    sigma : float or Tensor
        RMS per coordinate (of each component and of the mixture); may require grad.
    weight : float
        Probability ``w ∈ [0, 1]`` of the Gaussian component (default 0.5).
    """

    name = "gaussian-laplace-mixture"

    def __init__(self, sigma: Scale | None = None, *, weight: float = 0.5) -> None:
        self._build(sigma, 2.0, 1.0, weight)

    def _shape_params(self) -> dict[str, Any]:
        return {"weight": self.weight}


class ExponentialMixture(_EqualVarianceMixture):
    """Mixture of two generalised normals, ``w·GN(β₁) + (1 − w)·GN(β₂)``, each of variance σ², per coordinate.

    The project's definition of UniCR's "exponential mixture" (Hong et al. 2022, Sec. 5.2, Figs. 6–8, 13),
    whose defining Table 7 is missing from our copy: a mixture of two members ``∝ exp(−|x/α_k|^{β_k})`` of the
    exponential family of :class:`GeneralNormal`, with ``α_k = σ·sqrt(Γ(1/β_k)/Γ(3/β_k))`` so that both have
    variance σ² and σ is exact. The defaults ``β₁ = 1, β₂ = 2, w = 0.5`` give the same law as
    :class:`GaussianLaplaceMixture` at its default weight.

    Parameters
    ----------
    sigma : float or Tensor
        RMS per coordinate; may require grad.
    beta1, beta2 : float
        Shapes ``β_k > 0`` of the two components (defaults 1 and 2: Laplace and Gaussian).
    weight : float
        Probability ``w ∈ [0, 1]`` of the first component (default 0.5).
    """

    name = "exponential-mixture"

    def __init__(
        self, sigma: Scale | None = None, *, beta1: float = 1.0, beta2: float = 2.0, weight: float = 0.5
    ) -> None:
        self.beta1 = _check_shape_param(beta1, "beta1", self.name)
        self.beta2 = _check_shape_param(beta2, "beta2", self.name)
        self._build(sigma, self.beta1, self.beta2, weight)

    def _shape_params(self) -> dict[str, Any]:
        return {"beta1": self.beta1, "beta2": self.beta2, "weight": self.weight}


#: The noise classes defined here, for registration in :mod:`manifoldcert.noises`.
ZOO_CLASSES: tuple[type[AbstractNoise], ...] = (
    GeneralNormal,
    Pareto,
    Cauchy,
    GaussianLaplaceMixture,
    ExponentialMixture,
    HyperbolicSecant,
    Logistic,
)

#: Their registry names, for the R–p_A curves experiment (with "gaussian", "laplace" and "uniform").
ZOO: tuple[str, ...] = tuple(cls.name for cls in ZOO_CLASSES)
