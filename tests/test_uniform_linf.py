"""The exact l∞ radius of uniform (cube) smoothing, Yang et al. (2020), Table 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from manifoldcert.certifiers import UniformCertifier
from manifoldcert.certifiers.uniform import uniform_linf_radius

SIGMA = 0.5
LAMBDA = SIGMA * math.sqrt(3.0)


@pytest.mark.parametrize("dim", [1, 2, 3, 10, 784, 3 * 32 * 32])
@pytest.mark.parametrize("p_a", [0.51, 0.6, 0.9, 0.99, 0.999999])
def test_closed_form_and_at_least_the_norm_inequality(dim: int, p_a: float) -> None:
    certifier = UniformCertifier(None, sigma=SIGMA)
    r_linf = certifier.radius_for(p_a, norm="linf", dim=dim)
    expected = 2.0 * LAMBDA * (1.0 - (1.5 - p_a) ** (1.0 / dim))
    assert r_linf == pytest.approx(expected, rel=1e-10)
    r_l1 = certifier.radius_for(p_a, dim=dim)
    assert r_l1 == pytest.approx(2.0 * LAMBDA * (p_a - 0.5))
    if dim == 1:
        assert r_linf == pytest.approx(r_l1, rel=1e-12)
    else:
        assert r_linf > r_l1 / dim * (1.0 + 1e-9)
    # The l2 radius still follows from the norm inequality.
    assert certifier.radius_for(p_a, norm="l2", dim=dim) == pytest.approx(r_l1 / math.sqrt(dim))


def test_large_dimension_gain_and_limits() -> None:
    # In high dimension R∞ → 2λ·log(1/(3/2 − p))/d, i.e. log(1/(3/2 − p))/(p − 1/2) times R₁/d: 27% at 0.9.
    d = 3 * 224 * 224
    ratio = uniform_linf_radius(LAMBDA, 0.9, d) / (2.0 * LAMBDA * 0.4 / d)
    assert ratio == pytest.approx(math.log(1 / 0.6) / 0.4, rel=1e-4)
    assert uniform_linf_radius(LAMBDA, 0.5, 5) == 0.0
    assert uniform_linf_radius(LAMBDA, 0.3, 5) == 0.0
    assert uniform_linf_radius(LAMBDA, 1.0, 3) == pytest.approx(2 * LAMBDA * (1 - 0.5 ** (1 / 3)))
    certifier = UniformCertifier(None, sigma=SIGMA)
    assert certifier.radius_for(0.4, norm="linf", dim=3) == 0.0
    with pytest.raises(ValueError, match="dim"):
        certifier.radius_for(0.9, norm="linf")


def _mc_overlap(shift: np.ndarray, rng: np.random.Generator, n: int = 400_000) -> float:
    """Fraction of ``U[−λ, λ]^d`` samples that also lie in the cube shifted by ``shift`` (Monte Carlo)."""
    z = rng.uniform(-LAMBDA, LAMBDA, size=(n, shift.size))
    return float(np.mean(np.all(np.abs(z - shift) <= LAMBDA, axis=1)))


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("p_a", [0.6, 0.9, 0.99])
def test_brute_force_worst_case_overlap(dim: int, p_a: float) -> None:
    """Worst case over the l∞ ball by brute force: the smallest overlap of the cube and its shifted copy.

    The Neyman–Pearson worst case of a uniform noise gives ``p_A(x + δ) = p_A − (1 − overlap(δ))``; the l∞
    radius is the largest r with ``min_{‖δ‖∞ ≤ r} overlap(δ) > 3/2 − p_A``. The minimum over a grid of the
    l∞ sphere (exact overlap) is at the corners; a Monte Carlo overlap at the root agrees with 3/2 − p_A.
    """
    rng = np.random.default_rng(dim * 100 + int(p_a * 100))
    grid = np.linspace(-1.0, 1.0, 41)
    if dim == 1:
        directions = np.array([[-1.0], [1.0]])
    else:
        edges = [(t, s) for t in grid for s in (-1.0, 1.0)]
        directions = np.array([*edges, *[(s, t) for t, s in edges]])

    def min_overlap(r: float) -> float:
        return float(np.min(np.prod(1.0 - np.abs(r * directions) / (2.0 * LAMBDA), axis=1)))

    radius = brentq(lambda r: min_overlap(r) - (1.5 - p_a), 0.0, 2.0 * LAMBDA, xtol=1e-14)
    certifier = UniformCertifier(None, sigma=SIGMA)
    assert certifier.radius_for(p_a, norm="linf", dim=dim) == pytest.approx(radius, rel=1e-9)
    corner = np.full(dim, radius)
    assert _mc_overlap(corner, rng) == pytest.approx(1.5 - p_a, abs=5e-3)


def test_runner_up_and_certificate() -> None:
    certifier = UniformCertifier(None, sigma=SIGMA)
    d = 10
    # With p_B < 1 − p_A the effective probability is (1 + p_A − p_B)/2: the two-bound overlap condition.
    p_a, p_b = 0.7, 0.1
    effective = 0.5 * (1 + p_a - p_b)
    assert certifier.radius_for(p_a, p_b, norm="linf", dim=d) == pytest.approx(
        uniform_linf_radius(LAMBDA, effective, d)
    )
    assert effective <= 1 - p_b
    certificate = certifier._smoothing_certificate(3, 0.9, None, d, n0=100, n=1000, alpha=0.001, seconds=0.0)
    assert certificate.radius["linf"] == pytest.approx(uniform_linf_radius(LAMBDA, 0.9, d))
    assert certificate.radius["l1"] == pytest.approx(2 * LAMBDA * 0.4)
    abstained = certifier._smoothing_certificate(3, 0.4, None, d, n0=100, n=1000, alpha=0.001, seconds=0.0)
    assert abstained.prediction is None and abstained.radius["linf"] == 0.0
