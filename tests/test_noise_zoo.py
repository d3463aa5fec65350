"""The i.i.d. noise zoo: σ against sample variances, laws and log densities against scipy, normalisation,
configs, reproducibility, dtypes, gradients and bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from manifoldcert import noises
from manifoldcert.noises.zoo import (
    ZOO,
    ZOO_CLASSES,
    Cauchy,
    ExponentialMixture,
    GaussianLaplaceMixture,
    GeneralNormal,
    HyperbolicSecant,
    Logistic,
    Pareto,
)

SIGMA = 0.7


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Symmetrised:
    """The law of ``S·Y`` for a random sign ``S`` and ``Y ≥ 0`` with scipy law ``positive``."""

    def __init__(self, positive) -> None:
        self.positive = positive

    def cdf(self, x):
        return 0.5 + 0.5 * np.sign(x) * self.positive.cdf(np.abs(x))

    def logpdf(self, x):
        return math.log(0.5) + self.positive.logpdf(np.abs(x))

    def std(self):
        return math.sqrt(self.positive.moment(2))


class _Mixture:
    """``w·first + (1 − w)·second`` from scipy frozen laws."""

    def __init__(self, weight: float, first, second) -> None:
        self.weight, self.first, self.second = weight, first, second

    def cdf(self, x):
        return self.weight * self.first.cdf(x) + (1 - self.weight) * self.second.cdf(x)

    def logpdf(self, x):
        with np.errstate(divide="ignore"):
            return np.logaddexp(
                np.log(self.weight) + self.first.logpdf(x), np.log1p(-self.weight) + self.second.logpdf(x)
            )

    def std(self):
        return math.sqrt(self.weight * self.first.var() + (1 - self.weight) * self.second.var())


def _unit_gennorm(beta: float, sigma: float):
    """scipy's generalised normal of shape ``beta`` rescaled to standard deviation ``sigma``."""
    return stats.gennorm(beta, scale=sigma / stats.gennorm(beta).std())


# name -> (noise, independent scipy law); every one of these has a finite fourth moment.
FINITE = {
    "general-normal-1.5": (GeneralNormal(SIGMA, beta=1.5), _unit_gennorm(1.5, SIGMA)),
    "general-normal-0.5": (GeneralNormal(SIGMA, beta=0.5), _unit_gennorm(0.5, SIGMA)),
    "pareto-6": (Pareto(SIGMA, beta=6.0), None),  # filled in below from its alpha
    "gaussian-laplace-mixture": (
        GaussianLaplaceMixture(SIGMA, weight=0.3),
        # The Laplace component as scipy's gennorm(1): stats.laplace.logpdf underflows to -inf at |x| ~ 1e3.
        _Mixture(0.3, stats.norm(scale=SIGMA), stats.gennorm(1.0, scale=SIGMA / math.sqrt(2))),
    ),
    "exponential-mixture": (
        ExponentialMixture(SIGMA, beta1=0.8, beta2=3.0, weight=0.4),
        _Mixture(0.4, _unit_gennorm(0.8, SIGMA), _unit_gennorm(3.0, SIGMA)),
    ),
    "hyperbolic-secant": (HyperbolicSecant(SIGMA), stats.hypsecant(scale=2 * SIGMA / math.pi)),
    "logistic": (Logistic(SIGMA), stats.logistic(scale=SIGMA * math.sqrt(3) / math.pi)),
}
_pareto6 = FINITE["pareto-6"][0]
FINITE["pareto-6"] = (_pareto6, _Symmetrised(stats.lomax(6.0, scale=float(_pareto6.alpha))))

# Heavy tails: infinite fourth moment (Pareto β = 3), infinite variance (Pareto β = 1.5, Cauchy).
HEAVY = {
    "pareto-3": (Pareto(SIGMA), _Symmetrised(stats.lomax(3.0, scale=float(Pareto(SIGMA).alpha)))),
    "pareto-1.5": (Pareto(alpha=0.4, beta=1.5), _Symmetrised(stats.lomax(1.5, scale=0.4))),
    "cauchy": (Cauchy(scale=0.4), stats.cauchy(scale=0.4)),
}
ALL = {**FINITE, **HEAVY}


def test_zoo_lists_the_classes_by_registry_name():
    assert ZOO == (
        "general-normal",
        "pareto",
        "cauchy",
        "gaussian-laplace-mixture",
        "exponential-mixture",
        "hyperbolic-secant",
        "logistic",
    )
    assert ZOO == tuple(cls.name for cls in ZOO_CLASSES)
    assert all(issubclass(cls, noises.AbstractNoise) and cls.iid_coordinates for cls in ZOO_CLASSES)


@pytest.mark.parametrize("key", sorted(FINITE))
def test_sample_variance_is_sigma_squared(key):
    noise, law = FINITE[key]
    assert noise.sigma == pytest.approx(law.std(), rel=1e-10)  # the σ formula, against scipy's moments
    z = noise.sample(250_000, (4,), generator=_generator(1), dtype=torch.float64)
    assert z.shape == (250_000, 4)
    assert float(z.square().mean()) == pytest.approx(SIGMA**2, rel=0.02)


@pytest.mark.parametrize("key", sorted(ALL))
def test_samples_follow_the_law(key):
    noise, law = ALL[key]
    z = noise.sample(20_000, (5,), generator=_generator(2), dtype=torch.float64)
    assert stats.kstest(z.flatten().numpy(), law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("key", sorted(ALL))
def test_log_prob_matches_scipy(key):
    noise, law = ALL[key]
    z = noise.sample(50, (3,), generator=_generator(3), dtype=torch.float64)
    # Tails as far as scipy's own logpdf stays finite for every family (its hypsecant overflows cosh beyond).
    extremes = torch.tensor([[0.0, 1e-9, -2.5], [40.0, -100.0, 300.0]], dtype=torch.float64)
    z = torch.cat([z, extremes])
    expected = law.logpdf(z.numpy()).sum(1)
    np.testing.assert_allclose(noise.log_prob(z).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("key", sorted(ALL))
def test_density_integrates_to_one(key):
    noise, _ = ALL[key]

    def density(x: float) -> float:
        return float(torch.exp(noise.log_prob(torch.tensor([[x]], dtype=torch.float64))))

    total = sum(integrate.quad(density, a, b, limit=200)[0] for a, b in ((-math.inf, 0.0), (0.0, math.inf)))
    assert total == pytest.approx(1.0, abs=1e-7)


def test_log_prob_of_special_cases():
    z = torch.randn(20, 2, 3, generator=_generator(4), dtype=torch.float64)
    cases = [
        (GeneralNormal(SIGMA, beta=2.0), noises.Gaussian(SIGMA)),
        (GeneralNormal(alpha=0.3, beta=1.0), noises.Laplace(scale=0.3)),
        (GaussianLaplaceMixture(SIGMA, weight=1.0), noises.Gaussian(SIGMA)),
        (GaussianLaplaceMixture(SIGMA, weight=0.0), noises.Laplace(SIGMA)),
        (ExponentialMixture(SIGMA), GaussianLaplaceMixture(SIGMA)),
        (ExponentialMixture(SIGMA, beta1=2.0, beta2=2.0, weight=0.2), noises.Gaussian(SIGMA)),
    ]
    for noise, reference in cases:
        log_prob = noise.log_prob(z)
        assert log_prob.shape == (20,)
        np.testing.assert_allclose(log_prob.numpy(), reference.log_prob(z).numpy(), rtol=1e-10, atol=1e-10)


def test_family_parameters_follow_sigma():
    assert float(GeneralNormal(1.0).alpha) == pytest.approx(math.sqrt(2))
    assert GeneralNormal(alpha=1.0, beta=1.0).sigma == pytest.approx(math.sqrt(2))
    assert Pareto(alpha=1.0).sigma == pytest.approx(1.0)  # sqrt(2 / (2·1)) at β = 3
    assert float(Pareto(1.0, beta=4.0).alpha) == pytest.approx(math.sqrt(3))
    assert float(HyperbolicSecant(0.3).scale) == pytest.approx(0.3)
    assert float(Logistic(1.0).scale) == pytest.approx(math.sqrt(3) / math.pi)
    assert Logistic(scale=2.0).sigma == pytest.approx(2 * math.pi / math.sqrt(3))
    # A σ that was given is returned exactly, not through the family's scale.
    assert GeneralNormal(0.1, beta=0.7).sigma == 0.1


def test_cauchy_log_prob_far_in_the_tails():
    noise = Cauchy(scale=0.4)
    z = torch.tensor([[1e150], [-1e200]], dtype=torch.float64)
    expected = [stats.cauchy(scale=0.4).logpdf(1e150), -math.log(math.pi * 0.4) - 2 * math.log(1e200 / 0.4)]
    np.testing.assert_allclose(noise.log_prob(z).numpy(), expected, rtol=1e-12)


def test_cauchy_quartiles_are_plus_minus_scale():
    z = Cauchy(scale=0.4).sample(100_000, (2,), generator=_generator(5), dtype=torch.float64)
    quartiles = torch.quantile(z.flatten(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    np.testing.assert_allclose(quartiles.numpy(), [-0.4, 0.0, 0.4], atol=0.01)


@pytest.mark.parametrize(
    "noise, message",
    [(Cauchy(scale=1.0), "Cauchy noise has infinite variance"), (Pareto(alpha=1.0, beta=2.0), "beta = 2")],
)
def test_infinite_variance_has_no_sigma(noise, message):
    with pytest.raises(ValueError, match=message):
        noise.sigma  # noqa: B018
    assert "sigma" not in noise.config()
    assert "Tensor" not in repr(noise)


@pytest.mark.parametrize("key", sorted(ALL))
def test_config_rebuilds_the_same_noise(key):
    noise, _ = ALL[key]
    config = noise.config()
    by_name = {cls.name: cls for cls in ZOO_CLASSES}
    params = {k: v for k, v in config.items() if k != "name"}
    rebuilt = by_name[config["name"]](**params)
    assert rebuilt.config() == config
    first = noise.sample(30, (2, 3), generator=_generator(6))
    second = rebuilt.sample(30, (2, 3), generator=_generator(6))
    assert torch.equal(first, second)


@pytest.mark.parametrize("key", sorted(ALL))
def test_registry_round_trip_once_registered(key):
    noise, _ = ALL[key]
    if noise.name not in noises.available():
        pytest.skip(f"{noise.name} is not registered in manifoldcert.noises yet")
    rebuilt = noises.from_config(noise.config())
    assert type(rebuilt) is type(noise)
    assert torch.equal(
        rebuilt.sample(5, (3,), generator=_generator(7)), noise.sample(5, (3,), generator=_generator(7))
    )


@pytest.mark.parametrize("key", sorted(ALL))
def test_sampling_is_reproducible_and_dtype_aware(key):
    noise, _ = ALL[key]
    first = noise.sample(40, (2, 3), generator=_generator(8), dtype=torch.float64)
    second = noise.sample(40, (2, 3), generator=_generator(8), dtype=torch.float64)
    other = noise.sample(40, (2, 3), generator=_generator(9), dtype=torch.float64)
    single = noise.sample(40, (2, 3), generator=_generator(8), dtype=torch.float32)
    default = noise.sample(40, (2, 3), generator=_generator(8))
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert first.dtype == torch.float64 and single.dtype == torch.float32
    assert default.dtype == torch.get_default_dtype() and default.shape == (40, 2, 3)
    np.testing.assert_allclose(single.numpy(), first.float().numpy(), rtol=1e-6)
    assert bool(torch.isfinite(single).all())
    assert noise.log_prob(single).dtype == torch.float32


@pytest.mark.parametrize(
    "build",
    [
        lambda s: GeneralNormal(s, beta=1.5),
        lambda s: GeneralNormal(alpha=s, beta=0.7),
        lambda s: Pareto(s),
        lambda s: Cauchy(scale=s),
        lambda s: GaussianLaplaceMixture(s),
        lambda s: ExponentialMixture(s, beta1=0.5),
        lambda s: HyperbolicSecant(s),
        lambda s: Logistic(scale=s),
    ],
)
def test_a_scale_tensor_gives_reparameterised_samples(build):
    scale = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    noise = build(scale)
    z = noise.sample(100, (3,), generator=_generator(10), dtype=torch.float64)
    (grad,) = torch.autograd.grad(z.sum(), scale)
    assert float(grad) == pytest.approx(float((z.detach() / scale.detach()).sum()), rel=1e-12)
    # d/ds log p(s·ε) at fixed z: the log density is differentiable in the scale.
    (grad,) = torch.autograd.grad(noise.log_prob(z.detach()).sum(), scale)
    assert bool(torch.isfinite(grad))
    assert not any(isinstance(value, torch.Tensor) for value in noise.config().values())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GeneralNormal(1.0, beta=0.0), "beta must be a finite number > 0"),
        (lambda: GeneralNormal(1.0, beta=-1.0), "beta must be a finite number > 0"),
        (lambda: GeneralNormal(1.0, beta=float("nan")), "beta must be a finite number > 0"),
        (lambda: GeneralNormal(1.0, alpha=1.0), "exactly one of sigma and alpha"),
        (lambda: GeneralNormal(), "exactly one of sigma and alpha"),
        (lambda: GeneralNormal(-1.0), "sigma"),
        (lambda: Pareto(1.0, beta=2.0), "infinite variance .*beta > 2"),
        (lambda: Pareto(1.0, beta=1.0), "infinite variance .*beta > 2"),
        (lambda: Pareto(alpha=1.0, beta=0.0), "beta must be a finite number > 0"),
        (lambda: Pareto(1.0, alpha=1.0), "exactly one of sigma and alpha"),
        (lambda: Pareto(), "exactly one of sigma and alpha"),
        (lambda: Cauchy(1.0), "infinite variance.*scale="),
        (lambda: Cauchy(), "scale="),
        (lambda: Cauchy(scale=0.0), "scale"),
        (lambda: HyperbolicSecant(1.0, scale=1.0), "exactly one of sigma and scale"),
        (lambda: Logistic(), "exactly one of sigma and scale"),
        (lambda: GaussianLaplaceMixture(1.0, weight=-0.1), r"weight .* \[0, 1\]"),
        (lambda: GaussianLaplaceMixture(1.0, weight=1.5), r"weight .* \[0, 1\]"),
        (lambda: GaussianLaplaceMixture(1.0, weight=True), r"weight .* \[0, 1\]"),
        (lambda: GaussianLaplaceMixture(), "parameterised by sigma"),
        (lambda: ExponentialMixture(1.0, weight=2.0), r"weight .* \[0, 1\]"),
        (lambda: ExponentialMixture(1.0, beta1=0.0), "beta1 must be a finite number > 0"),
        (lambda: ExponentialMixture(1.0, beta2=-2.0), "beta2 must be a finite number > 0"),
        (lambda: ExponentialMixture(0.0), "sigma"),
    ],
)
def test_bad_parameters_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()
