"""Certifiers by name: ``get_certifier("cohen", model, sigma=0.25)``; ``available()`` lists the names."""

from __future__ import annotations

from typing import Any

from torch import nn

from manifoldcert._validation import check_name
from manifoldcert.certifiers.base import AbstractCertifier as AbstractCertifier
from manifoldcert.certifiers.base import SmoothingCertifier as SmoothingCertifier
from manifoldcert.certifiers.cohen import Cohen as Cohen
from manifoldcert.certifiers.data_dependent import ANCER as ANCER
from manifoldcert.certifiers.data_dependent import DDRS as DDRS
from manifoldcert.certifiers.data_dependent import RDDRS as RDDRS
from manifoldcert.certifiers.data_dependent import OptimisedSmoothing as OptimisedSmoothing
from manifoldcert.certifiers.dssn import DSSN as DSSN
from manifoldcert.certifiers.functional import Functional as Functional
from manifoldcert.certifiers.input_dependent import InputDependentCertifier as InputDependentCertifier
from manifoldcert.certifiers.laplace import LaplaceCertifier as LaplaceCertifier
from manifoldcert.certifiers.memory import CertificationMemory as CertificationMemory
from manifoldcert.certifiers.ssn import SSN as SSN
from manifoldcert.certifiers.unicr import UniCR as UniCR
from manifoldcert.certifiers.uniform import UniformCertifier as UniformCertifier
from manifoldcert.certifiers.yang import YANG_CERTIFIERS
from manifoldcert.certifiers.yang import Exp2Certifier as Exp2Certifier
from manifoldcert.certifiers.yang import ExpInfCertifier as ExpInfCertifier
from manifoldcert.certifiers.yang import PowInfCertifier as PowInfCertifier
from manifoldcert.certifiers.yang import UniformBallCertifier as UniformBallCertifier

_REGISTRY: dict[str, type[AbstractCertifier]] = {}


def register(cls: type[AbstractCertifier]) -> type[AbstractCertifier]:
    """Add a certifier class under ``cls.name`` (usable as a decorator)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a certifier named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered certifiers."""
    return sorted(_REGISTRY)


def get_certifier(name: str, model: nn.Module | None, **options: Any) -> AbstractCertifier:
    """Build a certifier by registry name for ``model`` (``None`` for probability-to-radius queries only)."""
    check_name(name, _REGISTRY, "method")
    return _REGISTRY[name](model, **options)


_BUILTIN_CERTIFIERS: tuple[type[AbstractCertifier], ...] = (
    Cohen,
    LaplaceCertifier,
    UniformCertifier,
    SSN,
    DSSN,
    Functional,
    InputDependentCertifier,
    DDRS,
    ANCER,
    RDDRS,
    UniCR,
    *YANG_CERTIFIERS,
)
for _cls in _BUILTIN_CERTIFIERS:
    register(_cls)

__all__ = [
    "ANCER",
    "AbstractCertifier",
    "CertificationMemory",
    "Cohen",
    "DDRS",
    "DSSN",
    "Exp2Certifier",
    "ExpInfCertifier",
    "OptimisedSmoothing",
    "PowInfCertifier",
    "Functional",
    "InputDependentCertifier",
    "LaplaceCertifier",
    "RDDRS",
    "SSN",
    "SmoothingCertifier",
    "UniCR",
    "UniformBallCertifier",
    "UniformCertifier",
    "available",
    "get_certifier",
    "register",
]
