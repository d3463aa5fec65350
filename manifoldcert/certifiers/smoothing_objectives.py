"""The objectives of data-dependent Gaussian smoothing, as differentiable Monte Carlo objectives on a manifold.

Each is built on the SOFT smoothed probability of the selected class, ``p_A = E_z[softmax_{c_A} f(x + z)]``,
estimated by the shared :class:`~manifoldcert.estimator.MonteCarloEstimator` with reparameterised gradients, and
on ``r = Φ⁻¹(p_A)`` with ``p_A`` clamped to ``[1e-4, 1 − 1e-4]`` (so ``∂r = ∂p_A / φ(Φ⁻¹(p_A))`` inside the clamp
and 0 outside). An evaluation with a given ``seed`` draws its noise from a generator seeded with it, and the noise
of every family is a fixed transform of the same standard normal draws (``σ ε``, ``θ ∘ ε``, ``A ε``), so two
points evaluated with one seed are compared on common random numbers.

With ``r(Σ) = Φ⁻¹(p_A(Σ))`` (Labarbarie, Hajri and Arnaudon 2022, Eq. 3–5):

:class:`IsotropicObjective` — DDRS (Alfarra et al.; Eq. 3), point ``σ`` on the positive reals
    ``R(σ) = σ · r(σ²I)``.
:class:`DiagonalObjective` — ANCER (Eiras et al.; Eq. 4), point ``θ`` on the positive diagonals
    ``r(θ)·(∏θ_i)^{1/d} + κ·min_i θ_i·r(θ)`` for ``N(0, diag(θ)²)``; the minimum's gradient is shared among ties.
:class:`FullCovarianceObjective` — RDDRS (Eq. 5), point ``Σ`` on SPD(d)
    ``H(Σ) = r(Σ)·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r(Σ)``. The noise is ``A ε`` with ``A = cholesky(Σ)``; the
    gradient with respect to ``A`` is chained to ``Σ`` through ``torch.linalg.cholesky``, whose backward needs no
    eigenvalue gaps (finite at ``Σ = σ²I``); ``λ_min``'s gradient is the average of ``u uᵀ/(2√λ_min)`` over an
    orthonormal basis of its eigenspace (a subgradient).

Points are float64 (float32 on Apple MPS) on the model's device; the noise the model sees is in the model's dtype.

References
----------
Alfarra, Bibi, Torr and Ghanem (2022), Data dependent randomized smoothing, UAI.
Eiras, Alfarra, Kumar, Torr, Dokania, Ghanem and Bibi (2022), ANCER, TMLR.
Labarbarie, Hajri and Arnaudon (2022), Riemannian data-dependent randomized smoothing for neural networks
certification, ICML workshop, Eq. 3–6.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, final

import torch

from manifoldcert._validation import check_positive_int
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.geometry.covariance import Covariance
from manifoldcert.noises import AbstractNoise
from manifoldcert.noises.gaussian import DiagonalGaussian, FullCovarianceGaussian, Gaussian
from manifoldcert.optimize.problem import DifferentiableObjective

__all__ = [
    "PROBABILITY_CLAMP",
    "DiagonalObjective",
    "FullCovarianceObjective",
    "IsotropicObjective",
    "SmoothingObjective",
    "gaussian_noise",
    "inverse_normal",
    "parameter_dtype",
]

#: ``p_A`` is clamped to ``[PROBABILITY_CLAMP, 1 − PROBABILITY_CLAMP]`` inside the objectives.
PROBABILITY_CLAMP = 1e-4


def parameter_dtype(device: torch.device) -> torch.dtype:
    """float64 for the optimised parameters, except where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def inverse_normal(probability: torch.Tensor) -> torch.Tensor:
    """``Φ⁻¹`` of ``p`` clamped to ``[1e-4, 1 − 1e-4]`` (zero gradient outside)."""
    return torch.special.ndtri(probability.clamp(PROBABILITY_CLAMP, 1.0 - PROBABILITY_CLAMP))


def gaussian_noise(covariance: Covariance, *, dtype: torch.dtype, device: torch.device) -> AbstractNoise:
    """``N(0, Σ)`` for a :class:`~manifoldcert.geometry.covariance.Covariance`, in ``dtype`` on ``device``."""
    if covariance.kind == "isotropic":
        variances = covariance.variances
        assert variances is not None  # the isotropic kind keeps its variances
        return Gaussian(float(variances[0].sqrt()))
    if covariance.kind == "diagonal":
        return DiagonalGaussian(covariance.scales().to(device=device, dtype=dtype))
    factor = covariance.factor
    assert factor is not None  # the full kind keeps its Cholesky factor
    return FullCovarianceGaussian(factor=factor.to(device=device, dtype=dtype))


class SmoothingObjective(DifferentiableObjective):
    """A data-dependent objective ``J(point)`` at one input ``x`` and class ``c_A``, built on ``r = Φ⁻¹(p_A)``.

    Subclasses give the differentiable map from the point to the tensor the noise samples through
    (:meth:`noise_parameter`), the noise built from it, ``J`` from ``(point, r)``, and the point's covariance.

    Parameters
    ----------
    estimator : MonteCarloEstimator
    x : Tensor
        One input.
    top_class : int
        ``c_A``.
    n_samples : int
        Monte Carlo samples per evaluation.
    batch_size : int, optional
    """

    def __init__(
        self,
        estimator: MonteCarloEstimator,
        x: torch.Tensor,
        top_class: int,
        *,
        n_samples: int,
        batch_size: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.x = x
        self.dim = x.numel()
        self.top_class = int(top_class)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.batch_size = batch_size
        self.dtype = parameter_dtype(estimator.device)
        self._weights: torch.Tensor | None = None

    @abc.abstractmethod
    def noise_parameter(self, point: torch.Tensor) -> torch.Tensor:
        """The differentiable map from ``point`` to the tensor the noise samples through."""

    @abc.abstractmethod
    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        """The noise built from ``noise_parameter`` (in the model's dtype)."""

    @abc.abstractmethod
    def objective(self, point: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``J`` from ``point`` and ``r = Φ⁻¹(p_A)`` (differentiable in both)."""

    @abc.abstractmethod
    def covariance(self, point: torch.Tensor) -> Covariance:
        """The covariance of the noise at ``point``."""

    def _generator(self, seed: int | None) -> torch.Generator:
        return self.estimator.generator(0 if seed is None else seed)

    def _one_hot(self) -> torch.Tensor:
        if self._weights is None:
            if self.estimator.num_classes is None:  # one plain forward pass reads the number of classes
                self.estimator.class_counts(self.x, Gaussian(1.0), 1, generator=self._generator(0))
            num_classes = self.estimator.num_classes
            assert num_classes is not None  # fixed by the first forward pass
            weights = torch.zeros(num_classes, dtype=torch.float64)
            weights[self.top_class] = 1.0
            self._weights = weights
        return self._weights

    def _estimate(self, noise_parameter: torch.Tensor, seed: int | None) -> tuple[float, torch.Tensor]:
        """Soft ``p_A`` and its gradient with respect to ``noise_parameter`` (same dtype)."""
        leaf = noise_parameter.detach().to(self.estimator.dtype).requires_grad_(True)
        with torch.enable_grad():
            mean, (gradient,) = self.estimator.mean_softmax_and_gradient(
                self.x,
                self.noise(leaf),
                self.n_samples,
                [leaf],
                weights=self._one_hot(),
                generator=self._generator(seed),
                batch_size=self.batch_size,
            )
        return float(mean[self.top_class]), gradient.to(noise_parameter.dtype)

    def probability_and_gradient(
        self, point: torch.Tensor, *, seed: int | None = None
    ) -> tuple[float, torch.Tensor]:
        """Soft ``p_A`` at ``point`` and its reparameterised gradient ``∂p_A/∂point`` (one Monte Carlo estimate)."""
        probability, _, gradient = self._chain_rule(point, seed, lambda leaf, surrogate: surrogate)
        return probability, gradient

    def value_and_gradient(
        self, point: torch.Tensor, *, seed: int | None = None
    ) -> tuple[float, torch.Tensor]:
        """``J(point)`` and its Euclidean gradient ``∂J/∂point`` (one Monte Carlo estimate of ``p_A`` and ``∂p_A``)."""
        _, value, gradient = self._chain_rule(
            point, seed, lambda leaf, surrogate: self.objective(leaf, inverse_normal(surrogate))
        )
        return value, gradient

    def _chain_rule(
        self,
        point: torch.Tensor,
        seed: int | None,
        function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[float, float, torch.Tensor]:
        """``p_A``, ``F = function(point, p_A)`` and ``∂F/∂point``: one Monte Carlo estimate of ``p_A`` and its
        gradient with respect to the noise parameter, chained to ``point`` through ``p_A`` linearised at the
        estimate, so that autograd applies the chain rule once."""
        leaf = point.detach().requires_grad_(True)
        with torch.enable_grad():
            parameter = self.noise_parameter(leaf)
            probability, gradient = self._estimate(parameter, seed)
            surrogate = probability + (gradient * (parameter - parameter.detach())).sum()
            value = function(leaf, surrogate)
            (grad,) = torch.autograd.grad(value, leaf)
        return probability, float(value.detach()), grad

    def value(self, point: torch.Tensor, *, seed: int | None = None) -> float:
        """``J(point)`` from a soft estimate of ``p_A`` without gradients (same samples as the gradient's for the
        same ``seed``)."""
        point = point.detach()
        noise = self.noise(self.noise_parameter(point).to(self.estimator.dtype))
        mean = self.estimator.mean_softmax(
            self.x, noise, self.n_samples, generator=self._generator(seed), batch_size=self.batch_size
        )
        r = inverse_normal(torch.tensor(float(mean[self.top_class]), dtype=point.dtype, device=point.device))
        with torch.no_grad():
            return float(self.objective(point, r))


@final
class IsotropicObjective(SmoothingObjective):
    """DDRS (Eq. 3): ``R = σ·Φ⁻¹(p_A)`` for ``N(0, σ²I)``; the point is ``σ`` (a 0-dim tensor)."""

    def noise_parameter(self, point: torch.Tensor) -> torch.Tensor:
        return point

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        # A plain float (Gaussian's in-place fast path) when no gradient is needed.
        return Gaussian(noise_parameter if noise_parameter.requires_grad else float(noise_parameter))

    def objective(self, point: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return point * r

    def covariance(self, point: torch.Tensor) -> Covariance:
        return Covariance.isotropic(float(point), self.dim)


@final
class DiagonalObjective(SmoothingObjective):
    """ANCER (Eq. 4): ``r·(∏θ_i)^{1/d} + κ·min_i θ_i·r`` for ``N(0, diag(θ)²)``; the point is ``θ``, shape ``(d,)``."""

    def __init__(self, *args: Any, kappa: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kappa = float(kappa)

    def noise_parameter(self, point: torch.Tensor) -> torch.Tensor:
        return point

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        return DiagonalGaussian(noise_parameter)

    def objective(self, point: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r * point.log().mean().exp() + self.kappa * point.amin() * r

    def covariance(self, point: torch.Tensor) -> Covariance:
        return Covariance.diagonal(point)


@final
class FullCovarianceObjective(SmoothingObjective):
    """RDDRS (Eq. 5): ``H = r·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r`` for ``N(0, Σ)``; the point is ``Σ``, ``(d, d)``.

    The Euclidean gradient returned is symmetric.
    """

    def __init__(self, *args: Any, kappa: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kappa = float(kappa)

    def noise_parameter(self, point: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cholesky((point + point.mT) / 2)

    def noise(self, noise_parameter: torch.Tensor) -> AbstractNoise:
        return FullCovarianceGaussian(factor=noise_parameter)

    def objective(self, point: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        log_det = torch.linalg.slogdet(point).logabsdet
        return r * (log_det / (2 * self.dim)).exp() + self.kappa * _sqrt_min_eigenvalue(point) * r

    def covariance(self, point: torch.Tensor) -> Covariance:
        return Covariance.full(point.detach(), "the covariance")


def _sqrt_min_eigenvalue(matrix: torch.Tensor) -> torch.Tensor:
    """``λ_min^{1/2}`` with the subgradient ``P/(2m√λ_min)``, ``P`` the projector on the (m-dim) eigenspace of λ_min.

    Eigenvalues within a relative 1e-9 of the smallest count as tied, so the gradient does not depend on which
    eigenvector ``eigh`` happens to return at ``σ²I``.
    """
    if not matrix.requires_grad:  # the value alone: eigenvalues without eigenvectors cost a third
        return torch.linalg.eigvalsh(matrix)[0].sqrt()
    eigenvalues, vectors = torch.linalg.eigh(matrix.detach())
    smallest = eigenvalues[0]
    tied = vectors[:, eigenvalues <= smallest * (1 + 1e-9)]
    subgradient = (tied @ tied.mT) / (2 * tied.shape[1] * smallest.sqrt())
    return smallest.sqrt() + (subgradient * (matrix - matrix.detach())).sum()
