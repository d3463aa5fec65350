"""Closed-form certifiers: radii against their formulas, exact tightness and soundness on linear classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import manifoldcert
from manifoldcert.certifiers import available, get_certifier
from tests.conftest import LinearBinaryClassifier

P_GRID = [0.51, 0.6, 0.8, 0.9, 0.99, 0.999931]


def test_registry():
    names = ["ancer", "cohen", "ddrs", "dssn", "exp-inf", "exp2", "functional", "input-dependent", "laplace"]
    assert available() == [*names, "pow-inf", "rddrs", "ssn", "unicr", "uniform", "uniform-ball"]
    with pytest.raises(ValueError, match="valid methods are: " + ", ".join(names)):
        get_certifier("randomised", None)


@pytest.mark.parametrize("sigma", [0.12, 0.25, 1.0])
def test_cohen_radius_formula(sigma):
    cert = get_certifier("cohen", None, sigma=sigma)
    for p in P_GRID:
        expected = sigma * stats.norm.ppf(p)
        assert cert.radius_for(p) == pytest.approx(expected, rel=1e-12)
        assert cert.radius_for(p, norm="l1") == pytest.approx(expected, rel=1e-12)
        assert cert.radius_for(p, norm="linf", dim=784) == pytest.approx(expected / 28, rel=1e-12)
        p_b = (1 - p) / 3
        assert cert.radius_for(p, p_b) == pytest.approx(sigma / 2 * (stats.norm.ppf(p) - stats.norm.ppf(p_b)))


@pytest.mark.parametrize("sigma", [0.12, 0.5, 2.0])
def test_laplace_radius_formula(sigma):
    cert = get_certifier("laplace", None, sigma=sigma)
    b = sigma / math.sqrt(2)
    for p in P_GRID:
        assert cert.radius_for(p) == pytest.approx(-b * math.log(2 * (1 - p)), rel=1e-12)
        assert cert.radius_for(p, norm="l2", dim=64) == pytest.approx(
            -b * math.log(2 * (1 - p)) / 8, rel=1e-12
        )
    # With p_B given, Teng et al.'s maximum of the two bounds.
    p_a, p_b = 0.7, 0.05
    assert cert.radius_for(p_a, p_b) == pytest.approx(
        max(b / 2 * math.log(p_a / p_b), -b * math.log(1 - p_a + p_b))
    )


@pytest.mark.parametrize("sigma", [0.12, 0.5, 2.0])
def test_uniform_radius_formula(sigma):
    cert = get_certifier("uniform", None, sigma=sigma)
    half_width = sigma * math.sqrt(3)
    for p in P_GRID:
        assert cert.radius_for(p) == pytest.approx(2 * half_width * (p - 0.5), rel=1e-12)
        # l∞: the exact cube radius of Yang et al. (2020), Table 1 (tests/test_uniform_linf.py), not R₁/d.
        assert cert.radius_for(p, norm="linf", dim=10) == pytest.approx(
            2 * half_width * (1 - (1.5 - p) ** (1 / 10)), rel=1e-10
        )
    assert cert.radius_for(0.7, 0.2) == pytest.approx(half_width * 0.5)


def test_radius_for_edge_cases():
    cert = get_certifier("cohen", None, sigma=0.5)
    assert cert.radius_for(0.5) == 0.0
    assert cert.radius_for(0.3) == 0.0
    assert cert.radius_for(0.4, 0.4) == 0.0
    assert cert.radius_for(1.0) == math.inf
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="p_a"):
            cert.radius_for(bad)
    with pytest.raises(ValueError, match="exceed 1"):
        cert.radius_for(0.8, 0.5)
    with pytest.raises(ValueError, match="dim"):
        cert.radius_for(0.8, norm="linf")
    with pytest.raises(ValueError, match="valid norms"):
        cert.radius_for(0.8, norm="l3")


# -- exact tightness: axis-aligned linear classifiers, where each closed form is attained ------------------------
def test_closed_forms_are_tight_on_a_half_space():
    """f(x) = 1{x₁ + b > 0}: with the exact p_A each radius equals the distance to the boundary, |x₁ + b|."""
    t = 0.37  # distance of x to the boundary
    sigma = 0.5
    p_gauss = stats.norm.cdf(t / sigma)
    p_laplace = stats.laplace(scale=sigma / math.sqrt(2)).cdf(t)
    half_width = sigma * math.sqrt(3)
    p_uniform = stats.uniform(loc=-half_width, scale=2 * half_width).cdf(t)
    assert get_certifier("cohen", None, sigma=sigma).radius_for(p_gauss) == pytest.approx(t, rel=1e-10)
    assert get_certifier("laplace", None, sigma=sigma).radius_for(p_laplace) == pytest.approx(t, rel=1e-10)
    assert get_certifier("uniform", None, sigma=sigma).radius_for(p_uniform) == pytest.approx(t, rel=1e-10)


# -- soundness: the certified radius exceeds the true robust radius no more often than alpha allows ---------------
def _soundness_trials(method: str, exact_p, true_radius, d=10, trials=300, alpha=0.05, n=400, seed=0):
    """Certify random points of an axis-aligned half-space classifier; count wrong certificates.

    A certificate is wrong when it predicts the wrong class or its radius exceeds the true robust radius of the
    smoothed classifier. Also returns how often a plug-in (non-conservative) radius would be wrong.
    """
    weight = torch.zeros(d, dtype=torch.float64)
    weight[0] = 1.0
    model = LinearBinaryClassifier(weight, -0.5)
    certifier = get_certifier(method, model, sigma=0.5, batch_size=n, seed=seed)
    rng = np.random.default_rng(seed)
    wrong = plug_in_wrong = abstained = 0
    for x in torch.tensor(rng.uniform(0, 1, size=(trials, d))):
        margin = float(x[0]) - 0.5
        truth = int(margin > 0)
        cert = certifier.certify(x, n0=50, n=n, alpha=alpha)
        radius = cert.radius[certifier.native_norm]
        if cert.prediction is None:
            abstained += 1
        elif cert.prediction != truth or radius > true_radius(margin) + 1e-12:
            wrong += 1
        counts = certifier.estimator.class_counts(
            x, certifier.noise, n, generator=certifier.estimator.generator(seed)
        )
        p_hat = min(float(counts[truth]) / n, 1 - 1e-9)
        plug_in_wrong += p_hat > 0.5 and certifier.radius_for(p_hat) > true_radius(margin)
    return wrong, plug_in_wrong, abstained


@pytest.mark.parametrize("method", ["cohen", "laplace", "uniform"])
def test_certificates_are_sound_on_a_half_space(method):
    trials, alpha = 300, 0.05
    wrong, plug_in_wrong, abstained = _soundness_trials(
        method, None, lambda m: abs(m), trials=trials, alpha=alpha
    )
    # Binomial(trials, alpha) exceeds this with probability < 1e-4: a failure means the bound is unsound.
    assert wrong <= stats.binom.ppf(1 - 1e-4, trials, alpha)
    # The test has power: the plug-in estimate (no confidence bound) overstates the radius about half the time.
    assert plug_in_wrong > 3 * alpha * trials
    assert abstained < trials


def test_cohen_is_sound_on_a_random_hyperplane(linear_classifier):
    """Gaussian smoothing of f(x) = 1{wᵀx + b > 0}: p(x) = Φ(margin / (σ‖w‖)), true radius |margin| / ‖w‖."""
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.8, batch_size=500, seed=3)
    norm_w = float(linear_classifier.weight.norm())
    rng = np.random.default_rng(3)
    trials, alpha, wrong = 300, 0.05, 0
    points = torch.tensor(rng.normal(0, 0.3, size=(trials, 10)))
    for x in points:
        margin = float(linear_classifier.margin(x.unsqueeze(0)))
        cert = certifier.certify(x, n0=50, n=500, alpha=alpha)
        if cert.prediction is not None:
            wrong += cert.prediction != int(margin > 0) or cert.radius["l2"] > abs(margin) / norm_w
    assert wrong <= stats.binom.ppf(1 - 1e-4, trials, alpha)


def test_certify_reports_a_certificate(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25, batch_size=1000)
    x = torch.full((10,), 0.05, dtype=torch.float64) * torch.sign(linear_classifier.weight)
    cert = certifier.certify(x, n0=100, n=2000, alpha=0.001)
    assert cert.prediction == 1 and cert.method == "cohen" and cert.n == 2000 and cert.n0 == 100
    assert cert.guaranteed and not cert.exact and cert.region is None
    assert cert.radius["l2"] == pytest.approx(0.25 * stats.norm.ppf(cert.p_lower))
    assert cert.radius["linf"] == pytest.approx(cert.radius["l2"] / math.sqrt(10))
    assert cert.params == {"noise": "gaussian", "sigma": 0.25, "smoothing": "hard"}
    # Same seed, same certificate; another seed, other samples.
    again = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25, batch_size=1000).certify(
        x, n0=100, n=2000
    )
    other = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25, seed=1).certify(
        x, n0=100, n=2000
    )
    assert again.p_lower == cert.p_lower and other.p_lower != cert.p_lower


class _CoinFlip(nn.Module):
    """Class 1 iff the first coordinate is positive: p = 1/2 at the origin under symmetric noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, :1]
        return torch.cat([-first, first], dim=1)


@pytest.mark.parametrize("method", ["cohen", "laplace", "uniform"])
def test_abstains_when_the_vote_is_split(method):
    certifier = get_certifier(method, _CoinFlip(), sigma=1.0)
    cert = certifier.certify(torch.zeros(3), n0=100, n=2000)
    assert cert.abstained and cert.prediction is None
    assert cert.radius == {"l1": 0.0, "l2": 0.0, "linf": 0.0}


def test_predict_follows_the_binomial_test(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25)
    x = torch.sign(linear_classifier.weight) * 0.5
    assert certifier.predict(x, n=1000, alpha=0.001) == 1
    assert certifier.predict(-x, n=1000, alpha=0.001) == 0
    abstentions = sum(
        get_certifier("cohen", _CoinFlip(), input_range=None, sigma=1.0, seed=s).predict(
            torch.zeros(3), n=500, alpha=0.05
        )
        is None
        for s in range(40)
    )
    assert abstentions >= 30  # the test rejects p = 1/2 with probability 0.05 per call


def test_soft_smoothing_uses_hoeffding(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25, soft=True)
    x = torch.sign(linear_classifier.weight) * 0.5
    cert = certifier.certify(x, n0=100, n=4000, alpha=0.001)
    assert cert.prediction == 1 and cert.params["smoothing"] == "soft"
    mean = certifier.estimator.mean_softmax(
        x, certifier.noise, 4000, generator=certifier.estimator.generator(0)
    )
    assert cert.p_lower <= float(mean[1])


def test_runner_up_bounds(linear_classifier):
    certifier = get_certifier("laplace", linear_classifier, input_range=None, sigma=0.25)
    x = torch.sign(linear_classifier.weight) * 0.5
    cert = certifier.certify(x, n0=100, n=2000, runner_up=True)
    assert cert.prediction == 1 and cert.radius["l1"] > 0


def test_certify_refuses_bad_input(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, sigma=0.25, input_shape=(10,))
    x = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        certifier.certify(torch.full((10,), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        certifier.certify(torch.zeros(2, 10))
    with pytest.raises(TypeError, match="floating"):
        certifier.certify(torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        certifier.certify(np.zeros(10))
    for options, message in [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n"),
        ({"batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            certifier.certify(x, **options)
    with pytest.raises(ValueError, match="without a model"):
        get_certifier("cohen", None).certify(x)
    with pytest.raises(ValueError, match="sigma"):
        get_certifier("uniform", None, sigma=0.0)


def test_one_call_convenience(linear_classifier):
    x = torch.sign(linear_classifier.weight) * 0.5
    cert = manifoldcert.certify(linear_classifier, x, method="uniform", sigma=0.3, n=500, input_range=None)
    assert cert.method == "uniform" and cert.n == 500 and cert.prediction == 1


def test_implied_radii_follow_norm_inequalities():
    from manifoldcert.certificate import implied_radius

    assert implied_radius(1.0, certified_norm="l2", norm="l1", dim=None) == 1.0
    assert implied_radius(1.0, certified_norm="linf", norm="l2", dim=None) == 1.0
    assert implied_radius(1.0, certified_norm="l2", norm="linf", dim=16) == 0.25
    assert implied_radius(1.0, certified_norm="l1", norm="l2", dim=16) == 0.25
    assert implied_radius(1.0, certified_norm="l1", norm="linf", dim=16) == 1 / 16
    # Brute force: every vector inside the implied ball lies inside the certified one.
    rng = np.random.default_rng(0)
    d = 5
    for certified, norm in [("l2", "linf"), ("l1", "l2"), ("l1", "linf"), ("l2", "l1"), ("linf", "l2")]:
        order = {"l1": 1, "l2": 2, "linf": np.inf}
        r = implied_radius(1.0, certified_norm=certified, norm=norm, dim=d)
        deltas = rng.normal(size=(5000, d))
        deltas *= r * 0.999 / np.linalg.norm(deltas, ord=order[norm], axis=1, keepdims=True)
        assert np.linalg.norm(deltas, ord=order[certified], axis=1).max() < 1.0


@pytest.mark.parametrize("method", ["cohen", "laplace", "uniform"])
def test_certificates_are_sound_over_many_repetitions(method):
    """3,000 random points at α = 0.01 (measured: 20, 26 and 27 wrong certificates for cohen, laplace, uniform)."""
    trials, alpha = 3000, 0.01
    wrong, _, _ = _soundness_trials(
        method, None, lambda m: abs(m), trials=trials, alpha=alpha, n=1000, seed=7
    )
    assert wrong <= stats.binom.ppf(1 - 1e-4, trials, alpha)


@pytest.mark.gpu
def test_certify_on_cuda_keeps_everything_on_the_device(linear_classifier):
    model = linear_classifier.to("cuda")
    cert = get_certifier("cohen", model, sigma=0.5).certify(torch.sign(model.weight).cpu() * 0.3, n=2000)
    assert cert.prediction == 1
    certifier = get_certifier("laplace", model, sigma=0.5)
    counts = certifier.estimator.class_counts(torch.zeros(10), certifier.noise, 100)
    assert counts.device.type == "cpu" and int(counts.sum()) == 100


def test_soft_predict_uses_simultaneous_hoeffding_bounds(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25, soft=True)
    x = torch.sign(linear_classifier.weight) * 0.5
    assert certifier.predict(x, n=2000) == 1
    assert certifier.predict(-x, n=2000) == 0
    split = get_certifier("cohen", _CoinFlip(), input_range=None, sigma=1.0, soft=True)
    assert split.predict(torch.zeros(3), n=2000, alpha=0.05) is None


def test_unit_range_is_enforced_where_a_method_requires_it(linear_classifier):
    from manifoldcert.certifiers.cohen import Cohen

    class UnitRangeCohen(Cohen):
        requires_unit_range = True

    certifier = UnitRangeCohen(linear_classifier, sigma=0.25)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        certifier.certify(torch.full((10,), 1.5, dtype=torch.float64), n=10)
    assert certifier.certify(torch.full((10,), 0.5, dtype=torch.float64), n=10).n == 10
