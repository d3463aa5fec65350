"""Denoised smoothing (manifoldcert.denoise): the composed classifier, DnCNN, train_denoiser, the diffusion
denoiser's timestep rule and one-shot x̂₀, and the guide's examples."""

from __future__ import annotations

import copy
import math
import pathlib
import re

import pytest
import torch
from scipy.stats import norm
from torch import nn

from manifoldcert import noises
from manifoldcert.certifiers import get_certifier
from manifoldcert.denoise import (
    DenoisedClassifier,
    DiffusionDenoiser,
    DnCNN,
    diffusion_noise_levels,
    diffusion_timestep,
    linear_beta_schedule,
    train_denoiser,
)
from manifoldcert.models import build_model

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides" / "denoised-smoothing.md"


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class _Constant(nn.Module):
    """A 'denoiser' that maps every input to the same clean image."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image.expand_as(x).clone()


def _image(seed: int = 0, shape: tuple[int, ...] = (1, 4, 4)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -- DenoisedClassifier ---------------------------------------------------------------------------------------
def test_denoised_classifier_refuses_a_denoiser_that_changes_the_shape() -> None:
    classifier = build_model("mlp", (1, 4, 4), 3)
    model = DenoisedClassifier(_Flatten(), classifier)
    with pytest.raises(ValueError, match=r"input \(2, 1, 4, 4\).*output \(2, 16\)"):
        model(torch.rand(2, 1, 4, 4))


def test_identity_denoiser_gives_the_classifier_alones_certificate() -> None:
    classifier = build_model("mlp", (1, 4, 4), 3, seed=1).eval()
    x = _image(1)
    alone = get_certifier("cohen", classifier, sigma=0.25, seed=7).certify(x, n0=50, n=2000)
    denoised = get_certifier("cohen", DenoisedClassifier(nn.Identity(), classifier), sigma=0.25, seed=7)
    cert = denoised.certify(x, n0=50, n=2000)
    assert (cert.prediction, cert.p_lower, cert.radius) == (alone.prediction, alone.p_lower, alone.radius)


def test_a_denoiser_onto_one_image_makes_the_smoothed_probability_exactly_one() -> None:
    # f(D(x + δ)) is the same class for every δ: all n votes agree, so the Clopper–Pearson bound is α^(1/n)
    # and the radius σΦ⁻¹(α^(1/n)), whatever the input.
    classifier = build_model("mlp", (1, 4, 4), 3, seed=2).eval()
    clean = _image(2)
    expected_class = int(classifier(clean[None]).argmax(1))
    model = DenoisedClassifier(_Constant(clean), classifier)
    n, alpha, sigma = 1000, 0.001, 0.5
    cert = get_certifier("cohen", model, sigma=sigma).certify(_image(3), n0=20, n=n, alpha=alpha)
    assert cert.prediction == expected_class
    assert cert.p_lower == pytest.approx(alpha ** (1 / n), rel=1e-9)
    assert cert.radius["l2"] == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)


# -- DnCNN ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_dncnn_keeps_the_shape(shape: tuple[int, int, int]) -> None:
    denoiser = DnCNN(shape[0]).eval()
    with torch.no_grad():
        assert denoiser(torch.rand(2, *shape)).shape == (2, *shape)


def test_dncnn_is_residual_and_checks_its_depth() -> None:
    denoiser = DnCNN(1, depth=3, width=8).eval()
    convs = [m for m in denoiser.net if isinstance(m, nn.Conv2d)]
    batchnorms = [m for m in denoiser.net if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 3 and len(batchnorms) == 1
    nn.init.zeros_(convs[-1].weight)
    nn.init.zeros_(convs[-1].bias)
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(denoiser(x), x)  # predicts zero noise: returns its input
    with pytest.raises(ValueError, match="depth"):
        DnCNN(1, depth=1)
    assert all(
        torch.equal(a, b)
        for a, b in zip(DnCNN(seed=3).state_dict().values(), DnCNN(seed=3).state_dict().values(), strict=True)
    )


# -- train_denoiser -------------------------------------------------------------------------------------------
def _smooth_images(count: int, seed: int = 0) -> torch.Tensor:
    """Blurry random 8×8 images in [0, 1]: structure a denoiser can learn."""
    coarse = torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)


def test_mse_training_lowers_the_loss() -> None:
    images = _smooth_images(32)
    data = torch.utils.data.TensorDataset(images, torch.zeros(32, dtype=torch.int64))
    denoiser = DnCNN(1, depth=3, width=4)
    result = train_denoiser(
        denoiser, data, noises.Gaussian(0.25), epochs=5, batch_size=8, lr=3e-3, progress=False
    )
    assert len(result.losses) == len(result.seconds) == 5
    assert result.losses[-1] < 0.6 * result.losses[0]
    assert not denoiser.training


def test_losses_match_a_hand_computation() -> None:
    x = _smooth_images(4, seed=5)
    classifier = build_model("mlp", (1, 8, 8), 3, seed=4)
    classifier.train()  # left as found, but run frozen in eval mode
    before = copy.deepcopy(classifier.state_dict())
    denoiser = DnCNN(1, depth=2, width=4, seed=1)  # no batch norm: the same function in train and eval mode
    start = copy.deepcopy(denoiser)
    noise = noises.Gaussian(0.3)
    data = [(x, torch.zeros(4, dtype=torch.int64))]  # one batch, its order kept
    result = train_denoiser(
        denoiser, data, noise, objective="stability", classifier=classifier, seed=9, progress=False
    )
    noisy = noise.perturb(x, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        classifier.eval()
        targets = classifier(x).argmax(1)
        log_probs = torch.log_softmax(classifier(start(noisy)), dim=1)
    expected = -float(log_probs[torch.arange(4), targets].mean())
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)
    # the classifier is untouched: weights, requires_grad, training mode
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert all(p.requires_grad for p in classifier.parameters())
    classifier.train()
    # and the MSE objective
    denoiser = copy.deepcopy(start)
    result = train_denoiser(denoiser, data, noise, seed=9, progress=False)
    with torch.no_grad():
        expected = float(((start(noisy) - x) ** 2).mean())
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)
    assert not torch.equal(denoiser.net[0].weight, start.net[0].weight)  # a step was taken


def test_train_denoiser_refuses_bad_input() -> None:
    data = [(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64))]
    denoiser, noise = DnCNN(1, depth=2, width=4), noises.Gaussian(0.25)
    with pytest.raises(ValueError, match="unknown objective 'l1'"):
        train_denoiser(denoiser, data, noise, objective="l1", progress=False)
    with pytest.raises(ValueError, match="stability.*needs the classifier"):
        train_denoiser(denoiser, data, noise, objective="stability", progress=False)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        train_denoiser(denoiser, data, noise, epochs=0, progress=False)
    for lr in (0.0, -1e-3):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            train_denoiser(denoiser, data, noise, lr=lr, progress=False)
    with pytest.raises(TypeError, match=r"\(x, y\) pairs"):
        train_denoiser(denoiser, [(torch.rand(2, 1, 8, 8),)], noise, progress=False)
    with pytest.raises(TypeError, match="AbstractNoise"):
        train_denoiser(denoiser, data, 0.25, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch"):
        train_denoiser(denoiser, [], noise, progress=False)


# -- the diffusion timestep rule ------------------------------------------------------------------------------
def test_timestep_never_assumes_less_noise_than_sigma_and_is_the_smallest() -> None:
    alphas = linear_beta_schedule()
    levels = diffusion_noise_levels(alphas)
    direct = torch.sqrt((1 - alphas) / alphas)  # the rule as stated: sqrt((1 − ᾱ_t)/ᾱ_t) ≥ 2σ
    generator = torch.Generator().manual_seed(0)
    sigmas = torch.rand(1000, generator=generator, dtype=torch.float64) * float(levels[-1])
    sigmas = torch.cat([sigmas, levels])  # and every exact level of the schedule
    for sigma in sigmas.tolist():
        if sigma <= 0:
            continue
        t = diffusion_timestep(sigma, alphas)
        assert direct[t] >= 2 * sigma and levels[t] >= sigma  # never less noise than present
        assert t == 0 or direct[t - 1] < 2 * sigma  # minimal: t − 1 would assume less
    for t in (0, 1, 17, 500, 999):  # an exact level gives its own timestep
        assert diffusion_timestep(float(levels[t]), alphas) == t


def test_linear_schedule_is_ddpms() -> None:
    alphas = linear_beta_schedule()
    assert alphas.shape == (1000,) and alphas.dtype == torch.float64
    assert float(alphas[0]) == pytest.approx(1 - 1e-4)
    assert float(alphas[1]) == pytest.approx((1 - 1e-4) * (1 - (1e-4 + (0.02 - 1e-4) / 999)))
    assert math.log(float(alphas[-1])) == pytest.approx(
        sum(math.log(1 - (1e-4 + i * (0.02 - 1e-4) / 999)) for i in range(1000))
    )


def test_timestep_and_schedule_errors() -> None:
    alphas = linear_beta_schedule(100)
    largest = float(diffusion_noise_levels(alphas)[-1])
    for sigma in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
            diffusion_timestep(sigma, alphas)
    with pytest.raises(ValueError, match="exceeds the schedule's largest noise level"):
        diffusion_timestep(largest * 1.001, alphas)
    assert diffusion_timestep(largest, alphas) == 99
    with pytest.raises(ValueError, match="strictly decreasing"):
        diffusion_timestep(0.1, torch.tensor([0.9, 0.95, 0.5]))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        diffusion_timestep(0.1, torch.tensor([1.2, 0.5]))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        diffusion_timestep(0.1, torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        diffusion_timestep(0.1, torch.ones(2, 2) * 0.5)
    with pytest.raises(ValueError, match="beta_start"):
        linear_beta_schedule(10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="num_steps"):
        linear_beta_schedule(0)


# -- DiffusionDenoiser ----------------------------------------------------------------------------------------
class _NoiseOracle:
    """An ε-model that knows the standard normal draw z behind the noisy input (δ = σz) and returns it: the true ε
    when the schedule's level at t is exactly σ."""

    def __init__(self, z: torch.Tensor, timestep: int | None = None) -> None:
        self.z, self.timestep, self.calls = z, timestep, 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert t.dtype == torch.int64 and t.shape == (x_t.shape[0],)
        if self.timestep is not None:
            assert bool((t == self.timestep).all())
        return self.z


def test_diffusion_denoiser_recovers_x_with_an_oracle_at_an_exact_level() -> None:
    alphas = linear_beta_schedule()
    levels = diffusion_noise_levels(alphas)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 5, 5, generator=generator, dtype=torch.float64)
    z = torch.randn(3, 1, 5, 5, generator=generator, dtype=torch.float64)
    for t in (3, 60, 200):
        sigma = float(levels[t])
        oracle = _NoiseOracle(z, timestep=t)
        denoiser = DiffusionDenoiser(oracle, alphas, sigma)
        assert denoiser.timestep == t and denoiser.alpha_bar == float(alphas[t])
        out = denoiser(x + sigma * z)
        assert oracle.calls == 1
        assert torch.allclose(out, x, atol=1e-12, rtol=0)


def test_diffusion_denoiser_between_levels_is_off_by_the_rounding() -> None:
    # σ between two levels: t is rounded up, the oracle's z is then scaled by the level, not σ, and
    # x̂₀ = clamp(x − (level_t − σ)·z): an error of at most (level_t − σ)|z| per pixel.
    alphas = linear_beta_schedule()
    levels = diffusion_noise_levels(alphas)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    z = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    for sigma in (0.12, 0.25, 0.5, 1.0):
        denoiser = DiffusionDenoiser(_NoiseOracle(z), alphas, sigma)
        level = float(levels[denoiser.timestep])
        assert level >= sigma > float(levels[denoiser.timestep - 1])
        out = denoiser(x + sigma * z)
        assert torch.allclose(out, (x - (level - sigma) * z).clamp(0, 1), atol=1e-12, rtol=0)
        assert bool(((out - x).abs() <= (level - sigma) * z.abs() + 1e-12).all())


def test_diffusion_denoiser_with_an_exact_eps_model_recovers_x_at_any_sigma() -> None:
    # An ε-model that knows the clean image returns the ε for which x_t = √ᾱ x₀ + √(1 − ᾱ) ε holds exactly.
    alphas = linear_beta_schedule()
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)).clamp(
        0, 1
    )
    for sigma in (0.1, 0.37, 2.0):
        alpha = float(alphas[diffusion_timestep(sigma, alphas)])

        def eps_model(x_t: torch.Tensor, t: torch.Tensor, alpha: float = alpha) -> torch.Tensor:
            return (x_t - math.sqrt(alpha) * (2 * x - 1)) / math.sqrt(1 - alpha)

        assert torch.allclose(DiffusionDenoiser(eps_model, alphas, sigma)(noisy), x, atol=1e-9, rtol=0)


def test_diffusion_denoiser_checks_its_arguments_and_is_certified() -> None:
    alphas = linear_beta_schedule()
    with pytest.raises(ValueError, match="eps_model must return the shape"):
        DiffusionDenoiser(lambda x_t, t: x_t[:, :1], alphas, 0.25)(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="callable"):
        DiffusionDenoiser(3, alphas, 0.25)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds"):
        DiffusionDenoiser(lambda x_t, t: x_t, alphas, 100.0)
    # the composition certifies like any model
    eps_model = nn.Conv2d(1, 1, 3, padding=1)
    classifier = build_model("mlp", (1, 4, 4), 3).eval()
    diffusion = DiffusionDenoiser(lambda x_t, t: eps_model(x_t), alphas, 0.25)
    model = DenoisedClassifier(diffusion, classifier)
    cert = get_certifier("cohen", model, sigma=0.25).certify(_image(4), n0=20, n=200)
    assert cert.n == 200 and "timestep=" in repr(diffusion)


# -- the guide ------------------------------------------------------------------------------------------------
def test_guide_python_blocks_run_in_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    namespace: dict = {"__name__": "__guide__"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{GUIDE.name} block {number}", "exec"), namespace)
