"""Sequential certification and the cross-input scheduler: soundness by simulation on classifiers whose smoothed
probabilities are known exactly, equivalence with fixed-n certification, and bad input."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from scipy import stats
from torch import nn

from manifoldcert.certifiers import get_certifier
from manifoldcert.confidence_sequences import BetaMixture, ScheduledClopperPearson
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.runs import certify_dataset
from manifoldcert.sequential import CertificationStream, SequentialPlan, needed_max_n


class FirstCoordinateThreshold(nn.Module):
    """Class 1 when ``x_0 > 0``: under i.i.d. noise the smoothed p_A is the noise's CDF at ``x_0``, and the true
    robust radius at ``x`` is ``x_0`` in every l_p norm (the boundary is the hyperplane ``x_0 = 0``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1)[:, 0]
        return torch.stack([-m, m], dim=1)


def _violations(certifier, x, true_radius: float, norm: str, trials: int, **options) -> tuple[int, list]:
    estimator = certifier.require_estimator()
    generators = [estimator.generator(10_000 + t) for t in range(trials)]
    certificates = certifier.certify_batch(
        [x] * trials, generators=generators, progress=False, max_active=512, **options
    )
    return sum(c.radius[norm] > true_radius for c in certificates), certificates


@pytest.mark.parametrize("trials", [500, pytest.param(3000, marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("method", "norm", "noise_cdf"),
    [
        ("cohen", "l2", lambda x0, s: stats.norm.cdf(x0 / s)),
        ("laplace", "l1", lambda x0, s: 1 - 0.5 * math.exp(-x0 / (s / math.sqrt(2)))),
        ("uniform", "l1", lambda x0, s: (s * math.sqrt(3) + x0) / (2 * s * math.sqrt(3))),
    ],
)
def test_sequential_radii_exceed_the_true_radius_at_most_alpha_of_the_time(method, norm, noise_cdf, trials):
    """500 (slow: 3,000) trials at α = 0.05, the input placed so that the largest requested radius lies just above
    the true one (the hardest case: streams run long and hover at the threshold); violations ≤ α within slack."""
    sigma, x0, alpha = 0.5, 0.3, 0.05
    certifier = get_certifier(method, FirstCoordinateThreshold(), sigma=sigma, batch_size=20_000)
    x = torch.tensor([x0, 0.0, 0.0])
    p_true = noise_cdf(x0, sigma)
    assert certifier.radius_for(p_true, dim=3, norm=norm) == pytest.approx(x0, rel=1e-9)
    violations, certificates = _violations(
        certifier, x, x0, norm, trials, n=3000, alpha=alpha, sequential=True, radii=(0.1, 1.02 * x0)
    )
    assert violations <= alpha * trials + 3 * math.sqrt(alpha * trials)
    assert all(c.n <= 3000 and c.params["stop"] in ("certified", "settled", "budget") for c in certificates)


@pytest.mark.parametrize("trials", [500, pytest.param(3000, marks=pytest.mark.slow)])
def test_the_scheduled_sequence_is_sound_too(linear_classifier, trials):
    sigma, alpha = 0.5, 0.05
    certifier = get_certifier("cohen", linear_classifier, sigma=sigma, batch_size=20_000)
    x = torch.zeros(10, dtype=torch.float64)
    x[0] = 0.5
    true_radius = float(linear_classifier.margin(x.unsqueeze(0))) / float(linear_classifier.weight.norm())
    violations, _ = _violations(
        certifier,
        x,
        true_radius,
        "l2",
        trials,
        n=3000,
        alpha=alpha,
        sequential=ScheduledClopperPearson(alpha, first=64, growth=1.5),
        target_radius=true_radius * 1.02,
    )
    assert violations <= alpha * trials + 3 * math.sqrt(alpha * trials)


def test_a_clear_input_stops_early_and_a_hopeless_one_too(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25)
    far = torch.zeros(10, dtype=torch.float64)
    far[0] = 5.0
    certificate = certifier.certify(far, n=100_000, sequential=True, radii=(0.25, 0.5))
    assert certificate.params["stop"] == "certified" and certificate.n < 1000
    assert certificate.radius["l2"] >= 0.5 and certificate.n0 == 100
    near = torch.zeros(10, dtype=torch.float64)
    near[0] = -0.28  # the margin is about 0: p_A ≈ 1/2
    hopeless = certifier.certify(near, n=100_000, sequential=True, radii=(0.25, 0.5))
    assert hopeless.params["stop"] == "settled" and hopeless.n < 5000


def test_one_stream_through_the_scheduler_draws_what_class_counts_draws():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    estimator = MonteCarloEstimator(model, batch_size=300)
    x = torch.rand(6)
    noise = get_certifier("cohen", model, sigma=0.4).noise
    expected = estimator.class_counts(x, noise, 1000, generator=estimator.generator(5))
    stream = CertificationStream(x, noise, estimator.generator(5), n0=1, n=1000, alpha=0.01, top_class=0)
    assert list(estimator.run_jobs([stream])) == [stream]
    assert torch.equal(stream.counts, expected)


class RecordingModel(nn.Module):
    """A small classifier that records the size of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 3)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("sequential", [None, True])
def test_a_batch_gives_each_input_its_own_certificate_in_bounded_batches(sequential):
    """With per-input generators, certify_batch (the scheduler, many inputs per forward batch) returns exactly
    the certificates of one certify call per input; no forward batch exceeds batch_size."""
    torch.manual_seed(0)
    model = RecordingModel()
    with torch.no_grad():
        model.linear.weight.mul_(8)
    certifier = get_certifier("cohen", model, sigma=0.25, batch_size=500)
    xs = [torch.rand(5) for _ in range(12)]
    options = {"n0": 50, "n": 4000, "alpha": 0.01}
    if sequential:
        options.update(sequential=True, radii=(0.1, 0.3))
    estimator = certifier.require_estimator()
    batch = certifier.certify_batch(
        xs, generators=[estimator.generator(i) for i in range(12)], progress=False, max_active=5, **options
    )
    assert max(model.sizes) <= 500
    shared = sum(1 for size in model.sizes if size > 0)
    one_by_one = [certifier.certify(x, generator=estimator.generator(i), **options) for i, x in enumerate(xs)]
    assert len(model.sizes) - shared < len(model.sizes)
    for a, b in zip(batch, one_by_one, strict=True):
        assert (a.prediction, a.n, a.p_lower, a.radius) == (b.prediction, b.n, b.p_lower, b.radius)


def test_the_scheduler_packs_short_streams_into_shared_batches():
    model = RecordingModel()
    certifier = get_certifier("cohen", model, sigma=0.25, batch_size=1000)
    certifier.certify_batch([torch.rand(5) for _ in range(20)], n0=100, n=100, progress=False)
    assert len(model.sizes) == 4 and max(model.sizes) == 1000  # 40 requests of 100 in 4 full batches


def test_evaluation_mode_bounds_the_given_label(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25)
    x = torch.zeros(10, dtype=torch.float64)
    x[0] = 3.0
    right = certifier.certify(x, n=2000, label=1)
    wrong = certifier.certify(x, n=2000, label=0)
    assert right.prediction == 1 and right.n0 == 0 and right.radius["l2"] > 0
    assert wrong.abstained and wrong.radius["l2"] == 0.0


def test_data_dependent_and_input_dependent_certifiers_stream_their_final_stage(linear_classifier):
    x = torch.zeros(10, dtype=torch.float64)
    x[0] = 2.0
    ddrs = get_certifier(
        "ddrs", linear_classifier, input_range=None, sigma=0.25, iterations=3, opt_samples=64
    )
    fixed = ddrs.certify(x, n=20_000)
    streamed = ddrs.certify(x, n=20_000, sequential=True, radii=(0.25, 0.5))
    assert streamed.params["stop"] == "certified" and streamed.n < fixed.n == 20_000
    assert streamed.radius["l2"] >= 0.5
    inputs = get_certifier("input-dependent", linear_classifier, input_range=None, sigma=0.25, offset=1.0)
    certificate = inputs.certify(x.abs(), n=20_000, sequential=True, target_radius=0.2)
    assert certificate.params["stop"] in ("certified", "settled") and certificate.n < 20_000


def test_the_runner_streams_rows_with_the_votes_they_used(tmp_path, linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, input_range=None, sigma=0.25)
    inputs = torch.zeros(6, 10, dtype=torch.float64)
    inputs[:, 0] = torch.linspace(-1, 3, 6)
    labels = [int(v > -0.3) for v in inputs[:, 0]]
    path = certify_dataset(
        certifier,
        inputs,
        labels,
        tmp_path / "seq.tsv",
        progress=False,
        n=5000,
        sequential=True,
        radii=(0.5,),
        evaluation=True,
    )
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert sorted(int(r["idx"]) for r in rows) == list(range(6))
    assert all(int(r["n0"]) == 0 and 0 < int(r["n"]) <= 5000 for r in rows)


def test_bad_sequential_input_gets_a_clear_error(linear_classifier):
    certifier = get_certifier("cohen", linear_classifier, sigma=0.25)
    x = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cannot be certified with max_n=1,000 .* needs max_n >= "):
        certifier.certify(x, n=1000, sequential=True, target_radius=1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        certifier.certify(x, sequential=True, radii=(0.5, 0.25))
    with pytest.raises(ValueError, match="exactly one of radii"):
        certifier.certify(x, sequential=True)
    with pytest.raises(ValueError, match="sequential=... certification only"):
        certifier.certify(x, radii=(0.5,))
    with pytest.raises(ValueError, match="fixed n only"):
        certifier.certify(x, sequential=True, radii=(0.5,), runner_up=True)
    soft = get_certifier("cohen", linear_classifier, sigma=0.25, soft=True)
    with pytest.raises(ValueError, match="soft smoothing"):
        soft.certify(x, sequential=True, radii=(0.5,))
    with pytest.raises(ValueError, match="label must be"):
        certifier.certify(x, label=-1)
    with pytest.raises(ValueError, match="not supported on cpu"):
        MonteCarloEstimator(linear_classifier, autocast="fp16")


def test_needed_max_n_is_the_smallest_that_reaches_the_threshold():
    sequence = BetaMixture(0.001)
    threshold = stats.norm.cdf(3.0)
    needed = needed_max_n(sequence, threshold)
    at_cap = float(sequence.lower(needed, needed, max_n=needed))
    assert at_cap >= threshold > float(sequence.lower(needed - 1, needed - 1, max_n=needed - 1))
    plan = SequentialPlan.build(sequence, lambda p: 0.25 * stats.norm.ppf(p), (0.25, 0.75), needed)
    assert plan.thresholds[0] == pytest.approx(stats.norm.cdf(1.0), abs=1e-9)
    assert plan.reach[1] >= plan.thresholds[1]


def test_bf16_autocast_votes_on_cpu():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    estimator = MonteCarloEstimator(model, autocast="bf16", batch_size=100)
    counts = estimator.class_counts(torch.rand(6), get_certifier("cohen", model).noise, 250)
    assert int(counts.sum()) == 250


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_scheduler_and_sequential_certification_run_on_cuda(linear_classifier):
    model = linear_classifier.to("cuda").float()
    certifier = get_certifier("cohen", model, sigma=0.25, batch_size=4096)
    xs = [torch.full((10,), v, device="cuda") for v in (0.1, 0.5, 2.0)]
    for sequential in (None, True):
        options = {"sequential": True, "radii": (0.25, 0.5)} if sequential else {}
        certificates = certifier.certify_batch(xs, n=20_000, progress=False, **options)
        assert len(certificates) == 3
    estimator = MonteCarloEstimator(model, autocast="bf16", channels_last=True)
    assert int(estimator.class_counts(xs[0], certifier.noise, 1000).sum()) == 1000


@pytest.mark.parametrize(
    ("method", "options"), [("ssn", {}), ("laplace", {}), ("uniform", {}), ("cohen", {})]
)
def test_every_vote_certifier_streams(method, options):
    """The shared protocol gives every SmoothingCertifier the sequential mode: a clear input is settled early."""
    certifier = get_certifier(method, FirstCoordinateThreshold(), sigma=0.5, **options)
    x = torch.tensor([0.9, 0.5, 0.5])
    fixed = certifier.certify(x, n=20_000)
    radius = 0.5 * fixed.radius[certifier.native_norm]
    streamed = certifier.certify(x, n=20_000, sequential=True, target_radius=radius)
    assert streamed.params["stop"] == "certified" and streamed.n < 20_000
    assert radius <= streamed.radius[certifier.native_norm] <= fixed.radius[certifier.native_norm] + 1e-9


def test_bench_sequential_reports_both_modes_on_the_same_images(linear_classifier):
    from manifoldcert.bench import bench_sequential

    inputs = torch.zeros(6, 10, dtype=torch.float64)
    inputs[:, 0] = torch.linspace(0.0, 1.0, 6)
    labels = [int(float(linear_classifier.margin(x.unsqueeze(0))) > 0) for x in inputs]
    result = bench_sequential(
        linear_classifier,
        inputs,
        labels,
        name="linear",
        sigma=0.25,
        radii=(0.25, 0.5, 2.0),
        n=5000,
        fixed_images=4,
        progress=False,
    )
    assert result.settling_radii == (0.25, 0.5)  # 2.0 needs more than 5,000 votes
    assert (
        result.fixed.images == result.sequential_on_fixed_images.images == 4 and result.sequential.images == 6
    )
    assert result.fixed.passes_per_image == 5100 > result.sequential.passes_per_image
    assert "ratios fixed / sequential" in "\n".join(result.lines())


def test_the_worked_example_of_docs_sequential_md_runs():
    """Every python block of docs/sequential.md is executed (they assert what they print)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "sequential.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/sequential.md", "exec"), {})
