"""UniCR (Hong et al. 2022): the Monte Carlo robustness boundary against closed forms, its tables and cache, the
direction search, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm as standard_normal

from manifoldcert import get_certifier, noises
from manifoldcert.certifiers.unicr import UniCR, table_probabilities
from manifoldcert.certifiers.unicr_boundary import (
    ShiftedLogRatios,
    SortedRatioLaws,
    UnreachableToleranceError,
    lp_norm,
    scale_to_boundary,
)
from manifoldcert.geometry.sphere import Sphere, sparse_diagonals
from manifoldcert.optimize import FunctionObjective, ParticleSwarm, Problem

PROBABILITIES = np.array([0.6, 0.8, 0.9, 0.99])
SIGMA = 0.5


def _closed_form(noise_name: str, norm: str, dim: int) -> np.ndarray:
    """Cohen (l2, and l∞ = l2/√d), Teng (Laplace l1) and Yang (uniform l1) at the PROBABILITIES."""
    if noise_name == "gaussian":
        radius = SIGMA * standard_normal.ppf(PROBABILITIES)
        return radius / math.sqrt(dim) if norm == "linf" else radius
    if noise_name == "laplace":
        return -(SIGMA / math.sqrt(2.0)) * np.log(2.0 * (1.0 - PROBABILITIES))
    return 2.0 * SIGMA * math.sqrt(3.0) * (PROBABILITIES - 0.5)


CASES = [
    (noise, norm, dim)
    for noise, norm in (("gaussian", "l2"), ("gaussian", "linf"), ("laplace", "l1"), ("uniform", "l1"))
    for dim in (2, 64, 784)
]


@pytest.mark.parametrize(
    ("noise_name", "norm", "dim"),
    [
        pytest.param(*case, marks=pytest.mark.slow)
        if case in (("gaussian", "linf", 784), ("gaussian", "l2", 784), ("uniform", "l1", 784))
        else case
        for case in CASES
    ],
)
def test_radius_matches_the_closed_forms(noise_name, norm, dim):
    """Within 2 % of σΦ⁻¹(p_A), σΦ⁻¹(p_A)/√d, −b·log(2(1 − p_A)) and 2λ(p_A − ½) (the issue's grid)."""
    certifier = UniCR(
        None, noise=noises.get(noise_name, sigma=SIGMA), norm=norm, input_shape=(dim,), search="symmetric"
    )
    radii = np.array([certifier.radius_for(float(p), use_table=False) for p in PROBABILITIES])
    np.testing.assert_allclose(radii, _closed_form(noise_name, norm, dim), rtol=0.02)


def test_gaussian_linf_784_on_a_smaller_sample():
    """The d = 784 l∞ case of the grid above in the default run, with 20,000 samples (a looser 4 %)."""
    certifier = UniCR(
        None,
        noise=noises.Gaussian(SIGMA),
        norm="linf",
        input_shape=(784,),
        search="symmetric",
        mc_samples=20_000,
    )
    radii = np.array([certifier.radius_for(float(p), use_table=False) for p in PROBABILITIES[1:]])
    np.testing.assert_allclose(radii, _closed_form("gaussian", "linf", 784)[1:], rtol=0.04)


def test_uniform_l1_784_on_a_smaller_sample():
    """The d = 784 uniform l1 case of the grid in the default run, with 20,000 samples (a looser 4 %): at low p_A
    every sparse diagonal ties with the axis in l1, and all of them are scaled on every sample."""
    certifier = UniCR(
        None,
        noise=noises.get("uniform", sigma=SIGMA),
        norm="l1",
        input_shape=(784,),
        search="symmetric",
        mc_samples=20_000,
    )
    radii = np.array([certifier.radius_for(float(p), use_table=False) for p in PROBABILITIES])
    np.testing.assert_allclose(radii, _closed_form("uniform", "l1", 784), rtol=0.04)


def test_two_probability_radius_matches_cohen():
    """With p_B given, the boundary is Cohen's σ/2·(Φ⁻¹(p_A) − Φ⁻¹(p_B))."""
    certifier = UniCR(None, noise=noises.Gaussian(SIGMA), input_shape=(3,), search="symmetric")
    for p_a, p_b in ((0.7, 0.1), (0.9, 0.05), (0.5, 0.2)):
        expected = 0.5 * SIGMA * (standard_normal.ppf(p_a) - standard_normal.ppf(p_b))
        assert certifier.radius_for(p_a, p_b) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("p", [1.5, 3.0, 0.5])
def test_any_lp_norm(p):
    """Gaussian noise: the l_p radius is the l2 one times min over the sphere of ‖u‖_p (axis for p ≤ 2,
    diagonal d^(1/p − 1/2) for p ≥ 2)."""
    dim = 4
    certifier = UniCR(None, noise=noises.Gaussian(SIGMA), norm=p, input_shape=(dim,), search="symmetric")
    factor = 1.0 if p <= 2 else dim ** (1.0 / p - 0.5)
    assert certifier.native_norm == f"l{p:g}"
    assert certifier.radius_for(0.9, use_table=False) == pytest.approx(
        factor * SIGMA * standard_normal.ppf(0.9), rel=0.02
    )


def test_swarm_finds_the_diagonal_for_linf():
    """The direction phase on S¹ from random particles only: the l∞ radius of Gaussian noise is smallest on the
    diagonal, where it is σΦ⁻¹(p)/√2."""
    ratios = ShiftedLogRatios(noises.Gaussian(SIGMA), 2, 20_000, seed=1)

    def radius(direction: np.ndarray) -> float:
        point = scale_to_boundary(ratios, direction, 0.9, 0.1, tolerance=1.0, relative_precision=1e-3)
        return point.scale * lp_norm(direction, math.inf)

    start = [np.array([1.0, 0.2]), np.array([-0.3, 1.0])]
    problem = Problem(
        Sphere(2), FunctionObjective(lambda direction: radius(direction.numpy())), maximize=False
    )
    result = ParticleSwarm(max_iterations=15, extra_random_points=4, seed=0).run(problem, start)
    assert abs(abs(result.point[0]) - abs(result.point[1])) < 0.1
    assert result.value == pytest.approx(SIGMA * standard_normal.ppf(0.9) / math.sqrt(2.0), rel=0.03)
    assert radius(np.array([1.0, 0.0])) > 1.3 * result.value
    state = np.random.get_state()[1].copy()
    ParticleSwarm(max_iterations=2, seed=5).run(problem, start)
    assert (np.random.get_state()[1] == state).all()  # numpy's global random state is restored


def test_swarm_is_used_in_auto_mode_for_small_dimensions():
    certifier = UniCR(None, noise=noises.Gaussian(SIGMA), norm="linf", input_shape=(3,), pso_iterations=3)
    assert len(certifier.directions(3, 0.9, 0.1)) == len(sparse_diagonals(3)) + 1
    assert certifier.radius_for(0.9, use_table=False) == pytest.approx(
        SIGMA * standard_normal.ppf(0.9) / math.sqrt(3), rel=0.03
    )


def test_neyman_pearson_masses_split_ties_exactly():
    """Uniform noise, d = 1, shift r along the axis: log ρ is −inf on a fraction r/(2λ) and 0 elsewhere."""
    laws = SortedRatioLaws(
        torch.tensor([-math.inf] * 2 + [0.0] * 8), torch.tensor([0.0] * 8 + [math.inf] * 2)
    )
    # The lowest-ratio set of X-mass 0.6 takes the two −inf points and half the ties: Y-mass 0.5 · 0.8.
    assert laws.lowest_set_mass(0.6)[0] == pytest.approx(0.4 * 1.0)
    # The highest-ratio set of X-mass 0.4 takes half the ties, and the +inf points Y alone can reach.
    assert laws.highest_set_mass(0.4)[0] == pytest.approx(0.2 + 0.4 * 1.0)


def test_table_is_conservative_monotone_and_cached(tmp_path, monkeypatch):
    kwargs = {"noise": noises.Laplace(SIGMA), "norm": "l1", "input_shape": (8,), "mc_samples": 20_000}
    certifier = UniCR(None, cache_dir=tmp_path, table_size=300, **kwargs)
    table = certifier.table(8)
    assert np.all(np.diff(table.radii) >= 0) and len(table.radii) == 300
    assert len(list(tmp_path.glob("unicr-*.json"))) == 1
    # Rounding down: a lookup never exceeds the radius at the looked-up probability.
    for p in (0.55, 0.77, 0.93, 0.999):
        looked_up = certifier.radius_for(p)
        assert looked_up <= certifier.radius_for(p, use_table=False) * 1.01
        assert looked_up == table.radii[np.searchsorted(table.probabilities, p, side="right") - 1]
    with pytest.raises(ValueError, match=r"covers p_A in \(1/2, 1\)"):
        table.lookup(0.4)
    # The same configuration is read back, not rebuilt; another configuration is not confused with it.
    again = UniCR(None, cache_dir=tmp_path, table_size=300, **kwargs)
    monkeypatch.setattr(UniCR, "_build_table", lambda *a: pytest.fail("the cached table was rebuilt"))
    np.testing.assert_array_equal(again.table(8).radii, table.radii)
    monkeypatch.undo()
    other = UniCR(None, cache_dir=tmp_path, table_size=300, seed=1, **kwargs)
    assert other.table_config(8) != certifier.table_config(8)
    other.table(8)
    assert len(list(tmp_path.glob("unicr-*.json"))) == 2
    # A file whose stored configuration differs from its name is ignored rather than trusted.
    path = next(iter(tmp_path.glob(f"unicr-{table.key}.json")))
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 99'))
    fresh = UniCR(None, cache_dir=tmp_path, table_size=300, **kwargs)
    assert fresh.table(8).config == certifier.table_config(8)


def test_table_probabilities_are_geometric_in_the_gaussian_quantile():
    grid = standard_normal.ppf(table_probabilities(1000))
    ratios = grid[1:] / grid[:-1]
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1.007 and grid[-1] == pytest.approx(4.753, abs=1e-3)


def test_certify_end_to_end_is_marked_approximate(linear_classifier):
    certifier = get_certifier(
        "unicr",
        linear_classifier,
        input_range=None,
        noise=noises.Gaussian(SIGMA),
        search="symmetric",
        mc_samples=20_000,
    )
    x = 0.4 * linear_classifier.weight / linear_classifier.weight.norm()  # p_A ≈ Φ(0.8 + …) ≈ 0.8
    cert = certifier.certify(x, n0=100, n=2000, alpha=0.001)
    assert cert.guaranteed is False and cert.method == "unicr"
    cohen = get_certifier("cohen", linear_classifier, input_range=None, sigma=SIGMA)
    assert cert.prediction == 1
    if cert.prediction is not None:
        assert cert.radius["l2"] == pytest.approx(cohen.radius_for(cert.p_lower), rel=0.03)
        assert cert.radius["linf"] == pytest.approx(cert.radius["l2"] / math.sqrt(10))


def test_bad_input():
    with pytest.raises(ValueError, match="p > 0"):
        UniCR(None, norm=-1.0)
    with pytest.raises(ValueError, match="norm must be"):
        UniCR(None, norm="lfoo")
    with pytest.raises(ValueError, match="needs a noise with a log density"):
        UniCR(None, noise=noises.SplittingNoise(0.5), input_shape=(4,)).radius_for(0.9)
    certifier = UniCR(None, noise=noises.Gaussian(SIGMA), input_shape=(4,), mc_samples=2000)
    assert certifier.radius_for(0.5) == 0.0 and certifier.radius_for(0.3) == 0.0
    with pytest.raises(ValueError, match="does not match"):
        certifier.radius_for(0.9, dim=5)
    with pytest.raises(ValueError, match="input dimension"):
        UniCR(None, noise=noises.Gaussian(SIGMA)).radius_for(0.9)
    with pytest.raises(ValueError, match="exceed 1"):
        certifier.radius_for(0.9, 0.2)


class _SteppedGap:
    """A boundary whose K jumps from +0.3 to −0.3 at λ = 1: no λ gets |K| below 0.3."""

    def gap(self, direction, scale, p_a, p_b):
        return 0.3 if scale < 1.0 else -0.3


def test_unreachable_tolerance_reports_the_best_gap():
    with pytest.raises(UnreachableToleranceError, match=r"\|K\| = 0.3 .* exceeds the tolerance 0.02"):
        scale_to_boundary(_SteppedGap(), np.ones(2), 0.9, 0.1, tolerance=0.02)
    assert scale_to_boundary(_SteppedGap(), np.ones(2), 0.9, 0.1, tolerance=0.5).scale == pytest.approx(
        1.0, rel=1e-4
    )
