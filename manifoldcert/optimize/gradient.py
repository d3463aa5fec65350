"""Gradient-based Riemannian optimisers: plain / normalised / backtracking ascent and Riemannian Adam.

Both run the same loop (:class:`GradientOptimizer`): at step ``k`` draw a seed, estimate the objective and its
Euclidean gradient on that seed's samples, turn the gradient into the Riemannian one of the manifold's metric,
move with :meth:`~manifoldcert.geometry.base.Manifold.step` (exponential map, then projection onto the
constraint set). A non-finite objective, gradient or step stops the run at the last valid iterate, with the
reason in the result.

Step sizes. ``RiemannianAscent(step_rule="normalised")`` moves a tangent vector of length
``step_size · ‖P‖_P`` along the Riemannian gradient — ``‖P‖_P`` is the manifold's radial norm, the length of the
scaling direction, so the step is relative and dimensionless: to first order it scales a point by ``e^{step_size}``
along the scaling direction under every metric (affine-invariant ``‖P‖_P = √n``, log-Euclidean ``√n``,
Bures–Wasserstein ``½ (tr P)^{1/2}``). One setting thus means the same move under every metric, which is what a
metric ablation needs: a fixed ``γ·grad`` step is in each metric's own units (at ``σ = 0.25`` the
Bures–Wasserstein gradient step is 64× the affine-invariant one). ``"backtracking"`` starts from that length and
halves it until the objective, re-estimated on the SAME samples as the gradient (common random numbers), rises by
Armijo's sufficient increase; the next step starts from twice the accepted length (at most ``step_size``).

References
----------
Absil, Mahony and Sepulchre (2008), Optimization Algorithms on Matrix Manifolds, Sec. 4.2 (Armijo backtracking
on manifolds). Bécigneul and Ganea (2019), Riemannian adaptive optimization methods, ICLR (Riemannian Adam; the
design of geoopt's ``RiemannianAdam``). Kingma and Ba (2015), Adam, ICLR.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, final

import torch

from manifoldcert.optimize.problem import DifferentiableObjective, Problem
from manifoldcert.optimize.result import Iterate, OptimizationResult

__all__ = ["STEP_RULES", "GradientOptimizer", "RiemannianAdam", "RiemannianAscent"]

STEP_RULES = ("fixed", "normalised", "backtracking")


def _finite(value: float | torch.Tensor) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(value)


def _evaluate(
    objective: DifferentiableObjective, point: torch.Tensor, seed: int, *, gradient: bool = True
) -> tuple[float, torch.Tensor | None]:
    """The objective (and its gradient) at ``point``; ``nan`` when it cannot be evaluated there (e.g. a
    factorisation of a numerically indefinite matrix fails)."""
    try:
        if gradient:
            return objective.value_and_gradient(point, seed=seed)
        return objective.value(point, seed=seed), None
    except (ValueError, RuntimeError):
        return math.nan, None


def draw_seed(generator: torch.Generator) -> int:
    """A seed for one step's samples, drawn from ``generator`` (on its device)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


@dataclass
class _Step:
    """What one optimiser step proposes: the new point, the extra objective evaluations it cost, and a stopping
    reason when the run cannot go on ("stationary point", "step too small")."""

    point: torch.Tensor
    evaluations: int = 0
    stop: str | None = None


class GradientOptimizer(abc.ABC):
    """The loop shared by the gradient optimisers (module docstring); subclasses say how one step moves.

    Parameters
    ----------
    max_iterations : int
        Gradient steps (0 returns the start).
    n_candidates : int
        Iterates kept in the result for a choice on independent samples: the start, evenly spaced ones and the
        last (at least 2).
    """

    def __init__(self, *, max_iterations: int, n_candidates: int = 5) -> None:
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 0:
            raise ValueError(f"max_iterations must be an integer >= 0, got {max_iterations!r}")
        if isinstance(n_candidates, bool) or not isinstance(n_candidates, int) or n_candidates < 2:
            raise ValueError(f"n_candidates must be an integer >= 2, got {n_candidates!r}")
        self.max_iterations = max_iterations
        self.n_candidates = n_candidates

    @abc.abstractmethod
    def _advance(
        self,
        problem: Problem,
        point: torch.Tensor,
        value: float,
        gradient: torch.Tensor,
        seed: int,
        state: dict[str, Any],
    ) -> _Step:
        """One move from ``point`` given its value and Riemannian gradient on the samples of ``seed``."""

    def run(
        self, problem: Problem, initial_point: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> OptimizationResult:
        """Optimise ``problem`` from ``initial_point`` (checked to lie in the constraint set).

        ``generator`` draws one seed per step (default: a CPU generator seeded with 0). A non-finite objective
        stops the run at the iterate before (whose estimate was finite); a non-finite gradient or step at the
        current iterate.
        """
        if not isinstance(problem.objective, DifferentiableObjective):
            raise TypeError(f"{type(self).__name__} needs a DifferentiableObjective")
        manifold, objective = problem.manifold, problem.objective
        point = manifold.check_point(initial_point, "initial_point")
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        keep = {round(i * self.max_iterations / (self.n_candidates - 1)) for i in range(1, self.n_candidates)}
        kept: list[tuple[int, torch.Tensor]] = [(0, point)]
        history: list[float] = []
        state: dict[str, Any] = {}
        reason, steps, evaluations = "max iterations", 0, 0
        previous = point
        for _ in range(self.max_iterations):
            seed = draw_seed(generator)
            value, euclidean_grad = _evaluate(objective, point, seed)
            evaluations += 1
            if not _finite(value):
                reason = "non-finite objective"
                if steps > 0:  # the point has no valid estimate: fall back to the one before it
                    point, steps = previous, steps - 1
                    kept = [(step, p) for step, p in kept if step <= steps]
                break
            history.append(value)
            if euclidean_grad is None or not _finite(euclidean_grad):
                reason = "non-finite gradient"
                break
            try:
                gradient = manifold.riemannian_gradient(euclidean_grad, point)
                move = self._advance(problem, point, value, gradient, seed, state)
                valid = _finite(move.point)
            except (ValueError, RuntimeError):  # e.g. a factorisation that fails after an overflow
                valid, move = False, None
            if move is not None:
                evaluations += move.evaluations
            if not valid or move is None:
                reason = "non-finite step"
                break
            if move.stop is not None:
                reason = move.stop
                break
            previous, point, steps = point, move.point, steps + 1
            if steps in keep:
                kept.append((steps, point))
        # history[k] is the estimate after k steps; the last iterate may have none yet.
        if len(history) == steps:
            history.append(_evaluate(objective, point, draw_seed(generator), gradient=False)[0])
            evaluations += 1
        if kept[-1][0] != steps:
            kept.append((steps, point))
        final_value = history[steps] if steps < len(history) else math.nan
        return OptimizationResult(
            point=point,
            value=final_value,
            start_value=history[0] if history else math.nan,
            iterations=steps,
            stopping_reason=reason,
            trajectory=tuple(history),
            candidates=tuple(Iterate(step, p, history[step]) for step, p in kept),
            evaluations=evaluations,
        )


@final
class RiemannianAscent(GradientOptimizer):
    """Riemannian gradient ascent (descent when the problem minimises), ``P ← Exp_P(V)`` then projection.

    Parameters
    ----------
    step_size : float
        ``"fixed"``: ``V = step_size · grad`` (in the metric's own units). ``"normalised"`` and
        ``"backtracking"``: the length of ``V`` in the metric's norm is ``step_size · ‖P‖_P`` (relative) or
        ``step_size`` (``relative=False``); module docstring.
    step_rule : {"fixed", "normalised", "backtracking"}
    relative : bool
        Scale normalised steps by the radial norm ``‖P‖_P`` (default True).
    max_backtracks : int
        Halvings tried per step by ``"backtracking"`` before the step is skipped (the length then stays halved).
    sufficient_increase : float
        Armijo's constant ``c``: accept when ``f(P') ≥ f(P) + c · <grad, V>_P``.
    min_step_fraction : float
        ``"backtracking"`` stops ("step too small") once the length falls below this fraction of ``step_size``.
    max_iterations, n_candidates
        As for :class:`GradientOptimizer`.
    """

    def __init__(
        self,
        step_size: float,
        *,
        max_iterations: int = 100,
        step_rule: str = "backtracking",
        relative: bool = True,
        max_backtracks: int = 4,
        sufficient_increase: float = 1e-4,
        min_step_fraction: float = 1e-3,
        n_candidates: int = 5,
    ) -> None:
        super().__init__(max_iterations=max_iterations, n_candidates=n_candidates)
        step_size = float(step_size)
        if not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
        if step_rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {step_rule!r}; known: {', '.join(STEP_RULES)}")
        if isinstance(max_backtracks, bool) or not isinstance(max_backtracks, int) or max_backtracks < 0:
            raise ValueError(f"max_backtracks must be an integer >= 0, got {max_backtracks!r}")
        if not 0 <= sufficient_increase < 1:
            raise ValueError(f"sufficient_increase must be in [0, 1), got {sufficient_increase!r}")
        self.step_size = step_size
        self.step_rule = step_rule
        self.relative = bool(relative)
        self.max_backtracks = max_backtracks
        self.sufficient_increase = float(sufficient_increase)
        self.min_step_fraction = float(min_step_fraction)

    def __repr__(self) -> str:
        return (
            f"RiemannianAscent(step_size={self.step_size}, step_rule={self.step_rule!r}, "
            f"relative={self.relative}, max_iterations={self.max_iterations})"
        )

    def _advance(
        self,
        problem: Problem,
        point: torch.Tensor,
        value: float,
        gradient: torch.Tensor,
        seed: int,
        state: dict[str, Any],
    ) -> _Step:
        manifold, sign = problem.manifold, problem.sign
        if self.step_rule == "fixed":
            return _Step(manifold.step(sign * self.step_size * gradient, point))
        gradient_norm = float(manifold.norm(gradient, point))
        if gradient_norm == 0:
            return _Step(point, stop="stationary point")
        scale = float(manifold.radial_norm(point)) if self.relative else 1.0
        direction = gradient * (sign * scale / gradient_norm)
        length = state.get("length", self.step_size)
        if self.step_rule == "normalised":
            return _Step(manifold.step(length * direction, point))
        evaluations = 0
        for _ in range(self.max_backtracks + 1):
            candidate = manifold.step(length * direction, point)
            trial = problem.objective.value(candidate, seed=seed)
            evaluations += 1
            # Armijo on the ascended function s·f: s·f(P') ≥ s·f(P) + c · t · scale · ‖grad‖.
            if (
                _finite(trial)
                and sign * (trial - value) >= self.sufficient_increase * length * scale * gradient_norm
            ):
                state["length"] = min(self.step_size, 2 * length)
                return _Step(candidate, evaluations)
            length /= 2
        state["length"] = length
        too_small = length < self.min_step_fraction * self.step_size
        return _Step(point, evaluations, stop="step too small" if too_small else None)


@final
class RiemannianAdam(GradientOptimizer):
    """Riemannian Adam (Bécigneul and Ganea, 2019): first moment a tangent vector carried along by the manifold's
    transport, second moment per product component (:meth:`~manifoldcert.geometry.base.Manifold.component_inner`).

    On :class:`~manifoldcert.geometry.positive.PositiveDiagonals` with the Euclidean metric this is exactly Adam
    on θ followed by the projection ``θ ≥ min_value`` — ANCER's optimiser.

    Parameters
    ----------
    learning_rate : float
    betas : (float, float)
    eps : float
    max_iterations, n_candidates
        As for :class:`GradientOptimizer`.
    """

    def __init__(
        self,
        learning_rate: float,
        *,
        max_iterations: int = 100,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        n_candidates: int = 5,
    ) -> None:
        super().__init__(max_iterations=max_iterations, n_candidates=n_candidates)
        learning_rate = float(learning_rate)
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.learning_rate = learning_rate
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"RiemannianAdam(learning_rate={self.learning_rate}, max_iterations={self.max_iterations})"

    def _advance(
        self,
        problem: Problem,
        point: torch.Tensor,
        value: float,
        gradient: torch.Tensor,
        seed: int,
        state: dict[str, Any],
    ) -> _Step:
        manifold = problem.manifold
        beta1, beta2 = self.betas
        if not state:
            state.update(t=0, m=torch.zeros_like(gradient), v=torch.zeros_like(point))
        state["t"] += 1
        state["m"] = beta1 * state["m"] + (1 - beta1) * gradient
        state["v"] = beta2 * state["v"] + (1 - beta2) * manifold.component_inner(gradient, gradient, point)
        m_hat = state["m"] / (1 - beta1 ** state["t"])
        v_hat = state["v"] / (1 - beta2 ** state["t"])
        direction = m_hat / (v_hat.sqrt() + self.eps)
        new_point = manifold.step(problem.sign * self.learning_rate * direction, point)
        state["m"] = manifold.transport(state["m"], point, new_point)
        return _Step(new_point)
