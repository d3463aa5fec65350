"""The ‖z‖^{-k} families of Zhang et al. (2020), Eq. 10–13: exact samplers, normalised densities, σ ↔ scale.

The references are computed independently of the module: radial laws from scipy (gamma, chi, beta), the law
of ‖z‖∞ under the mixed family by scipy quadrature of ``t^{−k} g(t)``, densities by quadrature in 1 and 2
dimensions and by the radial / conditional decompositions with scipy's log densities in high dimension.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from manifoldcert import noises
from manifoldcert.noises.zhang import ZhangL1, ZhangL2, ZhangLinf, ZhangMixed, _max_norm_law, standard_gamma

FAMILIES = {cls.name: cls for cls in (ZhangL1, ZhangL2, ZhangLinf, ZhangMixed)}
P_MIN = 1e-3  # every statistical test below is seeded; this is the level it would fail at by chance


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(noise, n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return noise.sample(n, (dim,), generator=_generator(seed), dtype=torch.float64)


def _norm(z: torch.Tensor, norm: str) -> np.ndarray:
    order = {"l1": 1, "l2": 2, "linf": math.inf}[norm]
    return torch.linalg.vector_norm(z, ord=order, dim=1).numpy()


# ----------------------------------------------------------------------------------------------------------
# Independent reference for the mixed family: the law of t = ‖w‖∞ at scale 1 by scipy quadrature
# ----------------------------------------------------------------------------------------------------------


def _log_h(t: float, dim: int, k: float) -> float:
    """log of t^{−k} g(t), g the density of max_i |g_i| for g ~ N(0, I_d)."""
    return (
        -k * math.log(t)
        + math.log(dim)
        + (dim - 1) * math.log(special.erf(t / math.sqrt(2.0)))
        + math.log(2.0)
        + stats.norm.logpdf(t)
    )


@functools.cache
def _quadrature_law(dim: int, k: float, t_max: float = 12.0) -> _QuadratureLaw:
    return _QuadratureLaw(dim, k, t_max)


class _QuadratureLaw:
    """CDF, normaliser and moments of t by quadrature in v = √t (t^{−k} g(t) ~ t^{d−1−k} is singular at 0)."""

    def __init__(self, dim: int, k: float, t_max: float = 12.0, nodes: int = 301) -> None:
        self.dim, self.k = dim, k
        grid = np.linspace(1e-6, math.sqrt(t_max), 4000) ** 2
        self.shift = max(_log_h(t, dim, k) for t in grid)
        self.v = np.linspace(0.0, math.sqrt(t_max), nodes)
        pieces = [
            integrate.quad(self._integrand_v, a, b)[0] for a, b in zip(self.v[:-1], self.v[1:], strict=True)
        ]
        self.cdf_v = np.concatenate([[0.0], np.cumsum(pieces)])
        self.mass = self.cdf_v[-1]
        self.cdf_v /= self.mass

    def _integrand_v(self, v: float, power: float = 0.0) -> float:
        if v == 0.0:
            return 0.0
        t = v * v
        return 2.0 * v * t**power * math.exp(_log_h(t, self.dim, self.k) - self.shift)

    @property
    def log_normalizer(self) -> float:
        """log E[max_i |g_i|^{−k}]."""
        return self.shift + math.log(self.mass)

    def cdf(self, t: np.ndarray) -> np.ndarray:
        return np.interp(np.sqrt(t), self.v, self.cdf_v)

    def mean(self, function) -> float:
        def integrand(v: float) -> float:
            return 0.0 if v == 0.0 else function(v * v) * self._integrand_v(v)

        total = sum(
            integrate.quad(integrand, a, b)[0] for a, b in zip(self.v[:-1:20], self.v[20::20], strict=True)
        )
        return total / self.mass


def _truncated_variance(t: float) -> float:
    """E[g² | |g| ≤ t] = 1 − 2tφ(t)/(2Φ(t) − 1), integrating x²φ(x) by parts; t²/3 at tiny t."""
    if t < 1e-3:
        return t * t / 3.0
    return 1.0 - 2.0 * t * stats.norm.pdf(t) / (2.0 * stats.norm.cdf(t) - 1.0)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape_param", [0.05, 0.5, 1.0, 3.7, 1000.0])
def test_standard_gamma_follows_the_gamma_law(shape_param):
    draws = standard_gamma(shape_param, 4000, generator=_generator(1), dtype=torch.float64)
    assert draws.shape == (4000,) and bool((draws >= 0).all())
    assert stats.kstest(draws.numpy(), stats.gamma(shape_param).cdf).pvalue > P_MIN


def test_standard_gamma_is_reproducible_and_rejects_bad_shapes():
    first = standard_gamma(2.5, 100, generator=_generator(3))
    assert torch.equal(first, standard_gamma(2.5, 100, generator=_generator(3)))
    assert not torch.equal(first, standard_gamma(2.5, 100, generator=_generator(4)))
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="shape parameter must be finite and > 0"):
            standard_gamma(bad, 10)


# ----------------------------------------------------------------------------------------------------------
# Radial families: the norm follows its radial law, the direction the cone measure
# ----------------------------------------------------------------------------------------------------------

RADIAL_CASES = [(1, 0.0), (1, 0.6), (5, 0.0), (5, 2.5), (5, 4.8), (784, 0.0), (784, 400.0), (784, 783.5)]


@pytest.mark.parametrize("name", ["zhang-l1", "zhang-l2", "zhang-linf"])
@pytest.mark.parametrize("dim, k", RADIAL_CASES)
def test_radial_norm_follows_its_law(name, dim, k):
    scale = 0.7
    noise = FAMILIES[name](scale=scale, k=k)
    radius = _norm(_sample(noise, 3000, dim, seed=dim), noise.norm)
    if name == "zhang-l1":
        law = stats.gamma(dim - k, scale=scale)  # R/b ~ Gamma(d − k)
    else:
        law = stats.chi(dim - k, scale=scale)  # R²/s² ~ χ²_{d−k}
    assert stats.kstest(radius, law.cdf).pvalue > P_MIN


def test_l1_direction_is_signed_dirichlet():
    dim = 5
    z = _sample(ZhangL1(scale=1.3, k=2.0), 8000, dim, seed=2)
    u = z / z.abs().sum(1, keepdim=True)
    # |u_i| of a flat Dirichlet is Beta(1, d − 1); the signs are fair coins independent of the magnitudes.
    assert stats.kstest(u[:, 0].abs().numpy(), stats.beta(1, dim - 1).cdf).pvalue > P_MIN
    positive = int((z > 0).sum())
    assert stats.binomtest(positive, z.numel()).pvalue > P_MIN


def test_l2_direction_is_uniform_on_the_sphere():
    dim = 5
    z = _sample(ZhangL2(scale=0.4, k=3.0), 8000, dim, seed=3)
    u = z / z.norm(dim=1, keepdim=True)
    assert stats.kstest(u[:, 0].square().numpy(), stats.beta(0.5, (dim - 1) / 2).cdf).pvalue > P_MIN
    assert stats.binomtest(int((z[:, 1] > 0).sum()), z.shape[0]).pvalue > P_MIN


def test_linf_direction_is_uniform_on_the_cube_surface():
    dim = 5
    n = 8000
    z = _sample(ZhangLinf(scale=0.4, k=1.5), n, dim, seed=4)
    u = z / z.abs().amax(1, keepdim=True)
    at_face = u.abs() == 1.0
    assert bool((at_face.sum(1) == 1).all())  # exactly one coordinate on the face
    face = at_face.float().argmax(1).numpy()
    assert stats.chisquare(np.bincount(face, minlength=dim)).pvalue > P_MIN
    others = u[~at_face].numpy()
    assert stats.kstest(others, stats.uniform(-1, 2).cdf).pvalue > P_MIN
    assert stats.binomtest(int((u[at_face] > 0).sum()), n).pvalue > P_MIN


# ----------------------------------------------------------------------------------------------------------
# Mixed family
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, k", [(5, 1.0), (5, 4.5), (50, 10.0), (50, 49.5)])
def test_mixed_max_norm_follows_the_quadrature_law(dim, k):
    scale = 0.8
    reference = _quadrature_law(dim, k)
    t = _sample(ZhangMixed(scale=scale, k=k), 4000, dim, seed=dim).abs().amax(1).numpy() / scale
    assert stats.kstest(t, reference.cdf).pvalue > P_MIN


def test_mixed_in_one_dimension_is_the_chi_law():
    # In d = 1 all norms coincide: |z|/s ~ χ_{1−k}.
    t = _sample(ZhangMixed(scale=1.0, k=0.7), 4000, 1, seed=5).abs().squeeze(1).numpy()
    assert stats.kstest(t, stats.chi(0.3).cdf).pvalue > P_MIN


def test_mixed_coordinates_below_the_max_are_truncated_gaussians():
    dim, scale = 5, 0.6
    z = _sample(ZhangMixed(scale=scale, k=2.0), 6000, dim, seed=6) / scale
    t = z.abs().amax(1, keepdim=True)
    below = z.abs() < t
    assert bool((below.sum(1) == dim - 1).all())
    # Given t, P(|w_i| ≤ x) = erf(x/√2)/erf(t/√2): its probability integral transform is uniform.
    pit = special.erf(z.abs().numpy() / math.sqrt(2.0)) / special.erf(t.numpy() / math.sqrt(2.0))
    assert stats.kstest(pit[below.numpy()], stats.uniform().cdf).pvalue > P_MIN
    assert stats.binomtest(int((z[below] > 0).sum()), int(below.sum())).pvalue > P_MIN


@pytest.mark.parametrize("dim, k", [(5, 2.0), (50, 10.0)])
def test_mixed_moments_match_quadrature(dim, k):
    reference = _quadrature_law(dim, k)
    mean_max = reference.mean(lambda t: t)
    mean_energy = reference.mean(lambda t: t * t + (dim - 1) * _truncated_variance(t))
    # The scaling identity E‖z‖² = s²(d − k), checked against the quadrature.
    assert mean_energy == pytest.approx(dim - k, rel=1e-6)
    law = _max_norm_law(dim, k)
    assert law.mean_square_norm == pytest.approx(dim - k, rel=1e-9)
    n = 20_000
    z = _sample(ZhangMixed(scale=1.0, k=k), n, dim, seed=7)
    max_norm, energy = z.abs().amax(1), z.square().sum(1)
    assert float(max_norm.mean()) == pytest.approx(mean_max, abs=4 * float(max_norm.std()) / math.sqrt(n))
    assert float(energy.mean()) == pytest.approx(mean_energy, abs=4 * float(energy.std()) / math.sqrt(n))


def test_mixed_moments_match_importance_sampling_from_the_gaussian():
    # Self-normalised importance sampling: N(0, I) draws weighted by ‖g‖∞^{−k}, independent of the module.
    dim, k = 5, 2.0
    g = np.random.default_rng(0).standard_normal((400_000, dim))
    weights = np.abs(g).max(1) ** -k
    weights /= weights.sum()
    expected_max = float(weights @ np.abs(g).max(1))
    expected_energy = float(weights @ np.square(g).sum(1))
    z = _sample(ZhangMixed(scale=1.0, k=k), 40_000, dim, seed=8)
    assert float(z.abs().amax(1).mean()) == pytest.approx(expected_max, rel=0.01)
    assert float(z.square().sum(1).mean()) == pytest.approx(expected_energy, rel=0.02)


@pytest.mark.parametrize("dim, k", [(1, 0.5), (5, 4.5), (50, 10.0), (784, 700.0)])
def test_mixed_normaliser_matches_quadrature(dim, k):
    law = _max_norm_law(dim, k)
    reference = _quadrature_law(dim, k, 8.0 if dim > 100 else 12.0)
    assert law.log_normalizer == pytest.approx(reference.log_normalizer, abs=1e-7)
    assert law.acceptance > 0.999


def test_mixed_sampler_runs_in_high_dimension():
    dim, k = 3072, 3000.0
    noise = ZhangMixed(0.25, k=k)
    z = _sample(noise, 400, dim, seed=9)
    assert bool(torch.isfinite(z).all())
    assert float(z.square().mean().sqrt()) == pytest.approx(0.25, rel=0.02)


# ----------------------------------------------------------------------------------------------------------
# Densities
# ----------------------------------------------------------------------------------------------------------


def _gauss_legendre(edges, nodes: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss–Legendre rules on each interval between consecutive ``edges``."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    points, weights = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        points.append(0.5 * (b - a) * x + 0.5 * (a + b))
        weights.append(0.5 * (b - a) * w)
    return np.concatenate(points), np.concatenate(weights)


R_EDGES = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 40.0])  # radial pieces for the quadratures


def _density(noise, points: np.ndarray) -> np.ndarray:
    return noise.log_prob(torch.as_tensor(points, dtype=torch.float64)).exp().numpy()


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("k", [0.0, 0.3, 0.5])
def test_density_integrates_to_one_in_one_dimension(name, k):
    noise = FAMILIES[name](scale=0.9, k=k)
    # x = ρ^m with m = 1/(1 − k) turns x^{−k} dx into m·dρ: no singularity left for the quadrature.
    m = 1.0 / (1.0 - k)
    rho, weight = _gauss_legendre(R_EDGES ** (1 / m))
    density = _density(noise, (rho**m)[:, None])
    assert float(np.sum(2.0 * density * m * rho ** (m - 1) * weight)) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("k", [0.0, 1.0, 1.5])
def test_density_integrates_to_one_in_two_dimensions(name, k):
    noise = FAMILIES[name](scale=0.9, k=k)
    # Polar coordinates with r = ρ^m, m = max(1, 1/(2 − k)), so that r^{1−k} dr = m ρ^{m(2−k)−1} dρ has no
    # singularity; the angle is split where the l1 and l∞ norms have kinks.
    m = max(1.0, 1.0 / (2.0 - k))
    rho, w_rho = _gauss_legendre(R_EDGES ** (1 / m))
    theta, w_theta = _gauss_legendre(np.linspace(0.0, 2.0 * math.pi, 9))
    r = rho[:, None] ** m
    points = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1).reshape(-1, 2)
    density = _density(noise, points).reshape(r.shape[0], -1)
    integrand = density * r * m * rho[:, None] ** (m - 1)
    assert float(w_rho @ integrand @ w_theta) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_samples_follow_the_density_in_two_dimensions(name):
    # Chi-square of the samples on a polar partition (l2 radius × angle of (|z1|, |z2|)) against the cell
    # probabilities integrated from log_prob: ties the sampler to the density.
    noise = FAMILIES[name](scale=1.0, k=1.0)
    r_edges, t_edges = [0.0, 0.4, 0.9, 1.5, 40.0], np.linspace(0.0, math.pi / 2, 5)
    probabilities = np.empty((4, 4))
    for i in range(4):
        r, w_r = _gauss_legendre(np.linspace(r_edges[i], r_edges[i + 1], 3))
        for j in range(4):
            theta, w_theta = _gauss_legendre([t_edges[j], t_edges[j + 1]])
            points = np.stack([r[:, None] * np.cos(theta), r[:, None] * np.sin(theta)], -1).reshape(-1, 2)
            density = _density(noise, points).reshape(r.shape[0], -1)
            probabilities[i, j] = 4.0 * float((w_r * r) @ density @ w_theta)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    n = 20_000
    z = _sample(noise, n, 2, seed=10).abs().numpy()
    radius, angle = np.hypot(z[:, 0], z[:, 1]), np.arctan2(z[:, 1], z[:, 0])
    counts, _, _ = np.histogram2d(radius, angle, bins=[r_edges, t_edges])
    assert counts.sum() == n
    expected = n * probabilities / probabilities.sum()
    assert stats.chisquare(counts.ravel(), expected.ravel()).pvalue > P_MIN


@pytest.mark.parametrize("name", ["zhang-l1", "zhang-l2", "zhang-linf"])
@pytest.mark.parametrize("dim, k", [(5, 2.5), (784, 400.0), (3072, 3071.5)])
def test_radial_log_density_is_radial_law_over_sphere_area(name, dim, k):
    # π(z) = p_R(‖z‖) / (d·V_p·‖z‖^{d−1}), V_p the volume of the unit l_p ball, p_R from scipy.
    scale = 0.3
    noise = FAMILIES[name](scale=scale, k=k)
    z = _sample(noise, 20, dim, seed=11)
    r = _norm(z, noise.norm)
    if name == "zhang-l1":
        log_radial, log_volume = (
            stats.gamma(dim - k, scale=scale).logpdf(r),
            dim * math.log(2) - special.gammaln(dim + 1),
        )
    elif name == "zhang-l2":
        log_radial = stats.chi(dim - k, scale=scale).logpdf(r)
        log_volume = 0.5 * dim * math.log(math.pi) - special.gammaln(0.5 * dim + 1)
    else:
        log_radial, log_volume = stats.chi(dim - k, scale=scale).logpdf(r), dim * math.log(2)
    expected = log_radial - math.log(dim) - log_volume - (dim - 1) * np.log(r)
    np.testing.assert_allclose(noise.log_prob(z).numpy(), expected, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("dim, k", [(5, 2.0), (50, 10.0)])
def test_mixed_log_density_is_max_law_times_truncated_gaussians(dim, k):
    # π(w) = p_t(t) · 1/(2d) · Π_{i ≠ argmax} φ(w_i)/erf(t/√2), with p_t from quadrature (scale 1).
    reference = _quadrature_law(dim, k)
    w = _sample(ZhangMixed(scale=1.0, k=k), 20, dim, seed=12)
    t = w.abs().amax(1).numpy()
    log_t_density = np.array([_log_h(x, dim, k) for x in t]) - reference.log_normalizer
    log_others = (stats.norm.logpdf(w.numpy()).sum(1) - stats.norm.logpdf(t)) - (dim - 1) * np.log(
        special.erf(t / math.sqrt(2.0))
    )
    expected = log_t_density - math.log(2 * dim) + log_others
    np.testing.assert_allclose(ZhangMixed(scale=1.0, k=k).log_prob(w).numpy(), expected, rtol=1e-9, atol=1e-6)


def test_k_zero_recovers_the_gaussian_and_the_laplace():
    z = torch.randn(50, 3, 4, generator=_generator(13), dtype=torch.float64)
    gaussian = noises.Gaussian(0.7).log_prob(z)
    torch.testing.assert_close(ZhangL2(scale=0.7).log_prob(z), gaussian)
    torch.testing.assert_close(ZhangMixed(scale=0.7).log_prob(z), gaussian)
    # exp(−‖z‖₁/b) = Π exp(−|z_i|/b): at k = 0 Eq. 10 is i.i.d. Laplace(b), normaliser (2b)^d.
    laplace = noises.Laplace(scale=0.4)
    torch.testing.assert_close(ZhangL1(scale=0.4).log_prob(z), laplace.log_prob(z))
    assert ZhangL1(scale=0.4).sigma_for(12) == pytest.approx(laplace.sigma)
    assert ZhangL2(scale=0.7).sigma_for(12) == ZhangMixed(scale=0.7).sigma_for(12) == pytest.approx(0.7)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_density_ratios_for_a_certifier_are_finite(name):
    dim = 784
    noise = FAMILIES[name](0.25, k=300.0)
    z = _sample(noise, 200, dim, seed=14)
    for delta in (
        torch.zeros(dim, dtype=torch.float64).index_fill_(0, torch.tensor([0]), 0.5),
        torch.full((dim,), 0.05, dtype=torch.float64),
    ):
        ratio = noise.log_prob(z - delta) - noise.log_prob(z)
        assert bool(torch.isfinite(ratio).all())
    assert noise.log_prob(torch.zeros(1, dim)).item() == math.inf  # the density's pole at the origin
    assert math.isfinite(FAMILIES[name](0.25, k=0.0).log_prob(torch.zeros(1, dim)).item())


# ----------------------------------------------------------------------------------------------------------
# σ and scale, configuration, generators and dtypes, argument checks
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("dim, k, n", [(5, 1.0, 40_000), (5, 4.5, 40_000), (784, 500.0, 2000)])
def test_sigma_for_matches_the_monte_carlo_rms(name, dim, k, n):
    noise = FAMILIES[name](scale=0.6, k=k)
    z = _sample(noise, n, dim, seed=15)
    assert float(z.square().mean().sqrt()) == pytest.approx(noise.sigma_for(dim), rel=0.02)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sigma_and_scale_resolve_per_dimension(name):
    cls = FAMILIES[name]
    noise = cls(0.5, k=2.0)
    assert noise.sigma == 0.5 and noise.k == 2.0 and noise.dim is None
    for dim in (3, 10, 784):
        assert noise.sigma_for(dim) == 0.5
        scale = noise.scale_for(dim)
        assert cls(scale=scale, k=2.0).sigma_for(dim) == pytest.approx(0.5, rel=1e-12)
        z = _sample(noise, 40_000 // dim + 200, dim, seed=dim)
        assert float(z.square().mean().sqrt()) == pytest.approx(0.5, rel=0.03)
    with pytest.raises(
        ValueError, match=r"depends on the number d of input coordinates: call scale_for\(d\)"
    ):
        _ = noise.scale
    by_scale = cls(scale=0.3, k=2.0)
    assert by_scale.scale == 0.3 and by_scale.scale_for(7) == 0.3
    with pytest.raises(ValueError, match=r"call sigma_for\(d\) or pass dim=d"):
        _ = by_scale.sigma
    pinned = cls(scale=0.3, k=2.0, dim=7)
    assert pinned.sigma == pytest.approx(by_scale.sigma_for(7))
    assert cls(0.5, k=2.0, dim=7).scale == pytest.approx(noise.scale_for(7))
    assert noise.norm == {"zhang-l1": "l1", "zhang-l2": "l2"}.get(name, "linf")


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize(
    "params", [{"sigma": 0.5, "k": 3.0}, {"scale": 0.2, "k": 0.0}, {"sigma": 1.0, "k": 9.5, "dim": 12}]
)
def test_config_rebuilds_the_noise(name, params):
    noise = FAMILIES[name](**params)
    config = noise.config()
    assert config == {"name": name, **{"k": 0.0, **params}}
    rebuilt = FAMILIES[config.pop("name")](**config)
    assert rebuilt.config() == noise.config()
    assert torch.equal(_sample(noise, 10, 12, seed=16), _sample(rebuilt, 10, 12, seed=16))
    assert repr(noise).startswith(type(noise).__name__ + "(")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sampling_is_reproducible_and_respects_shape_and_dtype(name):
    noise = FAMILIES[name](0.5, k=4.0)
    shape = (2, 3, 4)
    first = noise.sample(7, shape, generator=_generator(17))
    assert first.shape == (7, *shape) and first.dtype == torch.get_default_dtype()
    assert torch.equal(first, noise.sample(7, shape, generator=_generator(17)))
    assert not torch.equal(first, noise.sample(7, shape, generator=_generator(18)))
    for dtype in (torch.float32, torch.float64):
        z = noise.sample(64, shape, generator=_generator(19), dtype=dtype)
        assert z.dtype == dtype and bool(torch.isfinite(z).all())
        log_density = noise.log_prob(z)
        assert log_density.shape == (64,) and log_density.dtype == dtype
        torch.testing.assert_close(log_density.double(), noise.log_prob(z.double()), rtol=1e-4, atol=1e-3)
    # Drawing in float64 and rounding: the float32 draws are the float64 draws rounded.
    torch.testing.assert_close(
        noise.sample(5, shape, generator=_generator(20), dtype=torch.float32),
        noise.sample(5, shape, generator=_generator(20), dtype=torch.float64).float(),
    )
    noisy = noise.perturb(torch.zeros(3, *shape), generator=_generator(21))
    assert noisy.shape == (3, *shape)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_scale_tensor_gives_reparameterised_samples(name):
    scale = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    noise = FAMILIES[name](scale=scale, k=1.0)
    z = noise.sample(100, (6,), generator=_generator(22), dtype=torch.float64)
    (grad,) = torch.autograd.grad(z.square().sum(), scale)
    torch.testing.assert_close(grad, 2.0 * z.detach().square().sum() / scale.detach())
    noise_from_sigma = FAMILIES[name](sigma=scale, k=1.0)
    (grad_log,) = torch.autograd.grad(noise_from_sigma.log_prob(z.detach()).sum(), scale)
    assert bool(torch.isfinite(grad_log))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bad_parameters_raise_helpful_errors(name):
    cls = FAMILIES[name]
    with pytest.raises(ValueError, match="give exactly one of sigma .* and scale"):
        cls()
    with pytest.raises(ValueError, match="give exactly one of sigma .* and scale"):
        cls(0.5, scale=0.5)
    for bad_k in (-0.5, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="k must be a finite number >= 0"):
            cls(0.5, k=bad_k)
    for bad_scale in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match=r"scale \(\w\) must be (a )?finite"):
            cls(scale=bad_scale)
        with pytest.raises(ValueError, match="sigma must be (a )?finite"):
            cls(bad_scale)
    with pytest.raises(ValueError, match="one-element tensor"):
        cls(torch.tensor([0.5, 0.6]))
    noise = cls(0.5, k=5.0)
    for call in (
        lambda: noise.sample(3, (5,)),
        lambda: noise.sample(3, (2, 2)),
        lambda: noise.log_prob(torch.ones(3, 5)),
        lambda: noise.scale_for(5),
        lambda: noise.sigma_for(4),
    ):
        with pytest.raises(ValueError, match=r"non-normalisable in d = \d+ dimensions: it needs 0 <= k < d"):
            call()
    with pytest.raises(ValueError, match="non-normalisable in d = 5"):
        cls(0.5, k=5.0, dim=5)
    pinned = cls(0.5, k=1.0, dim=6)
    with pytest.raises(ValueError, match="built for dim = 6 coordinates but the input has 8"):
        pinned.sample(2, (2, 4))
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        cls(0.5, dim=0)
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        noise.sigma_for(0)
