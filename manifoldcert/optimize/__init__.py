"""Optimisation on manifolds: a :class:`Problem` (manifold + objective), optimisers, one result type.

- :class:`RiemannianAscent`: fixed, normalised (step length in the metric's own norm, relative to the point) or
  backtracking steps on common random numbers;
- :class:`RiemannianAdam`: Riemannian Adam (Bécigneul and Ganea, 2019);
- :class:`ParticleSwarm`: pymanopt's derivative-free swarm on the sphere;
- :func:`choose_iterate`: the iterate to use, chosen on independent samples.

Every optimiser returns an :class:`OptimizationResult` with the trajectory, kept candidates and a stopping reason.
"""

from __future__ import annotations

from manifoldcert.optimize.gradient import STEP_RULES as STEP_RULES
from manifoldcert.optimize.gradient import GradientOptimizer as GradientOptimizer
from manifoldcert.optimize.gradient import RiemannianAdam as RiemannianAdam
from manifoldcert.optimize.gradient import RiemannianAscent as RiemannianAscent
from manifoldcert.optimize.problem import DifferentiableObjective as DifferentiableObjective
from manifoldcert.optimize.problem import FunctionObjective as FunctionObjective
from manifoldcert.optimize.problem import Objective as Objective
from manifoldcert.optimize.problem import Problem as Problem
from manifoldcert.optimize.result import STOPPING_REASONS as STOPPING_REASONS
from manifoldcert.optimize.result import Iterate as Iterate
from manifoldcert.optimize.result import OptimizationResult as OptimizationResult
from manifoldcert.optimize.selection import choose_iterate as choose_iterate
from manifoldcert.optimize.swarm import ParticleSwarm as ParticleSwarm

__all__ = [
    "STEP_RULES",
    "STOPPING_REASONS",
    "DifferentiableObjective",
    "FunctionObjective",
    "GradientOptimizer",
    "Iterate",
    "Objective",
    "OptimizationResult",
    "ParticleSwarm",
    "Problem",
    "RiemannianAdam",
    "RiemannianAscent",
    "choose_iterate",
]
