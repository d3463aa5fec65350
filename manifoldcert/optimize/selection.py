"""Choosing the iterate to use on samples independent of those that produced it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from manifoldcert.optimize.result import Iterate

__all__ = ["choose_iterate"]


def choose_iterate(
    candidates: Sequence[Iterate], score: Callable[[torch.Tensor], float], *, maximize: bool = True
) -> tuple[int, list[float]]:
    """The index of the best candidate by ``score`` and every candidate's score.

    ``score`` should estimate the quantity finally reported from samples that neither the optimiser nor the
    final certification uses: then the choice cannot favour an iterate whose estimates were lucky, and the start
    (always the first candidate of an :class:`~manifoldcert.optimize.OptimizationResult`) is kept unless another
    iterate scores better — the optimiser cannot hand back something worse than its start except by the Monte
    Carlo error of ``score``. Ties go to the earlier candidate.
    """
    if not candidates:
        raise ValueError("choose_iterate needs at least one candidate")
    scores = [float(score(candidate.point)) for candidate in candidates]
    best = 0
    for index, value in enumerate(scores):
        if (value > scores[best]) if maximize else (value < scores[best]):
            best = index
    return best, scores
