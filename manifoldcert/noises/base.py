"""The interface every smoothing noise implements.

A noise is a distribution over perturbations ``z`` of one input of shape ``input_shape``. Its user-facing
scale is ``sigma = sqrt(E‖z‖² / d)`` (Yang et al. 2020), whatever the family's own parameters are, so that
noises of different shapes are compared at equal energy. Coordinates may be i.i.d. (Gaussian, Laplace,
uniform) or joint (full covariance).

Sampling is *reparameterised*: ``sample`` is a differentiable function of the noise's parameters when those
are tensors that require grad (``z = σ·ε`` with ``ε`` drawn without grad), which is what the estimator's
gradients with respect to σ, a diagonal or a covariance factor rely on.

All randomness comes from an explicit ``torch.Generator`` argument; with ``None`` torch's default generator
for the device is used.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

Scale = float | torch.Tensor


class AbstractNoise(abc.ABC):
    """A smoothing distribution: ``sample``, ``log_prob``, ``perturb`` and the common scale ``sigma``."""

    name: ClassVar[str]
    #: True when coordinates are i.i.d.: ``log_prob`` of any subset of coordinates is then their own joint log
    #: density, which lets a shift touching k coordinates be evaluated at O(k) cost (UniCR's boundary).
    iid_coordinates: ClassVar[bool] = False
    #: True when the density is symmetric, ``p(−z) = p(z)``: antithetic samples then double a Monte Carlo
    #: estimate of a likelihood-ratio law for free (UniCR's boundary).
    symmetric: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def sigma(self) -> float:
        """``sqrt(E‖z‖² / d)``: the root-mean-square noise per coordinate, in pixel units."""

    @abc.abstractmethod
    def sample(
        self,
        n_samples: int,
        shape: tuple[int, ...] | torch.Size,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw ``n_samples`` independent perturbations of one input of shape ``shape``.

        Returns
        -------
        Tensor, shape (n_samples, *shape)
        """

    @abc.abstractmethod
    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """Joint log density of perturbations.

        Parameters
        ----------
        noise : Tensor, shape (n_samples, *shape)

        Returns
        -------
        Tensor, shape (n_samples,)
            ``log p(z)`` summed over all coordinates (``-inf`` outside the support).
        """

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The registry name and keyword arguments that rebuild this noise with ``noises.get(**config)``."""

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return a noisy copy of each row of ``inputs`` (shape ``(batch, *shape)``), one independent draw per row.

        The estimator and the training loop both go through this method, so a noise that is not additive
        (splitting noise) or depends on the input overrides it.
        """
        noise = self.sample(
            inputs.shape[0], inputs.shape[1:], generator=generator, device=inputs.device, dtype=inputs.dtype
        )
        return inputs + noise

    def sampling_error(self, dim: int) -> float:
        """An upper bound on the total variation between the law :meth:`perturb` draws for a ``dim``-coordinate
        input and the law the certificate is stated for; certifiers lower ``p_A``'s bound by it.

        0 for samplers taken as exact (every continuous noise here: the floating-point rounding of their draws is
        not accounted for, see docs/conventions.md); a discretised sampler with rounded thresholds reports its own.
        """
        return 0.0

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}" if value.numel() > 1 else f"{float(value):.4g}"
    return repr(value)


def resolve_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, or torch's default floating dtype at call time."""
    return dtype if dtype is not None else torch.get_default_dtype()


def check_scale(value: Scale, name: str) -> Scale:
    """Check a positive finite scale (a float or a tensor of them) and return it unchanged."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0 or not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ValueError(f"{name} must be finite and > 0 everywhere")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def sigma_or_scale(
    sigma: Scale | None, scale: Scale | None, scale_name: str, sigma_per_scale: float
) -> Scale:
    """Resolve the family's own scale from exactly one of ``sigma`` and ``scale``.

    ``sigma_per_scale`` is ``sigma / scale`` for the family (1 for a Gaussian, √2 for Laplace, 1/√3 for uniform).
    """
    if (sigma is None) == (scale is None):
        raise ValueError(f"give exactly one of sigma and {scale_name}")
    if scale is not None:
        return check_scale(scale, scale_name)
    assert sigma is not None  # exactly one was given
    return check_scale(sigma, "sigma") / sigma_per_scale


def as_float(value: Scale) -> float:
    """A scale as a Python float (a tensor is detached first), for ``config()`` and error messages."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class AbstractDensityFreeNoise(AbstractNoise):
    """A noise with no density over additive perturbations (a discrete law, a non-additive map of the input, a law
    that depends on the input): ``log_prob`` refuses with :attr:`density_note`, so density-based certifiers
    (UniCR, the functional bound) cannot be handed one by mistake."""

    #: Why there is no density, completing "``{name}`` has no log_prob: …".
    density_note: ClassVar[str]

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no log_prob: {self.density_note}")


class AbstractFiniteNoise(AbstractNoise):
    """A noise whose support, at a given input, is a finite list of equally likely noisy inputs.

    The estimator evaluates all of them (``MonteCarloEstimator.exact_class_counts``), which gives smoothed
    class scores exactly — the derandomised certificates (DSSN).
    """

    @property
    @abc.abstractmethod
    def support_size(self) -> int:
        """Number of equally likely noisy inputs."""

    @abc.abstractmethod
    def support(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Noisy inputs ``start … stop − 1`` of the support at ``x``; shape ``(stop − start, *x.shape)``."""
