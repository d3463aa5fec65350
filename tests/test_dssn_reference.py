"""DSSN interop with the reference code (Levine & Feizi 2021): numpy offsets, explicit offsets, grid-inclusive radius.

The grid-inclusive certificate ``‖δ‖₁ ≤ ⌊(c_A − c_B − [idx_B < idx_A])/2⌋ / q`` is checked exhaustively on a tiny
grid (d = 3, q = 4), as the strict one is in tests/test_splitting.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.certifiers.dssn import grid_inclusive_steps
from manifoldcert.noises.splitting import split_centers
from tests.conftest import RandomFeatureClassifier

Q = 4
LAMBDAS = [0.25, 0.375, 0.5, 0.75, 1.25]  # 2λq = 2, 3, 4, 6, 10
GRID_STEPS = torch.tensor(list(itertools.product(range(Q + 1), repeat=3)))  # (125, 3) integer grid indices
GRID = [p.double() / Q for p in GRID_STEPS]
STEP_DISTANCES = (
    torch.cdist(GRID_STEPS.double(), GRID_STEPS.double(), p=1).round().long()
)  # l1, in grid steps


def _offset_options(kind: str, num_splits: int) -> dict:
    if kind == "explicit":
        return {"offsets": [(3 * i + 1) % num_splits for i in range(3)]}
    return {"offset_seed": 11, "offsets": kind}


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**32 - 1])
@pytest.mark.parametrize(
    ("lambda_", "levels", "dim"), [(0.5, 255, 3072), (0.8647058823529412, 255, 784), (1.25, 4, 3)]
)
def test_numpy_randomstate_offsets_equal_numpys_draw(seed, lambda_, levels, dim):
    noise = noises.DerandomizedSplittingNoise(
        lambda_=lambda_, levels=levels, offset_seed=seed, offsets="numpy-randomstate", dim=dim
    )
    expected = np.random.RandomState(seed).randint(noise.num_splits, size=dim)
    assert noise.num_splits == int(2 * lambda_ * levels + 1e-9)
    assert noise.offset_steps.dtype == torch.long and noise.offset_steps.shape == (dim,)
    np.testing.assert_array_equal(noise.offset_steps.numpy(), expected)
    certifier = get_certifier(
        "dssn", None, lambda_=lambda_, levels=levels, offset_seed=seed, offsets="numpy-randomstate"
    )
    np.testing.assert_array_equal(certifier.noise_for(torch.zeros(dim)).offset_steps.numpy(), expected)


@pytest.mark.parametrize("kind", ["numpy-randomstate", "explicit"])
@pytest.mark.parametrize("lambda_", [0.25, 0.375, 0.75, 1.25])
def test_support_is_the_reference_split_rule(kind, lambda_):
    """Noisy inputs = centres of the pieces cut at ((k + j_i) mod 2λq + ½)/q + 2λn (Eq. 17, 18, 27, 28)."""
    m = int(2 * lambda_ * Q)
    noise = noises.DerandomizedSplittingNoise(lambda_=lambda_, levels=Q, dim=3, **_offset_options(kind, m))
    splits = ((torch.arange(m).unsqueeze(1) + noise.offset_steps.unsqueeze(0)) % m + 0.5).double() / Q
    for x in GRID[::5]:
        expected = split_centers(x.unsqueeze(0).expand(m, 3), splits, 2 * lambda_)
        torch.testing.assert_close(noise.support(x, 0, m), expected, rtol=0, atol=1e-12)


def test_explicit_offsets_equal_to_the_seeded_ones_give_the_same_certificates():
    model = RandomFeatureClassifier(seed=4)
    seeded = get_certifier("dssn", model, lambda_=0.75, levels=Q, offset_seed=2)
    vector = seeded.noise_for(GRID[0]).offset_steps
    for offsets in (vector, vector.tolist(), vector.numpy()):
        explicit = get_certifier("dssn", model, lambda_=0.75, levels=Q, offsets=offsets)
        for x in GRID[::9]:
            a, b = seeded.certify(x), explicit.certify(x)
            assert (a.prediction, a.radius) == (b.prediction, b.radius)
        assert explicit.certify(GRID[0]).params["offsets"] == "explicit"


def test_bad_offsets_and_radius_options_are_refused():
    make = noises.DerandomizedSplittingNoise
    with pytest.raises(ValueError, match="entries but the input has"):
        make(lambda_=0.5, levels=Q, offsets=[0, 1], dim=3)
    with pytest.raises(ValueError, match=r"\{0, …, 3\}"):
        make(lambda_=0.5, levels=Q, offsets=[0, 1, 4], dim=3)
    with pytest.raises(ValueError, match=r"\{0, …, 3\}"):
        make(lambda_=0.5, levels=Q, offsets=torch.tensor([0, -1, 2]), dim=3)
    for not_integers in (torch.tensor([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]), [0, 1.5, 2], [0, True, 2]):
        with pytest.raises(ValueError, match="must hold integers"):
            make(lambda_=0.5, levels=Q, offsets=not_integers, dim=3)
    with pytest.raises(ValueError, match="not both"):
        make(lambda_=0.5, levels=Q, offset_seed=0, offsets=[0, 1, 2], dim=3)
    with pytest.raises(ValueError, match="offsets must be one of"):
        make(lambda_=0.5, levels=Q, offset_seed=0, offsets="numpy", dim=3)
    with pytest.raises(ValueError, match="RandomState takes seeds"):
        make(lambda_=0.5, levels=Q, offset_seed=-1, offsets="numpy-randomstate", dim=3)
    with pytest.raises(ValueError, match="offset_seed must be an integer"):
        make(lambda_=0.5, levels=Q, offsets="numpy-randomstate", dim=3)
    with pytest.raises(ValueError, match="radius must be one of"):
        get_certifier("dssn", None, lambda_=0.5, levels=Q, offset_seed=0, radius="inclusive")
    with pytest.raises(ValueError, match="needs offset_seed"):
        get_certifier("dssn", None, lambda_=0.5, levels=Q, offsets="numpy-randomstate")
    certifier = get_certifier("dssn", RandomFeatureClassifier(0), lambda_=0.5, levels=Q, offsets=[0, 1, 2])
    with pytest.raises(ValueError, match="explicit offsets vector has 3 entries"):
        certifier.certify(torch.zeros(4))


@pytest.mark.parametrize("kind", ["torch", "numpy-randomstate", "explicit"])
def test_config_round_trips(kind):
    noise = noises.DerandomizedSplittingNoise(lambda_=0.75, levels=Q, dim=3, **_offset_options(kind, 6))
    config = noise.config()
    assert ("offsets" in config) == (
        kind != "torch"
    )  # the default stays out: older checkpoints read the same
    rebuilt = noises.from_config(config)
    assert rebuilt.offset_convention == noise.offset_convention and rebuilt.config() == config
    assert torch.equal(rebuilt.offset_steps, noise.offset_steps)


def _exact_counts(certifier, x):
    return certifier.require_estimator().exact_class_counts(x, certifier.noise_for(x))


@pytest.mark.parametrize("kind", ["numpy-randomstate", "explicit"])
@pytest.mark.parametrize("lambda_", LAMBDAS, ids=str)
def test_one_grid_step_changes_the_noisy_input_for_exactly_one_split(kind, lambda_):
    """The lemma behind the grid-inclusive radius: x → x ± e_i/q changes x̃ for exactly one of the 2λq splits."""
    m = int(2 * lambda_ * Q)
    noise = noises.DerandomizedSplittingNoise(lambda_=lambda_, levels=Q, dim=3, **_offset_options(kind, m))
    supports = torch.stack([noise.support(x, 0, m) for x in GRID])  # (125, m, 3)
    neighbours = (STEP_DISTANCES == 1).nonzero()
    changed = (supports[neighbours[:, 0]] != supports[neighbours[:, 1]]).any(2).sum(1)
    assert bool((changed == 1).all())


@pytest.mark.parametrize("kind", ["numpy-randomstate", "explicit"])
@pytest.mark.parametrize("lambda_", LAMBDAS, ids=str)
def test_grid_inclusive_certificates_hold_exhaustively(kind, lambda_):
    """Every grid point at l1 distance ≤ R (inclusive) keeps the prediction; counts are 1-Lipschitz per grid step."""
    model = RandomFeatureClassifier(seed=2)
    m = int(2 * lambda_ * Q)
    options = {"lambda_": lambda_, "levels": Q, **_offset_options(kind, m)}
    inclusive = get_certifier("dssn", model, radius="grid-inclusive", **options)
    strict = get_certifier("dssn", model, **options)
    counts = torch.stack([_exact_counts(inclusive, x) for x in GRID]).long()  # (125, 3), out of 2λq
    assert bool((counts.sum(1) == m).all())
    predictions = counts.argmax(1)  # first maximum: lowest index wins ties
    count_gaps = (counts.unsqueeze(1) - counts.unsqueeze(0)).abs().amax(2)
    assert bool((count_gaps <= STEP_DISTANCES).all())  # each l1 grid step moves each count by at most 1 ...
    assert bool((count_gaps[STEP_DISTANCES == 1] == 1).any())  # ... and 1 is attained
    certified_beyond_x = 0
    for i, x in enumerate(GRID):
        cert = inclusive.certify(x)
        assert cert.prediction == int(predictions[i]) and cert.exact and cert.p_lower is None
        assert cert.params["radius_rule"] == "grid-inclusive" and cert.params["offsets"] == kind
        steps = round(cert.radius["l1"] * Q)
        assert steps == pytest.approx(cert.radius["l1"] * Q, abs=1e-9)  # on the 1/q grid
        inside = STEP_DISTANCES[i] <= steps
        assert bool((predictions[inside] == cert.prediction).all()), f"certificate at {x.tolist()} violated"
        certified_beyond_x += int(inside.sum()) - 1
        # never fewer grid points than the strict certificate
        strict_inside = STEP_DISTANCES[i].double() / Q < strict.certify(x).radius["l1"] - 1e-12
        assert bool((strict_inside <= inside).all())
    if lambda_ > 0.25:  # with 2λq = 2 the count gap is at most 2, i.e. 1 step that needs c_B = 0 ...
        assert certified_beyond_x > 0  # ... otherwise the check is not vacuous


def test_grid_inclusive_radius_matches_the_reference_formula_and_beats_strict_by_one_step_when_expected():
    """Over all counts: steps = ⌊(c_A − c_B − t)/2⌋ ≥ the strict rule's largest certified step, +1 iff g even, t = 0."""
    for m in range(1, 21):
        for c_a in range(m + 1):
            for c_b in range(m - c_a + 1):
                if c_b > c_a:
                    continue
                for below in (False, True):
                    if c_a == c_b and below:
                        continue  # impossible: a lower-index class with c_A votes would be the prediction
                    steps = grid_inclusive_steps(c_a, c_b, below)
                    gap = c_a - c_b
                    assert steps == (gap - int(below)) // 2 >= 0
                    strict_steps = (
                        -(-gap // 2) - 1 if gap > 0 else -1
                    )  # largest r with r/q < g/(2q); -1: none
                    assert steps >= strict_steps
                    assert (steps == strict_steps + 1) == (
                        gap % 2 == 0 and (gap > 0 or not below) and not below
                    )


def test_grid_inclusive_is_one_step_larger_on_some_real_inputs_and_radius_for_agrees():
    model = RandomFeatureClassifier(seed=2)
    options = {"lambda_": 1.25, "levels": Q, "offset_seed": 11, "offsets": "numpy-randomstate"}
    inclusive = get_certifier("dssn", model, radius="grid-inclusive", **options)
    strict = get_certifier("dssn", model, **options)
    larger = same = 0
    for x in GRID:
        a, b = inclusive.certify(x), strict.certify(x)
        assert a.prediction == b.prediction
        steps = round(a.radius["l1"] * Q)
        strict_steps = int(np.ceil(b.radius["l1"] * Q - 1e-9)) - 1 if b.radius["l1"] > 0 else -1
        assert steps in (strict_steps, strict_steps + 1) or (steps == 0 and strict_steps == -1)
        larger += steps == strict_steps + 1 and strict_steps >= 0
        same += steps == strict_steps
        counts = _exact_counts(inclusive, x).long()
        top = int(counts.argmax())
        runner_up = int(torch.cat([counts[:top], counts[top + 1 :]]).max())
        below = bool((counts[:top] == runner_up).any())
        p_a, p_b = int(counts[top]) / 10, runner_up / 10
        assert inclusive.radius_for(p_a, p_b, runner_up_below=below) == pytest.approx(a.radius["l1"])
        assert inclusive.radius_for(p_a, p_b) <= a.radius["l1"] + 1e-12  # the tie-safe default
    assert larger > 0 and same > 0
