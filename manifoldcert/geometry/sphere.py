"""Derivative-free search over the unit sphere S^{d−1} (UniCR's direction phase) through pymanopt.

pymanopt's particle swarm works in float64 numpy on the CPU, evaluates particles one at a time and draws from
numpy's global random state. :func:`search_sphere` seeds that state for the run and restores it afterwards, so a
search is reproducible and leaves the caller's numpy randomness untouched; keep each cost evaluation cheap.

References
----------
Hong, Wang and Hong (2022), UniCR, ECCV — Sec. 3.1 (direction optimisation by particle swarm, symmetric initial
positions). Borckmans and Absil (2010), Oriented bounding box computation using particle swarm optimization
(PSO on manifolds, as implemented by pymanopt).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SphereSearchResult:
    """The best point found, its cost, the number of cost evaluations and why the search stopped."""

    point: np.ndarray
    cost: float
    cost_evaluations: int
    stopping_reason: str


def sparse_diagonals(dim: int, *, max_count: int | None = None) -> list[np.ndarray]:
    """The symmetric starting positions ``(1, …, 1, 0, …, 0)/√k`` for ``k = 1, 2, 4, …, d`` (and ``k = d``).

    For noise with i.i.d. coordinates the radius along a direction is invariant to permuting or flipping
    coordinates, so these k-sparse diagonals stand for all the symmetric positions (axes, diagonals of faces, the
    main diagonal) that UniCR starts from.
    """
    sizes = sorted({min(2**j, dim) for j in range(int(math.log2(dim)) + 2)})
    if max_count is not None and len(sizes) > max_count:
        keep = np.unique(np.round(np.linspace(0, len(sizes) - 1, max_count)).astype(int))
        sizes = [sizes[i] for i in keep]
    directions = []
    for size in sizes:
        direction = np.zeros(dim)
        direction[:size] = 1.0 / math.sqrt(size)
        directions.append(direction)
    return directions


def search_sphere(
    cost: Callable[[np.ndarray], float],
    dim: int,
    initial_points: Sequence[np.ndarray],
    *,
    max_iterations: int = 20,
    extra_random_points: int = 4,
    seed: int = 0,
) -> SphereSearchResult:
    """Minimise ``cost`` over the unit sphere in R^dim with pymanopt's particle swarm.

    Parameters
    ----------
    cost : callable
        Maps a unit vector (float64 numpy array of shape ``(dim,)``) to a float.
    initial_points : sequence of arrays
        Starting particles (normalised here); ``extra_random_points`` uniform ones are added.
    max_iterations : int
        Swarm iterations (each evaluates every particle once).
    seed : int
        Seed of numpy's global random state during the search (restored afterwards).
    """
    if dim < 2:
        raise ValueError(f"the sphere search needs dim >= 2, got {dim}")
    import pymanopt
    from pymanopt.manifolds import Sphere
    from pymanopt.optimizers import ParticleSwarm

    manifold = Sphere(dim)
    evaluations = {"count": 0}

    @pymanopt.function.numpy(manifold)
    def objective(point: np.ndarray) -> float:
        evaluations["count"] += 1
        return float(cost(np.asarray(point, dtype=np.float64)))

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        population = [np.asarray(p, dtype=np.float64) / np.linalg.norm(p) for p in initial_points]
        population += [manifold.random_point() for _ in range(extra_random_points)]
        optimizer = ParticleSwarm(max_iterations=max_iterations, population_size=len(population), verbosity=0)
        with contextlib.redirect_stdout(io.StringIO()):  # pymanopt prints instead of warning
            result = optimizer.run(pymanopt.Problem(manifold, objective), initial_point=population)
    finally:
        np.random.set_state(state)
    point = np.asarray(result.point, dtype=np.float64)
    return SphereSearchResult(
        point / np.linalg.norm(point),
        float(result.cost),
        evaluations["count"],
        str(result.stopping_criterion),
    )
