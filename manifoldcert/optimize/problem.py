"""A ``Problem``: a manifold and an objective on it, to be maximised (or minimised) by an optimiser.

Objectives may be Monte Carlo estimates. Each evaluation receives a ``seed``: the same seed must give the same
samples, so that an optimiser can compare two points on common random numbers (the difference of two estimates
on the same samples is far less noisy than each estimate). Deterministic objectives ignore the seed.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import torch

from manifoldcert.geometry.base import Manifold

__all__ = ["DifferentiableObjective", "FunctionObjective", "Objective", "Problem"]


class Objective(abc.ABC):
    """A real function of a manifold point, possibly estimated from the samples that ``seed`` draws."""

    @abc.abstractmethod
    def value(self, point: torch.Tensor, *, seed: int | None = None) -> float:
        """The objective at ``point`` (``nan`` or ``±inf`` where it cannot be estimated)."""


class DifferentiableObjective(Objective):
    """An objective with a Euclidean gradient (the gradient of the function in the ambient coordinates)."""

    @abc.abstractmethod
    def value_and_gradient(
        self, point: torch.Tensor, *, seed: int | None = None
    ) -> tuple[float, torch.Tensor]:
        """The objective and its Euclidean gradient at ``point`` (shape of ``point``), on the same samples."""


@final
class FunctionObjective(Objective):
    """A plain deterministic function ``cost(point) -> float`` (e.g. a derivative-free search's cost)."""

    def __init__(self, function: Callable[[torch.Tensor], float]) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        self.function = function

    def value(self, point: torch.Tensor, *, seed: int | None = None) -> float:
        return float(self.function(point))


@final
@dataclass(frozen=True)
class Problem:
    """Maximise (``maximize=True``, the default) or minimise ``objective`` over ``manifold``.

    The manifold's projection is the problem's constraint set: every iterate an optimiser makes goes through
    :meth:`~manifoldcert.geometry.base.Manifold.step`.
    """

    manifold: Manifold
    objective: Objective
    maximize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.manifold, Manifold):
            raise TypeError(
                f"manifold must be a manifoldcert.geometry.Manifold, got {type(self.manifold).__name__}"
            )
        if not isinstance(self.objective, Objective):
            raise TypeError(
                f"objective must be a manifoldcert.optimize.Objective, got {type(self.objective).__name__}"
            )

    @property
    def sign(self) -> float:
        """+1 when maximising, −1 when minimising: optimisers ascend ``sign · objective``."""
        return 1.0 if self.maximize else -1.0

    def better(self, candidate: float, incumbent: float) -> bool:
        """Whether ``candidate`` improves on ``incumbent`` in the problem's direction."""
        return candidate > incumbent if self.maximize else candidate < incumbent
