"""UniCR's radius against an exact Neyman–Pearson computation by quadrature, independent of the Monte Carlo code.

For noise with i.i.d. coordinates and a shift ``δ = a·(1, …, 1, 0, …, 0)`` touching ``k`` coordinates, the
likelihood ratio ``p(z − δ)/p(z)`` depends on those ``k`` coordinates only, so the worst-case probability of the
top class at ``x + δ`` (Neyman–Pearson: the base classifier puts class A where the ratio is smallest) is a
``k``-dimensional integral. It is computed on cells of equal base mass (a midpoint grid in CDF space), and the
l1 radius along ``δ`` is ``k·a`` at the largest ``a`` keeping that probability above 1/2 (``p_B = 1 − p_A``).
"""

from __future__ import annotations

import numpy as np
import pytest

from manifoldcert.certifiers.unicr import UniCR
from manifoldcert.noises import GeneralNormal, Pareto

CELLS = {1: 200_000, 2: 1500}  # per coordinate


def _pareto(alpha: float, beta: float):
    def quantile(u):
        tail = np.where(u < 0.5, 2 * u, 2 * (1 - u))
        return np.sign(u - 0.5) * alpha * (tail ** (-1 / beta) - 1)

    def log_density(x):
        return np.log(beta / (2 * alpha)) - (beta + 1) * np.log1p(np.abs(x) / alpha)

    return quantile, log_density


def _general_normal(alpha: float, beta: float):
    from scipy import stats

    law = stats.gennorm(beta, scale=alpha)
    return law.ppf, law.logpdf


def worst_case_probability(quantile, log_density, k: int, a: float, p_a: float) -> float:
    """``min { P_{x+δ}(A) : P_x(A) = p_A }`` for ``δ = a·(1_k, 0)``, on equal-mass cells."""
    u = (np.arange(CELLS[k]) + 0.5) / CELLS[k]
    z = quantile(u)
    log_ratio_1d = log_density(z - a) - log_density(z)
    log_ratio = log_ratio_1d if k == 1 else (log_ratio_1d[:, None] + log_ratio_1d[None, :]).ravel()
    m = int(round(p_a * log_ratio.size))
    smallest = np.partition(log_ratio, m - 1)[:m]
    return float(np.exp(smallest).sum() / log_ratio.size)


def quadrature_l1_radius(quantile, log_density, k: int, p_a: float) -> float:
    low, high = 0.0, 1.0
    while worst_case_probability(quantile, log_density, k, high, p_a) > 0.5:
        low, high = high, 2 * high
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (
            (mid, high) if worst_case_probability(quantile, log_density, k, mid, p_a) > 0.5 else (low, mid)
        )
        if high - low < 1e-5 * high:
            break
    return k * low


def test_quadrature_recovers_the_laplace_closed_form():
    """Laplace (general normal β = 1) along an axis: R₁ = −b·log(2(1 − p_A)) (Teng et al. 2020)."""
    quantile, log_density = _general_normal(1.0, 1.0)
    for p_a in (0.6, 0.9, 0.99):
        exact = -np.log(2 * (1 - p_a))
        assert quadrature_l1_radius(quantile, log_density, 1, p_a) == pytest.approx(exact, rel=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "noise, law",
    [
        (Pareto(alpha=1.0, beta=3.0), _pareto(1.0, 3.0)),
        (GeneralNormal(alpha=1.0, beta=0.5), _general_normal(1.0, 0.5)),
    ],
    ids=["pareto-3", "general-normal-0.5"],
)
def test_unicr_l1_radius_at_d784_matches_quadrature(noise, law):
    """UniCR (approximate) within 2 % of the exact radius over the axis and the 2-sparse diagonal, and never
    above the smaller of the two by more than 2 %."""
    certifier = UniCR(None, noise=noise, norm="l1", input_shape=(784,), search="symmetric")
    for p_a in (0.6, 0.9, 0.99):
        exact = min(quadrature_l1_radius(*law, k, p_a) for k in (1, 2))
        approximate = certifier.radius_for(p_a, use_table=False)
        assert approximate <= 1.02 * exact, (p_a, approximate, exact)
        assert approximate >= 0.98 * exact, (p_a, approximate, exact)
