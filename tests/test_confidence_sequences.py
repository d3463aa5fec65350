"""Confidence sequences: closed forms, brute force, and time-uniform coverage over simulated streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.confidence_sequences import (
    BetaMixture,
    ScheduledClopperPearson,
    geometric_looks,
    resolve_sequence,
)


def test_the_mixture_bound_with_every_vote_a_success_is_the_closed_form():
    """All n successes: M_n(p) = B(n + a, b) / (B(a, b) p^n), so the bound is (B(n + a, b) α / B(a, b))^(1/n)."""
    for a, b in ((1.0, 0.125), (0.5, 0.5)):
        sequence = BetaMixture(0.001, a=a, b=b, final_share=0.0)
        for n in (1, 10, 6000, 100_000):
            expected = math.exp((special.betaln(n + a, b) - special.betaln(a, b) + math.log(0.001)) / n)
            assert float(sequence.lower(n, n)) == pytest.approx(expected, rel=1e-12)
            assert float(sequence.lower(n, n)) <= expected * (1 + 1e-15)


def test_the_mixture_bound_is_the_left_end_of_the_confidence_set_by_brute_force():
    """On a fine grid, every p below the bound has M_n(p) >= 1/α and the first grid point above it does not."""
    sequence = BetaMixture(0.01, a=0.5, b=0.5, final_share=0.0)
    grid = np.linspace(1e-6, 1 - 1e-6, 200_001)
    for successes, n in ((3, 10), (90, 100), (950, 1000), (4990, 5000)):
        log_m = sequence.log_martingale(successes, n, grid)
        inside = grid[log_m < math.log(100)]
        bound, scalar_and_vector = (
            float(sequence.lower(successes, n)),
            sequence.lower([successes] * 2, [n] * 2),
        )
        assert inside.min() - 1e-5 <= bound <= inside.min()
        assert scalar_and_vector[0] == pytest.approx(bound, abs=1e-12)
        upper = float(sequence.upper(successes, n))
        assert inside.max() <= upper <= inside.max() + 1e-5


def test_the_final_look_adds_clopper_pearson_at_its_share_of_alpha():
    """At n = max_n the bound is max(mixture at (1 − s)α, Clopper–Pearson at sα); before it, the mixture's."""
    sequence, plain = BetaMixture(0.001, final_share=0.5), BetaMixture(0.0005, final_share=0.0)
    for successes in (9_980, 9_999, 10_000):
        final = float(sequence.lower(successes, 10_000, max_n=10_000))
        expected = max(float(plain.lower(successes, 10_000)), clopper_pearson_lower(successes, 10_000, 0.0005))
        assert final == pytest.approx(expected, rel=1e-12)
        assert float(sequence.lower(successes, 10_000, max_n=20_000)) == float(plain.lower(successes, 10_000))
    assert float(sequence.lower(9_990, 10_000, max_n=10_000)) > float(plain.lower(9_990, 10_000))


def test_the_scheduled_bound_is_clopper_pearson_at_alpha_over_the_number_of_looks():
    sequence = ScheduledClopperPearson(0.001, first=50, growth=2.0)
    looks = sequence.looks(1000)
    assert looks.tolist() == [50, 100, 200, 400, 800, 1000]
    k = len(looks)
    for n in looks:
        for successes in (0, n // 2, n - 1, n):
            expected = clopper_pearson_lower(int(successes), int(n), 0.001 / k)
            assert float(sequence.lower(successes, n, max_n=1000)) == pytest.approx(
                expected, rel=1e-10, abs=0
            )
    with pytest.raises(ValueError, match="only at its looks"):
        sequence.lower(5, 60, max_n=1000)
    with pytest.raises(ValueError, match="needs max_n"):
        sequence.lower(5, 50)


def test_anytime_bounds_cost_little_over_the_fixed_n_bound():
    """Anytime validity is paid for, but modestly: at n = 6,000 unbroken votes the mixture's bound certifies
    Φ⁻¹ ≥ 3 (a radius of 3σ), which the fixed-n Clopper–Pearson bound reaches at ~5,200 votes."""
    mixture = BetaMixture(0.001, final_share=0.0)
    assert float(stats.norm.ppf(mixture.lower(6000, 6000))) >= 3.0
    assert float(stats.norm.ppf(clopper_pearson_lower(5200, 5200, 0.001))) >= 3.0
    assert float(mixture.lower(5400, 6000)) < clopper_pearson_lower(5400, 6000, 0.001)


def _simulated_violations(sequence, p: float, streams: int, max_n: int, seed: int) -> tuple[float, float]:
    """Fractions of Bernoulli(p) streams whose lower (upper) bound is ever above (below) p at a look."""
    rng = np.random.default_rng(seed)
    looks = sequence.looks(max_n)
    steps = np.diff(np.concatenate([[0], looks]))
    successes = np.zeros(streams)
    lower_broken = np.zeros(streams, dtype=bool)
    upper_broken = np.zeros(streams, dtype=bool)
    for look, step in zip(looks, steps, strict=True):
        successes += rng.binomial(step, p, size=streams)
        n = np.full(streams, look)
        lower_broken |= sequence.lower(successes, n, max_n=max_n) > p
        upper_broken |= sequence.upper(successes, n, max_n=max_n) < p
    return lower_broken.mean(), upper_broken.mean()


@pytest.mark.parametrize(
    "sequence",
    [BetaMixture(0.05), BetaMixture(0.05, a=0.5, b=0.5, final_share=0.0), ScheduledClopperPearson(0.05)],
    ids=["mixture-with-final-look", "kt-mixture", "scheduled-cp"],
)
@pytest.mark.parametrize("p", [0.6, 0.97])
def test_coverage_holds_over_the_whole_sequence_on_20000_streams(sequence, p):
    """P(∃ look: lower > p) ≤ α (and for the upper bound) within binomial slack, 20,000 streams of 2,000."""
    streams, alpha = 20_000, sequence.alpha
    lower_rate, upper_rate = _simulated_violations(sequence, p, streams, 2000, seed=int(p * 1000))
    slack = 3 * math.sqrt(alpha * (1 - alpha) / streams)
    assert lower_rate <= alpha + slack
    assert upper_rate <= alpha + slack


def test_reading_a_fixed_n_bound_after_every_batch_breaks_its_level():
    """The reason for confidence sequences: a fixed-n Clopper–Pearson bound at α read at every look of the same
    schedule is violated far more often than α — the simulation above can fail."""

    class Naive(ScheduledClopperPearson):
        def level_per_look(self, max_n: int) -> float:
            return self.alpha

    lower_rate, _ = _simulated_violations(Naive(0.05), 0.6, 20_000, 2000, seed=3)
    assert lower_rate > 2 * 0.05


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Beta prior"):
        BetaMixture(0.01, a=0.0)
    with pytest.raises(ValueError, match="growth"):
        BetaMixture(0.01, growth=1.0)
    with pytest.raises(ValueError, match="successes <= n"):
        BetaMixture(0.01).lower(5, 4)
    with pytest.raises(ValueError, match="sequential must be"):
        resolve_sequence("wald", 0.01)
    assert resolve_sequence(True, 0.02).alpha == 0.02
    assert resolve_sequence(BetaMixture(0.5, b=0.3), 0.02).b == 0.3
    assert geometric_looks(10, first=64, growth=1.5).tolist() == [10]
