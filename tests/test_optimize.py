"""The optimisers of manifoldcert.optimize on problems whose optimum is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldcert.geometry import METRICS, PositiveDiagonals, PositiveReals, SPDMatrices, Sphere
from manifoldcert.optimize import (
    DifferentiableObjective,
    FunctionObjective,
    Iterate,
    Problem,
    RiemannianAdam,
    RiemannianAscent,
    choose_iterate,
)

F64 = torch.float64


class Autograd(DifferentiableObjective):
    """A deterministic objective with its gradient by autograd; records every call (point, seed, value)."""

    def __init__(self, function, *, noise=None) -> None:
        self.function, self.noise, self.calls = function, noise, []

    def _evaluate(self, point, seed):
        value = self.function(point)
        if self.noise is not None:  # a seed-dependent term: common random numbers within one seed
            value = value + self.noise * torch.randn(
                (), generator=torch.Generator().manual_seed(seed), dtype=F64
            )
        return value

    def value(self, point, *, seed=None):
        value = float(self._evaluate(point.detach(), seed))
        self.calls.append(("value", seed, value))
        return value

    def value_and_gradient(self, point, *, seed=None):
        leaf = point.detach().requires_grad_(True)
        value = self._evaluate(leaf, seed)
        (grad,) = torch.autograd.grad(value, leaf)
        self.calls.append(("gradient", seed, float(value.detach())))
        return float(value.detach()), grad


def _target(n: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator, dtype=F64)
    return a @ a.mT / n + 0.5 * torch.eye(n, dtype=F64)


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("step_rule", ["backtracking", "normalised"])
def test_ascent_on_spd_reaches_the_maximiser(metric, step_rule):
    target = _target()
    objective = Autograd(lambda p: -(p - target).square().sum())
    steps = 300 if step_rule == "backtracking" else 150
    step_size = 0.3 if step_rule == "backtracking" else 0.01
    result = RiemannianAscent(step_size, step_rule=step_rule, max_iterations=steps).run(
        Problem(SPDMatrices(3, metric), objective), torch.eye(3, dtype=F64)
    )
    # A fixed length cannot settle closer than about its size; backtracking stops when the length falls below
    # 1/1000 of step_size.
    tolerance = 0.05 if step_rule == "normalised" else 2e-3
    assert float((result.point - target).norm()) < tolerance, result.stopping_reason
    assert result.trajectory[0] == pytest.approx(-float((torch.eye(3, dtype=F64) - target).square().sum()))
    assert len(result.trajectory) == result.iterations + 1


def test_backtracking_accepts_only_improvements_on_common_random_numbers():
    """With a seed-dependent term, a trial is compared with the gradient call of the SAME seed, and accepted only
    if it improves on it (Armijo); other seeds give other values."""
    objective = Autograd(lambda s: -((s.log() - math.log(2.0)) ** 2), noise=0.3)
    result = RiemannianAscent(0.5, max_iterations=30).run(
        Problem(PositiveReals(), objective),
        torch.tensor(0.5, dtype=F64),
        generator=torch.Generator().manual_seed(1),
    )
    seeds = [seed for kind, seed, _ in objective.calls if kind == "gradient"]
    assert len(set(seeds)) == len(seeds)  # one fresh seed per step
    accepted = 0
    for index, (kind, seed, value) in enumerate(objective.calls):
        if kind != "gradient":
            continue
        trials = [v for k, s, v in objective.calls[index + 1 :] if k == "value" and s == seed]
        assert trials, "every step tries at least once"
        improved = [v for v in trials if v > value]
        assert len(improved) <= 1  # it stops at the first acceptable trial
        accepted += len(improved)
    assert accepted >= 10 and abs(float(result.point) - 2.0) < 0.1
    assert result.evaluations == len(objective.calls)


def test_fixed_steps_on_the_positive_reals_are_gradient_ascent_on_log_sigma():
    objective = Autograd(lambda s: -((s - 1.5) ** 2))
    result = RiemannianAscent(0.2, step_rule="fixed", max_iterations=3).run(
        Problem(PositiveReals(), objective), torch.tensor(0.5, dtype=F64)
    )
    u = math.log(0.5)
    for _ in range(3):  # d/du of −(e^u − 1.5)² = −2(e^u − 1.5)e^u
        u += 0.2 * (-2 * (math.exp(u) - 1.5) * math.exp(u))
    assert float(result.point) == pytest.approx(math.exp(u), rel=1e-12)


def test_riemannian_adam_on_euclidean_diagonals_is_projected_adam():
    target = torch.tensor([0.1, 0.8, 2.0], dtype=F64)
    objective = Autograd(lambda t: -((t - target) ** 2 * torch.tensor([1.0, 10.0, 0.1], dtype=F64)).sum())
    floor, lr = 0.3, 0.05
    result = RiemannianAdam(lr, max_iterations=25).run(
        Problem(PositiveDiagonals(3, min_value=floor), objective), torch.full((3,), 0.5, dtype=F64)
    )
    theta, m, v = torch.full((3,), 0.5, dtype=F64), torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64)
    for t in range(1, 26):
        grad = -2 * (theta - target) * torch.tensor([1.0, 10.0, 0.1], dtype=F64)
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        theta = (theta + lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)).clamp_min(floor)
    torch.testing.assert_close(result.point, theta, rtol=1e-12, atol=1e-14)
    assert float(result.point[0]) == floor  # held at the floor


@pytest.mark.parametrize(
    "optimizer", [RiemannianAscent(0.3, max_iterations=200), RiemannianAdam(0.05, max_iterations=300)]
)
def test_sphere_ascent_finds_the_top_eigenvector(optimizer):
    matrix = torch.diag(torch.tensor([1.0, 3.0, 2.0], dtype=F64))
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=F64))
    matrix = rotation @ matrix @ rotation.mT
    objective = Autograd(lambda x: x @ matrix @ x)
    start = torch.tensor([1.0, 1.0, 1.0], dtype=F64) / math.sqrt(3)
    result = optimizer.run(Problem(Sphere(3), objective), start)
    assert float(result.point @ matrix @ result.point) == pytest.approx(3.0, abs=1e-3)


def test_minimisation_descends():
    objective = Autograd(lambda s: (s - 2.0) ** 2)
    result = RiemannianAscent(0.3, max_iterations=60).run(
        Problem(PositiveReals(), objective, maximize=False), torch.tensor(0.5, dtype=F64)
    )
    assert abs(float(result.point) - 2.0) < 1e-3 and result.value < result.start_value


def test_candidates_stopping_reasons_and_errors():
    objective = Autograd(lambda s: -((s - 2.0) ** 2))
    result = RiemannianAscent(0.1, max_iterations=8, n_candidates=3).run(
        Problem(PositiveReals(), objective), torch.tensor(0.5, dtype=F64)
    )
    assert [c.step for c in result.candidates] == [0, 4, 8] and float(result.candidates[0].point) == 0.5
    assert result.candidates[-1].value == result.trajectory[-1]
    at_maximiser = RiemannianAscent(0.1, max_iterations=50).run(
        Problem(PositiveReals(), objective), torch.tensor(2.0, dtype=F64)
    )
    assert at_maximiser.stopping_reason == "stationary point" and at_maximiser.iterations == 0
    # A hair off a kink every trial overshoots: the length halves until it is too small, the point stays.
    kink = Autograd(lambda s: -(s - 2.0).abs())
    start = torch.tensor(2.0 + 1e-12, dtype=F64)
    stuck = RiemannianAscent(0.1, max_iterations=50).run(Problem(PositiveReals(), kink), start)
    assert stuck.stopping_reason == "step too small" and torch.equal(stuck.point, start)

    def nan_after(calls):
        count = {"n": 0}

        def function(s):
            count["n"] += 1
            return -((s - 2.0) ** 2) * (math.nan if count["n"] > calls else 1.0)

        return function

    broken = RiemannianAscent(0.1, step_rule="fixed", max_iterations=10).run(
        Problem(PositiveReals(), Autograd(nan_after(3))), torch.tensor(0.5, dtype=F64)
    )
    # The 4th estimate is NaN: its point is dropped and the run ends at the iterate after 2 steps.
    assert broken.stopping_reason == "non-finite objective" and broken.iterations == 2
    assert len(broken.trajectory) == 3 and all(math.isfinite(v) for v in broken.trajectory)
    assert [c.step for c in broken.candidates] == [0, 2]
    exploding = RiemannianAscent(1e6, step_rule="fixed", max_iterations=5).run(
        Problem(PositiveReals(), Autograd(lambda s: s**3)), torch.tensor(2.0, dtype=F64)
    )
    assert exploding.stopping_reason == "non-finite step" and float(exploding.point) == 2.0
    with pytest.raises(ValueError, match="step_rule"):
        RiemannianAscent(0.1, step_rule="wolfe")
    with pytest.raises(ValueError, match="step_size"):
        RiemannianAscent(-1.0)
    with pytest.raises(ValueError, match="max_iterations"):
        RiemannianAdam(0.1, max_iterations=-1)
    with pytest.raises(ValueError, match="floor"):
        RiemannianAscent(0.1).run(
            Problem(SPDMatrices(2, min_eigenvalue=1.0), objective), 0.5 * torch.eye(2, dtype=F64)
        )
    with pytest.raises(TypeError, match="DifferentiableObjective"):
        RiemannianAscent(0.1).run(
            Problem(PositiveReals(), FunctionObjective(float)), torch.tensor(1.0, dtype=F64)
        )
    with pytest.raises(TypeError, match="Manifold"):
        Problem("spd", objective)


def test_choose_iterate_takes_the_best_score_and_the_earliest_of_ties():
    candidates = [Iterate(step, torch.tensor(float(step)), 0.0).point for step in (0, 5, 10)]
    assert choose_iterate(candidates, lambda p: {0.0: 1.0, 5.0: 2.0, 10.0: 2.0}[float(p)]) == (
        1,
        [1.0, 2.0, 2.0],
    )
    assert choose_iterate(candidates, lambda p: 1.0)[0] == 0
    assert choose_iterate(candidates, float, maximize=False)[0] == 0
    with pytest.raises(ValueError, match="at least one"):
        choose_iterate([], float)
