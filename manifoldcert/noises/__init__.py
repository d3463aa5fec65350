"""Smoothing noises, by name: ``noises.get("laplace", sigma=0.5)``; ``noises.available()`` lists the names.

Every noise takes ``sigma = sqrt(E‖z‖²/d)`` as the common knob (or its family's own parameters) and offers
``sample``, ``log_prob`` and ``perturb``; see :class:`AbstractNoise`. New families register with :func:`register`.
"""

from __future__ import annotations

from typing import Any

from manifoldcert._validation import check_name
from manifoldcert.noises.base import AbstractFiniteNoise as AbstractFiniteNoise
from manifoldcert.noises.base import AbstractNoise as AbstractNoise
from manifoldcert.noises.gaussian import DiagonalGaussian as DiagonalGaussian
from manifoldcert.noises.gaussian import FullCovarianceGaussian as FullCovarianceGaussian
from manifoldcert.noises.gaussian import Gaussian as Gaussian
from manifoldcert.noises.grid_gaussian import GridGaussian as GridGaussian
from manifoldcert.noises.input_dependent import InputDependentGaussian as InputDependentGaussian
from manifoldcert.noises.input_dependent import MeanScaledGaussian as MeanScaledGaussian
from manifoldcert.noises.input_dependent import NormScaledLaplace as NormScaledLaplace
from manifoldcert.noises.input_dependent import RandomRadiusGaussian as RandomRadiusGaussian
from manifoldcert.noises.laplace import Laplace as Laplace
from manifoldcert.noises.splitting import DerandomizedSplittingNoise as DerandomizedSplittingNoise
from manifoldcert.noises.splitting import SplittingNoise as SplittingNoise
from manifoldcert.noises.transform import NoiseTransform as NoiseTransform
from manifoldcert.noises.uniform import Uniform as Uniform
from manifoldcert.noises.yang import YANG_CLASSES
from manifoldcert.noises.yang import Exp2 as Exp2
from manifoldcert.noises.yang import ExpInf as ExpInf
from manifoldcert.noises.yang import PowInf as PowInf
from manifoldcert.noises.yang import UniformBall as UniformBall
from manifoldcert.noises.zhang import ZhangL1 as ZhangL1
from manifoldcert.noises.zhang import ZhangL2 as ZhangL2
from manifoldcert.noises.zhang import ZhangLinf as ZhangLinf
from manifoldcert.noises.zhang import ZhangMixed as ZhangMixed
from manifoldcert.noises.zoo import ZOO_CLASSES
from manifoldcert.noises.zoo import Cauchy as Cauchy
from manifoldcert.noises.zoo import ExponentialMixture as ExponentialMixture
from manifoldcert.noises.zoo import GaussianLaplaceMixture as GaussianLaplaceMixture
from manifoldcert.noises.zoo import GeneralNormal as GeneralNormal
from manifoldcert.noises.zoo import HyperbolicSecant as HyperbolicSecant
from manifoldcert.noises.zoo import Logistic as Logistic
from manifoldcert.noises.zoo import Pareto as Pareto

_REGISTRY: dict[str, type[AbstractNoise]] = {}


def register(cls: type[AbstractNoise]) -> type[AbstractNoise]:
    """Add a noise class to the registry under ``cls.name`` (usable as a decorator)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a noise named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered noises."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> AbstractNoise:
    """Build a noise by registry name, e.g. ``get("uniform", sigma=0.5)``."""
    check_name(name, _REGISTRY, "noise")
    return _REGISTRY[name](**params)


def from_config(config: dict[str, Any]) -> AbstractNoise:
    """Rebuild a noise from :meth:`AbstractNoise.config` (as stored in checkpoints)."""
    params = dict(config)
    return get(params.pop("name"), **params)


_BUILTIN_NOISES: tuple[type[AbstractNoise], ...] = (
    Gaussian,
    GridGaussian,
    DiagonalGaussian,
    FullCovarianceGaussian,
    Laplace,
    Uniform,
    SplittingNoise,
    DerandomizedSplittingNoise,
    MeanScaledGaussian,
    RandomRadiusGaussian,
    NormScaledLaplace,
    ZhangL1,
    ZhangL2,
    ZhangLinf,
    ZhangMixed,
    *ZOO_CLASSES,
    *YANG_CLASSES,
)
for _cls in _BUILTIN_NOISES:
    register(_cls)

__all__ = [
    "AbstractFiniteNoise",
    "AbstractNoise",
    "Cauchy",
    "DerandomizedSplittingNoise",
    "DiagonalGaussian",
    "Exp2",
    "ExpInf",
    "ExponentialMixture",
    "FullCovarianceGaussian",
    "GridGaussian",
    "Gaussian",
    "GaussianLaplaceMixture",
    "GeneralNormal",
    "HyperbolicSecant",
    "InputDependentGaussian",
    "Laplace",
    "Logistic",
    "MeanScaledGaussian",
    "NoiseTransform",
    "NormScaledLaplace",
    "Pareto",
    "PowInf",
    "RandomRadiusGaussian",
    "SplittingNoise",
    "Uniform",
    "UniformBall",
    "ZhangL1",
    "ZhangL2",
    "ZhangLinf",
    "ZhangMixed",
    "available",
    "from_config",
    "get",
    "register",
]
