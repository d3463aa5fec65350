"""Data-dependent certifiers (ddrs, ancer, rddrs) and memory-based certification.

Numbers are checked against independent computations: finite differences with common random numbers for the
reparameterised gradients, the exact decision boundary of a linear classifier, brute-force sampling and scipy
for the ellipsoid intersection test.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from manifoldcert.certificate import Ellipsoid
from manifoldcert.certifiers import get_certifier
from manifoldcert.certifiers.cohen import Cohen
from manifoldcert.certifiers.data_dependent import ANCER, DDRS, RDDRS
from manifoldcert.certifiers.memory import (
    CertificationMemory,
    ellipsoid_separation,
    ellipsoids_intersect,
    largest_disjoint_radius,
)
from manifoldcert.certifiers.smoothing_objectives import (
    DiagonalObjective,
    FullCovarianceObjective,
    IsotropicObjective,
)
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.geometry import METRICS, Covariance
from manifoldcert.noises import DiagonalGaussian, FullCovarianceGaussian, Gaussian
from manifoldcert.resources import CovarianceTooLargeError
from tests.conftest import LinearBinaryClassifier


# -- toy classifiers ---------------------------------------------------------------------------------------------
def _linear(dim: int, distance: float, *, seed: int = 1) -> tuple[LinearBinaryClassifier, torch.Tensor]:
    """A steep linear classifier (soft ≈ hard) and an input at l2 distance ``distance`` on its class-1 side."""
    weight = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    weight = 50 * weight / weight.norm()
    x = distance * weight / weight.norm()
    return LinearBinaryClassifier(weight, 0.0), x


class RotatedEllipse(nn.Module):
    """Class 1 inside ``(u·z/0.3)² + (v·z/1.5)² < 1`` with ``u, v = (1, ±1)/√2``: an ellipse at 45°."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        u, v = (z[:, 0] + z[:, 1]) / math.sqrt(2), (z[:, 0] - z[:, 1]) / math.sqrt(2)
        margin = 20 * (1 - (u / 0.3) ** 2 - (v / 1.5) ** 2)
        return torch.stack([-margin, margin], dim=1)


class NaNAfter(nn.Module):
    """A linear classifier whose logits become NaN from the ``calls``-th forward pass with gradients enabled."""

    def __init__(self, base: nn.Module, calls: int) -> None:
        super().__init__()
        self.base, self.calls, self.seen = base, calls, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.base(z)
        if torch.is_grad_enabled():
            self.seen += 1
            if self.seen >= self.calls:
                return logits * math.nan
        return logits


def _mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _generator(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _soft_probability(estimator: MonteCarloEstimator, x, noise, top: int, n: int, seed: int = 7) -> float:
    return float(estimator.mean_softmax(x, noise, n, generator=_generator(seed))[top])


# -- gradients against finite differences (common random numbers) ------------------------------------------------
def test_probability_gradients_match_finite_differences():
    model = _mlp()
    estimator = MonteCarloEstimator(model, batch_size=64)  # several batches: gradients accumulate across them
    x = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    n, h, top = 300, 1e-5, 0
    kwargs = {"n_samples": n, "batch_size": 64}

    # σ itself (the point on the positive reals).
    sigma = torch.tensor(0.4, dtype=torch.float64)
    objective = IsotropicObjective(estimator, x, top, **kwargs)
    p, grad = objective.probability_and_gradient(sigma, seed=7)
    assert p == pytest.approx(_soft_probability(estimator, x, Gaussian(0.4), top, n), abs=1e-12)
    plus, minus = (_soft_probability(estimator, x, Gaussian(0.4 + s), top, n) for s in (h, -h))
    assert float(grad) == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-9)

    # θ of a diagonal Gaussian, along a random direction.
    theta = torch.tensor([0.3, 0.5, 0.2, 0.4], dtype=torch.float64)
    direction = torch.randn(4, generator=_generator(1), dtype=torch.float64)
    objective = DiagonalObjective(estimator, x, top, kappa=2.0, **kwargs)
    _, grad = objective.probability_and_gradient(theta, seed=7)
    plus, minus = (
        _soft_probability(estimator, x, DiagonalGaussian(theta + s * direction), top, n) for s in (h, -h)
    )
    assert float(grad @ direction) == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-9)

    # Σ, at σ²I (repeated eigenvalues) and at a generic point, along a random symmetric direction.
    noise_matrix = torch.randn(4, 4, generator=_generator(2), dtype=torch.float64)
    sym_direction = (noise_matrix + noise_matrix.mT) / 2
    generic = 0.1 * torch.eye(4, dtype=torch.float64) + 0.02 * noise_matrix @ noise_matrix.mT
    for covariance in (0.16 * torch.eye(4, dtype=torch.float64), generic):
        objective = FullCovarianceObjective(estimator, x, top, kappa=1e-6, **kwargs)
        _, grad = objective.probability_and_gradient(covariance, seed=7)
        assert torch.isfinite(grad).all() and torch.allclose(grad, grad.mT)
        plus, minus = (
            _soft_probability(estimator, x, FullCovarianceGaussian(covariance + s * sym_direction), top, n)
            for s in (h, -h)
        )
        assert float((grad * sym_direction).sum()) == pytest.approx(
            (plus - minus) / (2 * h), rel=1e-5, abs=1e-9
        )

    # The covariance factor A itself (what the estimator differentiates), along a random direction.
    factor = torch.linalg.cholesky(generic)
    leaf = factor.clone().requires_grad_(True)
    one_hot = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    _, (grad_a,) = estimator.mean_softmax_and_gradient(
        x, FullCovarianceGaussian(factor=leaf), n, [leaf], weights=one_hot, generator=_generator()
    )
    plus, minus = (
        _soft_probability(estimator, x, FullCovarianceGaussian(factor=factor + s * noise_matrix), top, n)
        for s in (h, -h)
    )
    assert float((grad_a * noise_matrix).sum()) == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-9)


def test_objective_gradients_match_finite_differences():
    """∂J for DDRS (in σ), ANCER (in θ) and RDDRS (in Σ, generic point) against finite differences of J itself,
    all on one seed: the value and the gradient of one seed see the same samples (common random numbers)."""
    model = _mlp()
    estimator = MonteCarloEstimator(model)
    x = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    h = 1e-5
    cases = [
        (IsotropicObjective, {}, torch.tensor(0.4, dtype=torch.float64), torch.tensor(1.0)),
        (
            DiagonalObjective,
            {"kappa": 0.5},
            torch.tensor([0.3, 0.5, 0.2, 0.4]),
            torch.tensor([1.0, -0.5, 0.3, 2.0]),
        ),
        (
            FullCovarianceObjective,
            {"kappa": 0.5},
            torch.diag(torch.tensor([0.1, 0.15, 0.2, 0.3], dtype=torch.float64)) + 0.01,
            torch.eye(4, dtype=torch.float64) + 0.3,
        ),
    ]
    for cls, options, point, direction in cases:
        point, direction = point.double(), direction.double()
        objective = cls(estimator, x, 0, n_samples=300, **options)
        value, grad = objective.value_and_gradient(point, seed=3)
        assert objective.value(point, seed=3) == pytest.approx(value, rel=1e-12)
        assert objective.value(point, seed=4) != pytest.approx(value, rel=1e-9)  # another seed, other samples
        plus = objective.value(point + h * direction, seed=3)
        minus = objective.value(point - h * direction, seed=3)
        assert float((grad * direction).sum()) == pytest.approx((plus - minus) / (2 * h), rel=1e-5)


# -- the certifiers on a linear classifier, where the truth is known ----------------------------------------------
def test_ddrs_improves_on_its_start_and_never_exceeds_the_true_distance():
    for dim, distance in ((2, 0.5), (10, 1.0)):
        model, x = _linear(dim, distance)
        start = (
            Cohen(model, input_range=None, sigma=0.1).certify(x, n=10_000).radius["l2"]
        )  # saturates at 3.2σ = 0.32
        cert = DDRS(model, input_range=None, sigma=0.1).certify(x, n=10_000)
        assert cert.prediction == 1 and cert.params["sigma"] > 0.1
        assert min(start + 0.1, 0.8 * distance) < cert.radius["l2"] < distance
    # PREDICT and the noise used at x go through the same SELECT / OPTIMISE stages.
    assert DDRS(model, input_range=None, sigma=0.1, iterations=10).predict(x, n=1000) == 1
    assert isinstance(DDRS(model, input_range=None, iterations=3).noise_for(x), Gaussian)
    assert isinstance(ANCER(model, input_range=None, iterations=3).noise_for(x), DiagonalGaussian)
    assert isinstance(
        RDDRS(model, input_range=None, iterations=3, opt_samples=50).noise_for(x), FullCovarianceGaussian
    )


def test_every_certified_ellipsoid_stays_on_the_right_side_of_the_hyperplane():
    """For a linear classifier every g_Σ has the same boundary, so the region must satisfy r·sqrt(wᵀΣw) ≤ wᵀx."""
    model, x = _linear(6, 0.8)
    w = model.weight
    for certifier in (
        DDRS(model, input_range=None, sigma=0.1),
        ANCER(model, input_range=None, sigma=0.1),
        RDDRS(model, input_range=None, sigma=0.1, iterations=30, learning_rate=0.3),
    ):
        cert = certifier.certify(x, n=10_000)
        region = cert.region
        reach = region.radius * math.sqrt(float(w @ region.shape_matrix @ w))
        assert cert.prediction == 1 and reach < float(w @ x), certifier.name
        assert cert.radius["l2"] < 0.8


def test_ancer_keeps_theta_above_the_ddrs_sigma():
    model, x = _linear(5, 0.7)
    ancer = ANCER(model, input_range=None, sigma=0.1, iterations=40)
    chain = ancer.optimise(x, 1, generator=_generator(5))
    ddrs = DDRS(model, input_range=None, sigma=0.1, iterations=40).optimise(x, 1, generator=_generator(5))
    # ANCER runs DDRS first on the same generator, so σ* is DDRS's σ.
    assert [stage.name for stage in chain.stages] == ["ddrs", "ancer"]
    floor = chain.final.floor
    assert floor == pytest.approx(math.sqrt(float(ddrs.covariance.variances[0])), rel=1e-12)
    theta = chain.covariance.scales()
    assert bool((theta >= floor * (1 - 1e-12)).all())
    assert float(theta.max()) > 1.5 * floor  # it does move along the boundary
    fixed = ANCER(model, input_range=None, sigma=0.3, start="sigma", iterations=20).optimise(
        x, 1, generator=_generator()
    )
    assert fixed.final.floor == 0.3 and bool((fixed.covariance.scales() >= 0.3 * (1 - 1e-12)).all())


# -- RDDRS -------------------------------------------------------------------------------------------------------
def test_rddrs_enlarges_the_proxy_radius_on_a_rotated_anisotropic_problem():
    model, x = RotatedEllipse().double(), torch.zeros(2, dtype=torch.float64)
    start = RDDRS(model, sigma=0.1, iterations=0).certify(x, n=10_000)
    ancer = ANCER(model, sigma=0.1).certify(x, n=10_000)
    cert = RDDRS(model, sigma=0.1, learning_rate=0.5).certify(x, n=10_000)
    assert cert.prediction == 1 and cert.params["stop_reason"] in ("max iterations", "step too small")
    assert cert.params["chain"] == "ddrs>ancer>rddrs" and cert.params["chosen_step"] > 0
    assert cert.params["proxy_radius"] > 1.3 * max(start.params["proxy_radius"], ancer.params["proxy_radius"])
    # The long axis turns to the ellipse's long axis (1, −1)/√2, which a diagonal covariance cannot follow.
    eigenvalues, vectors = torch.linalg.eigh(cert.region.shape_matrix)
    assert abs(float(vectors[:, -1] @ torch.tensor([1.0, -1.0], dtype=torch.float64))) / math.sqrt(2) > 0.95
    assert cert.params["sigma_min"] >= cert.params["sigma_floor"] * (1 - 1e-9)


def test_rddrs_metric_by_name_changes_the_path():
    model, x = RotatedEllipse().double(), torch.zeros(2, dtype=torch.float64)
    # At σ²I the affine-invariant and log-Euclidean steps coincide; from an anisotropic start they differ.
    start = torch.tensor([[0.02, 0.004], [0.004, 0.01]], dtype=torch.float64)
    results = {
        metric: RDDRS(model, metric=metric, initial_covariance=start, iterations=15, learning_rate=0.2)
        .optimise(x, 1, generator=_generator())
        .final
        for metric in ("affine-invariant", "log-euclidean")
    }
    affine, log_euclidean = results["affine-invariant"], results["log-euclidean"]
    floor = float(torch.linalg.eigvalsh(start)[0])
    for result in results.values():
        assert result.run.iterations == 15 and result.run.trajectory[-1] > result.run.start_value
        # The model (no parameters) runs in float32, so the sampled factor is rounded to it.
        assert float(result.covariance.eigenvalues().min()) >= floor * (1 - 1e-6)
    assert affine.run.trajectory[0] == log_euclidean.run.trajectory[0]  # same start, same samples
    assert affine.run.trajectory[1:] != log_euclidean.run.trajectory[1:]
    assert not torch.allclose(affine.covariance.dense(), log_euclidean.covariance.dense(), rtol=1e-2)
    assert RDDRS(None, metric="log-euclidean").metric == "log-euclidean"


def test_rddrs_refuses_unknown_metrics_and_non_spd_starts():
    with pytest.raises(ValueError, match="affine-invariant.*bures-wasserstein.*log-euclidean"):
        RDDRS(None, metric="euclidean")
    assert set(METRICS) == {"affine-invariant", "log-euclidean", "bures-wasserstein"}
    with pytest.raises(ValueError, match="initial_covariance.*positive definite"):
        RDDRS(None, initial_covariance=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="initial_covariance.*symmetric"):
        RDDRS(None, initial_covariance=torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="start"):
        RDDRS(None, start="cohen")
    with pytest.raises(ValueError, match="ancer_options"):
        RDDRS(None, ancer_options={"steps": 3})
    model, x = _linear(3, 0.5)
    with pytest.raises(ValueError, match="initial_covariance is 2×2 but the input has 3"):
        RDDRS(model, initial_covariance=torch.eye(2)).certify(x, n=100)


def test_rddrs_starts_from_a_user_covariance():
    model, x = _linear(2, 0.5)
    start = torch.tensor([[0.02, 0.005], [0.005, 0.04]], dtype=torch.float64)
    cert = RDDRS(model, initial_covariance=start, iterations=0).certify(x, n=1000)
    assert torch.allclose(cert.region.shape_matrix, start, atol=1e-12)
    assert cert.params["sigma_floor"] == pytest.approx(math.sqrt(float(torch.linalg.eigvalsh(start)[0])))
    assert cert.params["start"] == "covariance"


def test_rddrs_checks_that_the_covariance_fits_in_memory():
    model = nn.Sequential(nn.Linear(300_000, 2))
    with pytest.raises(CovarianceTooLargeError, match="bytes"):
        RDDRS(model).certify(torch.zeros(300_000), n=10)


def test_non_finite_gradients_stop_cleanly_with_a_warning():
    base, x = _linear(3, 0.6)
    model = NaNAfter(base, calls=4)  # the first three ascent steps are fine
    with pytest.warns(RuntimeWarning, match="rddrs: non-finite objective after 2 valid steps of 50"):
        cert = RDDRS(model, sigma=0.1, start="sigma", iterations=50, learning_rate=0.3).certify(x, n=2000)
    # The 4th estimate is NaN, so the 3rd step's point is dropped: 2 valid steps.
    assert cert.params["stop_reason"] == "non-finite objective" and cert.params["iterations"] == 2
    assert (
        cert.prediction == 1 and math.isfinite(cert.radius["l2"]) and math.isfinite(cert.params["objective"])
    )
    with pytest.warns(RuntimeWarning, match="ddrs: non-finite objective after 0 valid steps"):
        cert = DDRS(NaNAfter(base, calls=1), sigma=0.1).certify(x, n=2000)
    # Only the start is valid: it is certified, and its objective is estimated without gradients (finite here).
    assert cert.params["sigma"] == pytest.approx(0.1) and cert.params["chosen_step"] == 0


# -- certificates ------------------------------------------------------------------------------------------------
def test_certificate_fields_follow_the_ellipsoid_convention():
    model, x = _linear(4, 0.6)
    certifier = RDDRS(model, sigma=0.1, start="ddrs", iterations=10, learning_rate=0.3)
    assert certifier.native_norm == "l2"
    assert certifier.extra_columns == ("proxy_radius", "sigma_min", "sigma_max", "chosen_step", "memory")
    cert = certifier.certify(x, n=5000, alpha=0.01)
    assert cert.method == "rddrs" and not cert.guaranteed and not cert.exact and cert.n == 5000
    r, sigma = cert.region.radius, cert.region.shape_matrix.numpy()
    eigenvalues = np.linalg.eigvalsh(sigma)
    assert r == pytest.approx(stats.norm.ppf(cert.p_lower), rel=1e-10)
    assert cert.params["proxy_radius"] == pytest.approx(r * np.linalg.det(sigma) ** (1 / 8), rel=1e-9)
    assert cert.radius["l2"] == pytest.approx(r * math.sqrt(eigenvalues[0]), rel=1e-9)
    assert cert.radius["l1"] == cert.radius["l2"]
    assert cert.radius["linf"] == pytest.approx(cert.radius["l2"] / 2)
    assert cert.params["sigma_min"] == pytest.approx(math.sqrt(eigenvalues[0]))
    assert cert.params["sigma_max"] == pytest.approx(math.sqrt(eigenvalues[-1]))
    assert cert.params["sigma"] == pytest.approx(math.sqrt(np.trace(sigma) / 4))
    assert cert.params["metric"] == "affine-invariant" and cert.params["memory"] == "off"
    assert cert.region.proxy_radius == pytest.approx(cert.params["proxy_radius"], rel=1e-9)


def test_abstains_at_a_boundary_point():
    model, _ = _linear(3, 0.5)
    cert = DDRS(model, iterations=5).certify(torch.zeros(3, dtype=torch.float64), n=2000)
    assert cert.abstained and cert.region is None and cert.radius == {"l1": 0.0, "l2": 0.0, "linf": 0.0}


def test_same_seed_same_certificate_and_float32_models():
    model, x = _mlp(torch.float32), torch.tensor([0.3, -0.2, 0.5, 0.1])
    for cls, options in ((DDRS, {}), (ANCER, {}), (RDDRS, {"opt_samples": 200})):
        first = cls(model, input_range=None, sigma=0.3, iterations=10, seed=4, **options).certify(x, n=1000)
        again = cls(model, input_range=None, sigma=0.3, iterations=10, seed=4, **options).certify(x, n=1000)
        other = cls(model, input_range=None, sigma=0.3, iterations=10, seed=5, **options).certify(x, n=1000)
        assert first.prediction is not None and first.region.shape_matrix.dtype == torch.float64
        assert first.radius == again.radius and torch.equal(
            first.region.shape_matrix, again.region.shape_matrix
        )
        assert first.params["objective"] == again.params["objective"]
        assert first.params["objective"] != other.params["objective"]


# -- the ellipsoid intersection test -----------------------------------------------------------------------------
def _random_spd(dim: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return a @ a.mT / dim + 0.05 * torch.eye(dim, dtype=torch.float64)


def _points_in(center, covariance, radius, count, generator) -> torch.Tensor:
    """Uniform points in the open ellipsoid {c + δ : δᵀΣ⁻¹δ < r²}."""
    dim = center.numel()
    direction = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    scale = torch.rand(count, 1, generator=generator, dtype=torch.float64) ** (1 / dim) * radius
    return center + (scale * direction) @ torch.linalg.cholesky(covariance).mT


def test_intersection_test_agrees_with_brute_force_sampling():
    generator = _generator(11)
    checked = {True: 0, False: 0}
    for dim in (2, 3):
        for _ in range(40):
            centers = [torch.randn(dim, generator=generator, dtype=torch.float64) for _ in range(2)]
            shapes = [_random_spd(dim, generator) for _ in range(2)]
            radii = [0.5 + float(torch.rand((), generator=generator, dtype=torch.float64)) for _ in range(2)]
            points = _points_in(centers[0], shapes[0], radii[0], 40_000 if dim == 2 else 80_000, generator)
            inside_b = Ellipsoid(shapes[1], radii[1]).contains(points - centers[1])
            says = ellipsoids_intersect(centers[0], shapes[0], radii[0], centers[1], shapes[1], radii[1])
            if bool(inside_b.any()):
                assert says  # a common point proves that they intersect
            # With a clear margin either way, sampling must agree.
            grown = ellipsoids_intersect(
                centers[0], shapes[0], 0.93 * radii[0], centers[1], shapes[1], radii[1]
            )
            if grown:
                assert bool(inside_b.any())
            if not says or grown:
                checked[says] += 1
    assert checked[True] >= 10 and checked[False] >= 10


def test_intersection_test_on_balls_and_diagonal_shapes():
    a, b = torch.zeros(3, dtype=torch.float64), torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert ellipsoids_intersect(a, eye, 1.6, b, eye, 1.6) and not ellipsoids_intersect(
        a, eye, 1.3, b, eye, 1.6
    )
    # Balls: separation max_s s(1−s)‖v‖²/(s r_a² + (1−s) r_b²) = ‖v‖²/(r_a + r_b)².
    assert ellipsoid_separation(a, eye, 1.0, b, eye, 0.5) == pytest.approx(4.0, rel=1e-9)
    # The same ellipsoids given as (d, d), (d,) variances and scalars agree.
    variances = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    full = ellipsoid_separation(a, torch.diag(variances), 1.2, b, 0.7 * eye, 1.0)
    assert ellipsoid_separation(
        a, variances, 1.2, b, torch.tensor(0.7, dtype=torch.float64), 1.0
    ) == pytest.approx(full, rel=1e-9)
    assert ellipsoid_separation(a, eye, 0.0, b, eye, 1.0) == math.inf


def _distance_to_ellipsoid(
    shape: torch.Tensor, other_center: torch.Tensor, other_shape: torch.Tensor
) -> float:
    """min ‖y‖_Σ over the closed ellipsoid {y : (y − c)ᵀΣ_o⁻¹(y − c) ≤ 1}, by scipy's SLSQP (independent check)."""
    sigma_inv, other_inv = np.linalg.inv(shape.numpy()), np.linalg.inv(other_shape.numpy())
    center = other_center.numpy()
    best = optimize.minimize(
        lambda y: y @ sigma_inv @ y,
        center,
        constraints=[{"type": "ineq", "fun": lambda y: 1 - (y - center) @ other_inv @ (y - center)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return math.sqrt(best.fun)


def test_largest_disjoint_radius_is_the_mahalanobis_distance_to_the_other_ellipsoid():
    generator = _generator(12)
    for dim in (2, 3):
        center, other = torch.zeros(dim, dtype=torch.float64), 2 * torch.ones(dim, dtype=torch.float64)
        shape, other_shape = _random_spd(dim, generator), _random_spd(dim, generator)
        radius = largest_disjoint_radius(center, shape, 10.0, other, other_shape, 1.0)
        assert radius == pytest.approx(_distance_to_ellipsoid(shape, other, other_shape), rel=1e-5)
        assert largest_disjoint_radius(center, shape, 0.5 * radius, other, other_shape, 1.0) == 0.5 * radius


# -- memory-based certification ----------------------------------------------------------------------------------
def test_memory_answers_inputs_inside_a_stored_region_with_its_class():
    model, x = _linear(2, 0.5)  # the model says class 1 around x
    memory = CertificationMemory()
    stored_shape = torch.tensor([[0.04, 0.01], [0.01, 0.02]], dtype=torch.float64)
    assert (
        memory.add(x + torch.tensor([0.1, 0.0], dtype=torch.float64), 0, stored_shape, 2.0, p_lower=0.9)
        == 2.0
    )
    certifier = ANCER(model, memory=memory)
    cert = certifier.certify(x, n=100)
    assert cert.prediction == 0 and cert.guaranteed and cert.params["memory"] == "hit"
    distance = math.sqrt(0.1**2 * float(torch.linalg.inv(stored_shape)[0, 0]))
    assert cert.region.radius == pytest.approx(2.0 - distance, rel=1e-9) and cert.p_lower == 0.9
    # The returned region lies inside the stored one (sampling).
    points = _points_in(x, stored_shape, cert.region.radius, 20_000, _generator())
    assert bool(memory.entries[0].region().contains(points - memory.entries[0].center).all())
    assert certifier.predict(x, n=100) == 0 and len(memory) == 1


def test_memory_shrinks_new_regions_until_classes_are_disjoint():
    model, x = _linear(2, 1.0)
    memory = CertificationMemory()
    other_center = x + torch.tensor([0.0, 1.2], dtype=torch.float64)
    other_shape = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    memory.add(other_center, 0, other_shape, 1.5)
    memory.add(
        x + torch.tensor([0.0, -1.0], dtype=torch.float64), 1, other_shape, 1.5
    )  # same class: no effect
    free = DDRS(model, sigma=0.1).certify(x, n=10_000)
    cert = DDRS(model, sigma=0.1, memory=memory).certify(x, n=10_000)
    assert cert.prediction == 1 and cert.guaranteed and cert.params["memory"] == "shrunk"
    assert 0 < cert.region.radius < free.region.radius and len(memory) == 3
    stored = memory.entries[0]
    assert not ellipsoids_intersect(
        x, cert.region.shape_matrix, cert.region.radius, stored.center, stored.covariance, stored.radius
    )
    points = _points_in(x, cert.region.shape_matrix, cert.region.radius, 50_000, _generator())
    assert not bool(stored.region().contains(points - stored.center).any())
    # Barely larger regions do meet the stored one: the shrinking is tight.
    grown = _points_in(x, cert.region.shape_matrix, 1.05 * cert.region.radius, 200_000, _generator())
    assert bool(stored.region().contains(grown - stored.center).any())


def test_memory_sequence_keeps_regions_of_different_classes_disjoint():
    generator = _generator(13)
    memory = CertificationMemory()
    for _ in range(30):
        center = 2 * torch.randn(2, generator=generator, dtype=torch.float64)
        if memory.lookup(center) is None:
            memory.add(center, int(torch.randint(2, (), generator=generator)), _random_spd(2, generator), 1.0)
    entries = memory.entries
    assert len(entries) >= 5
    for i, first in enumerate(entries):
        for second in entries[i + 1 :]:
            if first.prediction != second.prediction:
                assert (
                    ellipsoid_separation(
                        first.center,
                        first.covariance,
                        first.radius,
                        second.center,
                        second.covariance,
                        second.radius,
                    )
                    >= 1.0
                )


def test_memory_flag_and_errors():
    model, x = _linear(2, 0.5)
    assert DDRS(model, memory=True).memory is not None and DDRS(model).memory is None
    with pytest.raises(TypeError, match="memory"):
        DDRS(model, memory="yes")
    memory = CertificationMemory()
    memory.add(x, 1, torch.tensor(0.01), 1.0)
    with pytest.raises(ValueError, match="2-dimensional"):
        memory.lookup(torch.zeros(3))
    with pytest.raises(ValueError, match="positive definite"):
        memory.add(x, 1, torch.tensor([[1.0, 2.0], [2.0, 1.0]]), 1.0)


# -- the geometry behind RDDRS: metrics by object, geomstats' exponential map, the choice on fresh votes ------------
def test_a_geomstats_metric_passed_as_metric_is_the_one_whose_exp_the_ascent_calls():
    from manifoldcert.geometry._geomstats import import_geomstats_spd

    spd_matrices = import_geomstats_spd()
    space = spd_matrices.SPDMatrices(2, equip=False)
    space.equip_with_metric(spd_matrices.SPDLogEuclideanMetric)
    metric = space.metric
    calls = []
    original = metric.exp

    def counting_exp(tangent_vec, base_point):
        calls.append(tuple(base_point.shape))
        return original(tangent_vec, base_point)

    metric.exp = counting_exp
    model, x = RotatedEllipse().double(), torch.zeros(2, dtype=torch.float64)
    certifier = RDDRS(model, sigma=0.1, metric=metric, start="sigma", iterations=6, opt_samples=200)
    cert = certifier.certify(x, n=2000)
    chain_run = certifier.optimise(x, 1, generator=_generator()).final.run
    # One geomstats exp per trial step: at least one per step of each ascent.
    assert len(calls) >= cert.params["iterations"] + chain_run.iterations > 0
    assert all(shape == (2, 2) for shape in calls)
    assert cert.params["metric"] == "geomstats:SPDLogEuclideanMetric"
    assert torch.get_default_dtype() == torch.float32


def test_rddrs_refuses_a_metric_it_cannot_use_and_a_start_below_the_floor():
    with pytest.raises(TypeError, match="SPDMetric instance or subclass, or a geomstats"):
        RDDRS(None, metric=object())
    with pytest.raises(ValueError, match="unknown SPD metric 'power'"):
        RDDRS(None, metric="power")
    from manifoldcert.geometry._geomstats import import_geomstats_spd

    space = import_geomstats_spd().SPDMatrices(3, equip=False)
    space.equip_with_metric(import_geomstats_spd().SPDAffineMetric)
    with pytest.raises(ValueError, match=r"SPD\(3\) but the matrices are 2×2"):
        RDDRS(None, metric=space.metric, input_shape=(2,))
    model, x = _linear(2, 0.5)
    below = Covariance.full(0.01 * torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="floor"):
        RDDRS(model, start="sigma").run_stage(x, 1, below, floor=0.2)


def test_the_choice_on_fresh_votes_never_hands_back_a_ruined_last_iterate():
    """Large fixed steps in the metric's own units ruin the last iterate (it abstains); choosing among the kept
    iterates on independent votes returns a good one, at least as good as the start, and still sound."""
    model, x = _linear(4, 0.6)
    options = {"sigma": 0.1, "start": "ddrs", "step_rule": "fixed", "learning_rate": 40.0, "iterations": 3}
    chosen = RDDRS(model, **options).certify(x, n=5000)
    last = RDDRS(model, **options, choice_samples=0).certify(x, n=5000)
    start = RDDRS(model, **{**options, "iterations": 0}).certify(x, n=5000)
    assert last.params["chosen_step"] == last.params["iterations"] == 3 and last.abstained
    assert 0 < chosen.params["chosen_step"] < 3 and chosen.prediction == 1
    assert chosen.params["proxy_radius"] > 0.9 * start.params["proxy_radius"]
    w = model.weight
    assert chosen.region.radius * math.sqrt(float(w @ chosen.region.shape_matrix @ w)) < float(w @ x)


@pytest.mark.parametrize("method, seed, x0", [("ddrs", 0, 0.1), ("ddrs", 0, 0.7)])
def test_an_ascent_that_overflows_or_underflows_sigma_stops_at_a_valid_iterate(method, seed, x0):
    """2-D toys whose ascent (learning rate 1e3) drives σ to 1e-160 (σ² underflows to 0: a zero-noise Gaussian,
    a ValueError before) or 1e160 (σ² overflows: an OverflowError before): such iterates are now invalid and
    the chain certifies a valid one."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    with torch.no_grad():
        model[2].weight.mul_(50)
    x = torch.tensor([x0, 0.5], dtype=torch.float64)
    certifier = get_certifier(
        method, model, sigma=2.0, input_range=None, seed=seed, learning_rate=1e3, iterations=15
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the documented "stopped early" warning, if any
        certificate = certifier.certify(x, n=300, n0=30)
    assert math.isfinite(certificate.radius["l2"])
    if certificate.region is not None:  # an abstention has no region
        variances = torch.linalg.eigvalsh(certificate.region.shape_matrix)
        assert bool(torch.isfinite(variances).all()) and float(variances.min()) > 0


def test_covariances_refuse_variances_that_overflow_or_underflow():
    from manifoldcert.geometry.covariance import Covariance

    for sigma in (1e160, 1e-170):
        with pytest.raises(ValueError, match="square"):
            Covariance.isotropic(sigma, 2)
        with pytest.raises(ValueError, match="square"):
            Covariance.diagonal(torch.tensor([1.0, sigma], dtype=torch.float64))
