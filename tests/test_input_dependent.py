"""Input-dependent smoothing: the samplers, the flaw of the fixed-σ formula, and the sound certificate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.certifiers.input_dependent import input_dependent_radius, worst_case_top_probability
from manifoldcert.noises.input_dependent import ConstantSigma, MeanAbsSigma, SigmaFunction
from tests.conftest import LinearBinaryClassifier


# -- the counterexample ------------------------------------------------------------------------------------------
class GrowingSigma(SigmaFunction):
    """σ(x) = 0.2·(1 + 20‖x‖²): log σ has slope 40u/(1 + 20u²) ≤ √20 in u = ‖x‖, so r = √20."""

    name = "growing"

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return 0.2 * (1 + 20 * inputs.flatten(1).square().sum(1))

    def semi_elasticity(self, dim: int) -> float:
        return math.sqrt(20)

    def config(self):
        return {"name": self.name}


class InsideUnitDisc(nn.Module):
    """f(z) = class 1 if ‖z‖ ≤ 1 else class 0, in 2-D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x.flatten(1).square().sum(1) <= 1).double()
        return torch.stack([1 - inside, inside], dim=1)


def _p_inside_by_quadrature(center: float, sigma: float) -> float:
    """P(‖(center, 0) + σε‖ ≤ 1): over the chord at each x₁, the y-mass in closed form (no χ² code involved)."""

    def chord_mass(x: float) -> float:
        half = math.sqrt(max(1 - x * x, 0.0))
        return stats.norm.pdf(x, center, sigma) * (2 * stats.norm.cdf(half / sigma) - 1)

    return integrate.quad(chord_mass, -1, 1, epsabs=1e-12, limit=200)[0]


def test_fixed_sigma_formula_is_not_a_certificate_for_input_dependent_sigma():
    sigma_fn = GrowingSigma()
    sigma0 = float(sigma_fn(torch.zeros(1, 2)))
    p_a = _p_inside_by_quadrature(0.0, sigma0)  # exact smoothed probability of class 1 at the origin
    assert p_a == pytest.approx(stats.chi2.cdf(1 / sigma0**2, 2), abs=1e-9)
    naive = sigma0 * stats.norm.ppf(p_a)  # what the IDRC report would certify
    assert naive > 0.85
    # Inside the naive ball, the smoothed classifier changes its prediction.
    x_prime = 0.5
    p_there = _p_inside_by_quadrature(x_prime, float(sigma_fn(torch.tensor([[x_prime, 0.0]]))))
    assert p_there < 0.5 and x_prime < naive
    # Where it first flips (by symmetry the same in every direction), found by bisection on the exact probability.
    low, high = 0.0, x_prime
    for _ in range(30):
        mid = (low + high) / 2
        p_mid = _p_inside_by_quadrature(mid, float(sigma_fn(torch.tensor([[mid, 0.0]]))))
        low, high = (mid, high) if p_mid > 0.5 else (low, mid)
    flip = low
    # The sound radius stays inside the region where the prediction is constant; the naive one does not.
    sound = input_dependent_radius(p_a, sigma0, sigma_fn.semi_elasticity(2), 2)
    assert 0 < sound <= flip < naive


def test_certifier_on_the_counterexample_is_sound_and_flags_the_naive_radius():
    certifier = get_certifier("input-dependent", InsideUnitDisc(), sigma_function=GrowingSigma(), seed=1)
    cert = certifier.certify(torch.zeros(2, dtype=torch.float64), n0=100, n=20_000, alpha=0.001)
    assert cert.prediction == 1 and cert.guaranteed
    assert cert.radius["l2"] < 0.38 < cert.params["naive_radius"]


# -- the bound ---------------------------------------------------------------------------------------------------
def _ball_probability_by_quadrature(radius2: float, dim: int, center: float) -> float:
    """P(‖z − c·e₁‖² ≤ t²), z ~ N(0, I_d), conditioning on the χ²_{d−1} of the other coordinates."""

    def integrand(q: float) -> float:
        h = math.sqrt(max(radius2 - q, 0.0))
        a, b = center - h, center + h
        mass = stats.norm.sf(a) - stats.norm.sf(b) if a > 0 else stats.norm.cdf(b) - stats.norm.cdf(a)
        return stats.chi2.pdf(q, dim - 1) * mass

    low, high = stats.chi2.ppf(1e-16, dim - 1), min(radius2, stats.chi2.ppf(1 - 1e-16, dim - 1))
    return (
        integrate.quad(integrand, low, high, limit=200, epsabs=1e-14, epsrel=1e-11)[0] if high > low else 0.0
    )


@pytest.mark.parametrize("dim", [784, 3072])
@pytest.mark.parametrize("nc", [0.3, 50.0, 1e4, 1e6])
def test_scipy_noncentral_chi2_is_accurate_in_high_dimension(dim, nc):
    for q in (1e-4, 0.3, 0.5, 0.999):
        radius2 = stats.ncx2.ppf(q, dim, nc)
        assert _ball_probability_by_quadrature(radius2, dim, math.sqrt(nc)) == pytest.approx(q, abs=1e-7)


@pytest.mark.parametrize("p_a", [0.6, 0.9, 0.999])
def test_worst_case_reduces_to_cohen_without_scale_change(p_a):
    for rho in (0.0, 0.3, 1.0):
        cohen = stats.norm.cdf(stats.norm.ppf(p_a) - rho)
        assert worst_case_top_probability(p_a, rho, 1.0, 784) == pytest.approx(cohen)
        for s in (1 - 1e-4, 1 + 1e-4):  # continuous in s
            assert worst_case_top_probability(p_a, rho, s, 10) == pytest.approx(cohen, abs=1e-3)


def test_worst_case_set_by_monte_carlo_and_against_other_sets():
    """d = 5: the Neyman–Pearson ball has P₀ = p_A and P₁ = W by sampling; half-spaces with P₀ = p_A do no better."""
    rng = np.random.default_rng(0)
    dim, p_a, rho = 5, 0.8, 0.7
    for s in (0.7, 1.4):
        w = worst_case_top_probability(p_a, rho, s, dim)
        center = -rho / (s * s - 1)
        radius2 = stats.ncx2.ppf(p_a, dim, center**2) if s > 1 else stats.ncx2.isf(p_a, dim, center**2)
        z0 = rng.normal(size=(400_000, dim))
        z1 = z0 * s
        z1[:, 0] += rho
        inside0 = ((z0 - np.eye(dim)[0] * center) ** 2).sum(1) <= radius2
        inside1 = ((z1 - np.eye(dim)[0] * center) ** 2).sum(1) <= radius2
        set0, set1 = (inside0, inside1) if s > 1 else (~inside0, ~inside1)
        assert set0.mean() == pytest.approx(p_a, abs=3e-3)
        assert set1.mean() == pytest.approx(w, abs=3e-3)
        for angle in np.linspace(0, np.pi, 7):  # half-spaces {z·u ≤ Φ⁻¹(p_A)} in every direction of the plane
            u = np.array([math.cos(angle), math.sin(angle), 0, 0, 0])
            p1 = stats.norm.cdf((stats.norm.ppf(p_a) - rho * u[0]) / s)
            assert p1 >= w - 1e-9


@pytest.mark.parametrize("dim", [2, 784, 3072])
def test_worst_case_over_the_scale_interval_is_at_its_ends_and_radii_are_monotone(dim):
    for p_a, kappa in [(0.9, 0.05), (0.99, 0.2), (0.999, 1.0)]:
        for rho in (0.1, 0.5, 1.0):
            ends = min(
                worst_case_top_probability(p_a, rho, s, dim)
                for s in (math.exp(-kappa * rho), 1, math.exp(kappa * rho))
            )
            for t in np.linspace(-1, 1, 21):
                assert worst_case_top_probability(p_a, rho, math.exp(t * kappa * rho), dim) >= ends - 1e-9
        radius = input_dependent_radius(p_a, 1.0, kappa, dim)
        for rho in np.linspace(0, radius, 12)[1:]:  # every smaller distance is certified as well
            for s in (math.exp(-kappa * rho), math.exp(kappa * rho)):
                assert worst_case_top_probability(p_a, rho, s, dim) > 0.5


def test_sound_radius_equals_cohen_for_constant_sigma_and_never_exceeds_it(linear_classifier):
    for p_a in (0.6, 0.9, 0.99):
        assert input_dependent_radius(p_a, 0.5, 0.0, 784) == pytest.approx(0.5 * stats.norm.ppf(p_a))
        for r in (0.01, 0.1, 1.0):
            assert input_dependent_radius(p_a, 0.5, r, 784) <= 0.5 * stats.norm.ppf(p_a)
    assert input_dependent_radius(0.5, 0.5, 0.1, 784) == 0.0
    x = torch.sign(linear_classifier.weight) * 0.05
    constant = get_certifier(
        "input-dependent", linear_classifier, input_range=None, sigma_function=ConstantSigma(0.25)
    )
    cohen = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25)
    a, b = constant.certify(x, n=4000), cohen.certify(x, n=4000)
    assert a.p_lower == b.p_lower and a.radius["l2"] == pytest.approx(b.radius["l2"])
    varying = get_certifier(
        "input-dependent", linear_classifier, input_range=None, sigma=0.25, offset=2.0
    ).certify(x, n=4000)
    assert varying.radius["l2"] <= varying.params["naive_radius"]


# -- samplers ----------------------------------------------------------------------------------------------------
def test_report_samplers():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    inputs[1] *= 0.1
    repeated = inputs.repeat_interleave(5000, dim=0)
    noisy = noises.get("mean-scaled-gaussian", sigma=0.5).perturb(repeated, generator=generator)
    std = (noisy - repeated).reshape(4, -1).std(1)
    expected = 0.5 * inputs.flatten(1).abs().mean(1)
    np.testing.assert_allclose(std.numpy(), expected.numpy(), rtol=0.01)

    laplace = noises.get("norm-scaled-laplace", sigma=0.3).perturb(inputs, generator=generator)
    np.testing.assert_allclose(
        (laplace - inputs).flatten(1).norm(dim=1).numpy(), 0.3 * inputs.flatten(1).norm(dim=1).numpy()
    )

    random_radius = noises.get("random-radius-gaussian", sigma=0.2)
    z = random_radius.sample(20_000, (1, 8, 8), generator=generator, dtype=torch.float64)
    assert float(z.square().mean().sqrt()) == pytest.approx(0.2, rel=0.02)
    radii = (z.flatten(1).norm(dim=1) / (0.2 * 8)).numpy()
    assert stats.kstest(radii, stats.halfnorm.cdf).pvalue > 1e-3
    # log_prob integrates the radial law: check it against the half-normal density times the sphere's area.
    r = float(z[0].norm())
    area = 2 * math.pi**32 / math.gamma(32) * r**63
    assert float(random_radius.log_prob(z[:1])) == pytest.approx(
        math.log(stats.halfnorm.pdf(r, scale=1.6) / area)
    )


class _Wobbly(SigmaFunction):
    """Declares r = 0 but varies: the run-time check must catch it."""

    name = "wobbly"

    def __call__(self, inputs):
        return 0.3 + 0.1 * inputs.flatten(1)[:, 0]

    def semi_elasticity(self, dim):
        return 0.0

    def config(self):
        return {"name": self.name}


def test_bad_input_is_refused(linear_classifier):
    with pytest.raises(ValueError, match="σ\\(x\\) must be finite and > 0"):
        get_certifier("input-dependent", linear_classifier, sigma=0.25, offset=0.0).certify(torch.zeros(10))
    with pytest.raises(ValueError, match="violates its declared semi-elasticity"):
        get_certifier("input-dependent", linear_classifier, sigma_function=_Wobbly()).certify(
            torch.full((10,), 0.5)
        )
    with pytest.raises(ValueError, match="offset"):
        MeanAbsSigma(0.25, offset=-1.0)
    with pytest.raises(NotImplementedError, match="depends on the input"):
        noises.get("mean-scaled-gaussian", sigma=0.5).sample(2, (3,))


class _CoinFlip(nn.Module):
    def forward(self, x):
        first = x.flatten(1)[:, :1]
        return torch.cat([-first, first], dim=1)


def test_abstains_when_the_vote_is_split():
    cert = get_certifier("input-dependent", _CoinFlip(), sigma=1.0, offset=1.0).certify(
        torch.zeros(3), n=2000
    )
    assert cert.abstained and cert.radius["l2"] == 0.0


def test_input_dependent_certificates_are_sound_on_a_half_space():
    weight = torch.zeros(6, dtype=torch.float64)
    weight[0] = 1.0
    model = LinearBinaryClassifier(weight, -0.5)
    certifier = get_certifier("input-dependent", model, sigma=0.5, offset=1.0, seed=2)
    rng = np.random.default_rng(2)
    wrong = 0
    for x in torch.tensor(rng.uniform(0, 1, size=(100, 6))):
        cert = certifier.certify(x, n0=50, n=400, alpha=0.05)
        if cert.prediction is not None:
            # Along e₁ the smoothed classifier flips exactly at x₁ = 0.5 (σ(x) does not move the median of x₁ + σε₁).
            wrong += cert.prediction != int(x[0] > 0.5) or cert.radius["l2"] > abs(float(x[0]) - 0.5)
    assert wrong <= stats.binom.ppf(1 - 1e-4, 100, 0.05)
