"""Manifolds the certifiers optimise over, with their metrics.

- :mod:`~manifoldcert.geometry.base`: the :class:`Manifold` interface (inner product, Riemannian gradient,
  exponential map, projection onto a constraint set, transport), batched ``[..., *point_shape]``.
- :mod:`~manifoldcert.geometry.positive`: :class:`PositiveReals` (DDRS's σ) and :class:`PositiveDiagonals`
  (ANCER's θ).
- :mod:`~manifoldcert.geometry.spd`: :class:`SPDMatrices` (RDDRS's covariance) with an eigenvalue floor.
- :mod:`~manifoldcert.geometry.metrics`: :class:`AffineInvariant`, :class:`LogEuclidean`,
  :class:`BuresWasserstein`, the :class:`SPDMetric` base for a user's own, and :class:`GeomstatsMetric` for any
  geomstats SPD metric.
- :mod:`~manifoldcert.geometry.sphere`: :class:`Sphere` (UniCR's direction).
- :mod:`~manifoldcert.geometry.matrix_functions`: ``logm``, ``expm``, ``sqrtm`` and their Fréchet derivatives,
  with backward passes that stay finite at repeated eigenvalues.
- :mod:`~manifoldcert.geometry.covariance`: :class:`Covariance`, one value type for isotropic, diagonal and full
  covariances.
"""

from __future__ import annotations

from manifoldcert.geometry.base import Manifold as Manifold
from manifoldcert.geometry.base import OpenSetManifold as OpenSetManifold
from manifoldcert.geometry.covariance import Covariance as Covariance
from manifoldcert.geometry.matrix_functions import differential_expm as differential_expm
from manifoldcert.geometry.matrix_functions import differential_logm as differential_logm
from manifoldcert.geometry.matrix_functions import differential_sqrtm as differential_sqrtm
from manifoldcert.geometry.matrix_functions import expm as expm
from manifoldcert.geometry.matrix_functions import logm as logm
from manifoldcert.geometry.matrix_functions import sqrtm as sqrtm
from manifoldcert.geometry.metrics import METRICS as METRICS
from manifoldcert.geometry.metrics import AffineInvariant as AffineInvariant
from manifoldcert.geometry.metrics import BuresWasserstein as BuresWasserstein
from manifoldcert.geometry.metrics import GeomstatsMetric as GeomstatsMetric
from manifoldcert.geometry.metrics import LogEuclidean as LogEuclidean
from manifoldcert.geometry.metrics import SPDMetric as SPDMetric
from manifoldcert.geometry.metrics import resolve_metric as resolve_metric
from manifoldcert.geometry.metrics import riesz_gradient as riesz_gradient
from manifoldcert.geometry.positive import PositiveDiagonals as PositiveDiagonals
from manifoldcert.geometry.positive import PositiveReals as PositiveReals
from manifoldcert.geometry.spd import SPDMatrices as SPDMatrices
from manifoldcert.geometry.spd import check_spd as check_spd
from manifoldcert.geometry.spd import clip_eigenvalues as clip_eigenvalues
from manifoldcert.geometry.sphere import Sphere as Sphere
from manifoldcert.geometry.sphere import sparse_diagonals as sparse_diagonals

__all__ = [
    "METRICS",
    "AffineInvariant",
    "BuresWasserstein",
    "Covariance",
    "GeomstatsMetric",
    "LogEuclidean",
    "Manifold",
    "OpenSetManifold",
    "PositiveDiagonals",
    "PositiveReals",
    "SPDMatrices",
    "SPDMetric",
    "Sphere",
    "check_spd",
    "clip_eigenvalues",
    "differential_expm",
    "differential_logm",
    "differential_sqrtm",
    "expm",
    "logm",
    "resolve_metric",
    "riesz_gradient",
    "sparse_diagonals",
    "sqrtm",
]
