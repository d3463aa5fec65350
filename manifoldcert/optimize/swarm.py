"""Derivative-free search on the sphere: pymanopt's particle swarm behind the :class:`Problem` interface.

pymanopt's particle swarm works in float64 numpy on the CPU, evaluates particles one at a time and draws from
numpy's global random state. :meth:`ParticleSwarm.run` seeds that state for the run and restores it afterwards,
so a search is reproducible and leaves the caller's numpy randomness untouched; keep each cost evaluation cheap.

References
----------
Borckmans and Absil (2010), Oriented bounding box computation using particle swarm optimization (PSO on
manifolds, as implemented by pymanopt). Hong, Wang and Hong (2022), UniCR, ECCV — Sec. 3.1.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import final

import numpy as np
import torch

from manifoldcert.geometry.sphere import Sphere
from manifoldcert.optimize.problem import Problem
from manifoldcert.optimize.result import Iterate, OptimizationResult

__all__ = ["ParticleSwarm"]


@final
class ParticleSwarm:
    """pymanopt's ``ParticleSwarm`` on a :class:`~manifoldcert.geometry.sphere.Sphere` problem.

    Parameters
    ----------
    max_iterations : int
        Swarm iterations (each evaluates every particle once).
    extra_random_points : int
        Uniform random particles added to the given initial ones.
    seed : int
        Seed of numpy's global random state during the search (restored afterwards).
    """

    def __init__(self, *, max_iterations: int = 20, extra_random_points: int = 4, seed: int = 0) -> None:
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        self.max_iterations = max_iterations
        self.extra_random_points = int(extra_random_points)
        self.seed = int(seed)

    def run(
        self, problem: Problem, initial_points: Sequence[torch.Tensor | np.ndarray]
    ) -> OptimizationResult:
        """Optimise ``problem`` (on a :class:`Sphere`) from the particles ``initial_points`` (normalised here).

        The objective receives float64 torch tensors of shape ``(dim,)`` on the CPU.
        """
        if not isinstance(problem.manifold, Sphere):
            raise TypeError(f"ParticleSwarm searches a Sphere, got {type(problem.manifold).__name__}")
        import pymanopt
        from pymanopt.optimizers import ParticleSwarm as PymanoptParticleSwarm

        manifold = problem.manifold.to_pymanopt()
        evaluations = {"count": 0}

        @pymanopt.function.numpy(manifold)
        def cost(point: np.ndarray) -> float:  # pymanopt minimises
            evaluations["count"] += 1
            value = problem.objective.value(torch.as_tensor(np.asarray(point, dtype=np.float64)))
            return -problem.sign * value

        state = np.random.get_state()
        try:
            np.random.seed(self.seed)
            population = [np.asarray(p, dtype=np.float64) / np.linalg.norm(p) for p in initial_points]
            population += [manifold.random_point() for _ in range(self.extra_random_points)]
            optimizer = PymanoptParticleSwarm(
                max_iterations=self.max_iterations, population_size=len(population), verbosity=0
            )
            with contextlib.redirect_stdout(io.StringIO()):  # pymanopt prints instead of warning
                result = optimizer.run(pymanopt.Problem(manifold, cost), initial_point=population)
        finally:
            np.random.set_state(state)
        best = np.asarray(result.point, dtype=np.float64)
        point = torch.as_tensor(best / np.linalg.norm(best))
        value = -problem.sign * float(result.cost)
        start = problem.objective.value(torch.as_tensor(population[0])) if population else math.nan
        return OptimizationResult(
            point=point,
            value=value,
            start_value=start,
            iterations=int(result.iterations),
            stopping_reason=str(result.stopping_criterion),
            trajectory=(start, value),
            candidates=(Iterate(int(result.iterations), point, value),),
            evaluations=evaluations["count"] + 1,
        )
