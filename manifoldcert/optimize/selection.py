"""Choosing the iterate to use on samples independent of those that produced it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["choose_iterate"]

Candidate = TypeVar("Candidate")


def choose_iterate(
    candidates: Sequence[Candidate], score: Callable[[Candidate], float], *, maximize: bool = True
) -> tuple[int, list[float]]:
    """The index of the best candidate by ``score`` and every candidate's score.

    ``candidates`` are what is scored: the points of an :class:`~manifoldcert.optimize.OptimizationResult`'s
    kept iterates, or what they stand for (the certifiers score covariances). ``score`` should estimate the
    quantity finally reported from samples that neither the optimiser nor the final certification uses: then the
    choice cannot favour an iterate whose estimates were lucky, and the start (always the first kept iterate) is
    kept unless another iterate scores better — the optimiser cannot hand back something worse than its start
    except by the Monte Carlo error of ``score``. Ties go to the earlier candidate.
    """
    if not candidates:
        raise ValueError("choose_iterate needs at least one candidate")
    scores = [float(score(candidate)) for candidate in candidates]
    best = 0
    for index, value in enumerate(scores):
        if (value > scores[best]) if maximize else (value < scores[best]):
            best = index
    return best, scores
