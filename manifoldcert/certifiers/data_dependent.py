"""``ddrs``, ``ancer``, ``rddrs``: Gaussian smoothing whose covariance is optimised at each input.

Every data-dependent certifier runs three stages, each on its own fresh samples from the certifier's generator:

1. **SELECT** — the top class ``c_A`` from ``n0`` votes under the starting noise ``N(0, σ₀²I)`` (``σ₀ = sigma``;
   for RDDRS with ``initial_covariance=C₀``, ``N(0, C₀)``).
2. **OPTIMISE** — per-input noise parameters maximising the method's objective for ``c_A``, by gradient ascent
   on the SOFT smoothed probability ``p_A = E_z[softmax_{c_A} f(x + z)]`` with reparameterised gradients from the
   shared estimator: ``opt_samples`` samples per iteration, ``iterations`` steps. ``r = Φ⁻¹(p_A)`` with ``p_A``
   clamped to ``[1e-4, 1 − 1e-4]``, so ``∂r = ∂p_A / φ(Φ⁻¹(p_A))`` inside the clamp and 0 outside. DDRS keeps
   the iterate with the best estimated objective (Alfarra et al. keep the best σ); ANCER and RDDRS return the
   last iterate, as their papers do (with 100 samples a saturated estimate ``p̂ = 1`` overstates ``r``, which
   would make the best-estimate rule favour the start). Parameters are optimised in float64 (the noise the
   model sees is cast to the model's dtype) on the model's device.
3. **CERTIFY** — ``n`` fresh votes under the optimised noise ``N(0, Σ)``, the one-sided Clopper–Pearson bound
   ``p_lower`` of ``c_A`` at level ``alpha``; abstain when ``p_lower < 1/2``; otherwise the certified set is the
   ellipsoid ``{δ : δᵀΣ⁻¹δ < r²}``, ``r = Φ⁻¹(p_lower)`` (Eiras et al., Theorem 1 with ``p_B = 1 − p_A``; the
   paper's Eq. 2). The certificate reports ``region = Ellipsoid(Σ, r)``, the l2 radius ``r·sqrt(λ_min(Σ))`` of the
   ball inside it (also the l1 radius; l∞: divided by ``√d``), and ``params["proxy_radius"] = r·det(Σ)^{1/(2d)}``
   (docs/conventions.md).

Objectives, with ``r(Σ) = Φ⁻¹(p_A(Σ))`` (Labarbarie, Hajri and Arnaudon 2022 — "the paper" — Eq. 3–6):

``ddrs`` (Alfarra et al.; Eq. 3)
    ``R(σ) = σ·r(σ²I)``, plain gradient ascent on ``log σ`` from ``σ₀``.
``ancer`` (Eiras et al.; Eq. 4)
    ``r(θ)·(∏θ_i)^{1/d} + κ·min_i θ_i·r(θ)`` over the standard deviations ``θ ∈ R^d``, projected onto
    ``θ_i ≥ σ*`` after each step, ``σ*`` being DDRS's σ at ``x`` (``start="ddrs"``) or ``σ₀`` (``start="sigma"``).
    Steps are Adam steps (learning rate 0.04), as in ANCER's implementation: Adam's per-coordinate scaling is what
    makes one learning rate work in every dimension.
``rddrs`` (Eq. 5–6)
    ``H(Σ) = r(Σ)·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r(Σ)``, Riemannian gradient ascent
    ``Σ ← Exp_Σ(γ·grad H(Σ))`` on SPD(d) with the metric chosen by name (:mod:`manifoldcert.geometry.spd`), then
    the eigenvalues are clipped at ``σ*²``. The Euclidean gradient of ``p_A`` comes from the estimator with the
    noise ``A ε``, ``A = cholesky(Σ)``, and is chained to ``Σ`` through ``torch.linalg.cholesky`` (stable at
    repeated eigenvalues such as ``σ²I``); ``λ_min``'s gradient is the average of ``u uᵀ/(2√λ_min)`` over an
    orthonormal basis of its eigenspace (a subgradient).

What is guaranteed. Without a memory (``memory=False``), a certificate says: with probability at least
``1 − α`` over the CERTIFY samples, the smoothed classifier ``g_Σ`` whose covariance is FROZEN at the ``Σ``
chosen at ``x`` predicts ``c_A`` on ``x + region`` (``Σ`` depends only on the SELECT/OPTIMISE samples, independent
of the CERTIFY ones). It says nothing about the data-dependent classifier ``x' ↦ g_{Σ(x')}(x')``, which uses
another covariance at ``x' = x + δ``; hence ``guaranteed=False``. With a memory (``memory=True`` or a
:class:`~manifoldcert.certifiers.memory.CertificationMemory`), inputs are answered by the memory-based
classifier of Alfarra et al. / Eiras et al.: its predictions are constant on every region it returned over the
processed sequence (see :mod:`manifoldcert.certifiers.memory` for the rule and its limits); hence
``guaranteed=True``.

References
----------
Alfarra, Bibi, Torr and Ghanem (2022), Data dependent randomized smoothing, UAI.
Eiras, Alfarra, Kumar, Torr, Dokania, Ghanem and Bibi (2022), ANCER: anisotropic certification via sample-wise
volume maximization, TMLR.
Labarbarie, Hajri and Arnaudon (2022), Riemannian data-dependent randomized smoothing for neural networks
certification, ICML workshop (../shared/papers/004), Eq. 3–6.
Kingma and Ba (2015), Adam: a method for stochastic optimization, ICLR.
"""

from __future__ import annotations

import abc
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from manifoldcert._validation import check_name, check_positive_float, check_positive_int
from manifoldcert.bounds import binomial_test_pvalue, clopper_pearson_lower
from manifoldcert.certificate import Certificate, Ellipsoid
from manifoldcert.certifiers.base import DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0, AbstractCertifier
from manifoldcert.certifiers.memory import CertificationMemory, MemoryHit
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.geometry.spd import SPDManifold, check_full_covariance_fits, check_spd
from manifoldcert.noises import AbstractNoise
from manifoldcert.noises.gaussian import DiagonalGaussian, FullCovarianceGaussian, Gaussian

__all__ = [
    "ANCER",
    "DDRS",
    "RDDRS",
    "DataDependentCertifier",
    "DiagonalObjective",
    "FullCovarianceObjective",
    "IsotropicObjective",
    "OptimisedNoise",
    "SmoothingObjective",
]

#: ``p_A`` is clamped to ``[PROBABILITY_CLAMP, 1 − PROBABILITY_CLAMP]`` inside the objectives.
PROBABILITY_CLAMP = 1e-4
STARTS = {"ancer": ("ddrs", "sigma"), "rddrs": ("ancer", "ddrs", "sigma")}
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------------
# Objectives: the soft smoothed probability of c_A and a method's objective, with gradients
# ---------------------------------------------------------------------------------------------------------------


def _parameter_dtype(device: torch.device) -> torch.dtype:
    """float64 for the optimised parameters, except where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


class SmoothingObjective(abc.ABC):
    """A data-dependent objective ``J(params)`` at one input ``x`` and class ``c_A``, built on ``r = Φ⁻¹(p_A)``.

    Subclasses say how the optimised parameters map to the noise (``noise_parameter``: ``σ = exp(u)``, ``θ``, or
    ``A = cholesky(Σ)``), build the noise from that parameter, and define ``J`` from ``(params, r)``. Monte Carlo
    estimates use the estimator's reparameterised gradients with ``n_samples`` fresh samples per call from
    ``generator``. The noise parameter is handed to the estimator as a leaf in the model's dtype; its gradient
    is chained back to ``params`` with one ``torch.autograd.grad``.

    Parameters
    ----------
    estimator : MonteCarloEstimator
    x : Tensor
        One input.
    top_class : int
        ``c_A``.
    n_samples : int
        Samples per estimate.
    generator : torch.Generator, optional
    batch_size : int, optional
    """

    def __init__(
        self,
        estimator: MonteCarloEstimator,
        x: torch.Tensor,
        top_class: int,
        *,
        n_samples: int,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.x = x
        self.dim = x.numel()
        self.top_class = int(top_class)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.generator = generator
        self.batch_size = batch_size
        self.dtype = _parameter_dtype(estimator.device)
        self._weights: torch.Tensor | None = None

    @abc.abstractmethod
    def noise_parameter(self, params: torch.Tensor) -> torch.Tensor:
        """The differentiable map from ``params`` to the tensor the noise samples through."""

    @abc.abstractmethod
    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        """The noise built from ``noise_parameter`` (in the model's dtype)."""

    @abc.abstractmethod
    def value(self, params: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``J`` from ``params`` and ``r = Φ⁻¹(p_A)`` (differentiable in both)."""

    @abc.abstractmethod
    def shape(self, noise_parameter: torch.Tensor) -> torch.Tensor:
        """The covariance ``Σ`` of the noise, float64 on the CPU: ``(d,)`` variances or the ``(d, d)`` matrix."""

    def _one_hot(self) -> torch.Tensor:
        if self._weights is None:
            if self.estimator.num_classes is None:  # one plain forward pass reads the number of classes
                probe = torch.Generator(device=self.estimator.device).manual_seed(0)
                self.estimator.class_counts(self.x, Gaussian(1.0), 1, generator=probe)
            weights = torch.zeros(self.estimator.num_classes, dtype=torch.float64)
            weights[self.top_class] = 1.0
            self._weights = weights
        return self._weights

    def _estimate(self, noise_parameter: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Soft ``p_A`` and its gradient w.r.t. ``noise_parameter`` (same dtype)."""
        leaf = noise_parameter.detach().to(self.estimator.dtype).requires_grad_(True)
        with torch.enable_grad():
            mean, (gradient,) = self.estimator.mean_softmax_and_gradient(
                self.x,
                self.noise(leaf),
                self.n_samples,
                [leaf],
                weights=self._one_hot(),
                generator=self.generator,
                batch_size=self.batch_size,
            )
        return float(mean[self.top_class]), gradient.to(noise_parameter.dtype)

    def probability_and_gradient(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Soft ``p_A`` at ``params`` and its reparameterised gradient ``∂p_A/∂params`` (one Monte Carlo estimate)."""
        params = params.detach().requires_grad_(True)
        with torch.enable_grad():
            parameter = self.noise_parameter(params)
            probability, gradient = self._estimate(parameter)
            (chained,) = torch.autograd.grad(parameter, params, grad_outputs=gradient)
        return probability, chained

    def value_and_gradient(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``J(params)`` and ``∂J/∂params`` (one Monte Carlo estimate of ``p_A`` and its gradient)."""
        params = params.detach().requires_grad_(True)
        with torch.enable_grad():
            parameter = self.noise_parameter(params)
            probability, gradient = self._estimate(parameter)
            # p_A as a function of params to first order, so that autograd applies the chain rule once.
            surrogate = probability + (gradient * (parameter - parameter.detach())).sum()
            value = self.value(params, _inverse_normal(surrogate))
            (grad,) = torch.autograd.grad(value, params)
        return float(value.detach()), grad

    def value_only(self, params: torch.Tensor) -> float:
        """``J(params)`` from a soft estimate of ``p_A`` without gradients."""
        params = params.detach()
        noise = self.noise(self.noise_parameter(params).to(self.estimator.dtype))
        mean = self.estimator.mean_softmax(
            self.x, noise, self.n_samples, generator=self.generator, batch_size=self.batch_size
        )
        r = _inverse_normal(
            torch.tensor(float(mean[self.top_class]), dtype=params.dtype, device=params.device)
        )
        with torch.no_grad():
            return float(self.value(params, r))


def _inverse_normal(probability: torch.Tensor) -> torch.Tensor:
    """``Φ⁻¹`` of ``p`` clamped to ``[1e-4, 1 − 1e-4]`` (zero gradient outside)."""
    return torch.special.ndtri(probability.clamp(PROBABILITY_CLAMP, 1.0 - PROBABILITY_CLAMP))


class IsotropicObjective(SmoothingObjective):
    """DDRS (Eq. 3): ``R = σ·Φ⁻¹(p_A)`` for ``N(0, σ²I)``; ``params`` is ``u = log σ`` (a 0-dim tensor)."""

    def noise_parameter(self, params: torch.Tensor) -> torch.Tensor:
        return params.exp()

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        # A plain float (Gaussian's in-place fast path) when no gradient is needed, e.g. for CERTIFY.
        return Gaussian(noise_parameter if noise_parameter.requires_grad else float(noise_parameter))

    def value(self, params: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return params.exp() * r

    def shape(self, noise_parameter: torch.Tensor) -> torch.Tensor:
        return torch.full((self.dim,), float(noise_parameter.detach()) ** 2, dtype=torch.float64)


class DiagonalObjective(SmoothingObjective):
    """ANCER (Eq. 4): ``r·(∏θ_i)^{1/d} + κ·min_i θ_i·r`` for ``N(0, diag(θ)²)``; ``params`` is ``θ``, shape ``(d,)``.

    The minimum's gradient is shared equally among tied coordinates (``torch.amin``).
    """

    def __init__(self, *args: Any, kappa: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kappa = float(kappa)

    def noise_parameter(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        return DiagonalGaussian(noise_parameter)

    def value(self, params: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r * params.log().mean().exp() + self.kappa * params.amin() * r

    def shape(self, noise_parameter: torch.Tensor) -> torch.Tensor:
        return noise_parameter.detach().to(device="cpu", dtype=torch.float64).square()


class FullCovarianceObjective(SmoothingObjective):
    """RDDRS (Eq. 5): ``H = r·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r`` for ``N(0, Σ)``; ``params`` is ``Σ``, ``(d, d)``.

    The noise is ``A ε`` with ``A = cholesky(Σ)``; the gradient w.r.t. ``A`` is chained to ``Σ`` through
    ``torch.linalg.cholesky``, whose backward needs no eigenvalue gaps (finite at ``Σ = σ²I``). The Euclidean
    gradient returned is symmetric.
    """

    def __init__(self, *args: Any, kappa: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kappa = float(kappa)

    def noise_parameter(self, params: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cholesky((params + params.mT) / 2)

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        return FullCovarianceGaussian(factor=noise_parameter)

    def value(self, params: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        log_det = torch.linalg.slogdet(params).logabsdet
        return r * (log_det / (2 * self.dim)).exp() + self.kappa * _sqrt_min_eigenvalue(params) * r

    def shape(self, noise_parameter: torch.Tensor) -> torch.Tensor:
        factor = noise_parameter.detach().to(device="cpu", dtype=torch.float64)
        covariance = factor @ factor.mT
        return (covariance + covariance.mT) / 2


def _sqrt_min_eigenvalue(matrix: torch.Tensor) -> torch.Tensor:
    """``λ_min^{1/2}`` with the subgradient ``P/(2m√λ_min)``, ``P`` the projector on the (m-dim) eigenspace of λ_min.

    Eigenvalues within a relative 1e-9 of the smallest count as tied, so the gradient does not depend on which
    eigenvector ``eigh`` happens to return at ``σ²I``.
    """
    eigenvalues, vectors = torch.linalg.eigh(matrix.detach())
    smallest = eigenvalues[0]
    tied = vectors[:, eigenvalues <= smallest * (1 + 1e-9)]
    subgradient = (tied @ tied.mT) / (2 * tied.shape[1] * smallest.sqrt())
    return smallest.sqrt() + (subgradient * (matrix - matrix.detach())).sum()


# ---------------------------------------------------------------------------------------------------------------
# The ascent loop and its result
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimisedNoise:
    """What OPTIMISE returns: the chosen noise and how the optimisation went.

    Attributes
    ----------
    noise : AbstractNoise
        ``N(0, Σ)`` in the model's dtype, on its device — what CERTIFY samples.
    shape : Tensor
        ``Σ`` of that noise, float64 on the CPU: ``(d,)`` variances (isotropic, diagonal) or the ``(d, d)`` matrix.
    objective : float
        Estimated objective of the returned iterate (``nan`` when none was finite).
    start_objective : float
        Estimated objective at the start.
    iterations : int
        Ascent steps taken.
    stop_reason : str
        ``"max iterations"``, ``"non-finite gradient"`` or ``"non-finite step"``.
    objective_history : tuple of float
        Estimated objective at every evaluated iterate, start first.
    sigma_floor : float
        ``σ*``: the lower bound on the standard deviations (ANCER's θ, RDDRS's ``λ(Σ)^{1/2}``); ``σ₀`` for DDRS.
    """

    noise: AbstractNoise
    shape: torch.Tensor
    objective: float
    start_objective: float
    iterations: int
    stop_reason: str
    objective_history: tuple[float, ...]
    sigma_floor: float

    @property
    def covariance(self) -> torch.Tensor:
        """``Σ`` as a dense ``(d, d)`` float64 matrix."""
        return torch.diag(self.shape) if self.shape.dim() == 1 else self.shape

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of ``Σ``, ascending (float64, CPU)."""
        return torch.sort(self.shape).values if self.shape.dim() == 1 else torch.linalg.eigvalsh(self.shape)


@dataclass(frozen=True)
class AscentSettings:
    """``iterations`` steps with ``opt_samples`` Monte Carlo samples each, step size ``learning_rate``."""

    iterations: int
    opt_samples: int
    learning_rate: float

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {self.iterations!r}")
        check_positive_int(self.opt_samples, "opt_samples")
        check_positive_float(self.learning_rate, "learning_rate")

    def updated(self, options: Mapping[str, Any] | None, name: str) -> AscentSettings:
        """These settings with the keys of ``options`` replaced (an error names unknown keys)."""
        options = dict(options or {})
        unknown = sorted(set(options) - {"iterations", "opt_samples", "learning_rate"})
        if unknown:
            raise ValueError(
                f"unknown {name} keys {unknown}; valid keys are: iterations, learning_rate, opt_samples"
            )
        merged = {"iterations": self.iterations, "opt_samples": self.opt_samples}
        return AscentSettings(**{**merged, "learning_rate": self.learning_rate, **options})


def _all_finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def _ascend(
    objective: SmoothingObjective,
    start: torch.Tensor,
    advance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    iterations: int,
    method: str,
    sigma_floor: float,
    *,
    keep_best: bool,
) -> OptimisedNoise:
    """Gradient ascent ``params ← advance(params, ∂J)``; returns the last iterate, or with ``keep_best`` the one
    with the best estimated ``J``.

    A non-finite objective or gradient, or a step that fails or leaves non-finite parameters, stops the ascent
    with a ``RuntimeWarning``; the last (or best) valid iterate is returned — the start when there is none.
    """
    params, best, best_value = start, start, -math.inf
    history: list[float] = []
    stop_reason, steps = "max iterations", 0
    for step in range(iterations + 1):
        last = step == iterations
        if last:
            value, gradient = objective.value_only(params), None
        else:
            value, gradient = objective.value_and_gradient(params)
        if not math.isfinite(value) or (gradient is not None and not _all_finite(gradient)):
            stop_reason = "non-finite gradient"
            break
        history.append(value)
        if value > best_value or not keep_best:
            best, best_value = params, value
        if last:
            break
        try:
            candidate = advance(params, gradient)
            valid = _all_finite(candidate) and _all_finite(objective.noise_parameter(candidate))
        except (ValueError, RuntimeError):  # e.g. a Cholesky factorisation that fails after an overflow
            valid = False
        if not valid:
            stop_reason = "non-finite step"
            break
        params, steps = candidate, steps + 1
    if stop_reason != "max iterations":
        warnings.warn(
            f"{method}: {stop_reason} after {steps} of {iterations} steps; certifying the "
            f"{'best' if keep_best else 'last'} valid iterate",
            RuntimeWarning,
            stacklevel=4,
        )
    used = objective.noise_parameter(best).detach().to(objective.estimator.dtype)
    return OptimisedNoise(
        noise=objective.noise(used),
        shape=objective.shape(used),
        objective=best_value if history else math.nan,
        start_objective=history[0] if history else math.nan,
        iterations=steps,
        stop_reason=stop_reason,
        objective_history=tuple(history),
        sigma_floor=float(sigma_floor),
    )


def _adam(learning_rate: float, floor: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Projected Adam ascent (Kingma and Ba 2015) onto ``θ ≥ floor``, as ANCER's implementation steps."""
    state: dict[str, Any] = {"t": 0, "m": None, "v": None}
    beta1, beta2 = _ADAM_BETAS

    def advance(theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        if state["m"] is None:
            state["m"], state["v"] = torch.zeros_like(theta), torch.zeros_like(theta)
        state["t"] += 1
        state["m"] = beta1 * state["m"] + (1 - beta1) * gradient
        state["v"] = beta2 * state["v"] + (1 - beta2) * gradient.square()
        m_hat = state["m"] / (1 - beta1 ** state["t"])
        v_hat = state["v"] / (1 - beta2 ** state["t"])
        return (theta + learning_rate * m_hat / (v_hat.sqrt() + _ADAM_EPS)).clamp_min(floor)

    return advance


def optimise_isotropic(
    estimator: MonteCarloEstimator,
    x: torch.Tensor,
    top_class: int,
    sigma0: float,
    settings: AscentSettings,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> OptimisedNoise:
    """DDRS (Alfarra et al.; the paper's Eq. 3): gradient ascent on ``log σ`` of ``σ·Φ⁻¹(p_A(σ))`` from ``sigma0``."""
    objective = IsotropicObjective(
        estimator, x, top_class, n_samples=settings.opt_samples, generator=generator, batch_size=batch_size
    )
    start = torch.tensor(math.log(sigma0), dtype=objective.dtype, device=estimator.device)
    return _ascend(
        objective,
        start,
        lambda u, gradient: u + settings.learning_rate * gradient,
        settings.iterations,
        "ddrs",
        sigma0,
        keep_best=True,
    )


def optimise_diagonal(
    estimator: MonteCarloEstimator,
    x: torch.Tensor,
    top_class: int,
    theta0: torch.Tensor,
    floor: float,
    kappa: float,
    settings: AscentSettings,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> OptimisedNoise:
    """ANCER (Eiras et al.; the paper's Eq. 4): projected Adam ascent on ``θ`` from ``theta0``, ``θ ≥ floor``."""
    objective = DiagonalObjective(
        estimator,
        x,
        top_class,
        kappa=kappa,
        n_samples=settings.opt_samples,
        generator=generator,
        batch_size=batch_size,
    )
    start = theta0.detach().to(device=estimator.device, dtype=objective.dtype).reshape(-1).clamp_min(floor)
    advance = _adam(settings.learning_rate, floor)
    return _ascend(objective, start, advance, settings.iterations, "ancer", floor, keep_best=False)


def optimise_full(
    estimator: MonteCarloEstimator,
    x: torch.Tensor,
    top_class: int,
    covariance0: torch.Tensor,
    floor: float,
    kappa: float,
    manifold: SPDManifold,
    settings: AscentSettings,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> OptimisedNoise:
    """RDDRS (the paper's Eq. 5–6): ``Σ ← Exp_Σ(γ·grad H)`` on SPD(d), then eigenvalues clipped at ``floor²``."""
    objective = FullCovarianceObjective(
        estimator,
        x,
        top_class,
        kappa=kappa,
        n_samples=settings.opt_samples,
        generator=generator,
        batch_size=batch_size,
    )
    start = _clip_eigenvalues(
        covariance0.detach().to(device=estimator.device, dtype=objective.dtype), floor**2
    )

    def advance(covariance: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        moved = manifold.retract_step(covariance, gradient, settings.learning_rate)
        return _clip_eigenvalues(moved, floor**2)

    return _ascend(objective, start, advance, settings.iterations, "rddrs", floor, keep_best=False)


def _clip_eigenvalues(matrix: torch.Tensor, lower: float) -> torch.Tensor:
    """``U max(Λ, lower) Uᵀ`` of the symmetric part of ``matrix``."""
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.mT) / 2)
    clipped = (vectors * eigenvalues.clamp_min(lower)) @ vectors.mT
    return (clipped + clipped.mT) / 2


# ---------------------------------------------------------------------------------------------------------------
# The certifiers
# ---------------------------------------------------------------------------------------------------------------


class DataDependentCertifier(AbstractCertifier):
    """The SELECT / OPTIMISE / CERTIFY protocol of data-dependent Gaussian smoothing (module docstring).

    Parameters
    ----------
    model : nn.Module or None
    sigma : float
        ``σ₀``: the starting standard deviation (SELECT's noise and the optimisation's start), pixel units.
    iterations : int
        Ascent steps (0 certifies the start).
    opt_samples : int, optional
        Monte Carlo samples per ascent step; the method's default when omitted.
    learning_rate : float, optional
        Step size; the method's default when omitted.
    memory : CertificationMemory or bool
        ``True`` makes a new :class:`~manifoldcert.certifiers.memory.CertificationMemory`; an instance is used
        (and may be shared); ``False`` certifies without one (``guaranteed=False``).
    max_region_dim : int
        Certificates carry ``region=Ellipsoid(Σ, r)`` (a dense ``d × d`` matrix) up to this dimension and
        ``region=None`` above it (the radii and ``params`` are reported either way).
    **options
        ``batch_size``, ``num_classes``, ``input_shape``, ``seed`` as for every certifier.
    """

    native_norm = "l2"
    extra_columns = ("proxy_radius", "sigma_min", "sigma_max", "memory")
    default_learning_rate: ClassVar[float]
    default_opt_samples: ClassVar[int] = 100

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float = 0.25,
        iterations: int = 100,
        opt_samples: int | None = None,
        learning_rate: float | None = None,
        memory: CertificationMemory | bool = False,
        max_region_dim: int = 4096,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.sigma = check_positive_float(sigma, "sigma")
        self.settings = AscentSettings(
            iterations=iterations,
            opt_samples=self.default_opt_samples if opt_samples is None else opt_samples,
            learning_rate=self.default_learning_rate if learning_rate is None else learning_rate,
        )
        if isinstance(memory, CertificationMemory):
            self.memory: CertificationMemory | None = memory
        elif isinstance(memory, bool):
            self.memory = CertificationMemory() if memory else None
        else:
            raise TypeError(f"memory must be a CertificationMemory or a bool, got {type(memory).__name__}")
        self.max_region_dim = check_positive_int(max_region_dim, "max_region_dim")

    @property
    def guaranteed(self) -> bool:
        """True with a memory (consistency of the memory-based classifier), False without (module docstring)."""
        return self.memory is not None

    # -- the three stages ---------------------------------------------------------------------------------------
    def start_noise(self, x: torch.Tensor) -> AbstractNoise:
        """SELECT's noise: ``N(0, σ₀²I)``."""
        return Gaussian(self.sigma)

    def select(
        self,
        x: torch.Tensor,
        n0: int = DEFAULT_N0,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> int:
        """SELECT: the class with most of ``n0`` votes under :meth:`start_noise`."""
        counts = self.require_estimator().class_counts(
            x, self.start_noise(x), n0, generator=self._generator_for(generator), batch_size=batch_size
        )
        return int(counts.argmax())

    @abc.abstractmethod
    def optimise(
        self,
        x: torch.Tensor,
        top_class: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> OptimisedNoise:
        """OPTIMISE: the noise maximising the method's objective for ``top_class`` at ``x``."""

    def method_params(self) -> dict[str, Any]:
        """Method-specific entries of ``Certificate.params``."""
        return {}

    def check_resources(self, x: torch.Tensor) -> None:
        """Raise before any sampling when certifying ``x`` cannot fit in memory (nothing to check by default)."""

    def noise_for(self, x: torch.Tensor) -> AbstractNoise:
        """The noise this certifier would use at ``x``: SELECT on ``n0 = 100`` votes, then OPTIMISE."""
        x = self._check_x(x)
        top_class = self.select(x, DEFAULT_N0, generator=self._generator)
        return self.optimise(x, top_class, generator=self._generator).noise

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
        """Certify one input: memory look-up (with a memory), then SELECT, OPTIMISE and CERTIFY.

        Returns
        -------
        Certificate
            ``region = Ellipsoid(Σ, r)``; ``radius`` l2 = l1 = ``r·sqrt(λ_min Σ)``, l∞ = l2/√d; ``params`` with
            ``proxy_radius``, ``sigma`` (``sqrt(tr Σ/d)``), ``sigma_min``/``sigma_max`` (``sqrt`` of the extreme
            eigenvalues), ``sigma_start``, ``sigma_floor``, ``iterations``, ``stop_reason``, ``objective``,
            ``start_objective`` and ``memory`` (``off``, ``hit``, ``stored``, ``shrunk``, ``conflict`` or
            ``not stored``).
        """
        estimator = self.require_estimator()
        x, alpha = self._check_protocol(x, n0, n, alpha)
        self.check_resources(x)
        generator = self._generator_for(generator)
        start = time.perf_counter()
        if self.memory is not None:
            hit = self.memory.lookup(x)
            if hit is not None:
                return self._memory_certificate(hit, x.numel(), n0, n, alpha, start)
        top_class = self.select(x, n0, generator=generator, batch_size=batch_size)
        result = self.optimise(x, top_class, generator=generator, batch_size=batch_size)
        counts = estimator.class_counts(x, result.noise, n, generator=generator, batch_size=batch_size)
        p_lower = clopper_pearson_lower(int(counts[top_class]), n, alpha)
        abstain = p_lower < 0.5
        radius = 0.0 if abstain else _inverse_normal_float(p_lower)
        status = "off"
        if self.memory is not None:
            if abstain:
                status = "not stored"
            else:
                stored = self.memory.add(x, top_class, result.shape, radius, p_lower=p_lower)
                status = "stored" if stored == radius else ("shrunk" if stored > 0 else "conflict")
                radius, abstain = stored, stored <= 0
        prediction = None if abstain else top_class
        params = {
            "sigma_start": self.sigma,
            "sigma_floor": result.sigma_floor,
            "iterations": result.iterations,
            "stop_reason": result.stop_reason,
            "objective": result.objective,
            "start_objective": result.start_objective,
            "memory": status,
            **self.method_params(),
        }
        return self._certificate(
            prediction, result.shape, radius, p_lower, params, n0, n, alpha, time.perf_counter() - start
        )

    # -- certificates -------------------------------------------------------------------------------------------
    def _certificate(
        self,
        prediction: int | None,
        shape: torch.Tensor,
        radius: float,
        p_lower: float | None,
        params: dict[str, Any],
        n0: int,
        n: int,
        alpha: float,
        seconds: float,
    ) -> Certificate:
        eigenvalues = torch.sort(shape).values if shape.dim() == 1 else torch.linalg.eigvalsh(shape)
        dim = eigenvalues.numel()
        if prediction is None:
            radius = 0.0
        l2 = radius * math.sqrt(float(eigenvalues[0]))
        region = None
        if prediction is not None and dim <= self.max_region_dim:
            region = Ellipsoid(torch.diag(shape) if shape.dim() == 1 else shape, radius)
        params = {
            "sigma": math.sqrt(float(eigenvalues.mean())),
            "proxy_radius": radius * math.exp(float(eigenvalues.log().sum()) / (2 * dim)),
            "sigma_min": math.sqrt(float(eigenvalues[0])),
            "sigma_max": math.sqrt(float(eigenvalues[-1])),
            **params,
        }
        return Certificate(
            prediction=prediction,
            radius={"l1": l2, "l2": l2, "linf": l2 / math.sqrt(dim)},
            p_lower=p_lower,
            method=self.name,
            n0=n0,
            n=n,
            alpha=alpha,
            seconds=seconds,
            region=region,
            guaranteed=self.guaranteed,
            params=params,
        )

    def _memory_certificate(
        self, hit: MemoryHit, dim: int, n0: int, n: int, alpha: float, start: float
    ) -> Certificate:
        """Step 1 of the memory rule: the stored class, with the ``Σ_i``-ellipsoid around ``x`` inside ``E_i``."""
        entry = hit.entry
        shape = entry.shape.variances if entry.shape.is_diagonal else entry.covariance
        params = {
            "sigma_start": self.sigma,
            "memory": "hit",
            "memory_index": hit.index,
            "memory_distance": hit.distance,
            **self.method_params(),
        }
        return self._certificate(
            entry.prediction,
            shape,
            hit.radius,
            entry.p_lower,
            params,
            n0,
            n,
            alpha,
            time.perf_counter() - start,
        )

    def _predict(
        self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None, batch_size: int | None
    ) -> int | None:
        """PREDICT of the data-dependent (memory-based, with a memory) classifier: a memory look-up, else SELECT
        on 100 votes, OPTIMISE, and Cohen et al.'s binomial test on ``n`` votes under the optimised noise."""
        if self.memory is not None:
            hit = self.memory.lookup(x)
            if hit is not None:
                return hit.entry.prediction
        top_class = self.select(x, DEFAULT_N0, generator=generator, batch_size=batch_size)
        noise = self.optimise(x, top_class, generator=generator, batch_size=batch_size).noise
        counts = self.require_estimator().class_counts(
            x, noise, n, generator=generator, batch_size=batch_size
        )
        top2 = torch.topk(counts, k=min(2, counts.numel()))
        n_a = int(top2.values[0])
        n_b = int(top2.values[1]) if counts.numel() > 1 else 0
        return None if binomial_test_pvalue(n_a, n_a + n_b) > alpha else int(top2.indices[0])


def _inverse_normal_float(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def _check_start(start: str, method: str) -> str:
    return check_name(start, STARTS[method], f"{method} start")


def _check_kappa(kappa: float) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 <= kappa < math.inf:
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    return float(kappa)


class DDRS(DataDependentCertifier):
    """``ddrs``: isotropic ``N(0, σ²I)`` with σ optimised at each input (Alfarra et al. 2022; the paper's Eq. 3).

    Plain gradient ascent on ``log σ`` of ``R(σ) = σ·Φ⁻¹(p_A(σ))`` from ``σ₀ = sigma`` (``learning_rate`` 0.1,
    100 iterations of 100 samples), keeping the σ with the best estimated ``R``. Alfarra et al. ascend σ itself
    with learning rate 1e-4 for up to 1,500 iterations; the log parameterisation keeps σ > 0 and makes the step
    relative.
    """

    name = "ddrs"
    default_learning_rate = 0.1

    def optimise(
        self,
        x: torch.Tensor,
        top_class: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> OptimisedNoise:
        return optimise_isotropic(
            self.require_estimator(),
            x,
            top_class,
            self.sigma,
            self.settings,
            generator=self._generator_for(generator),
            batch_size=batch_size,
        )


class ANCER(DataDependentCertifier):
    """``ancer``: diagonal ``N(0, diag(θ)²)`` optimised at each input (Eiras et al. 2022; the paper's Eq. 4).

    Maximises ``r(θ)·(∏θ_i)^{1/d} + κ·min_i θ_i·r(θ)`` by projected Adam ascent on ``θ`` (learning rate 0.04,
    100 iterations of 100 samples, ``κ = 2``: ANCER's defaults), ``θ_i ≥ σ*``.

    Parameters
    ----------
    kappa : float
        Weight of the penalty ``min_i θ_i·r`` (ANCER's relaxation of "the isotropic DDRS ball stays inside").
    start : {"ddrs", "sigma"}
        ``"ddrs"``: run DDRS first and start from, and bound below by, its σ* (ANCER's procedure);
        ``"sigma"``: ``σ* = σ₀``.
    ddrs_options : mapping, optional
        ``iterations``, ``opt_samples``, ``learning_rate`` of the inner DDRS run; by default this certifier's
        ``iterations`` and DDRS's ``opt_samples`` (100) and ``learning_rate`` (0.1).
    **options
        As for :class:`DataDependentCertifier`.
    """

    name = "ancer"
    default_learning_rate = 0.04

    def __init__(
        self,
        model: nn.Module | None,
        *,
        kappa: float = 2.0,
        start: str = "ddrs",
        ddrs_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.kappa = _check_kappa(kappa)
        self.start = _check_start(start, "ancer")
        self.ddrs_settings = _ddrs_defaults(self.settings).updated(ddrs_options, "ddrs_options")

    def method_params(self) -> dict[str, Any]:
        return {"kappa": self.kappa, "start": self.start}

    def optimise(
        self,
        x: torch.Tensor,
        top_class: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> OptimisedNoise:
        estimator = self.require_estimator()
        generator = self._generator_for(generator)
        floor = self.sigma
        if self.start == "ddrs":
            ddrs = optimise_isotropic(
                estimator,
                x,
                top_class,
                self.sigma,
                self.ddrs_settings,
                generator=generator,
                batch_size=batch_size,
            )
            floor = math.sqrt(float(ddrs.shape[0]))
        theta0 = torch.full((x.numel(),), floor, dtype=torch.float64)
        return optimise_diagonal(
            estimator,
            x,
            top_class,
            theta0,
            floor,
            self.kappa,
            self.settings,
            generator=generator,
            batch_size=batch_size,
        )


class RDDRS(DataDependentCertifier):
    """``rddrs``: full covariance ``N(0, Σ)`` optimised on SPD(d) at each input (the paper's Eq. 5–6).

    Maximises ``H(Σ) = r(Σ)·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r(Σ)`` by Riemannian gradient ascent
    ``Σ ← Exp_Σ(γ·grad H(Σ))`` (``γ = learning_rate``, default 1.0, the middle of the paper's {0.5, 1, 25}; 100
    iterations of 1,000 samples — the paper uses 20,000, pass ``opt_samples=20_000`` to reproduce it), with the
    eigenvalues clipped at ``σ*²`` after each step.

    Parameters
    ----------
    metric : str
        One of :data:`manifoldcert.geometry.spd.METRICS` (``"affine-invariant"``, the paper's, by default).
        The learning rate is in the metric's own units: at ``Σ = σ²I`` the affine-invariant and log-Euclidean
        gradients are ``σ⁴G`` and the Bures–Wasserstein one ``4σ²G``.
    kappa : float
        Weight of ``λ_min^{1/2}·r`` (default 1e-6, the paper's).
    start : {"ancer", "ddrs", "sigma"}
        Starting covariance: ANCER's ``diag(θ²)`` (DDRS, then ANCER, then RDDRS), DDRS's ``σ*²I``, or ``σ₀²I``.
        ``σ*`` is DDRS's σ (``σ₀`` for ``"sigma"``).
    initial_covariance : Tensor, shape (d, d), optional
        Start here instead (checked SPD); SELECT then uses ``N(0, initial_covariance)`` and
        ``σ* = λ_min(initial_covariance)^{1/2}``.
    ddrs_options, ancer_options : mapping, optional
        Settings of the inner runs: ``iterations`` (default: this certifier's), ``opt_samples`` and
        ``learning_rate`` (default: DDRS's and ANCER's own, 100 samples and 0.1 / 0.04), and ``kappa`` for ANCER
        (default 2).
    **options
        As for :class:`DataDependentCertifier`.

    Before anything is allocated, the ``d × d`` matrices are checked to fit in the available memory
    (:func:`~manifoldcert.geometry.spd.check_full_covariance_fits`).
    """

    name = "rddrs"
    default_learning_rate = 1.0
    default_opt_samples = 1000

    def __init__(
        self,
        model: nn.Module | None,
        *,
        metric: str = "affine-invariant",
        kappa: float = 1e-6,
        start: str = "ancer",
        initial_covariance: torch.Tensor | None = None,
        ddrs_options: Mapping[str, Any] | None = None,
        ancer_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.manifold = SPDManifold(metric)
        self.metric = self.manifold.metric
        self.kappa = _check_kappa(kappa)
        self.start = _check_start(start, "rddrs")
        self.initial_covariance = None
        if initial_covariance is not None:
            covariance = torch.as_tensor(initial_covariance)
            if not covariance.is_floating_point():
                raise TypeError("initial_covariance must be a floating-point tensor")
            self.initial_covariance = check_spd(covariance.double(), "initial_covariance")
        self.ddrs_settings = _ddrs_defaults(self.settings).updated(ddrs_options, "ddrs_options")
        ancer_options = dict(ancer_options or {})
        self.ancer_kappa = _check_kappa(ancer_options.pop("kappa", 2.0))
        self.ancer_settings = _ancer_defaults(self.settings).updated(ancer_options, "ancer_options")

    def method_params(self) -> dict[str, Any]:
        start = "covariance" if self.initial_covariance is not None else self.start
        return {"metric": self.metric, "kappa": self.kappa, "start": start}

    def check_resources(self, x: torch.Tensor) -> None:
        """The ``d × d`` matrices of one RDDRS run (6 in float64) must fit in the free memory of the model's device;
        otherwise :class:`~manifoldcert.geometry.spd.CovarianceTooLargeError` says how many bytes they need."""
        check_full_covariance_fits(
            x.numel(), torch.float64, n_matrices=6, device=self.require_estimator().device
        )

    def start_noise(self, x: torch.Tensor) -> AbstractNoise:
        if self.initial_covariance is None:
            return Gaussian(self.sigma)
        return FullCovarianceGaussian(self._initial_covariance_for(x).to(self.require_estimator().dtype))

    def _initial_covariance_for(self, x: torch.Tensor) -> torch.Tensor:
        covariance = self.initial_covariance
        if covariance.shape != (x.numel(), x.numel()):
            raise ValueError(
                f"initial_covariance is {covariance.shape[0]}×{covariance.shape[1]} but the input has "
                f"{x.numel()} coordinates"
            )
        return covariance.to(self.require_estimator().device)

    def optimise(
        self,
        x: torch.Tensor,
        top_class: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> OptimisedNoise:
        estimator = self.require_estimator()
        generator = self._generator_for(generator)
        d = x.numel()
        self.check_resources(x)
        dtype = _parameter_dtype(estimator.device)
        options = {"generator": generator, "batch_size": batch_size}
        if self.initial_covariance is not None:
            covariance0 = self._initial_covariance_for(x).to(dtype)
            floor = math.sqrt(float(torch.linalg.eigvalsh(covariance0).min()))
        elif self.start == "sigma":
            floor = self.sigma
            covariance0 = self.sigma**2 * torch.eye(d, dtype=dtype, device=estimator.device)
        else:
            ddrs = optimise_isotropic(estimator, x, top_class, self.sigma, self.ddrs_settings, **options)
            floor = math.sqrt(float(ddrs.shape[0]))
            variances = ddrs.shape
            if self.start == "ancer":
                theta0 = torch.full((d,), floor, dtype=torch.float64)
                ancer = optimise_diagonal(
                    estimator, x, top_class, theta0, floor, self.ancer_kappa, self.ancer_settings, **options
                )
                variances = ancer.shape
            covariance0 = torch.diag(variances).to(device=estimator.device, dtype=dtype)
        return optimise_full(
            estimator, x, top_class, covariance0, floor, self.kappa, self.manifold, self.settings, **options
        )


def _ddrs_defaults(settings: AscentSettings) -> AscentSettings:
    return AscentSettings(settings.iterations, DDRS.default_opt_samples, DDRS.default_learning_rate)


def _ancer_defaults(settings: AscentSettings) -> AscentSettings:
    return AscentSettings(settings.iterations, ANCER.default_opt_samples, ANCER.default_learning_rate)
