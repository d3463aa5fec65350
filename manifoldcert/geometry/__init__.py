"""Manifolds the certifiers optimise over.

:mod:`manifoldcert.geometry.spd`: SPD(n) with the affine-invariant, log-Euclidean and Bures–Wasserstein metrics,
stable spectral matrix functions, and checks for SPD inputs and for the memory a full covariance needs.
"""

from __future__ import annotations

from manifoldcert.geometry.spd import METRICS as METRICS
from manifoldcert.geometry.spd import CovarianceTooLargeError as CovarianceTooLargeError
from manifoldcert.geometry.spd import SPDManifold as SPDManifold
from manifoldcert.geometry.spd import available_memory_bytes as available_memory_bytes
from manifoldcert.geometry.spd import check_full_covariance_fits as check_full_covariance_fits
from manifoldcert.geometry.spd import check_spd as check_spd
from manifoldcert.geometry.spd import differential_expm as differential_expm
from manifoldcert.geometry.spd import differential_logm as differential_logm
from manifoldcert.geometry.spd import differential_sqrtm as differential_sqrtm
from manifoldcert.geometry.spd import expm as expm
from manifoldcert.geometry.spd import full_covariance_bytes as full_covariance_bytes
from manifoldcert.geometry.spd import logm as logm
from manifoldcert.geometry.spd import sqrtm as sqrtm

__all__ = [
    "METRICS",
    "CovarianceTooLargeError",
    "SPDManifold",
    "available_memory_bytes",
    "check_full_covariance_fits",
    "check_spd",
    "differential_expm",
    "differential_logm",
    "differential_sqrtm",
    "expm",
    "full_covariance_bytes",
    "logm",
    "sqrtm",
]
