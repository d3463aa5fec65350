"""``unicr``: UniCR's universal certified radius for any noise density against any l_p (Hong et al., ECCV 2022).

The radius is the smallest ``‖δ‖_p`` on the robustness boundary of Theorem 1 (:mod:`.unicr_boundary`): the
scalar phase scales a direction onto the boundary by bisection (Eq. 4), the direction phase minimises the
resulting ``‖λu‖_p`` over the unit sphere — from the symmetric positions (k-sparse diagonals: axes … the main
diagonal), refined by pymanopt's particle swarm where the dimension allows
(:class:`manifoldcert.optimize.ParticleSwarm` on :class:`manifoldcert.geometry.Sphere`).

For an additive noise the boundary does not depend on the input, so with ``p_B = 1 − p_A`` the radius is a
function of ``p_A`` alone: :class:`RadiusTable` computes it once on a grid of ``p_A`` (uniform in ``Φ⁻¹(p_A)``),
stores it in the user's ``cache_dir`` keyed by the full configuration, and is read conservatively (``p_A`` rounded
down to the grid). Everything is a Monte Carlo approximation of the boundary: certificates carry
``guaranteed=False`` (docs/methods/unicr.md gives the measured error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import norm as standard_normal
from torch import nn

from manifoldcert._validation import check_name, check_positive_int
from manifoldcert.certificate import lp_implied_radius
from manifoldcert.certifiers.base import SmoothingCertifier, check_probability
from manifoldcert.certifiers.unicr_boundary import (
    ShiftedLogRatios,
    UnreachableToleranceError,
    boundary_scales,
    lp_norm,
    scale_to_boundary,
)
from manifoldcert.geometry.sphere import Sphere, sparse_diagonals
from manifoldcert.noises import AbstractNoise
from manifoldcert.noises import get as get_noise
from manifoldcert.optimize import FunctionObjective, ParticleSwarm, Problem

logger = logging.getLogger(__name__)

#: Bumped whenever the table computation changes, so older cache files are never reused.
TABLE_VERSION = 1
#: Largest ``p_A`` on a table grid (``Φ⁻¹`` = 4.75); Clopper–Pearson bounds with n ≤ 10⁶ stay below it.
TABLE_MAX_PROBABILITY = 1.0 - 1e-6
SEARCHES = ("auto", "symmetric", "pso")
#: Relative difference below which two directions' radii count as equal in the direction phase.
DIRECTION_TIE = 0.05


def norm_exponent(norm: str | float) -> float:
    """The ``p`` of ``"l1"``, ``"l2"``, ``"linf"`` or of a number ``p > 0``."""
    if isinstance(norm, str):
        named = {"l1": 1.0, "l2": 2.0, "linf": math.inf}
        if norm in named:
            return named[norm]
        try:
            norm = float(norm.removeprefix("l"))
        except ValueError:
            raise ValueError(f"norm must be 'l1', 'l2', 'linf' or a number p > 0, got {norm!r}") from None
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or math.isnan(norm) or not norm > 0:
        raise ValueError(f"the l_p exponent must be a number p > 0, got {norm!r}")
    return float(norm)


def norm_name(p: float) -> str:
    """``"l1"``, ``"l2"``, ``"linf"`` or ``"l<p>"``."""
    return "linf" if math.isinf(p) else f"l{p:g}"


def table_probabilities(size: int) -> np.ndarray:
    """``size`` values of ``p_A`` in (1/2, 1 − 10⁻⁶], geometric in ``Φ⁻¹(p_A)`` from 0.005 to 4.75.

    Radii grow roughly like ``Φ⁻¹(p_A)`` (exactly so for Gaussian noise), so rounding ``p_A`` down to this grid
    loses about the same fraction of the radius everywhere: ``(950)^(1/(size−1)) − 1``, 0.7 % at 1,000 points.
    """
    top = float(standard_normal.ppf(TABLE_MAX_PROBABILITY))
    return standard_normal.cdf(np.geomspace(0.005, top, size))


@dataclass
class RadiusTable:
    """The radius as a function of ``p_A`` (with ``p_B = 1 − p_A``) for one noise, norm and dimension.

    Attributes
    ----------
    config : dict
        Everything the radii depend on (noise configuration, p, d, samples, seed, search settings, version).
    probabilities, radii : ndarray
        The grid of ``p_A`` and the radius at each point (non-decreasing in ``p_A``).
    seconds : float
        Time it took to build.
    """

    config: dict[str, Any]
    probabilities: np.ndarray
    radii: np.ndarray
    seconds: float = 0.0
    directions: list[str] = field(default_factory=list)

    def lookup(self, p_a: float) -> float:
        """The radius at the largest grid ``p_A`` not above ``p_a`` (rounding down keeps it conservative).

        Raises ``ValueError`` outside (1/2, 1): the table only covers certifiable probabilities.
        """
        if not 0.5 < p_a < 1.0:
            raise ValueError(f"a p_A → R table covers p_A in (1/2, 1), got {p_a!r}")
        index = int(np.searchsorted(self.probabilities, p_a, side="right")) - 1
        return 0.0 if index < 0 else float(self.radii[index])

    @property
    def key(self) -> str:
        """A stable hash of :attr:`config` (:func:`config_key`); the table is saved as ``unicr-<key>.json``."""
        return config_key(self.config)

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Write ``unicr-<key>.json`` into ``directory`` and return its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"unicr-{self.key}.json")
        payload = {
            "config": self.config,
            "probabilities": self.probabilities.tolist(),
            "radii": self.radii.tolist(),
            "seconds": self.seconds,
            "directions": self.directions,
        }
        with open(path, "w") as handle:
            json.dump(payload, handle)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], config: dict[str, Any]) -> RadiusTable | None:
        """The cached table for exactly ``config``, or ``None`` (a file whose stored config differs is ignored)."""
        path = os.path.join(directory, f"unicr-{config_key(config)}.json")
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            payload = json.load(handle)
        if payload.get("config") != _jsonable(config):
            return None
        return cls(
            config,
            np.asarray(payload["probabilities"]),
            np.asarray(payload["radii"]),
            payload.get("seconds", 0.0),
            payload.get("directions", []),
        )


def config_key(config: dict[str, Any]) -> str:
    """A stable hash of a configuration (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(_jsonable(config), sort_keys=True).encode()).hexdigest()[:20]


def _jsonable(value: Any) -> Any:
    """``value`` with tensors, arrays and tuples turned into JSON types (floats exactly representable)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


class UniCR(SmoothingCertifier):
    """UniCR for any noise with a log density, against any l_p (``norm="l1"``, ``"l2"``, ``"linf"`` or ``p > 0``).

    Parameters
    ----------
    model : nn.Module or None
        Base classifier; ``None`` for :meth:`radius_for` and :meth:`table` only (give ``input_shape``).
    noise : AbstractNoise or str
        The smoothing noise, or its registry name built with ``noise_params``.
    norm : str or float
        The threat model's l_p.
    mc_samples : int
        Noise samples behind the boundary (doubled by antithetic pairs for symmetric noises).
    search : {"auto", "symmetric", "pso"}
        Direction phase: the symmetric positions only, or refined by particle swarm; ``"auto"`` uses the swarm up
        to ``pso_max_dim`` dimensions (in high dimension a swarm of a few particles cannot improve on them).
    pso_iterations, pso_max_dim : int
        Swarm budget and the largest dimension ``"auto"`` runs it in.
    search_samples : int
        Size of the independent pilot sample on which directions are compared (and the swarm runs); the chosen
        direction is then scaled to the boundary with the ``mc_samples`` ones.
    tolerance : float
        Largest ``|K|`` accepted at the boundary (Eq. 4); beyond it the scalar phase raises.
    table_size : int
        Points of the ``p_A`` grid of :meth:`table`.
    cache_dir : str, optional
        Folder for tables (one JSON file per configuration); ``None`` keeps them in memory only.
    **options
        ``batch_size``, ``num_classes``, ``input_shape``, ``seed``, ``soft``.
    """

    name = "unicr"
    native_norm = "l2"
    extra_columns = ("noise", "smoothing")

    def __init__(
        self,
        model: nn.Module | None,
        *,
        noise: AbstractNoise | str = "gaussian",
        norm: str | float = "l2",
        mc_samples: int = 100_000,
        search: str = "auto",
        pso_iterations: int = 10,
        pso_max_dim: int = 64,
        search_samples: int = 4096,
        tolerance: float = 0.02,
        table_size: int = 1000,
        cache_dir: str | os.PathLike[str] | None = None,
        noise_params: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(noise, str):
            noise = get_noise(noise, **(noise_params or {"sigma": 0.25}))
        elif noise_params:
            raise ValueError("noise_params goes with a noise name, not a noise instance")
        super().__init__(model, noise, **options)
        self.p = norm_exponent(norm)
        self.native_norm = norm_name(self.p)
        self.mc_samples = check_positive_int(mc_samples, "mc_samples")
        self.search = check_name(search, SEARCHES, "search")
        self.pso_iterations = check_positive_int(pso_iterations, "pso_iterations")
        self.pso_max_dim = int(pso_max_dim)
        self.search_samples = check_positive_int(search_samples, "search_samples")
        self.tolerance = float(tolerance)
        self.table_size = check_positive_int(table_size, "table_size")
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._ratios: dict[int, ShiftedLogRatios] = {}
        self._pilots: dict[int, ShiftedLogRatios] = {}
        self._tables: dict[int, RadiusTable] = {}

    @property
    def guaranteed(self) -> bool:
        return False

    @property
    def sigma(self) -> float:
        """The noise's RMS per coordinate; NaN for a noise without a finite variance (Cauchy)."""
        try:
            return self.noise.sigma
        except ValueError:  # a noise without a finite σ (Cauchy): the TSV records NaN
            return math.nan

    # -- the two phases ---------------------------------------------------------------------------------------
    def ratios(self, dim: int) -> ShiftedLogRatios:
        """The noise samples of dimension ``dim`` (drawn on first use, seeded by the certifier's seed)."""
        if dim not in self._ratios:
            ratios = ShiftedLogRatios(self.noise, dim, self.mc_samples, self.seed + 104_729 * dim)
            _check_log_density(ratios)
            self._ratios[dim] = ratios
        return self._ratios[dim]

    def pilot(self, dim: int) -> ShiftedLogRatios:
        """Independent ``search_samples`` samples on which directions are compared (cheaper, noisier)."""
        if dim not in self._pilots:
            self._pilots[dim] = ShiftedLogRatios(
                self.noise, dim, self.search_samples, self.seed + 7 + 104_729 * dim
            )
        return self._pilots[dim]

    def _use_swarm(self, dim: int) -> bool:
        return self.search == "pso" or (self.search == "auto" and dim <= self.pso_max_dim)

    def directions(self, dim: int, p_a: float, p_b: float) -> list[np.ndarray]:
        """Candidate directions: the k-sparse diagonals, plus the swarm's best at ``(p_a, p_b)`` when enabled."""
        candidates = sparse_diagonals(dim) if dim > 1 else [np.ones(1)]
        if dim > 1 and self._use_swarm(dim):
            head = self.pilot(dim)
            problem = Problem(
                Sphere(dim),
                FunctionObjective(lambda direction: self._radius_along(head, direction.numpy(), p_a, p_b)),
                maximize=False,
            )
            result = ParticleSwarm(max_iterations=self.pso_iterations, seed=self.seed).run(
                problem, candidates
            )
            candidates = [*candidates, result.point.numpy()]
        return candidates

    def _radius_along(self, ratios: ShiftedLogRatios, direction: np.ndarray, p_a: float, p_b: float) -> float:
        point = scale_to_boundary(ratios, direction, p_a, p_b, tolerance=1.0, relative_precision=1e-3)
        return point.scale * lp_norm(direction, self.p)

    def select_directions(self, dim: int, pairs: list[tuple[float, float]]) -> list[np.ndarray]:
        """The candidate direction(s) with the smallest radius at each reference ``(p_A, p_B)``.

        Judged on an independent pilot sample (``search_samples``), so that the final radius — computed on all samples
        along the winners only — is not biased low by a minimum over many noisy estimates. Every candidate within
        :data:`DIRECTION_TIE` of the pilot's best is kept: the pilot cannot separate radii that close, and the
        caller takes the minimum over the kept ones on all samples, so the radius never exceeds that of a candidate
        the pilot could not rule out. (Keeping only the sparsest of the tied ones returned the axis radius for
        Pareto noise in l1 at d = 784, p_A = 0.99, 10 % above the 2-sparse diagonal's; the pilot's 4,096 samples
        put the two within 2 %.) The price: where every direction ties (isotropic Gaussian noise in l2) all of them
        are scaled on all samples, O(n·d) each.
        """
        head = self.pilot(dim)
        candidates = self.directions(dim, *pairs[len(pairs) // 2])
        kept: set[int] = set()
        for p_a, p_b in pairs:
            radii = np.array([self._radius_along(head, direction, p_a, p_b) for direction in candidates])
            kept.update(int(i) for i in np.flatnonzero(radii <= radii.min() * (1.0 + DIRECTION_TIE)))
        return [candidates[i] for i in sorted(kept)]

    def boundary_radius(self, p_a: float, p_b: float, dim: int) -> float:
        """UniCR's radius for one pair ``(p_A, p_B)``: ``λ*·‖u‖_p`` along the best direction found."""
        ratios = self.ratios(dim)
        radii = []
        for direction in self.select_directions(dim, [(p_a, p_b)]):
            point = scale_to_boundary(
                ratios, direction, p_a, p_b, tolerance=self.tolerance, relative_precision=1e-4
            )
            radii.append(point.scale * lp_norm(direction, self.p))
        return min(radii)

    # -- tables -----------------------------------------------------------------------------------------------
    def table_config(self, dim: int) -> dict[str, Any]:
        """The configuration a table depends on (its cache key)."""
        return _jsonable(
            {
                "version": TABLE_VERSION,
                "noise": self.noise.config(),
                "p": self.p,
                "dim": int(dim),
                "mc_samples": self.mc_samples,
                "seed": self.seed,
                "search": self.search if self._use_swarm(dim) else "symmetric",
                "pso_iterations": self.pso_iterations if self._use_swarm(dim) else 0,
                "search_samples": self.search_samples if self._use_swarm(dim) else 0,
                "table_size": self.table_size,
            }
        )

    def table(self, dim: int, *, progress: bool = False) -> RadiusTable:
        """The ``p_A → R`` table for dimension ``dim``: from memory, from ``cache_dir``, or built and saved."""
        if dim in self._tables:
            return self._tables[dim]
        config = self.table_config(dim)
        table = None if self.cache_dir is None else RadiusTable.load(self.cache_dir, config)
        if table is None:
            table = self._build_table(dim, config, progress)
            if self.cache_dir is not None:
                table.save(self.cache_dir)
        self._tables[dim] = table
        return table

    def _build_table(self, dim: int, config: dict[str, Any], progress: bool) -> RadiusTable:
        start = time.perf_counter()
        probabilities = table_probabilities(self.table_size)
        complements = 1.0 - probabilities
        ratios = self.ratios(dim)
        references = [(p, 1.0 - p) for p in (0.9, 0.999)]
        radii, labels = np.full(probabilities.shape, np.inf), []
        for direction in self.select_directions(dim, references):
            scales = boundary_scales(ratios, direction, probabilities, complements)
            radii = np.minimum(radii, scales * lp_norm(direction, self.p))
            labels.append(f"{int(np.count_nonzero(direction))}-sparse")
            if progress:
                logger.info("unicr table d=%d: direction %s done", dim, labels[-1])
        # The exact radius is non-decreasing in p_A; Monte Carlo noise can break that. Lowering each point to the
        # minimum of its successors restores it and never raises a radius.
        radii = np.minimum.accumulate(radii[::-1])[::-1]
        return RadiusTable(config, probabilities, radii, time.perf_counter() - start, labels)

    # -- the certifier contract ----------------------------------------------------------------------------------
    def _native_radius(self, p_a: float, p_b: float) -> float:  # pragma: no cover - radius_for is overridden
        raise NotImplementedError

    def radius_for(
        self,
        p_a: float,
        p_b: float | None = None,
        *,
        norm: str | float | None = None,
        dim: int | None = None,
        use_table: bool = True,
    ) -> float:
        """UniCR's radius for ``p_A`` (and ``p_B``; ``1 − p_A`` when omitted) in dimension ``dim``.

        With ``p_B`` omitted and ``use_table`` the answer comes from :meth:`table` (rounded down to its grid);
        otherwise both phases run for these probabilities. ``norm`` other than the certifier's own is converted
        with the l_p norm inequalities. Returns 0.0 when ``p_A ≤ p_B`` (abstain).
        """
        p_a = check_probability(p_a, "p_a")
        complement = p_b is None
        p_b = 1.0 - p_a if p_b is None else check_probability(p_b, "p_b")
        if p_a + p_b > 1.0 + 1e-12:
            raise ValueError(f"p_a + p_b must not exceed 1, got {p_a} + {p_b}")
        target = self.p if norm is None else norm_exponent(norm)
        dim = self._resolve_dim(dim)
        if p_a <= p_b:
            return 0.0
        if p_a == 1.0:
            return math.inf
        if complement and use_table:
            radius = self.table(dim).lookup(p_a)
        else:
            radius = self.boundary_radius(p_a, p_b, dim)
        return lp_implied_radius(radius, self.p, target, dim)

    def convert_radius(self, radius: float, norm: str, dim: int | None) -> float:
        return lp_implied_radius(radius, self.p, norm_exponent(norm), dim)


def _check_log_density(ratios: ShiftedLogRatios) -> None:
    """Refuse a noise whose ``log_prob`` is missing or not finite at its own samples.

    An i.i.d. noise is checked on a few coordinates (its law on them is their own); a joint one on whole samples,
    since a subset of its coordinates has another law (a uniform ball in 4 of 784 coordinates is not the ball in 4).
    """
    name = ratios.noise.name
    width = min(ratios.dim, 4) if ratios.noise.iid_coordinates else ratios.dim
    try:
        values = ratios.noise.log_prob(ratios.columns(width)[:16].double())
    except NotImplementedError as error:
        raise ValueError(f"unicr needs a noise with a log density; {name!r} has none") from error
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"unicr needs a noise with a finite log density at its own samples; {name!r} has not"
        )


__all__ = ["RadiusTable", "UniCR", "UnreachableToleranceError", "norm_exponent", "table_probabilities"]
