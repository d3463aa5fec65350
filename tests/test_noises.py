"""Noise samplers: σ = sqrt(E‖z‖²/d), laws against scipy, log densities, registry and bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from manifoldcert import noises

SHAPE = (2, 8, 8)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _all_noises(sigma: float = 0.5):
    d = math.prod(SHAPE)
    scales = torch.linspace(0.2, 0.8, d, dtype=torch.float64)
    a = torch.randn(d, d, generator=_generator(5), dtype=torch.float64) / math.sqrt(d)
    return {
        "gaussian": noises.get("gaussian", sigma=sigma),
        "laplace": noises.get("laplace", sigma=sigma),
        "uniform": noises.get("uniform", sigma=sigma),
        "diagonal-gaussian": noises.get("diagonal-gaussian", scales=scales),
        "full-gaussian": noises.get(
            "full-gaussian", covariance=a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)
        ),
    }


def test_registry_lists_every_family():
    assert noises.available() == [
        "cauchy",
        "derandomized-splitting",
        "diagonal-gaussian",
        "exp-inf",
        "exp2",
        "exponential-mixture",
        "full-gaussian",
        "gaussian",
        "gaussian-laplace-mixture",
        "general-normal",
        "grid-gaussian",
        "hyperbolic-secant",
        "laplace",
        "logistic",
        "mean-scaled-gaussian",
        "norm-scaled-laplace",
        "pareto",
        "pow-inf",
        "random-radius-gaussian",
        "splitting",
        "uniform",
        "uniform-ball",
        "zhang-l1",
        "zhang-l2",
        "zhang-linf",
        "zhang-mixed",
    ]
    with pytest.raises(
        ValueError, match="valid noises are: cauchy, derandomized-splitting, diagonal-gaussian"
    ):
        noises.get("student-t", sigma=1.0)


@pytest.mark.parametrize("name", ["gaussian", "laplace", "uniform", "diagonal-gaussian", "full-gaussian"])
def test_sigma_is_rms_per_coordinate(name):
    noise = _all_noises()[name]
    z = noise.sample(20_000, SHAPE, generator=_generator(), dtype=torch.float64)
    assert z.shape == (20_000, *SHAPE)
    measured = float(z.square().mean().sqrt())
    assert measured == pytest.approx(noise.sigma, rel=0.01)


def test_family_parameters_follow_sigma():
    assert noises.Laplace(1.0).scale == pytest.approx(1 / math.sqrt(2))
    assert noises.Uniform(1.0).half_width == pytest.approx(math.sqrt(3))
    assert noises.Laplace(scale=2.0).sigma == pytest.approx(2 * math.sqrt(2))
    assert noises.Uniform(half_width=3.0).sigma == pytest.approx(3 / math.sqrt(3))


@pytest.mark.parametrize(
    "name, law",
    [
        ("gaussian", stats.norm(scale=0.5)),
        ("laplace", stats.laplace(scale=0.5 / math.sqrt(2))),
        ("uniform", stats.uniform(loc=-0.5 * math.sqrt(3), scale=math.sqrt(3))),
    ],
)
def test_iid_coordinates_follow_their_law(name, law):
    z = _all_noises()[name].sample(40, SHAPE, generator=_generator(3), dtype=torch.float64)
    assert stats.kstest(z.flatten().numpy(), law.cdf).pvalue > 1e-3
    expected = law.logpdf(z.flatten(1).numpy()).sum(1)
    np.testing.assert_allclose(_all_noises()[name].log_prob(z).numpy(), expected, rtol=1e-10)


def test_uniform_log_prob_is_minus_infinity_outside_the_cube():
    noise = noises.Uniform(half_width=1.0)
    z = torch.tensor([[0.5, -0.9], [1.5, 0.0]], dtype=torch.float64)
    log_prob = noise.log_prob(z)
    assert log_prob[0] == pytest.approx(-2 * math.log(2.0))
    assert log_prob[1] == -math.inf


def test_diagonal_and_full_log_prob_match_scipy():
    generator = _generator(4)
    d = 6
    scales = torch.rand(d, generator=generator, dtype=torch.float64) + 0.3
    z = torch.randn(5, d, generator=generator, dtype=torch.float64)
    expected = stats.norm(scale=scales.numpy()).logpdf(z.numpy()).sum(1)
    np.testing.assert_allclose(noises.DiagonalGaussian(scales).log_prob(z).numpy(), expected, rtol=1e-10)

    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    covariance = a @ a.T + torch.eye(d, dtype=torch.float64)
    expected = stats.multivariate_normal(cov=covariance.numpy()).logpdf(z.numpy())
    by_covariance = noises.FullCovarianceGaussian(covariance).log_prob(z)
    by_factor = noises.FullCovarianceGaussian(factor=torch.linalg.cholesky(covariance)).log_prob(z)
    np.testing.assert_allclose(by_covariance.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(by_factor.numpy(), expected, rtol=1e-10)


def test_full_covariance_samples_have_that_covariance():
    d = 4
    a = torch.randn(d, d, generator=_generator(6), dtype=torch.float64)
    covariance = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
    z = noises.FullCovarianceGaussian(covariance).sample(200_000, (d,), generator=_generator(7))
    empirical = z.T @ z / z.shape[0]
    np.testing.assert_allclose(
        empirical.numpy(), covariance.numpy(), atol=0.05 * float(covariance.abs().max())
    )


def test_sampling_is_reproducible_with_a_generator():
    noise = noises.Laplace(0.3)
    first = noise.sample(10, (5,), generator=_generator(9))
    second = noise.sample(10, (5,), generator=_generator(9))
    third = noise.sample(10, (5,), generator=_generator(10))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("name", ["gaussian", "laplace", "uniform"])
def test_perturb_adds_one_independent_draw_per_row(name):
    noise = _all_noises(0.1)[name]
    inputs = torch.rand(64, *SHAPE, dtype=torch.float32)
    noisy = noise.perturb(inputs, generator=_generator(11))
    assert noisy.shape == inputs.shape and noisy.dtype == torch.float32
    differences = (noisy - inputs).flatten(1)
    assert not torch.allclose(differences[0], differences[1])
    assert float(differences.square().mean().sqrt()) == pytest.approx(0.1, rel=0.05)


def test_from_config_round_trip():
    for noise in _all_noises().values():
        rebuilt = noises.from_config(noise.config())
        assert type(rebuilt) is type(noise)
        assert rebuilt.sigma == pytest.approx(noise.sigma)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: noises.Gaussian(0.0), "sigma"),
        (lambda: noises.Gaussian(-1.0), "sigma"),
        (lambda: noises.Laplace(float("nan")), "sigma"),
        (lambda: noises.Uniform(float("inf")), "sigma"),
        (lambda: noises.Laplace(0.5, scale=0.3), "exactly one"),
        (lambda: noises.Uniform(), "exactly one"),
        (lambda: noises.DiagonalGaussian(torch.tensor([0.5, 0.0])), "scales"),
        (lambda: noises.FullCovarianceGaussian(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
        (lambda: noises.FullCovarianceGaussian(torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (lambda: noises.FullCovarianceGaussian(factor=torch.zeros(3, 3)), "invertible"),
    ],
)
def test_bad_parameters_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_dimension_mismatch_is_refused():
    with pytest.raises(ValueError, match="coordinates"):
        noises.DiagonalGaussian(torch.ones(5)).sample(2, (4,))
    with pytest.raises(ValueError, match="coordinates"):
        noises.FullCovarianceGaussian(torch.eye(3)).sample(2, (4,))
