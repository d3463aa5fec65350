"""Scale families whose σ per scale depends on the input dimension (Zhang et al. 2020; Yang et al. 2020).

A noise ``z = scale · w`` with ``w`` drawn at scale 1 has ``sigma = sqrt(E‖z‖²/d) = scale · rms(d)``, and for
the norm-shaped families ``rms(d)`` depends on ``d`` (e.g. ``sqrt(d + 1)`` for Exp2). Such a noise therefore
stores exactly what it was given and resolves the other quantity for the ``d`` of each input it is used with:
built from ``sigma``, it has that RMS per coordinate at every ``d`` (its scale is :meth:`~DimensionScaledNoise.
scale_for` ``(d)``, computed at sample / log-density time); built from ``scale``, it keeps that scale and its RMS
is :meth:`~DimensionScaledNoise.sigma_for` ``(d)``. The :attr:`sigma` and :attr:`scale` properties return the
given value, or the resolved one when ``dim`` was passed to the constructor; without ``dim`` the resolved one is
undefined and they raise a ``ValueError`` naming the method to call. ``dim`` also checks every input's size.

A scale given as a tensor that requires grad gives reparameterised samples, as the other noises do. Draws at
scale 1 are made in float64 (float32 on MPS) through the caller's generator, then cast to the requested dtype.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch

from manifoldcert._validation import check_positive_int
from manifoldcert.noises.base import AbstractNoise, Scale, as_float, check_scale, resolve_dtype


def work_dtype(device: torch.device) -> torch.dtype:
    """Internal draws (radii, the mixed family's ``t``) are made in float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The ``torch.device`` that ``device`` names (``None``: torch's default device), with its index resolved."""
    return torch.empty(0, device=device).device


def check_scalar_scale(value: Scale, name: str) -> Scale:
    """A positive finite number or one-element tensor (returned as a 0-d tensor, keeping its graph)."""
    value = check_scale(value, name)
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(
            f"{name} must be a single number (or a one-element tensor), got shape {tuple(value.shape)}"
        )
    return value.reshape(()) if isinstance(value, torch.Tensor) else value


class DimensionScaledNoise(AbstractNoise):
    """A scale family whose ``σ / scale`` depends on ``d``: the per-dimension resolution, checks and scaling.

    Parameters
    ----------
    sigma : float or one-element Tensor, optional
        The project-wide knob, RMS per coordinate ``sqrt(E‖z‖²/d)``.
    scale : float or one-element Tensor, optional
        The family's own scale (:attr:`scale_name`). Give exactly one of ``sigma`` and ``scale``.
    dim : int, optional
        Number of input coordinates ``d``, if it is to be pinned now.

    Notes
    -----
    A family implements :meth:`_rms_per_scale`, :meth:`_standard_sample` and :meth:`_standard_log_prob`; one with
    shape parameters sets them before calling this constructor and lists them in :meth:`_shape_params`, one whose
    density needs more of ``d`` than ``d ≥ 1`` extends :meth:`_validate_dim`.
    """

    symmetric = True
    name: ClassVar[str]
    #: The norm the family is built for ("l1", "l2" or "linf").
    norm: ClassVar[str]
    #: The paper's symbol for the family's scale.
    scale_name: ClassVar[str] = "λ"

    def __init__(
        self, sigma: Scale | None = None, *, scale: Scale | None = None, dim: int | None = None
    ) -> None:
        if (sigma is None) == (scale is None):
            raise ValueError(
                f"give exactly one of sigma (RMS per coordinate) and scale (the family's {self.scale_name})"
            )
        self.dim = None if dim is None else check_positive_int(dim, "dim")
        if self.dim is not None:
            self._check_dim(self.dim)
        self._sigma = None if sigma is None else check_scalar_scale(sigma, "sigma")
        self._scale = None if scale is None else check_scalar_scale(scale, f"scale ({self.scale_name})")

    # -- what a family implements ------------------------------------------------------------------------

    @abc.abstractmethod
    def _rms_per_scale(self, dim: int) -> float:
        """``sqrt(E‖w‖²/d)`` at scale 1 in ``d`` coordinates (σ is this times the scale)."""

    @abc.abstractmethod
    def _standard_sample(
        self,
        n_samples: int,
        dim: int,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """``(n_samples, dim)`` exact draws at scale 1."""

    @abc.abstractmethod
    def _standard_log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        """Normalised log density at scale 1 of the rows of ``flat`` (n, d)."""

    def _validate_dim(self, dim: int) -> None:
        """Refuse a dimension the density is not defined in (every ``d ≥ 1`` is fine here)."""

    def _shape_params(self) -> dict[str, Any]:
        """The family's shape parameters, as :meth:`config` records them (none here)."""
        return {}

    # -- per-dimension resolution ------------------------------------------------------------------------

    def _check_dim(self, dim: int) -> None:
        if self.dim is not None and dim != self.dim:
            raise ValueError(f"this noise was built for dim = {self.dim} coordinates but the input has {dim}")
        self._validate_dim(dim)

    def _scale_value(self, dim: int) -> Scale:
        """The family's scale in ``dim`` coordinates (a tensor, keeping its graph, if one was given)."""
        self._check_dim(dim)
        if self._scale is not None:
            return self._scale
        assert self._sigma is not None  # exactly one of sigma / scale is set
        return self._sigma / self._rms_per_scale(dim)

    def scale_for(self, dim: int) -> float:
        """The family's own scale for inputs of ``dim`` coordinates."""
        return as_float(self._scale_value(check_positive_int(dim, "dim")))

    def sigma_for(self, dim: int) -> float:
        """``sqrt(E‖z‖²/d)`` for inputs of ``d = dim`` coordinates (the given ``sigma`` itself if there was one)."""
        dim = check_positive_int(dim, "dim")
        self._check_dim(dim)
        if self._sigma is not None:
            return as_float(self._sigma)
        assert self._scale is not None  # exactly one of sigma / scale is set
        return as_float(self._scale) * self._rms_per_scale(dim)

    def _undefined(self, what: str, method: str) -> ValueError:
        given = "scale" if self._sigma is None else "sigma"
        return ValueError(
            f"{type(self).__name__} was built from {given} without dim, and its {what} depends on the number d of "
            f"input coordinates: call {method}(d) or pass dim=d to the constructor"
        )

    @property
    def sigma(self) -> float:
        if self._sigma is not None:
            return as_float(self._sigma)
        if self.dim is None:
            raise self._undefined("sigma", "sigma_for")
        return self.sigma_for(self.dim)

    @property
    def scale(self) -> float:
        """The family's own scale; defined when it was given or when ``dim`` was pinned."""
        if self._scale is not None:
            return as_float(self._scale)
        if self.dim is None:
            raise self._undefined("scale", "scale_for")
        return self.scale_for(self.dim)

    # -- sampling and density ----------------------------------------------------------------------------

    def sample(self, n_samples, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        shape = tuple(shape)
        dim = math.prod(shape)
        scale = self._scale_value(dim)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype)
        standard = self._standard_sample(n_samples, dim, generator, device, work_dtype(device))
        if isinstance(scale, torch.Tensor):
            scale = scale.to(device=device, dtype=dtype)
        return standard.to(dtype).reshape(n_samples, *shape) * scale

    def log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        flat = noise.flatten(1)
        dim = flat.shape[1]
        scale = torch.as_tensor(self._scale_value(dim), dtype=flat.dtype, device=flat.device)
        return self._standard_log_prob(flat / scale) - dim * torch.log(scale)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name}
        if self._sigma is not None:
            config["sigma"] = as_float(self._sigma)
        else:
            assert self._scale is not None  # exactly one of sigma / scale is set
            config["scale"] = as_float(self._scale)
        config.update(self._shape_params())
        if self.dim is not None:
            config["dim"] = self.dim
        return config
