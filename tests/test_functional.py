"""The functional-optimisation bound (Zhang et al. 2020): closed forms it must recover, its Monte Carlo margin,
the worst-case shifts against the noises' own densities, and the certifier's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm as standard_normal

from manifoldcert import get_certifier, noises
from manifoldcert.certifiers.functional import Functional
from manifoldcert.certifiers.functional_bound import (
    SHIFTS,
    dkw_margin,
    dual_lower_bound,
    dual_threshold,
    worst_case_shift,
)

PROBABILITIES = (0.6, 0.8, 0.9, 0.99)


def _teng_radius(b: float, p: float) -> float:
    return -b * math.log(2.0 * (1.0 - p))


def _closed_form(noise, p: float) -> float:
    """Cohen's radius σΦ⁻¹(p) (Eq. 8) or Teng's −b·log(2(1 − p)) (Eq. 7)."""
    if noise.name in ("gaussian", "zhang-l2"):
        return noise.sigma * float(standard_normal.ppf(p))
    return _teng_radius(noise.sigma / math.sqrt(2.0), p)


@pytest.fixture(scope="module")
def k0_certifiers() -> dict:
    """k = 0 members of both families (Gaussian, Laplace and their zhang-* spellings) at d = 5 and d = 784."""
    built = {}
    for noise in (
        noises.Gaussian(0.5),
        noises.Laplace(0.5),
        noises.get("zhang-l2", scale=0.5, k=0.0),
        noises.get("zhang-l1", scale=0.5 / math.sqrt(2.0), k=0.0),
    ):
        for dim in (5, 784) if noise.name in ("gaussian", "laplace") else (5,):
            built[noise.name, dim] = Functional(None, noise=noise, mc_samples=200_000, input_shape=(dim,))
    return built


@pytest.mark.parametrize(
    ("name", "dim"),
    [("gaussian", 5), ("gaussian", 784), ("laplace", 5), ("laplace", 784), ("zhang-l2", 5), ("zhang-l1", 5)],
)
def test_k0_bound_recovers_cohen_and_teng(k0_certifiers, name, dim):
    certifier = k0_certifiers[name, dim]
    reference_noise = noises.Gaussian(0.5) if name in ("gaussian", "zhang-l2") else noises.Laplace(0.5)
    margin = certifier.table(dim).margin(certifier.mc_alpha)
    for p in PROBABILITIES:
        exact = _closed_form(reference_noise, p)
        estimate = certifier.radius_for(p, estimate=True)
        assert estimate == pytest.approx(exact, rel=0.02), (p, estimate, exact)
        guaranteed = certifier.radius_for(p)
        # The guaranteed radius never exceeds the exact one and costs no more than the DKW margin on p.
        assert guaranteed <= exact
        assert guaranteed == pytest.approx(_closed_form(reference_noise, p - margin), rel=0.02)


def test_dual_threshold_is_the_exact_minimum_over_lambda():
    generator = np.random.default_rng(3)
    log_w = generator.normal(-0.3, 0.8, size=4000)
    threshold, lam = dual_threshold(torch.from_numpy(log_w), subsample=4000)
    w = np.exp(log_w)
    grid = np.exp(np.linspace(-4, 4, 40001))
    brute = ((0.5 + np.maximum(grid[:, None] - w[None, :], 0).mean(1)) / grid).min()
    assert threshold == pytest.approx(brute, abs=1e-6)
    # A sub-sample locates λ; the value is evaluated on all samples, so it stays an upper bound of the minimum.
    coarse, _ = dual_threshold(torch.from_numpy(log_w), subsample=100)
    assert brute - 1e-9 <= coarse <= brute + 0.01


def test_gaussian_threshold_is_neyman_pearson():
    """For N(0, σ²I) and ‖δ‖₂ = r, certification needs p > Φ(r/σ) exactly (Eq. 8 solved for p)."""
    certifier = Functional(None, noise=noises.Gaussian(1.0), mc_samples=400_000, input_shape=(3,))
    table = certifier.table(3)
    for index in (20_000, 40_000, 45_000):
        radius = table.grid[index]
        assert table.threshold(index) == pytest.approx(standard_normal.cdf(radius), abs=3e-3)


def test_dkw_margin_covers_the_discrepancy_uniformly_in_lambda():
    """Simulated coverage of D(λ) ≤ D̂(λ) + λε over all λ, with D in closed form for a Gaussian shift."""
    shift, n, alpha, repeats = 1.0, 400, 0.1, 3000
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((repeats, n))
    w = np.exp(shift * z1 - shift**2 / 2)  # π_δ/π₀ along the shift, δ = e₁, σ = 1
    lams = np.exp(np.linspace(-3, 3, 121))
    c = (np.log(lams) + shift**2 / 2) / shift
    exact = lams * standard_normal.cdf(c) - standard_normal.cdf(c - shift)  # E(λ − w)₊
    empirical = np.maximum(lams[None, :, None] - w[:, None, :], 0).mean(2)
    epsilon = dkw_margin(n, alpha)
    failures = (exact[None, :] > empirical + lams[None, :] * epsilon).any(1).mean()
    assert failures <= alpha
    # Without the margin the bound fails about half the time: the check above can fail.
    assert (exact[None, :] > empirical).any(1).mean() > 0.4


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_shift_log_ratio_matches_the_noise_density(name):
    params = {"sigma": 0.7} if name in ("gaussian", "laplace") else {"scale": 0.7, "k": 2.0}
    noise = noises.get(name, **params)
    dim = 6
    shift = worst_case_shift(noise, dim)
    generator = torch.Generator().manual_seed(0)
    z = noise.sample(500, (dim,), generator=generator, dtype=torch.float64)
    for radius in (0.01, 0.3, 2.0):
        direct = noise.log_prob(z - shift.delta(radius)) - noise.log_prob(z)
        from_statistics = shift.log_ratio(shift.statistics(z), radius)
        torch.testing.assert_close(from_statistics, direct, rtol=1e-9, atol=1e-9)


def _discrepancy(noise, delta: torch.Tensor, lam: float, z: torch.Tensor) -> float:
    ratio = (noise.log_prob(z - delta) - noise.log_prob(z)).exp()
    return float((lam - ratio).clamp_min(0).mean())


@pytest.mark.parametrize("name", ["zhang-l2", "zhang-l1", "zhang-mixed", "zhang-linf"])
def test_worst_case_shift_dominates_other_shifts_on_the_sphere(name):
    """Theorems 2 and 3 (and the vertex for Eq. 12) numerically: D(λ, δ*) ≥ D(λ, δ) for δ on the ball's sphere."""
    dim, radius = 3, 0.6
    noise = noises.get(name, scale=1.0, k=1.0)
    shift = worst_case_shift(noise, dim)
    z = noise.sample(200_000, (dim,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    directions = torch.randn(40, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    order = {"l1": 1, "l2": 2, "linf": math.inf}[shift.norm]
    deltas = radius * directions / torch.linalg.vector_norm(directions, ord=order, dim=1, keepdim=True)
    for lam in (0.5, 1.0, 2.0):
        worst = _discrepancy(noise, shift.delta(radius), lam, z)
        others = max(_discrepancy(noise, delta, lam, z) for delta in deltas)
        assert worst >= others - 3e-3  # common random numbers: only Monte Carlo noise separates near-ties


def test_proposition_4_l2_family_against_linf():
    """The l2 family's bound for the l∞ ball of radius r equals the l2 bound at √d·r (Proposition 4)."""
    dim, radius = 8, 0.2
    noise = noises.get("zhang-l2", scale=1.0, k=3.0)
    shift = worst_case_shift(noise, dim)
    z = noise.sample(400_000, (dim,), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    vertex = torch.full((dim,), radius, dtype=torch.float64)
    at_vertex = dual_threshold(noise.log_prob(z - vertex) - noise.log_prob(z))[0]
    on_axis = dual_threshold(shift.log_ratio(shift.statistics(z), math.sqrt(dim) * radius))[0]
    assert at_vertex == pytest.approx(on_axis, abs=3e-3)
    certifier = Functional(None, noise=noise, mc_samples=100_000, input_shape=(dim,))
    assert certifier.radius_for(0.9, norm="linf") == pytest.approx(certifier.radius_for(0.9) / math.sqrt(dim))


def test_certify_end_to_end_on_a_linear_classifier(linear_classifier):
    """Certified radii never exceed the true distance to the hyperplane, and p_A uses α − mc_alpha."""
    certifier = Functional(
        linear_classifier, input_range=None, noise=noises.Gaussian(0.5), mc_samples=100_000, seed=3
    )
    generator = torch.Generator().manual_seed(5)
    distances, radii = [], []
    for _ in range(10):
        x = torch.randn(10, generator=generator, dtype=torch.float64) * 0.3
        cert = certifier.certify(x, n0=100, n=2000, alpha=0.001)
        margin = float(linear_classifier.margin(x[None]))
        if cert.prediction is not None:
            assert cert.prediction == int(margin > 0)
            distances.append(abs(margin) / float(linear_classifier.weight.norm()))
            radii.append(cert.radius["l2"])
        assert cert.guaranteed and cert.method == "functional" and cert.params["k"] == 0.0
    assert radii and all(r < d for r, d in zip(radii, distances, strict=True))


def test_zhang_linf_certificates_are_not_guaranteed():
    certifier = get_certifier("functional", None, noise="zhang-linf", scale=1.0, k=1.0, input_shape=(4,))
    assert certifier.native_norm == "linf" and not certifier.guaranteed
    mixed = get_certifier("functional", None, noise="zhang-mixed", scale=1.0, k=1.0, input_shape=(4,))
    assert mixed.native_norm == "linf" and mixed.guaranteed


def test_bad_input():
    with pytest.raises(ValueError, match="functional certifies the noises"):
        Functional(None, noise=noises.Uniform(0.5))
    certifier = Functional(None, noise=noises.Gaussian(0.5), mc_samples=1000)
    with pytest.raises(ValueError, match="input dimension"):
        certifier.radius_for(0.9)
    with pytest.raises(ValueError, match="p_A only"):
        certifier.radius_for(0.9, 0.05, dim=4)
    with pytest.raises(ValueError, match="probability"):
        certifier.radius_for(1.5, dim=4)
    with pytest.raises(ValueError, match="norm"):
        certifier.radius_for(0.9, dim=4, norm="l3")
    assert certifier.radius_for(0.5, dim=4) == 0.0 and certifier.radius_for(0.3, dim=4) == 0.0
    with pytest.raises(ValueError, match="only together with a noise name"):
        Functional(None, noise=noises.Gaussian(0.5), k=2.0)
    with pytest.raises(ValueError, match="k"):
        Functional(None, noise="zhang-l2", scale=1.0, k=10.0, input_shape=(4,))
    model = torch.nn.Linear(4, 2)
    certifier = Functional(model, noise=noises.Gaussian(0.5), mc_samples=1000, mc_alpha=0.01)
    with pytest.raises(ValueError, match="must exceed mc_alpha"):
        certifier.certify(torch.zeros(4), n0=10, n=10, alpha=0.005)
    with pytest.raises(ValueError, match="runner_up"):
        certifier.certify(torch.zeros(4), n0=10, n=10, runner_up=True)


def test_dual_lower_bound_recovers_equation_8():
    """On Gaussian samples the exact empirical dual equals Φ(Φ⁻¹(p) − r/σ) (Corollary 2, Eq. 8)."""
    noise = noises.Gaussian(1.0)
    shift = worst_case_shift(noise, 4)
    z = noise.sample(400_000, (4,), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    statistics = shift.statistics(z)
    for p, radius in ((0.9, 0.5), (0.99, 1.0), (0.7, 0.2)):
        bound, _ = dual_lower_bound(shift.log_ratio(statistics, radius), p)
        expected = standard_normal.cdf(standard_normal.ppf(p) - radius)
        assert bound == pytest.approx(expected, abs=3e-3)


def test_certify_a_noise_given_by_its_scale_without_input_shape():
    """σ of a ‖z‖^-k noise built from its scale depends on d: taken from the certified input."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    noise = noises.get("zhang-l2", scale=0.5, k=2.0)
    certifier = Functional(model, noise=noise, mc_samples=2000)
    cert = certifier.certify(torch.zeros(6), n0=10, n=50, alpha=0.01)
    assert cert.params["sigma"] == pytest.approx(noise.sigma_for(6))
