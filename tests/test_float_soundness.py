"""Floating-point soundness: a classifier reading the float grid breaks cohen's float sampling, not the sound one.

The probe classifier says class 1 when some coordinate has a bit below ``ulp(1/4)`` (it is not a multiple of
``eps/4``), class 0 otherwise. At ``x₀ = (128/255, …)`` every float sample ``fl(x₀ + n)`` is such a multiple
(``|u| ≥ 1/4`` has no finer bits, and a smaller ``u`` is an exact difference of two multiples), so float sampling
certifies class 0 at radius ~1.906 — yet at ``0``, 1.506 away, the samples ``fl(0 + n) = n`` keep their fine bits
and the smoothed class is 1. With ``sampling="sound"`` the classifier sees ``fl(m/255)`` for integers ``m``, its
smoothed probabilities are computed exactly here from the noise's law (independently of the Monte Carlo code), and
the certificate is checked against the exact worst case over every grid point of the certified ball.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.certifiers import get_certifier
from manifoldcert.noises import GridGaussian, from_config
from manifoldcert.noises.grid_gaussian import RANDOM_BITS

DIM, SIGMA, LEVELS = 9, 0.5, 255
CENTRE = 128  # x₀ = CENTRE/255 in every coordinate; 0 is 3·128/255 = 1.506 away


class GridReader(nn.Module):
    """Class 1 iff some coordinate is not a multiple of ``eps/4`` (= ulp(1/4)) in the input's dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer(
            "marker", torch.zeros((), dtype=dtype)
        )  # the estimator feeds inputs in this dtype

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        fine = (torch.fmod(u.flatten(1), torch.finfo(u.dtype).eps / 4) != 0).any(1)
        return torch.stack([(~fine).to(u.dtype), fine.to(u.dtype)], 1) * 10


def exact_class0_per_value(noise: GridGaussian, dtype: torch.dtype) -> np.ndarray:
    """``q(a) = P(coordinate a/L + J/L, clipped, reads as class 0)`` for every grid value ``a``, from the law of
    ``J`` the thresholds define (the classifier's own predicate applied to every value ``m`` a sample can take)."""
    low, high = -noise.clip_margin * LEVELS, (1 + noise.clip_margin) * LEVELS
    values = torch.arange(low, high + 1)
    coarse = (torch.fmod(values.to(dtype) / LEVELS, torch.finfo(dtype).eps / 4) == 0).numpy()
    probabilities = noise.probabilities().numpy()
    offsets = np.arange(-noise.half_width, noise.half_width + 1)
    reached = np.clip(np.arange(LEVELS + 1)[:, None] + offsets[None, :], low, high) - low
    return (probabilities[None, :] * coarse[reached]).sum(1)


def worst_class0_in_ball(q: np.ndarray, radius: float) -> float:
    """The largest exact ``P(class 0) = Π q(a_i)`` over grid points within l2 ``radius`` of x₀ (dynamic programme
    over the squared distance in grid units: exact, every grid point of the ball is covered)."""
    budget = int(math.floor((radius * LEVELS) ** 2))
    log_q = np.log(np.maximum(q, 1e-300))
    cost = (np.arange(LEVELS + 1) - CENTRE) ** 2
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    for _ in range(DIM):
        new = np.full(budget + 1, -np.inf)
        for a in np.flatnonzero(cost <= budget):
            np.maximum(new[cost[a] :], best[: budget + 1 - cost[a]] + log_q[a], out=new[cost[a] :])
        best = new
    return float(np.exp(best.max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_sampling_is_fooled_by_a_classifier_that_reads_the_float_grid(dtype):
    """The defect the sound mode exists for: ``guaranteed`` radius 1.906 while the class flips 1.506 away."""
    model = GridReader(dtype)
    cohen = get_certifier("cohen", model, sigma=SIGMA, batch_size=10_000)
    certificate = cohen.certify(torch.full((DIM,), CENTRE / LEVELS, dtype=dtype), n=100_000)
    assert certificate.prediction == 0 and certificate.guaranteed
    assert certificate.radius["l2"] == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 100_000)), rel=1e-9)
    assert certificate.radius["l2"] > 1.9
    assert cohen.predict(torch.zeros(DIM, dtype=dtype), n=10_000) == 1  # at distance 1.506 < 1.906


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sound_sampling_certificate_holds_against_the_exact_smoothed_classifier(dtype):
    model = GridReader(dtype)
    cohen = get_certifier("cohen", model, sigma=SIGMA, sampling="sound", levels=LEVELS, batch_size=10_000)
    certificate = cohen.certify(torch.full((DIM,), CENTRE / LEVELS, dtype=dtype), n=100_000)
    q = exact_class0_per_value(cohen.noise, dtype)
    p_class1 = 1.0 - q[CENTRE] ** DIM
    # The probe's sound certificate: class 1 (0.673 in float32, 0.368 in float64, true flips at 1.316 / 0.882).
    assert certificate.prediction == 1 and certificate.guaranteed
    assert certificate.p_lower <= p_class1
    assert certificate.radius["l2"] > 0.3
    # No grid point of the certified ball is classified otherwise by the exact smoothed classifier ...
    assert worst_class0_in_ball(q, certificate.radius["l2"]) < 0.5
    # ... while the radius is not vacuous: the exact smoothed class does flip within 2.5× the radius.
    assert worst_class0_in_ball(q, 2.5 * certificate.radius["l2"]) >= 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sound_smoothed_probabilities_are_gaussian_lipschitz_between_grid_points(dtype):
    """Cohen et al.'s theorem in its Lipschitz form, ``Φ⁻¹(p(x')) ≥ Φ⁻¹(p(x)) − ‖x − x'‖/σ``, holds exactly for the
    sound sampler's smoothed probabilities (random pairs of grid points, both classes)."""
    q = exact_class0_per_value(GridGaussian(SIGMA, levels=LEVELS), dtype)
    generator = np.random.default_rng(0)
    a = generator.integers(0, LEVELS + 1, (2000, DIM))
    b = np.clip(a + generator.integers(-60, 61, (2000, DIM)), 0, LEVELS)
    p0_a, p0_b = np.prod(q[a], 1), np.prod(q[b], 1)
    distance = np.linalg.norm((a - b) / LEVELS, axis=1)
    for p_a, p_b in ((p0_a, p0_b), (1 - p0_a, 1 - p0_b)):
        assert np.all(norm.ppf(p_b) >= norm.ppf(p_a) - distance / SIGMA - 1e-7)


def test_law_is_the_rounded_gaussian_within_the_stated_total_variation():
    noise = GridGaussian(SIGMA, levels=LEVELS)
    j = np.arange(-noise.half_width, noise.half_width + 1)
    scale = LEVELS * SIGMA
    exact = norm.cdf((j + 0.5) / scale) - norm.cdf((j - 0.5) / scale)
    exact[0], exact[-1] = norm.cdf((j[0] + 0.5) / scale), norm.sf((j[-1] - 0.5) / scale)  # folded tails
    sampled = noise.probabilities().numpy()
    assert sampled.sum() == 1.0
    assert np.abs(sampled - exact).max() < 1e-14  # scipy's double precision is the limit here
    assert 0.0 < noise.sampling_error(1) < 1e-15 and noise.sampling_error(3072) < 1e-11
    assert noise.sampling_error(10) == pytest.approx(10 * noise.sampling_error(1))


def test_thresholds_are_integers_symmetric_like_the_normal_cdf():
    """``Φ(−t) = 1 − Φ(t)``: mirrored thresholds add up to 2⁶² up to the last unit of the rounding."""
    table = GridGaussian(0.37, levels=16)._table
    assert table.dtype == torch.long and bool((table.diff() >= 0).all())
    sums = table + table.flip(0)
    assert int((sums - 2**RANDOM_BITS).abs().max()) <= 1


@pytest.mark.parametrize("sigma", [0.12, 0.5, 1.0])
def test_bucket_lookup_gives_the_index_of_a_full_binary_search(sigma):
    noise = GridGaussian(sigma, levels=LEVELS)
    table, _ = noise._lookup(torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2**RANDOM_BITS, (200_000,), generator=generator)
    edges = torch.cat([table, table - 1, table + 1]).clamp(
        0, 2**RANDOM_BITS - 1
    )  # every threshold's neighbours
    for draws in (bits, edges):
        expected = torch.searchsorted(table, draws, right=True) - noise.half_width
        assert torch.equal(noise.locate(draws), expected)


def test_sampler_draws_the_stated_law():
    noise = GridGaussian(0.3, levels=16)
    generator = torch.Generator().manual_seed(0)
    offsets = (noise.sample(400_000, (1,), generator=generator) * 16).round().long().flatten()
    counts = torch.bincount(offsets + noise.half_width, minlength=noise.num_values).double()
    expected = noise.probabilities() * offsets.numel()
    used = expected > 50
    chi2 = float(((counts[used] - expected[used]) ** 2 / expected[used]).sum())
    assert chi2 < 3 * int(used.sum())  # ~ degrees of freedom; a wrong σ or an off-by-one bin gives thousands


def test_perturb_is_integer_arithmetic_on_the_grid_then_one_division():
    noise = GridGaussian(0.25, levels=LEVELS)
    x = torch.tensor([0.0, 1 / LEVELS, 128 / LEVELS, 1.0])
    generator = torch.Generator().manual_seed(3)
    noisy = noise.perturb(x.unsqueeze(0).expand(50_000, 4), generator=generator)
    steps = noisy.double() * LEVELS
    assert torch.equal(noisy, (steps.round().float() / LEVELS))  # exactly fl(m / L) for integers m
    assert float(noisy.min()) >= -noise.clip_margin and float(noisy.max()) <= 1 + noise.clip_margin
    assert (noisy - x).std(0).sub(0.25).abs().max() < 0.01


def test_inputs_off_the_grid_and_bad_settings_are_refused():
    noise = GridGaussian(0.25, levels=LEVELS)
    with pytest.raises(ValueError, match="multiples of 1/255"):
        noise.perturb(torch.full((2, 3), 0.3337))
    with pytest.raises(ValueError, match="multiples of 1/255"):
        noise.perturb(torch.full((2, 3), 1.5))
    with pytest.raises(NotImplementedError, match="no log_prob"):
        noise.log_prob(torch.zeros(1, 3))
    for bad in ({"levels": 0}, {"levels": 2.5}, {"clip_margin": 0}):
        with pytest.raises(ValueError):
            GridGaussian(0.25, **bad)
    with pytest.raises(ValueError, match="sigma"):
        GridGaussian(0.0)
    with pytest.raises(ValueError, match="sampling"):
        get_certifier("cohen", None, sigma=0.25, sampling="exact")
    with pytest.raises(ValueError, match="input_range"):
        get_certifier("cohen", None, sigma=0.25, sampling="sound", input_range=None)
    model = GridReader(torch.float32)
    cohen = get_certifier("cohen", model, sigma=0.25, sampling="sound", levels=16, num_classes=2)
    with pytest.raises(ValueError, match="multiples of 1/16"):
        cohen.certify(torch.full((DIM,), 0.5 + 1 / 64), n=100, n0=10)


class AlwaysClassOne(nn.Module):
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 1.0]]).expand(u.shape[0], 2)


def test_certificate_bound_is_lowered_by_the_sampling_error():
    """``p_lower`` is the Clopper–Pearson bound of the sampled law minus its total variation to the exact one."""
    cohen = get_certifier("cohen", AlwaysClassOne(), sigma=SIGMA, sampling="sound", batch_size=5000)
    certificate = cohen.certify(torch.full((DIM,), CENTRE / LEVELS), n=5000, n0=100)
    error = cohen.noise.sampling_error(DIM)
    assert error > 0
    assert certificate.p_lower == clopper_pearson_lower(5000, 5000, 0.001) - error
    assert certificate.params["noise"] == "grid-gaussian" and certificate.params["levels"] == LEVELS
    assert from_config(cohen.noise.config()).config() == cohen.noise.config()
    float_cohen = get_certifier("cohen", AlwaysClassOne(), sigma=SIGMA, batch_size=5000)
    assert float_cohen.certify(torch.full((DIM,), 0.5), n=5000, n0=100).p_lower == clopper_pearson_lower(
        5000, 5000, 0.001
    )


def test_the_documented_example_runs():
    """docs/methods/closed-form.md's sound-sampling example, as written: it continues the page's opening example
    (its trained model and data), so the page's blocks run in order in one namespace up to it."""
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "methods" / "closed-form.md"
    text = page.read_text()
    sound_at = text.index("## Floating-point-sound sampling")
    namespace: dict = {}
    ran_sound = False
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(match.group(1), "closed-form.md", "exec"), namespace)
        if match.start() > sound_at:
            ran_sound = True
            break
    assert ran_sound
    assert namespace["c"].params["noise"] == "grid-gaussian" and namespace["c"].params["levels"] == 16
