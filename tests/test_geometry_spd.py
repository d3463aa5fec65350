"""SPD(n) geometry: metric identities, geomstats agreement, closed forms, and stable autograd at σ²I.

The generic properties are written once and run for every metric (and both dtypes where the property does not
need float64 precision); numbers are checked against geomstats 2.8, scipy and closed forms for commuting
matrices, never against values the module printed itself.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import scipy.linalg
import torch

from manifoldcert.geometry import (
    METRICS,
    SPDMatrices,
    check_spd,
    differential_expm,
    differential_logm,
    differential_sqrtm,
    expm,
    logm,
    sqrtm,
)
from manifoldcert.resources import CovarianceTooLargeError, check_full_covariance_fits, full_covariance_bytes

DTYPES = (torch.float32, torch.float64)
TOLERANCE = {torch.float32: 2e-4, torch.float64: 1e-9}
F64 = torch.float64

# Base points where torch.linalg.eigh's own backward is NaN/inf: RDDRS's start σ²I, and a pair of equal
# eigenvalues next to a distinct one; plus a nearly repeated pair (the divided differences' switch-over).
REPEATED = {
    "sigma2-identity": torch.eye(3, dtype=F64) * 0.25**2,
    "diag-1-1-2": torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=F64)),
    "diag-1-1.0001-2": torch.diag(torch.tensor([1.0, 1.0001, 2.0], dtype=F64)),
}


def random_spd(
    n: int, batch: tuple[int, ...] = (), *, seed: int, dtype=F64, low=0.5, high=2.0
) -> torch.Tensor:
    """Random SPD matrices with eigenvalues uniform in [low, high] and Haar-like eigenvectors."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=generator, dtype=F64))
    eigvals = low + (high - low) * torch.rand(*batch, n, generator=generator, dtype=F64)
    return ((rotation * eigvals[..., None, :]) @ rotation.mT).to(dtype)


def random_symmetric(n: int, batch: tuple[int, ...] = (), *, seed: int, norm: float = 1.0, dtype=F64):
    """Random symmetric matrices of spectral norm ``norm``."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, n, n, generator=generator, dtype=F64)
    sym = (a + a.mT) / 2
    return (norm * sym / torch.linalg.matrix_norm(sym, ord=2)[..., None, None]).to(dtype)


def sym(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix + matrix.mT) / 2


def assert_close(actual, expected, tol):
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


# --- generic metric properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_log_and_exp_are_inverse(metric, dtype):
    spd = SPDMatrices(4, metric)
    base_point = random_spd(4, (2,), seed=1, dtype=dtype)
    point = random_spd(4, (2,), seed=2, dtype=dtype)
    # Spectral norm 0.3 < λ_min(P) = 0.5 keeps the BW geodesic inside its injectivity domain.
    tangent_vec = random_symmetric(4, (2,), seed=3, norm=0.3, dtype=dtype)
    tol = TOLERANCE[dtype]
    assert_close(spd.log(spd.exp(tangent_vec, base_point), base_point), tangent_vec, tol)
    assert_close(spd.exp(spd.log(point, base_point), base_point), point, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_exp_stays_on_the_manifold(metric, dtype):
    spd = SPDMatrices(4, metric)
    base_point = random_spd(5, (3,), seed=4, dtype=dtype)
    norm = 0.4 if metric == "bures-wasserstein" else 3.0  # BW: Exp_P(V) = (I + L_P[V]) P (I + L_P[V])
    result = spd.exp(random_symmetric(5, (3,), seed=5, norm=norm, dtype=dtype), base_point)
    assert result.dtype == dtype and result.shape == (3, 5, 5)
    assert torch.equal(result, result.mT)
    check_spd(result, "Exp_P(V)")


@pytest.mark.parametrize("metric", METRICS)
def test_batched_equals_looped(metric):
    spd = SPDMatrices(4, metric)
    base_point = random_spd(3, (2, 3), seed=6)
    point = random_spd(3, (2, 3), seed=7)
    tangent_vec = random_symmetric(3, (2, 3), seed=8, norm=0.3)
    grad = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    batched = {
        "exp": spd.exp(tangent_vec, base_point),
        "log": spd.log(point, base_point),
        "distance": spd.distance(point, base_point),
        "inner": spd.inner_product(tangent_vec, point, base_point),
        "gradient": spd.riemannian_gradient(grad, base_point),
    }
    for i in range(2):
        for j in range(3):
            p, q, v, g = base_point[i, j], point[i, j], tangent_vec[i, j], grad[i, j]
            assert_close(batched["exp"][i, j], spd.exp(v, p), 1e-12)
            assert_close(batched["log"][i, j], spd.log(q, p), 1e-12)
            assert_close(batched["distance"][i, j], spd.distance(q, p), 1e-12)
            assert_close(batched["inner"][i, j], spd.inner_product(v, q, p), 1e-12)
            assert_close(batched["gradient"][i, j], spd.riemannian_gradient(g, p), 1e-12)
    # One base point broadcast against a batch of tangent vectors.
    looped = torch.stack([spd.exp(v, base_point[0, 0]) for v in tangent_vec[0]])
    assert_close(spd.exp(tangent_vec[0], base_point[0, 0]), looped, 1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_agrees_with_geomstats(metric):
    spd = SPDMatrices(4, metric)
    reference = spd.to_geomstats().metric
    base_point = random_spd(4, (3,), seed=10)
    point = random_spd(4, (3,), seed=11)
    tangent_a = random_symmetric(4, (3,), seed=12, norm=0.3)
    tangent_b = random_symmetric(4, (3,), seed=13, norm=0.7)
    assert_close(spd.exp(tangent_a, base_point), reference.exp(tangent_a, base_point), 1e-8)
    assert_close(spd.log(point, base_point), reference.log(point, base_point), 1e-8)
    assert_close(spd.distance(point, base_point), reference.dist(point, base_point), 1e-8)
    assert_close(
        spd.inner_product(tangent_a, tangent_b, base_point),
        reference.inner_product(tangent_a, tangent_b, base_point),
        1e-8,
    )
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("metric", METRICS)
def test_closed_forms_for_diagonal_matrices(metric):
    spd = SPDMatrices(4, metric)
    a = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    b = torch.tensor([1.7, 0.4, 2.5], dtype=F64)
    v = torch.tensor([0.2, -0.5, 1.0], dtype=F64)
    if metric == "bures-wasserstein":
        # ‖√a − √b‖, and Exp_a(v) = a + v + (v/2a)² a = (√a + v/(2√a))² for commuting matrices.
        expected_distance = torch.linalg.vector_norm(a.sqrt() - b.sqrt())
        expected_exp = (a.sqrt() + v / (2 * a.sqrt())) ** 2
    else:
        # Both metrics reduce to the log-Euclidean one on commuting matrices: ‖log(a/b)‖, a·exp(v/a).
        expected_distance = torch.linalg.vector_norm(torch.log(a / b))
        expected_exp = a * torch.exp(v / a)
    assert_close(spd.distance(torch.diag(a), torch.diag(b)), expected_distance, 1e-12)
    assert_close(spd.exp(torch.diag(v), torch.diag(a)), torch.diag(expected_exp), 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_riemannian_gradient_represents_the_euclidean_gradient(metric, dtype):
    # <G_R, V>_P = <G, V>_F for every symmetric V, with G not symmetric (only its symmetric part counts).
    spd = SPDMatrices(4, metric)
    base_point = random_spd(4, (3,), seed=14, dtype=dtype)
    euclidean_grad = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(15), dtype=F64).to(dtype)
    gradient = spd.riemannian_gradient(euclidean_grad, base_point)
    assert_close(gradient, gradient.mT, TOLERANCE[dtype])
    for seed in (16, 17):
        direction = random_symmetric(4, (3,), seed=seed, dtype=dtype)
        expected = (euclidean_grad * direction).sum((-2, -1))
        assert_close(spd.inner_product(gradient, direction, base_point), expected, 10 * TOLERANCE[dtype])


@pytest.mark.parametrize("metric", METRICS)
def test_gradient_step_is_first_order_steepest_ascent(metric):
    # For f(P) = −‖P − T‖²_F: f(Exp_P(γ G_R)) − f(P) = γ ‖G_R‖²_P + O(γ²), and the step increases f.
    spd = SPDMatrices(3, metric)
    base_point = random_spd(3, seed=18)
    target = random_spd(3, seed=19)

    def objective(p):
        return -(p - target).square().sum()

    gradient = spd.riemannian_gradient(-2 * (base_point - target), base_point)
    step = 1e-5
    moved = spd.step(step * gradient, base_point)
    assert_close(moved, spd.exp(step * gradient, base_point), 1e-14)  # no floor: step = exp
    slope = (objective(moved) - objective(base_point)) / step
    assert_close(slope, spd.inner_product(gradient, gradient, base_point), 1e-4)
    assert objective(spd.step(0.05 * gradient, base_point)) > objective(base_point)


@pytest.mark.parametrize("metric", METRICS)
def test_projection_clips_eigenvalues_at_the_floor(metric):
    floor = 0.8
    spd = SPDMatrices(4, metric, min_eigenvalue=floor)
    point = random_spd(4, (2,), seed=40, low=0.3, high=2.0)
    projected = spd.project(point)
    eigenvalues = torch.linalg.eigvalsh(point)
    assert_close(torch.linalg.eigvalsh(projected), eigenvalues.clamp_min(floor), 1e-12)
    # The Frobenius-nearest point of {λ_min ≥ floor}: no random point of the set is closer.
    for seed in range(20):
        other = spd.project(random_spd(4, (2,), seed=100 + seed, low=0.1, high=3.0))
        assert bool(
            ((other - point).norm(dim=(-2, -1)) >= (projected - point).norm(dim=(-2, -1)) - 1e-12).all()
        )
    above = random_spd(4, seed=41, low=1.0, high=2.0)
    assert torch.equal(spd.project(above), sym(above))  # nothing to clip: unchanged
    spd.check_point(projected[0])
    with pytest.raises(ValueError, match="floor"):
        spd.check_point(torch.diag(torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=F64)))
    assert (spd.radial_norm(torch.eye(4, dtype=F64) * 2) > 0).all()


@pytest.mark.parametrize("metric", METRICS)
def test_distance_is_symmetric_zero_on_the_diagonal_and_the_norm_of_log(metric):
    spd = SPDMatrices(4, metric)
    p = random_spd(4, (2,), seed=20)
    q = random_spd(4, (2,), seed=21)
    assert_close(spd.distance(p, q), spd.distance(q, p), 1e-10)
    assert_close(spd.distance(p, q), spd.norm(spd.log(q, p), p), 1e-10)
    assert_close(spd.squared_distance(p, p), torch.zeros(2, dtype=F64), 1e-12)
    assert float(spd.distance(p, p).max()) < 1e-6  # sqrt of a rounding error


# --- autograd at repeated eigenvalues -------------------------------------------------------------------------


def _gradcheck(func, *inputs):
    inputs = tuple(x.clone().requires_grad_(True) for x in inputs)
    outputs = func(*inputs)
    grads = torch.autograd.grad(outputs.sum(), inputs)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    # Finite differences in every (possibly asymmetric) entry; the functions read sym(x).
    assert torch.autograd.gradcheck(func, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("base", sorted(REPEATED))
@pytest.mark.parametrize("metric", METRICS)
def test_autograd_is_finite_and_correct_at_repeated_eigenvalues(metric, base):
    spd = SPDMatrices(4, metric)
    base_point = REPEATED[base]
    other = REPEATED["diag-1-1-2"] if base == "sigma2-identity" else REPEATED["sigma2-identity"]
    tangent_vec = random_symmetric(3, seed=22, norm=0.01)

    def exp(v, p):
        return spd.exp(sym(v), sym(p))

    def log(q, p):
        return spd.log(sym(q), sym(p))

    def distance(p, q):
        return spd.distance(sym(p), sym(q))

    def squared_distance(p, q):
        return spd.squared_distance(sym(p), sym(q))

    def inner_product(v, w, p):
        return spd.inner_product(v, w, sym(p))

    _gradcheck(exp, torch.zeros(3, 3, dtype=F64), base_point)  # the first step of RDDRS: V = 0 at σ²I
    _gradcheck(exp, tangent_vec, base_point)
    _gradcheck(log, base_point, base_point)
    _gradcheck(log, other, base_point)
    _gradcheck(distance, base_point, other)
    _gradcheck(squared_distance, base_point, base_point)
    # Tangent vectors need not be symmetric here: the formulas are linear in them.
    asymmetric = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(23), dtype=F64)
    _gradcheck(inner_product, asymmetric[0], asymmetric[1], base_point)


@pytest.mark.parametrize("metric", METRICS)
def test_float32_step_from_sigma2_identity_has_finite_gradients(metric):
    spd = SPDMatrices(4, metric)
    covariance = (0.25**2 * torch.eye(5)).requires_grad_(True)
    tangent_vec = torch.zeros(5, 5, requires_grad=True)
    moved = spd.exp(tangent_vec, covariance)
    loss = moved.diagonal().log().sum() + spd.squared_distance(moved, covariance)
    loss.backward()
    assert moved.dtype == torch.float32
    assert bool(torch.isfinite(covariance.grad).all()) and bool(torch.isfinite(tangent_vec.grad).all())
    # d/dV tr log Exp_P(V) at V = 0 is P⁻¹ for every metric, since Exp_P(V) = P + V + O(V²).
    assert_close(tangent_vec.grad, torch.eye(5) / 0.25**2, 1e-4)


# --- spectral functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_functions_match_scipy(dtype):
    p = random_spd(4, seed=23)
    s = random_symmetric(4, seed=24, norm=2.0)
    v = random_symmetric(4, seed=25)
    p_np, s_np, v_np = p.numpy(), s.numpy(), v.numpy()
    tol = TOLERANCE[dtype]
    p, s, v = p.to(dtype), s.to(dtype), v.to(dtype)
    assert_close(logm(p), torch.from_numpy(scipy.linalg.logm(p_np).real).to(dtype), tol)
    assert_close(expm(s), torch.from_numpy(scipy.linalg.expm(s_np)).to(dtype), 10 * tol)
    assert_close(sqrtm(p), torch.from_numpy(scipy.linalg.sqrtm(p_np).real).to(dtype), tol)
    _, frechet = scipy.linalg.expm_frechet(s_np, v_np)
    assert_close(differential_expm(v, s), torch.from_numpy(frechet).to(dtype), 10 * tol)
    # D logm_P is the inverse of D expm_{logm P}; D sqrtm_P[V] solves P^{1/2} X + X P^{1/2} = V.
    _, back = scipy.linalg.expm_frechet(
        scipy.linalg.logm(p_np).real, differential_logm(v, p).double().numpy()
    )
    assert_close(torch.from_numpy(back).to(dtype), v, 10 * tol)
    root = torch.from_numpy(scipy.linalg.sqrtm(p_np).real)
    expected = torch.from_numpy(scipy.linalg.solve_sylvester(root.numpy(), root.numpy(), v_np))
    assert_close(differential_sqrtm(v, p), expected.to(dtype), tol)


@pytest.mark.parametrize("base", sorted(REPEATED))
def test_spectral_gradients_at_repeated_eigenvalues(base):
    point = REPEATED[base]
    direction = torch.randn(3, 3, generator=torch.Generator().manual_seed(26), dtype=F64)  # any matrix
    for func in (logm, expm, sqrtm):
        _gradcheck(lambda x, f=func: f(sym(x)), point)
        assert torch.autograd.gradgradcheck(lambda x, f=func: f(sym(x)), (point.clone().requires_grad_(),))
    for differential in (differential_logm, differential_expm, differential_sqrtm):
        _gradcheck(lambda v, p, d=differential: d(v, sym(p)), direction, point)
    # torch's own eigh backward is not finite here: what these functions exist for.
    if base != "diag-1-1.0001-2":
        x = point.clone().requires_grad_()
        eigvals, eigvecs = torch.linalg.eigh(x)
        ((eigvecs * eigvals.log()[None, :]) @ eigvecs.mT).sum().backward()
        assert not bool(torch.isfinite(x.grad).all())


def test_divided_differences_are_accurate_near_coincident_eigenvalues():
    # The backward passes' kernels f[x, y] and f[x, y, z] against 50-digit arithmetic, on both sides of the
    # switch from difference quotients to Taylor series (gaps around eps^{1/6}, relative).
    mpmath = pytest.importorskip("mpmath")
    from manifoldcert.geometry import matrix_functions as module

    def first_exact(f, x, y):
        return (f(x) - f(y)) / (x - y)

    def second_exact(f, x, y, z):
        return (first_exact(f, x, y) - first_exact(f, y, z)) / (x - z)

    functions = [(module._LOG, mpmath.log), (module._EXP, mpmath.exp), (module._SQRT, mpmath.sqrt)]
    with mpmath.workdps(50):
        for dtype, tol in ((F64, 1e-11), (torch.float32, 1e-4)):
            for (func, reference), base in itertools.product(functions, (0.3, 1.0, 4.0)):
                for gap, pattern in itertools.product(
                    (1e-6, 1e-4, 2e-3, 3e-3, 0.05, 0.7), ((0, 1, 2), (1, 0, 0.3))
                ):
                    x, y, z = (torch.tensor(base * (1 + gap * p), dtype=dtype) for p in pattern)
                    exact_points = [mpmath.mpf(float(t)) for t in (x, y, z)]
                    if len(set(exact_points)) < 3:  # coincide after rounding to dtype
                        continue
                    f_xy, f_yz, f_xz = (
                        func.first_divided_difference(*pair) for pair in ((x, y), (y, z), (x, z))
                    )
                    second = module._second_divided_differences(func, x, y, z, f_xy, f_yz, f_xz)
                    expected_first = float(first_exact(reference, *exact_points[:2]))
                    expected_second = float(second_exact(reference, *exact_points))
                    assert abs(float(f_xy) - expected_first) <= tol * abs(expected_first), (func.name, gap)
                    assert abs(float(second) - expected_second) <= tol * abs(expected_second), (
                        func.name,
                        gap,
                    )


# --- geomstats import side effects ----------------------------------------------------------------------------


def test_importing_and_using_geomstats_keeps_the_default_dtype():
    code = (
        "import sys, torch\n"
        "import manifoldcert.geometry as g\n"
        "assert 'geomstats' not in sys.modules\n"
        "assert torch.get_default_dtype() == torch.float32\n"
        "space = g.SPDMatrices(3, 'log-euclidean').to_geomstats()\n"
        "assert torch.get_default_dtype() == torch.float32, torch.get_default_dtype()\n"
        "assert type(space.metric).__name__ == 'SPDLogEuclideanMetric'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GEOMSTATS_BACKEND"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_other_geomstats_backend_is_refused(monkeypatch):
    monkeypatch.setenv("GEOMSTATS_BACKEND", "numpy")
    with pytest.raises(RuntimeError, match="'pytorch' backend"):
        SPDMatrices(3).to_geomstats()


# --- bad inputs -----------------------------------------------------------------------------------------------


def test_unknown_metric_lists_the_valid_names():
    with pytest.raises(ValueError, match="affine-invariant, bures-wasserstein, log-euclidean"):
        SPDMatrices(3, "euclidean")


def test_check_spd():
    p = random_spd(3, (2,), seed=27)
    assert check_spd(p) is p
    with pytest.raises(ValueError, match="square"):
        check_spd(torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_spd(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="not symmetric"):
        check_spd(p[0] + torch.triu(torch.ones(3, 3, dtype=F64), 1))
    with pytest.raises(
        ValueError, match=r"covariance is not positive definite: its smallest eigenvalue is -2\b"
    ):
        check_spd(torch.diag(torch.tensor([1.0, -2.0, 3.0])), "covariance")
    with pytest.raises(ValueError, match="smallest eigenvalue is 0"):
        check_spd(torch.zeros(2, 2))


@pytest.mark.parametrize("metric", METRICS)
def test_methods_reject_bad_inputs(metric):
    spd = SPDMatrices(4, metric)
    p = random_spd(3, seed=28)
    indefinite = torch.diag(torch.tensor([1.0, -0.5, 2.0], dtype=F64))
    with pytest.raises(ValueError, match=r"\[..., n, n\]"):
        spd.exp(torch.zeros(3, 2, dtype=F64), p)
    with pytest.raises(ValueError, match="3×3 but base_point is 4×4"):
        spd.log(p, random_spd(4, seed=29))
    with pytest.raises(TypeError, match="floating-point"):
        spd.distance(torch.eye(3, dtype=torch.int64), p)
    with pytest.raises(ValueError, match="base_point must be positive definite.*-0.5"):
        spd.exp(torch.zeros(3, 3, dtype=F64), indefinite)
    with pytest.raises(ValueError, match="point must be positive definite"):
        spd.log(indefinite, p)
    with pytest.raises(ValueError, match="positive definite"):
        logm(indefinite)


def test_full_covariance_memory_check():
    assert full_covariance_bytes(784) == 4 * 784 * 784 * 4
    assert full_covariance_bytes(10, torch.float64, n_matrices=2) == 2 * 10 * 10 * 8
    assert check_full_covariance_fits(100, torch.float32, budget_bytes=10**6) == 160_000
    with pytest.raises(
        CovarianceTooLargeError, match="3072×3072.*150,994,944 bytes.*1,000,000 bytes"
    ) as error:
        check_full_covariance_fits(3072, torch.float32, budget_bytes=10**6)
    assert isinstance(error.value, MemoryError) and isinstance(error.value, ValueError)
    with pytest.raises(MemoryError):  # 3.2e16 bytes: more than this machine's MemAvailable
        check_full_covariance_fits(10**8, torch.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_matches_cpu(metric):
    spd = SPDMatrices(4, metric)
    p, q = random_spd(4, (2,), seed=30), random_spd(4, (2,), seed=31)
    v = random_symmetric(4, (2,), seed=32, norm=0.3)
    for name, args in {"exp": (v, p), "log": (q, p), "distance": (p, q)}.items():
        on_gpu = getattr(spd, name)(*(x.cuda() for x in args))
        assert on_gpu.device.type == "cuda"
        assert_close(on_gpu.cpu(), getattr(spd, name)(*args), 1e-10)
    c = (0.25**2 * torch.eye(4, device="cuda", dtype=F64)).requires_grad_()
    spd.squared_distance(spd.exp(v[0].cuda(), c), c).backward()
    assert bool(torch.isfinite(c.grad).all())
