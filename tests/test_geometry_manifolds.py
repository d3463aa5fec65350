"""The manifold interface, the metric objects (ours, a user's, geomstats' through the adapter) and ``Covariance``.

Numbers are checked against closed forms and against geomstats 2.8 itself, never against values printed by the
module under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from manifoldcert.geometry import (
    METRICS,
    AffineInvariant,
    BuresWasserstein,
    Covariance,
    GeomstatsMetric,
    LogEuclidean,
    PositiveDiagonals,
    PositiveReals,
    SPDMatrices,
    SPDMetric,
    Sphere,
    resolve_metric,
    riesz_gradient,
)
from manifoldcert.geometry._geomstats import import_geomstats_spd

F64 = torch.float64


def random_spd(n: int, *, seed: int, low: float = 0.5, high: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=F64))
    eigenvalues = low + (high - low) * torch.rand(n, generator=generator, dtype=F64)
    return (rotation * eigenvalues) @ rotation.mT


def random_symmetric(n: int, *, seed: int, norm: float = 0.3) -> torch.Tensor:
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    sym = (a + a.mT) / 2
    return norm * sym / torch.linalg.matrix_norm(sym, ord=2)


@pytest.fixture(scope="module")
def spd_matrices():
    return import_geomstats_spd()


# -- metric objects and how metric= is resolved ------------------------------------------------------------------
class Scaled(SPDMetric):
    """A user's metric: twice the affine-invariant inner product (same geodesics, exp at half speed)."""

    name = "scaled-affine"

    def __init__(self) -> None:
        self.base = AffineInvariant()

    def exp(self, tangent_vec, base_point):
        return self.base.exp(tangent_vec, base_point)

    def log(self, point, base_point):
        return self.base.log(point, base_point)

    def squared_distance(self, point_a, point_b):
        return 2 * self.base.squared_distance(point_a, point_b)

    def inner_product(self, tangent_vec_a, tangent_vec_b, base_point):
        return 2 * self.base.inner_product(tangent_vec_a, tangent_vec_b, base_point)

    def riemannian_gradient(self, symmetric_grad, base_point):
        return riesz_gradient(self, symmetric_grad, base_point)


def test_metric_accepts_names_instances_subclasses_and_geomstats(spd_matrices):
    assert isinstance(resolve_metric("log-euclidean"), LogEuclidean)
    ours = BuresWasserstein()
    assert resolve_metric(ours) is ours
    assert isinstance(resolve_metric(Scaled), Scaled) and isinstance(resolve_metric(Scaled()), Scaled)
    wrapped = resolve_metric(spd_matrices.SPDLogEuclideanMetric, 3)
    assert isinstance(wrapped, GeomstatsMetric) and wrapped.n == 3
    space = spd_matrices.SPDMatrices(3, equip=False)
    space.equip_with_metric(spd_matrices.SPDAffineMetric)
    assert resolve_metric(space.metric, 3).geomstats_metric is space.metric
    assert SPDMatrices(3, spd_matrices.SPDBuresWassersteinMetric).metric.name == (
        "geomstats:SPDBuresWassersteinMetric"
    )
    assert set(METRICS) == {"affine-invariant", "log-euclidean", "bures-wasserstein"}


def test_metric_refuses_what_it_cannot_use(spd_matrices):
    with pytest.raises(TypeError, match="names.*SPDMetric instance or subclass.*geomstats"):
        resolve_metric(object())
    with pytest.raises(ValueError, match="unknown SPD metric 'power'.*affine-invariant"):
        resolve_metric("power")
    with pytest.raises(ValueError, match="needs the matrix size"):
        resolve_metric(spd_matrices.SPDAffineMetric)
    space = spd_matrices.SPDMatrices(3, equip=False)
    space.equip_with_metric(spd_matrices.SPDAffineMetric)
    with pytest.raises(ValueError, match=r"SPD\(3\) but the matrices are 4×4"):
        SPDMatrices(4, space.metric)
    wrapped = GeomstatsMetric(space.metric)
    with pytest.raises(ValueError, match="4×4 but the geomstats metric is on SPD\\(3\\)"):
        wrapped.exp(torch.zeros(4, 4, dtype=F64), torch.eye(4, dtype=F64))
    with pytest.raises(TypeError, match="SPDMatrices"):
        from geomstats.geometry.euclidean import Euclidean

        GeomstatsMetric(Euclidean(3).metric)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_geomstats_adapter_is_geomstats_and_agrees_with_ours(metric, spd_matrices):
    ours = SPDMatrices(4, metric)
    adapter = SPDMatrices(4, GeomstatsMetric(ours.to_geomstats().metric))
    p, q = random_spd(4, seed=1), random_spd(4, seed=2)
    v, w = random_symmetric(4, seed=3), random_symmetric(4, seed=4, norm=0.7)
    for name, args in {
        "exp": (v, p),
        "log": (q, p),
        "squared_distance": (p, q),
        "inner_product": (v, w, p),
    }.items():
        torch.testing.assert_close(
            getattr(adapter, name)(*args), getattr(ours, name)(*args), rtol=1e-8, atol=1e-8
        )
    g = torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(
        adapter.riemannian_gradient(g, p), ours.riemannian_gradient(g, p), rtol=1e-10, atol=1e-10
    )
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_riesz_gradient_from_the_inner_product_alone_matches_the_closed_forms(metric):
    spd = SPDMatrices(5, metric)
    p = random_spd(5, seed=6)
    g = random_symmetric(5, seed=7, norm=2.0)
    expected = spd.metric.riemannian_gradient(g, p)
    torch.testing.assert_close(riesz_gradient(spd.metric, g, p), expected, rtol=1e-8, atol=1e-8)


def test_a_users_metric_and_a_geomstats_metric_without_closed_form_represent_the_gradient(spd_matrices):
    p = random_spd(4, seed=8)
    g = random_symmetric(4, seed=9, norm=1.5)
    for metric in (Scaled(), spd_matrices.SPDEuclideanMetric):
        spd = SPDMatrices(4, metric)
        gradient = spd.riemannian_gradient(g, p)
        for seed in (10, 11):
            direction = random_symmetric(4, seed=seed)
            torch.testing.assert_close(
                spd.inner_product(gradient, direction, p), (g * direction).sum(), rtol=1e-7, atol=1e-9
            )
    # The user's metric doubles the inner product, so its gradient is half the affine-invariant one.
    torch.testing.assert_close(
        SPDMatrices(4, Scaled).riemannian_gradient(g, p), p @ g @ p / 2, rtol=1e-8, atol=1e-9
    )


def test_radial_norm_makes_a_relative_step_the_same_move_under_every_metric(spd_matrices):
    # A step of relative length t along P's own direction scales P by e^t to first order, whatever the metric.
    p = random_spd(4, seed=12)
    t = 1e-4
    for metric in (*sorted(METRICS), spd_matrices.SPDEuclideanMetric):
        spd = SPDMatrices(4, metric)
        direction = p / spd.norm(p, p)
        moved = spd.exp(t * spd.radial_norm(p) * direction, p)
        torch.testing.assert_close(moved, math.exp(t) * p, rtol=1e-7, atol=1e-9)
    assert float(SPDMatrices(4, "affine-invariant").radial_norm(p)) == pytest.approx(2.0)  # √n


# -- positive reals, positive diagonals, the sphere ----------------------------------------------------------------
def test_positive_reals_log_metric_is_ascent_on_log_sigma():
    manifold = PositiveReals()
    sigma, g, step = torch.tensor(0.3, dtype=F64), torch.tensor(2.0, dtype=F64), 0.1
    moved = manifold.step(step * manifold.riemannian_gradient(g, sigma), sigma)
    assert float(moved) == pytest.approx(math.exp(math.log(0.3) + step * 0.3 * 2.0), rel=1e-14)
    assert float(manifold.norm(sigma, sigma)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="> 0"):
        manifold.check_point(torch.tensor(-1.0, dtype=F64))


def test_positive_diagonals_project_onto_the_floor_and_keep_per_coordinate_inner_products():
    manifold = PositiveDiagonals(3, min_value=0.2)
    theta = torch.tensor([0.2, 0.5, 1.0], dtype=F64)
    moved = manifold.step(torch.tensor([-0.1, 0.2, -2.0], dtype=F64), theta)
    assert torch.equal(moved, torch.tensor([0.2, 0.7, 0.2], dtype=F64))
    v = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    assert torch.equal(manifold.component_inner(v, v, theta), v.square())
    logarithmic = PositiveDiagonals(3, metric="log")
    assert torch.allclose(logarithmic.component_inner(v, v, theta), (v / theta).square())
    with pytest.raises(ValueError, match="min_value > 0"):
        PositiveDiagonals(3, metric="euclidean")
    with pytest.raises(ValueError, match="min_value"):
        manifold.check_point(torch.tensor([0.1, 0.5, 1.0], dtype=F64))


def test_sphere_geometry():
    sphere = Sphere(3)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    g = torch.tensor([0.5, 1.0, 0.0], dtype=F64)
    tangent = sphere.riemannian_gradient(g, x)
    assert torch.allclose(tangent, torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    quarter = sphere.exp(math.pi / 2 * tangent, x)
    assert torch.allclose(quarter, torch.tensor([0.0, 1.0, 0.0], dtype=F64), atol=1e-15)
    assert torch.allclose(sphere.transport(tangent, x, quarter), torch.zeros(3, dtype=F64), atol=1e-15)
    assert float(sphere.radial_norm(x)) == 1.0
    sphere.check_point(sphere.project(torch.tensor([3.0, 4.0, 0.0], dtype=F64)))
    with pytest.raises(ValueError, match="unit sphere"):
        sphere.check_point(torch.tensor([3.0, 4.0, 0.0], dtype=F64))


# -- Covariance ------------------------------------------------------------------------------------------------
def test_covariance_kinds_agree_on_dense_eigenvalues_and_volume():
    isotropic = Covariance.isotropic(0.5, 3)
    diagonal = Covariance.diagonal(torch.tensor([0.5, 1.0, 2.0]))
    matrix = random_spd(3, seed=13)
    full = Covariance.full(matrix)
    assert isotropic.kind == "isotropic" and torch.allclose(isotropic.dense(), 0.25 * torch.eye(3, dtype=F64))
    assert torch.allclose(diagonal.eigenvalues(), torch.tensor([0.25, 1.0, 4.0], dtype=F64))
    assert torch.allclose(full.dense(), matrix) and not full.is_diagonal
    assert full.proxy_scale() == pytest.approx(float(torch.linalg.det(matrix)) ** (1 / 6), rel=1e-12)
    delta = torch.tensor([0.3, -0.1, 0.2], dtype=F64)
    assert full.mahalanobis(delta) == pytest.approx(
        math.sqrt(float(delta @ torch.linalg.solve(matrix, delta)))
    )
    assert Covariance.coerce(torch.tensor(0.25), 3).kind == "isotropic"
    assert Covariance.coerce(torch.tensor([1.0, 2.0, 3.0]), 3).kind == "diagonal"
    assert Covariance.coerce(matrix, 3).kind == "full"
    with pytest.raises(ValueError, match="positive definite"):
        Covariance.full(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        Covariance.full(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="> 0"):
        Covariance.diagonal(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="full covariance has no per-coordinate"):
        full.scales()
