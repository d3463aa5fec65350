"""What every optimiser returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Iterate", "OptimizationResult", "STOPPING_REASONS"]

#: Why an optimiser stops.
STOPPING_REASONS = (
    "max iterations",
    "non-finite objective",
    "non-finite gradient",
    "non-finite step",
    "step too small",
    "stationary point",
)


@dataclass(frozen=True)
class Iterate:
    """A point an optimiser kept, the step at which it was reached and its estimated objective."""

    step: int
    point: torch.Tensor
    value: float


@dataclass(frozen=True)
class OptimizationResult:
    """The outcome of one run.

    Attributes
    ----------
    point : Tensor
        The last valid iterate (the start when no step was valid).
    value : float
        Its estimated objective (``nan`` when none was finite).
    start_value : float
        The estimated objective at the start.
    iterations : int
        Steps taken (accepted moves and rejected backtracking steps alike).
    stopping_reason : str
        One of :data:`STOPPING_REASONS`.
    trajectory : tuple of float
        The estimated objective at every iterate, start first (each on that step's samples).
    candidates : tuple of Iterate
        Points kept for a later choice on independent samples: the start, evenly spaced iterates and the last.
    evaluations : int
        Objective evaluations (with or without gradient).
    """

    point: torch.Tensor
    value: float
    start_value: float
    iterations: int
    stopping_reason: str
    trajectory: tuple[float, ...]
    candidates: tuple[Iterate, ...]
    evaluations: int
