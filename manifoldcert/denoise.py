"""Denoised smoothing: certify a classifier trained without noise by putting a Gaussian denoiser in front of it.

Salman et al. (2020, "Denoised Smoothing: A Provable Defense for Pretrained Classifiers") smooth the composition
``f ∘ D`` of an off-the-shelf classifier ``f`` and a denoiser ``D`` trained to undo the smoothing noise; the
certificate is Cohen et al.'s, applied to ``f ∘ D`` as the base classifier. Carlini et al. (2022, "(Certified!!)
Adversarial Robustness for Free!") take ``D`` to be one denoising step of an off-the-shelf diffusion model.

- :class:`DenoisedClassifier` composes the two into one ``nn.Module`` that any certifier accepts;
- :class:`DnCNN` is a small residual denoiser (Zhang et al. 2017) and :func:`train_denoiser` trains one with
  Salman et al.'s MSE or stability objective (Sec. 3);
- :class:`DiffusionDenoiser` turns a noise-predicting diffusion model ``eps_model(x_t, t)`` into a one-shot
  denoiser (Carlini et al. 2022, Sec. 3), at the timestep :func:`diffusion_timestep` picks for σ;
  :func:`linear_beta_schedule` is DDPM's schedule (Ho et al. 2020).

Inputs are in [0, 1] pixel space and σ is in those units (docs/conventions.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from manifoldcert._validation import check_name, check_positive_float, check_positive_int
from manifoldcert.estimator import model_device
from manifoldcert.models import frozen
from manifoldcert.noises import AbstractNoise
from manifoldcert.train import TrainingData, iterate_batches

__all__ = [
    "OBJECTIVES",
    "DenoisedClassifier",
    "DenoiserTrainResult",
    "DiffusionDenoiser",
    "DnCNN",
    "diffusion_noise_levels",
    "diffusion_timestep",
    "linear_beta_schedule",
    "train_denoiser",
]

#: The objectives of :func:`train_denoiser` (Salman et al. 2020, Sec. 3).
OBJECTIVES = ("mse", "stability")

#: ``eps_model(x_t, t) -> ε̂``: a diffusion model's noise prediction, ``t`` an int64 tensor of shape (b,).
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DenoisedClassifier(nn.Module):
    """The base classifier ``f(D(x))`` of denoised smoothing (Salman et al. 2020, Sec. 3).

    Certify it like any model, e.g. ``get_certifier("cohen", DenoisedClassifier(d, f), sigma=0.25)``: the
    certificate is Cohen et al.'s for the smoothed ``f ∘ D``, sound whatever ``D`` is (any deterministic base
    classifier is).

    Parameters
    ----------
    denoiser : nn.Module
        Maps a noisy batch (b, *input_shape) in [0, 1] pixel space to a batch of the same shape.
    classifier : nn.Module
        Maps that batch to logits (b, num_classes).

    Raises
    ------
    ValueError
        (On forward) the denoiser's output does not have the input's shape.
    """

    def __init__(self, denoiser: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``classifier(denoiser(x))``: logits of shape (b, num_classes)."""
        denoised = self.denoiser(x)
        if denoised.shape != x.shape:  # a shape comparison: free beside the forward passes
            raise ValueError(
                f"the denoiser must return its input's shape: input {tuple(x.shape)}, "
                f"denoiser output {tuple(denoised.shape)}"
            )
        return self.classifier(denoised)


class DnCNN(nn.Module):
    """A DnCNN-style residual denoiser (Zhang et al. 2017, "Beyond a Gaussian Denoiser", Sec. III).

    ``depth`` 3×3 convolutions: conv+ReLU, ``depth − 2`` × (conv+BN+ReLU), conv. The network predicts the noise
    and subtracts it: ``D(x) = x − net(x)`` (residual learning). The paper's network is 17 layers × 64 channels
    (and Salman et al. 2020 use it at that size on CIFAR-10); the default here, 5 layers × 32 channels (about
    28k parameters), is much smaller so that MNIST/CIFAR-sized inputs can be trained and certified on a CPU —
    certification runs it ``n`` times per input.

    Parameters
    ----------
    channels : int
        Image channels (1 for MNIST, 3 for CIFAR-10).
    depth : int
        Number of convolutions, ≥ 2.
    width : int
        Channels of the hidden convolutions.
    seed : int
        Seeds the weight initialisation (torch's global RNG is left as it was).
    """

    def __init__(self, channels: int = 1, depth: int = 5, width: int = 32, *, seed: int = 0) -> None:
        super().__init__()
        check_positive_int(channels, "channels")
        check_positive_int(width, "width")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
        self.channels, self.depth, self.width = channels, depth, width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            for _ in range(depth - 2):
                layers += [
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
            layers.append(nn.Conv2d(width, channels, 3, padding=1))
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x − net(x)``, the denoised batch (same shape as ``x``, (b, channels, H, W))."""
        return x - self.net(x)


@dataclass(frozen=True)
class DenoiserTrainResult:
    """Per-epoch mean training loss of :func:`train_denoiser` and the seconds each epoch took."""

    losses: tuple[float, ...]
    seconds: tuple[float, ...]


def train_denoiser(
    denoiser: nn.Module,
    data: TrainingData,
    noise: AbstractNoise,
    *,
    objective: str = "mse",
    classifier: nn.Module | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> DenoiserTrainResult:
    """Train ``denoiser`` in place with Adam on one of Salman et al.'s (2020, Sec. 3) objectives.

    - ``"mse"``: ``‖D(x + δ) − x‖²``, averaged over pixels and examples (``torch.nn.functional.mse_loss``);
      needs no classifier.
    - ``"stability"``: ``CE(f(D(x + δ)), argmax f(x))`` with the classifier ``f`` frozen: the denoised input
      must be classified like the clean one. Salman et al. fine-tune an MSE-trained denoiser with it; it needs
      ``classifier``, whose weights, batch-norm statistics and ``requires_grad`` flags are left as they were
      (it is run in eval mode).

    Batches come from :func:`manifoldcert.train.iterate_batches` (shuffled by a CPU generator seeded with
    ``seed``) and noise from ``noise.perturb`` with a generator on the denoiser's device seeded with ``seed``;
    torch's global RNG is not touched.

    Parameters
    ----------
    denoiser : nn.Module
        Trained on its own device; left in eval mode.
    data : ImageDataset, Dataset of (x, y) or DataLoader
        See :func:`manifoldcert.train.iterate_batches`; the labels are not used.
    noise : AbstractNoise
        The smoothing noise δ (e.g. ``noises.Gaussian(0.25)``).
    objective : {"mse", "stability"}
    classifier : nn.Module, optional
        The frozen classifier of the stability objective (on the denoiser's device).
    epochs, batch_size : int
    lr : float
        Adam's learning rate.
    seed : int
    progress : bool
        Show a progress bar over the epochs.

    Returns
    -------
    DenoiserTrainResult
        The mean loss of each epoch (weighted by batch size) and its seconds.

    Raises
    ------
    ValueError
        Unknown objective, ``"stability"`` without a classifier, ``epochs < 1``, ``lr <= 0``, empty data.
    TypeError
        ``noise`` is not an :class:`~manifoldcert.noises.AbstractNoise`, or an item of ``data`` is not (x, y).
    """
    check_name(objective, OBJECTIVES, "objective")
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_float(lr, "lr")
    if not isinstance(noise, AbstractNoise):
        raise TypeError(f"noise must be an AbstractNoise (manifoldcert.noises), got {type(noise).__name__}")
    if objective == "stability" and classifier is None:
        raise ValueError(
            "objective='stability' needs the classifier: its loss is CE(f(D(x + δ)), argmax f(x))"
        )
    device = model_device(denoiser)
    if classifier is not None and objective == "stability" and model_device(classifier) != device:
        raise ValueError(
            f"the classifier is on {model_device(classifier)}, the denoiser on {device}: move one of them"
        )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    shuffle_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    losses, seconds = [], []
    with contextlib.ExitStack() as restore:
        restore.callback(denoiser.eval)  # on the way out, also on error
        if objective == "stability":
            assert classifier is not None  # checked above
            restore.enter_context(frozen(classifier))
        bar = tqdm(range(epochs), desc=f"denoiser ({objective})", disable=not progress)
        for _ in bar:
            denoiser.train()
            start = time.perf_counter()
            total = torch.zeros((), device=device)
            count = 0
            for inputs, _labels in iterate_batches(
                data, batch_size=batch_size, device=device, generator=shuffle_generator, shuffle=True
            ):
                noisy = noise.perturb(inputs, generator=generator)
                if objective == "mse":
                    loss = nn.functional.mse_loss(denoiser(noisy), inputs)
                else:
                    assert classifier is not None
                    with torch.no_grad():
                        targets = classifier(inputs).argmax(1)
                    loss = nn.functional.cross_entropy(classifier(denoiser(noisy)), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * inputs.shape[0]
                count += inputs.shape[0]
            if count == 0:
                raise ValueError("the training data yielded no batch")
            losses.append(float(total) / count)
            seconds.append(time.perf_counter() - start)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    return DenoiserTrainResult(tuple(losses), tuple(seconds))


def linear_beta_schedule(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """DDPM's linear variance schedule (Ho et al. 2020, Sec. 4), returned as ``ᾱ_t = ∏_{s ≤ t} (1 − β_s)``.

    Parameters
    ----------
    num_steps : int
        T, the number of diffusion steps (1000 in DDPM).
    beta_start, beta_end : float
        ``β_1`` and ``β_T``, with ``0 < beta_start <= beta_end < 1``; the betas are evenly spaced between them.

    Returns
    -------
    Tensor, float64, shape (num_steps,)
        ``alphas_cumprod``, indexed by the 0-based timestep ``t`` (entry ``t`` belongs to DDPM's step t + 1),
        decreasing in (0, 1).
    """
    check_positive_int(num_steps, "num_steps")
    if not (
        isinstance(beta_start, (int, float))
        and isinstance(beta_end, (int, float))
        and 0 < beta_start <= beta_end < 1
    ):
        raise ValueError(
            f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start!r}, beta_end={beta_end!r}"
        )
    betas = torch.linspace(float(beta_start), float(beta_end), num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def _check_alphas_cumprod(alphas_cumprod: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """``alphas_cumprod`` as a float64 CPU tensor, after checking it is 1-D, in (0, 1] and strictly decreasing."""
    alphas = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    if alphas.dim() != 1 or alphas.numel() == 0:
        raise ValueError(f"alphas_cumprod must be a non-empty 1-D sequence, got shape {tuple(alphas.shape)}")
    if not bool(torch.isfinite(alphas).all()) or not bool(((alphas > 0) & (alphas <= 1)).all()):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    if alphas.numel() > 1 and not bool((alphas[1:] < alphas[:-1]).all()):
        raise ValueError("alphas_cumprod must be strictly decreasing (ᾱ_t = ∏ (1 − β_s) with β_s > 0)")
    return alphas


def diffusion_noise_levels(alphas_cumprod: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """The Gaussian σ, in [0, 1] pixel units, that each timestep of a diffusion schedule assumes.

    ``x_t = sqrt(ᾱ_t)·(x₀ + sqrt((1 − ᾱ_t)/ᾱ_t)·ε)`` with ``x₀`` in [−1, 1], so step ``t`` undoes noise of std
    ``sqrt((1 − ᾱ_t)/ᾱ_t)`` in [−1, 1] units, half that in [0, 1] units (Carlini et al. 2022, Sec. 3).

    Parameters
    ----------
    alphas_cumprod : Tensor or sequence of float, shape (T,)
        Strictly decreasing in (0, 1].

    Returns
    -------
    Tensor, float64, shape (T,)
        ``sqrt((1 − ᾱ_t)/ᾱ_t) / 2``, increasing in ``t``.
    """
    alphas = _check_alphas_cumprod(alphas_cumprod)
    return torch.sqrt((1.0 - alphas) / alphas) / 2


def diffusion_timestep(sigma: float, alphas_cumprod: torch.Tensor | Sequence[float]) -> int:
    """The timestep at which a diffusion model denoises Gaussian noise of std ``sigma`` (Carlini et al. 2022).

    Mapping ``[0, 1]`` pixels to ``[−1, 1]`` doubles the noise std, and ``x_t = sqrt(ᾱ_t)·(2(x + δ) − 1)`` is
    distributed as the forward process at ``t`` when ``(1 − ᾱ_t)/ᾱ_t = (2σ)²`` (Carlini et al. 2022, Sec. 3).
    A discrete schedule rarely hits that exactly; this returns the **smallest** ``t`` with
    ``sqrt((1 − ᾱ_t)/ᾱ_t) ≥ 2σ``, rounding the timestep up, so that the noise level the diffusion model assumes
    is never less than the noise actually present (``t − 1`` would assume less).

    Notes
    -----
    Rounding up is not needed for soundness. The smoothing certificate is about the noise added to the input (σ),
    and any deterministic base classifier — a denoiser at any timestep followed by any classifier — is certified
    soundly. The rounding only keeps the denoiser in its trained regime (the noise it assumes ≥ the real one).

    Parameters
    ----------
    sigma : float
        The smoothing noise's std in [0, 1] pixel units, > 0.
    alphas_cumprod : Tensor or sequence of float, shape (T,)
        ``ᾱ_t``, strictly decreasing in (0, 1], indexed by the 0-based timestep.

    Returns
    -------
    int
        ``t`` in ``0 .. T − 1``.

    Raises
    ------
    ValueError
        ``sigma <= 0`` or not finite, ``sigma`` above the schedule's largest noise level
        (``diffusion_noise_levels(alphas_cumprod)[-1]``), or an invalid schedule.
    """
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float))
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    scales = 2 * diffusion_noise_levels(alphas_cumprod)  # sqrt((1 − ᾱ_t)/ᾱ_t), increasing
    target = 2 * float(sigma)
    if target > float(scales[-1]):
        raise ValueError(
            f"sigma = {sigma} exceeds the schedule's largest noise level {float(scales[-1]) / 2:.6g} "
            f"(in [0, 1] pixel units, at t = {len(scales) - 1})"
        )
    # The first index whose scale is >= target (scales increase strictly).
    return int(torch.searchsorted(scales, torch.tensor([target], dtype=torch.float64), side="left")[0])


class DiffusionDenoiser(nn.Module):
    """A one-shot denoiser made of a noise-predicting diffusion model (Carlini et al. 2022, Sec. 3, Alg. 1).

    For a noisy input ``x + δ`` in [0, 1] pixel space with ``δ ~ N(0, σ²I)``:

    1. map it to [−1, 1], ``y = 2(x + δ) − 1`` (the noise std becomes 2σ);
    2. take ``t = diffusion_timestep(σ, alphas_cumprod)`` and ``x_t = sqrt(ᾱ_t)·y``;
    3. predict the noise, ``ε̂ = eps_model(x_t, t)``, and estimate the clean image in one step,
       ``x̂₀ = (x_t − sqrt(1 − ᾱ_t)·ε̂) / sqrt(ᾱ_t)`` (Ho et al. 2020, Eq. 4 solved for x₀);
    4. map back, ``(x̂₀ + 1)/2``, clamped to [0, 1].

    No weights can be downloaded here: ``eps_model`` is whatever ε-prediction network the user has (a DDPM or
    guided-diffusion UNet, e.g. wrapped to return only the ε channels), or a stand-in in tests. The certificate
    of ``DenoisedClassifier(DiffusionDenoiser(...), f)`` is sound for any ``eps_model``; see
    :func:`diffusion_timestep` for why ``t`` is rounded up.

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t) -> ε̂`` with ``x_t`` of shape (b, C, H, W) and ``t`` an int64 tensor of shape (b,)
        (every entry the same timestep). An ``nn.Module`` is registered as a submodule (moved by ``.to``).
    alphas_cumprod : Tensor or sequence of float, shape (T,)
        The model's ``ᾱ_t``, strictly decreasing in (0, 1].
    sigma : float
        The smoothing noise's std in [0, 1] pixel units: the σ the certifier is built with.

    Attributes
    ----------
    timestep : int
        The chosen ``t``.
    alpha_bar : float
        ``ᾱ_t`` at that step.
    """

    def __init__(
        self, eps_model: EpsModel, alphas_cumprod: torch.Tensor | Sequence[float], sigma: float
    ) -> None:
        super().__init__()
        if not callable(eps_model):
            raise TypeError(
                f"eps_model must be callable as eps_model(x_t, t), got {type(eps_model).__name__}"
            )
        alphas = _check_alphas_cumprod(alphas_cumprod)
        self.eps_model = eps_model
        self.sigma = float(sigma)
        self.timestep = diffusion_timestep(sigma, alphas)
        self.alpha_bar = float(alphas[self.timestep])
        # A plain attribute, not a buffer: a float64 buffer would set the estimator's dtype (model_dtype).
        self.alphas_cumprod = alphas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x̂₀`` in [0, 1] for the noisy batch ``x`` (shape (b, C, H, W), [0, 1] pixel units + noise)."""
        scale = math.sqrt(self.alpha_bar)
        x_t = scale * (2 * x - 1)
        t = torch.full((x.shape[0],), self.timestep, dtype=torch.int64, device=x.device)
        eps = self.eps_model(x_t, t)
        if eps.shape != x.shape:
            raise ValueError(
                f"eps_model must return the shape of x_t: x_t {tuple(x.shape)}, ε̂ {tuple(eps.shape)}"
            )
        x0 = (x_t - math.sqrt(1.0 - self.alpha_bar) * eps) / scale
        return ((x0 + 1) / 2).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, timestep={self.timestep}, alpha_bar={self.alpha_bar:.6g}"
