"""Splitting noise, SSN and DSSN: Eq. 7 / 27–28, exactness of DSSN's scores, Corollary 1 by exhaustive check."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.noises.splitting import split_centers
from tests.conftest import RandomFeatureClassifier


def test_general_formula_reduces_to_eq7_for_lambda_at_least_half():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(10_000, generator=generator, dtype=torch.float64)
    for lambda_ in (0.5, 0.8, 2.0):
        s = torch.rand(10_000, generator=generator, dtype=torch.float64) * 2 * lambda_
        eq7 = (torch.clamp(s, max=1.0) + (x > s).double()) / 2
        torch.testing.assert_close(split_centers(x, s, 2 * lambda_), eq7)


def test_general_formula_for_small_lambda_matches_the_pieces():
    """λ = 0.2: cuts at s, s + 0.4, s + 0.8; each x maps to the centre of its piece (Figure 5)."""
    s = torch.tensor(0.1, dtype=torch.float64)
    cuts = [0.0, 0.1, 0.5, 0.9, 1.0]
    for x in np.linspace(0.0, 1.0, 41):
        piece = next(i for i in range(4) if x <= cuts[i + 1] and (i == 0 or x > cuts[i]))
        expected = (cuts[piece] + cuts[piece + 1]) / 2
        got = float(split_centers(torch.tensor(x, dtype=torch.float64), s, 0.4))
        assert got == pytest.approx(expected), x


def _dssn_exact_reference(x_steps, lambda_, q, offsets, f):
    """Independent exact computation (fractions) of DSSN's smoothed scores from Eq. 17, 18, 27, 28."""
    two_lambda = Fraction(2) * lambda_
    m = int(two_lambda * q)
    votes = {}
    for k in range(m):  # s_base takes the 2λq half-steps of [0, 2λ)
        s_base = Fraction(k, q) + Fraction(1, 2 * q)
        noisy = []
        for a, j in zip(x_steps, offsets, strict=True):
            s = (s_base + Fraction(int(j), q)) % two_lambda
            x = Fraction(a, q)
            c = math.ceil((x - s) / two_lambda)
            upper = min(two_lambda * c + s, Fraction(1))
            lower = max(two_lambda * (c - 1) + s, Fraction(0))
            noisy.append((upper + lower) / 2)
        label = f(tuple(noisy))
        votes[label] = votes.get(label, 0) + 1
    return {label: Fraction(count, m) for label, count in votes.items()}


class _LookupClassifier(RandomFeatureClassifier):
    """The random-feature classifier, also read at exact rational points."""

    def label(self, point: tuple[Fraction, ...]) -> int:
        return int(self(torch.tensor([[float(v) for v in point]], dtype=torch.float64)).argmax())


Q = 4
LAMBDAS = [
    Fraction(1, 4),
    Fraction(3, 8),
    Fraction(1, 2),
    Fraction(3, 4),
    Fraction(5, 4),
]  # 2λq = 2, 3, 4, 6, 10
GRID = [torch.tensor(p, dtype=torch.float64) / Q for p in itertools.product(range(Q + 1), repeat=3)]


@pytest.mark.parametrize("lambda_", LAMBDAS, ids=str)
def test_dssn_scores_equal_the_exact_expectation(lambda_):
    model = _LookupClassifier(seed=1)
    certifier = get_certifier("dssn", model, lambda_=float(lambda_), levels=Q, offset_seed=3, batch_size=7)
    assert certifier.lambda_ == float(lambda_)
    offsets = certifier.noise_for(GRID[0]).offset_steps
    for x in GRID[::7]:
        steps = [int(round(float(v) * Q)) for v in x]
        reference = _dssn_exact_reference(steps, lambda_, Q, offsets, model.label)
        scores = certifier.scores(x)
        expected = [float(reference.get(c, 0)) for c in range(3)]
        np.testing.assert_allclose(scores.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("lambda_", LAMBDAS, ids=str)
def test_corollary1_lipschitz_and_no_certificate_is_violated(lambda_):
    """All pairs of grid points: |p_c(x) − p_c(x')| ≤ ‖x − x'‖₁/(2λ); no x' inside a certificate changes class."""
    model = _LookupClassifier(seed=2)
    certifier = get_certifier("dssn", model, lambda_=float(lambda_), levels=Q, offset_seed=5)
    points = torch.stack(GRID)
    scores = torch.stack([certifier.scores(x) for x in GRID])  # (125, 3)
    predictions = scores.argmax(1)
    distances = torch.cdist(points, points, p=1)
    score_gaps = (scores.unsqueeze(1) - scores.unsqueeze(0)).abs().amax(2)
    assert bool((score_gaps <= distances / (2 * float(lambda_)) + 1e-12).all())
    certified = 0
    for i, x in enumerate(GRID):
        cert = certifier.certify(x)
        assert cert.exact and cert.p_lower is None and cert.prediction == int(predictions[i])
        inside = distances[i] < cert.radius["l1"] - 1e-12
        assert bool((predictions[inside] == cert.prediction).all()), f"certificate at {x.tolist()} violated"
        certified += int((inside & (distances[i] > 0)).sum())
    if lambda_ > Fraction(
        1, 4
    ):  # with λ = 1/4 the radius never exceeds one grid step: nothing else is inside
        assert certified > 0  # the check is not vacuous


def test_offset_vector_gives_uniform_marginals():
    """Eq. 13: over s_base, each s_i takes each of its 2λq half-step values exactly once."""
    noise = noises.DerandomizedSplittingNoise(lambda_=0.75, levels=8, offset_seed=1, dim=20)
    m = noise.num_splits
    splits = torch.stack(
        [
            noise.sample(1, (20,), generator=torch.Generator().manual_seed(k), dtype=torch.float64)[0]
            for k in range(400)
        ]
    )
    expected = (2 * torch.arange(m, dtype=torch.float64) + 1) / 16
    for i in range(20):
        assert set(np.round(splits[:, i].numpy(), 9)) <= set(np.round(expected.numpy(), 9))
    support = torch.stack([noise.support(torch.zeros(20), k, k + 1)[0] for k in range(m)])
    assert support.shape == (m, 20)


def test_lambda_is_rounded_down_to_the_grid():
    certifier = get_certifier("dssn", None, sigma=0.5, levels=255, offset_seed=0)
    assert certifier.lambda_ == math.floor(2 * 0.5 * math.sqrt(3) * 255) / 510
    assert certifier.radius_for(0.9, 0.05) == pytest.approx(certifier.lambda_ * 0.85)


def test_ssn_perturb_and_radius():
    noise = noises.SplittingNoise(lambda_=0.75)
    x = torch.rand(5000, 4, generator=torch.Generator().manual_seed(0))
    noisy = noise.perturb(x, generator=torch.Generator().manual_seed(1))
    # λ ≥ 1/2: every noisy value is s/2 or (1 + s)/2 with s ∈ [0, 1.5], i.e. in [0, 1], and is 1/2 when s ≥ 1.
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    assert float((noisy == 0.5).double().mean()) == pytest.approx(0.5 / 1.5, abs=0.02)
    certifier = get_certifier("ssn", None, lambda_=0.75)
    assert certifier.radius_for(0.8) == pytest.approx(2 * 0.75 * 0.3)
    assert certifier.radius_for(0.8, 0.1) == pytest.approx(0.75 * 0.7)
    assert get_certifier("ssn", None, sigma=1.0).noise.lambda_ == pytest.approx(math.sqrt(3))


def test_ssn_certify_on_a_model():
    model = _LookupClassifier(seed=3)
    cert = get_certifier("ssn", model, lambda_=0.5).certify(torch.full((3,), 0.5, dtype=torch.float64), n=500)
    assert cert.method == "ssn" and not cert.exact and cert.params["noise"] == "splitting"


def test_bad_input_is_refused():
    model = _LookupClassifier(seed=4)
    certifier = get_certifier("dssn", model, lambda_=0.5, levels=Q, offset_seed=0)
    with pytest.raises(ValueError, match="q = 4"):
        certifier.certify(torch.tensor([0.1, 0.5, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        certifier.certify(torch.tensor([1.25, 0.5, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="offset_seed"):
        get_certifier("dssn", model, lambda_=0.5, levels=Q)
    with pytest.raises(ValueError, match="lambda_"):
        get_certifier("dssn", model, lambda_=0.0, levels=Q, offset_seed=0)
    with pytest.raises(ValueError, match="levels"):
        get_certifier("dssn", model, lambda_=0.5, levels=0, offset_seed=0)
    with pytest.raises(ValueError, match="no split position"):
        get_certifier("dssn", model, lambda_=0.05, levels=Q, offset_seed=0)
    with pytest.raises(ValueError, match="lambda_"):
        noises.SplittingNoise(lambda_=-1.0)
    with pytest.raises(NotImplementedError, match="not additive"):
        noises.SplittingNoise(0.5).log_prob(torch.zeros(1, 3))
    noise = noises.DerandomizedSplittingNoise(lambda_=0.5, levels=Q, offset_seed=0, dim=5)
    with pytest.raises(ValueError, match="5 entries"):
        noise.perturb(torch.zeros(2, 3))


def test_quantize_puts_inputs_on_the_grid_dssn_accepts():
    from manifoldcert.certifiers.dssn import quantize

    x = torch.tensor([0.1, 0.5, 0.26, 1.2, -0.1], dtype=torch.float64)
    q = quantize(x, Q)
    assert q.tolist() == [0.0, 0.5, 0.25, 1.0, 0.0]
    noise = noises.DerandomizedSplittingNoise(lambda_=0.5, levels=Q, offset_seed=0, dim=5)
    assert noise.check_quantized(q.unsqueeze(0)).tolist() == [[0, 2, 1, 4, 0]]
