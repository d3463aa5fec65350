"""Noises whose scale depends on the input, and the σ(x) functions behind them.

The three samplers of the IDRC report (*Improved Diffusion Denoised Smoothing* — input-dependent robustness
certification, a course report; Figures 1–3):

- ``mean-scaled-gaussian`` (Fig. 1): ``z ~ N(0, σ(x)² I)`` with ``σ(x) = sigma · (mean|x| + offset)``
  (the report uses ``offset = 0``);
- ``random-radius-gaussian`` (Fig. 2): ``z = s·g·u`` with ``u`` uniform on the unit sphere and ``g ~ N(0, 1)``;
  despite its name in the report it does not depend on the input. ``s = sigma·√d`` so that
  ``sqrt(E‖z‖²/d) = sigma`` (the report's σ is our ``sigma·√d``);
- ``norm-scaled-laplace`` (Fig. 3): the direction of an i.i.d. Laplace vector, rescaled to the l2 norm
  ``sigma·‖x‖₂``.

Certifying these with the fixed-σ formula is not sound (docs/methods/input-dependent.md). The sound certifier
``input-dependent`` needs Gaussian noise ``N(0, σ(x)² I)`` whose log-scale is Lipschitz:
``|log σ(x) − log σ(y)| ≤ r‖x − y‖₂`` (the *semi-elasticity* r of Súkeník, Kuvshinov and Günnemann 2022).
:class:`SigmaFunction` subclasses declare r and check it at run time.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch

from manifoldcert.noises.base import AbstractDensityFreeNoise, AbstractNoise, check_scale, resolve_dtype
from manifoldcert.noises.laplace import standard_laplace


class SigmaFunction(abc.ABC):
    """A positive scale function ``σ(x)`` with a declared semi-elasticity ``r`` (l2)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """``σ`` of each row of ``inputs`` (shape ``(batch, *shape)``); returns shape ``(batch,)``."""

    @abc.abstractmethod
    def semi_elasticity(self, dim: int) -> float:
        """``r`` such that ``|log σ(x) − log σ(y)| ≤ r‖x − y‖₂`` for inputs of ``dim`` coordinates (may be inf)."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Name and parameters, for checkpoints and result files."""

    def checked(self, inputs: torch.Tensor) -> torch.Tensor:
        """``σ(inputs)``, refusing values that are not finite and positive."""
        sigma = self(inputs)
        if not bool(torch.isfinite(sigma).all()) or not bool((sigma > 0).all()):
            bad = sigma[~(torch.isfinite(sigma) & (sigma > 0))][0]
            raise ValueError(f"{self.name}: σ(x) must be finite and > 0, got {float(bad)!r} for some input")
        return sigma

    def verify(self, x: torch.Tensor, *, n_pairs: int = 64, generator: torch.Generator | None = None) -> None:
        """Check the declared semi-elasticity on random pairs around ``x``; raise if it is violated.

        A run-time check, not a proof: it catches σ functions that break their declared constraint.
        """
        r = self.semi_elasticity(x.numel())
        if math.isinf(r):
            return
        first = x.unsqueeze(0) + 0.3 * torch.randn((n_pairs, *x.shape), generator=generator, dtype=x.dtype)
        second = first + 0.05 * torch.randn(first.shape, generator=generator, dtype=x.dtype)
        first, second = first.clamp(0, 1), second.clamp(0, 1)
        gap = (torch.log(self.checked(first)) - torch.log(self.checked(second))).abs()
        allowed = r * (first - second).flatten(1).norm(dim=1)
        if bool((gap > allowed * (1 + 1e-6) + 1e-12).any()):
            raise ValueError(f"{self.name} violates its declared semi-elasticity r = {r:.4g}")


class ConstantSigma(SigmaFunction):
    """``σ(x) = sigma`` everywhere (r = 0): input-dependent certification reduces to Cohen et al.'s."""

    name = "constant"

    def __init__(self, sigma: float) -> None:
        self.sigma = float(check_scale(sigma, "sigma"))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.full((inputs.shape[0],), self.sigma, dtype=inputs.dtype, device=inputs.device)

    def semi_elasticity(self, dim: int) -> float:
        return 0.0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class MeanAbsSigma(SigmaFunction):
    """``σ(x) = scale · (mean|x| + offset)``, the report's Fig. 1 scale when ``offset = 0``.

    ``log(m + c)`` is ``1/c``-Lipschitz in ``m ≥ 0`` and ``|mean|x| − mean|y|| ≤ ‖x − y‖₁/d ≤ ‖x − y‖₂/√d``, so
    ``r = 1/(offset·√d)``; with ``offset = 0`` the semi-elasticity is unbounded and nothing can be certified.
    """

    name = "mean-abs"

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        self.scale = float(check_scale(scale, "scale"))
        if not offset >= 0 or math.isinf(offset):
            raise ValueError(f"offset must be a finite number >= 0, got {offset!r}")
        self.offset = float(offset)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.scale * (inputs.flatten(1).abs().mean(1) + self.offset)

    def semi_elasticity(self, dim: int) -> float:
        return math.inf if self.offset == 0 else 1.0 / (self.offset * math.sqrt(dim))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "offset": self.offset}


class _InputDependent(AbstractDensityFreeNoise):
    """A noise whose law depends on the input: no input-free ``sample`` or ``log_prob``, only ``perturb``."""

    density_note = "the density depends on the input"

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name}: the scale depends on the input; use perturb(inputs)")


class InputDependentGaussian(_InputDependent):
    """``z ~ N(0, σ(x)² I)`` for a :class:`SigmaFunction` ``σ``.

    It has no input-free ``sample`` or ``log_prob`` (use ``perturb(inputs)``), and no single ``sigma``: the
    property is NaN; ``sigma_function(inputs)`` gives σ per input.
    """

    name = "input-dependent-gaussian"

    def __init__(self, sigma_function: SigmaFunction) -> None:
        self.sigma_function = sigma_function

    @property
    def sigma(self) -> float:
        return math.nan

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = self.sigma_function.checked(inputs)
        noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return inputs + noise * sigma.view(-1, *([1] * (inputs.dim() - 1)))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_function": self.sigma_function.config()}


class MeanScaledGaussian(InputDependentGaussian):
    """The report's Fig. 1 sampler: ``N(0, (sigma·(mean|x| + offset))² I)``."""

    name = "mean-scaled-gaussian"

    def __init__(self, sigma: float, *, offset: float = 0.0) -> None:
        super().__init__(MeanAbsSigma(sigma, offset))

    def config(self) -> dict[str, Any]:
        sigma_function = self.sigma_function
        assert isinstance(sigma_function, MeanAbsSigma)  # set so by __init__
        return {"name": self.name, "sigma": sigma_function.scale, "offset": sigma_function.offset}


class RandomRadiusGaussian(AbstractNoise):
    """The report's Fig. 2 sampler: a uniform direction times ``s·g``, ``g ~ N(0, 1)``, ``s = sigma·√d``."""

    name = "random-radius-gaussian"

    def __init__(self, sigma: float) -> None:
        self._sigma = float(check_scale(sigma, "sigma"))

    @property
    def sigma(self) -> float:
        return self._sigma

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        dtype = resolve_dtype(dtype)
        dim = math.prod(shape)
        direction = torch.randn((n_samples, dim), generator=generator, device=device, dtype=dtype)
        direction = direction / direction.norm(dim=1, keepdim=True)
        radius = torch.randn((n_samples, 1), generator=generator, device=device, dtype=dtype)
        return (direction * radius * self._sigma * math.sqrt(dim)).reshape(n_samples, *shape)

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """``‖z‖ = s|g|`` with a uniform direction: ``p(z) = 2φ(‖z‖/s)/s / (|S^{d−1}| ‖z‖^{d−1})``."""
        flat = noise.flatten(1)
        dim = flat.shape[1]
        s = self._sigma * math.sqrt(dim)
        r = flat.norm(dim=1)
        log_sphere_area = math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)
        log_radial = math.log(2.0) - 0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * (r / s) ** 2
        return log_radial - log_sphere_area - (dim - 1) * torch.log(r)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self._sigma}


class NormScaledLaplace(_InputDependent):
    """The report's Fig. 3 sampler: an i.i.d. Laplace direction rescaled to l2 norm ``sigma·‖x‖₂``."""

    name = "norm-scaled-laplace"

    def __init__(self, sigma: float) -> None:
        self._sigma = float(check_scale(sigma, "sigma"))

    @property
    def sigma(self) -> float:
        return self._sigma

    def perturb(self, inputs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        laplace = standard_laplace(
            inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype
        )
        direction = laplace / laplace.flatten(1).norm(dim=1).view(-1, *([1] * (inputs.dim() - 1)))
        norms = inputs.flatten(1).norm(dim=1).view(-1, *([1] * (inputs.dim() - 1)))
        return inputs + direction * norms * self._sigma

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self._sigma}
