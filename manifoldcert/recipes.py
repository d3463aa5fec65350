"""Training objectives for the base classifier of a smoothed classifier.

A recipe turns one clean batch ``(x, y)`` into a loss through the smoothing noise; :func:`manifoldcert.train.
train_model` runs it over the data. Four recipes, each with its paper's defaults:

==================  ===========================================================  ==============================
name                objective                                                    defaults (paper)
==================  ===========================================================  ==============================
``gaussian``        cross-entropy on one noisy copy (Cohen et al. 2019, Sec. 4)   —
``consistency``     mean cross-entropy over m copies + λ·KL(p̄ ‖ p_i) + η·H(p̄)    m = 2, λ = 10, η = 0.5
                    (Jeong & Shin 2020)
``macer``           cross-entropy of the soft smoothed classifier + λ·(σ/2)·      m = 16, λ = 12, γ = 8, β = 16
                    hinge(γ − ξ) on the radius surrogate (Zhai et al. 2020)
``smoothadv``       cross-entropy at PGD examples of the soft smoothed            m = 1, ε = 1, 10 steps,
                    classifier (Salman et al. 2019)                               warm-up 10 epochs
==================  ===========================================================  ==============================

The defaults are the papers' CIFAR-10 settings (consistency λ = 10 and MACER λ = 12 at σ ≤ 0.5; Jeong & Shin's
MNIST runs use consistency λ = 20, MACER λ = 16 deferred to after the first third of training, SmoothAdv m = 4,
ε = 255/256, 10 steps, warm-up 10). Functions :func:`consistency_loss`, :func:`macer_loss` and
:func:`smoothed_cross_entropy` compute the objectives on logits of shape ``(m, b, K)``: copy ``i`` of example
``j`` is ``logits[i, j]``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from manifoldcert._validation import check_name, check_positive_int
from manifoldcert.models import frozen
from manifoldcert.noises import AbstractNoise, Gaussian

__all__ = [
    "AbstractRecipe",
    "Consistency",
    "GaussianAugmentation",
    "MACER",
    "RecipeStep",
    "SmoothAdv",
    "available_recipes",
    "consistency_loss",
    "get_recipe",
    "recipe_class",
    "macer_loss",
    "recipe_from_config",
    "smoothed_cross_entropy",
]


@dataclass(frozen=True)
class RecipeStep:
    """The loss of one batch, and how many of its ``copies × b`` noisy inputs the model classified correctly."""

    loss: torch.Tensor
    correct: torch.Tensor
    copies: int


class AbstractRecipe(abc.ABC):
    """A training objective: :meth:`loss` of a clean batch under the smoothing noise."""

    name: ClassVar[str]

    @abc.abstractmethod
    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noise: AbstractNoise | None,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> RecipeStep:
        """The loss of the clean batch ``inputs`` (shape (b, *input_shape)) with labels ``targets`` (b,).

        ``epoch`` (from 0) drives schedules such as SmoothAdv's ε warm-up; noise is drawn from ``generator``.
        """

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The registry name and hyper-parameters that rebuild this recipe (checkpoints record it)."""

    def check_noise(self, noise: AbstractNoise | None) -> None:
        """Refuse a noise the objective is not defined for (default: any noise, but not ``None``)."""
        _required(noise, self.name)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"


def _check_non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _required(noise: AbstractNoise | None, recipe: str) -> AbstractNoise:
    if noise is None:
        raise ValueError(f"the {recipe} recipe needs a smoothing noise")
    return noise


def _copies(inputs: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` stacked copies of the batch, shape (copies·b, ...): copy ``i`` of example ``j`` at ``i·b + j``."""
    return inputs.repeat(copies, *([1] * (inputs.dim() - 1)))


def _noisy_logits(
    model: nn.Module, inputs: torch.Tensor, noise: AbstractNoise, copies: int, generator: torch.Generator
) -> torch.Tensor:
    """Logits of ``copies`` independent noisy copies of each input, shape (copies, b, K)."""
    logits = model(noise.perturb(_copies(inputs, copies), generator=generator))
    return logits.view(copies, inputs.shape[0], -1)


def _correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(-1) == targets).sum()


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the soft smoothed classifier, ``−log((1/m) Σ_i softmax(logits_i))_y``, batch mean.

    The classification term of MACER (Zhai et al. 2020) and the loss SmoothAdv's attack ascends (Salman et al.
    2019); ``logits`` has shape (m, b, K). A floor of 1e-10 on the probability keeps the logarithm finite.
    """
    probabilities = torch.softmax(logits, dim=-1).mean(0)
    return nn.functional.nll_loss(torch.log(probabilities + 1e-10), targets)


def consistency_loss(logits: torch.Tensor, targets: torch.Tensor, *, lbd: float, eta: float) -> torch.Tensor:
    """Jeong & Shin (2020)'s objective on m noisy copies, averaged over the batch.

    ``L = (1/m) Σ_i CE(f(x + δ_i), y) + λ·(1/m) Σ_i KL(p̄ ‖ p_i) + η·H(p̄)``, where ``p_i = softmax(f(x + δ_i))``,
    ``p̄ = (1/m) Σ_i p_i`` and ``H`` is the Shannon entropy (the paper's consistency regulariser with its
    entropy term, in the form its experiments use).

    Parameters
    ----------
    logits : Tensor, shape (m, b, K)
    targets : Tensor, shape (b,)
    lbd, eta : float
        λ ≥ 0 and η ≥ 0.
    """
    log_p = torch.log_softmax(logits, dim=-1)
    copies = logits.shape[0]
    cross_entropy = nn.functional.nll_loss(log_p.reshape(-1, logits.shape[-1]), targets.repeat(copies))
    mean_p = log_p.exp().mean(0)
    kl = (torch.xlogy(mean_p, mean_p).unsqueeze(0) - mean_p * log_p).sum(-1).mean(0)
    entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-20))).sum(-1)
    return cross_entropy + (lbd * kl + eta * entropy).mean()


def macer_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, sigma: float, lbd: float, gamma: float, beta: float
) -> torch.Tensor:
    """MACER's objective (Zhai et al. 2020): soft smoothed cross-entropy plus the hinge on the radius surrogate.

    ``L = CE(ĝ(x), y) + λ·(σ/2)·(1/b) Σ_{j correct} max(γ − ξ_j, 0)``, where ``ĝ`` averages the softmax of the m
    copies, and ``ξ = Φ⁻¹(ĝ^β_y) − Φ⁻¹(ĝ^β_{y'})`` is the gap between the top two classes of the
    inverse-temperature-β soft smoothed classifier ``ĝ^β = mean_i softmax(β·f(x + δ_i))`` (so that
    ``σξ/2`` is Cohen's radius). Only examples the β-classifier gets right enter the hinge, and only those
    whose ξ is finite (a probability that rounds to 1 has no gradient to give).

    Parameters
    ----------
    logits : Tensor, shape (m, b, K)
    targets : Tensor, shape (b,)
    sigma : float
        The Gaussian σ of the noise the copies were drawn with.
    lbd, gamma, beta : float
        λ ≥ 0 (weight), γ ≥ 0 (hinge margin), β > 0 (inverse temperature).
    """
    classification = smoothed_cross_entropy(logits, targets)
    if lbd == 0:
        return classification
    soft = torch.softmax(beta * logits, dim=-1).mean(0)
    top, classes = soft.topk(2, dim=-1)
    with torch.no_grad():  # which examples enter the hinge: no gradient through the selection
        gap = torch.special.ndtri(top[:, 0]) - torch.special.ndtri(top[:, 1])
        selected = (classes[:, 0] == targets) & torch.isfinite(gap)
    xi = torch.special.ndtri(top[selected, 0]) - torch.special.ndtri(top[selected, 1])
    robustness = torch.relu(gamma - xi).sum() * sigma / 2 / targets.numel()
    return classification + lbd * robustness


class GaussianAugmentation(AbstractRecipe):
    """Cross-entropy on one noisy copy per example (Cohen et al. 2019, Sec. 4: "train with Gaussian data
    augmentation"); with any noise of :mod:`manifoldcert.noises`, or on clean inputs with ``noise=None``."""

    name = "gaussian"

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noise: AbstractNoise | None,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> RecipeStep:
        """Cross-entropy of one noisy copy (clean inputs without noise)."""
        if noise is not None:
            inputs = noise.perturb(inputs, generator=generator)
        logits = model(inputs)
        return RecipeStep(nn.functional.cross_entropy(logits, targets), _correct(logits, targets), 1)

    def config(self) -> dict[str, Any]:
        """The name and hyper-parameters."""
        return {"name": self.name}

    def check_noise(self, noise: AbstractNoise | None) -> None:
        """Any noise, or ``None`` for clean training."""


class Consistency(AbstractRecipe):
    """Consistency regularisation (Jeong & Shin 2020): see :func:`consistency_loss`.

    Parameters
    ----------
    m : int
        Noisy copies per example (the paper's default 2).
    lbd : float
        λ, the weight of the KL consistency term (10 at σ ≤ 0.5 on CIFAR-10, 20 on MNIST in the paper's runs).
    eta : float
        η, the weight of the entropy term (0.5).
    """

    name = "consistency"

    def __init__(self, m: int = 2, lbd: float = 10.0, eta: float = 0.5) -> None:
        self.m = check_positive_int(m, "the number of noisy copies m")
        self.lbd = _check_non_negative(lbd, "lbd (λ)")
        self.eta = _check_non_negative(eta, "eta (η)")

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noise: AbstractNoise | None,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> RecipeStep:
        """:func:`consistency_loss` of m noisy copies."""
        logits = _noisy_logits(model, inputs, _required(noise, self.name), self.m, generator)
        loss = consistency_loss(logits, targets, lbd=self.lbd, eta=self.eta)
        return RecipeStep(loss, _correct(logits, targets), self.m)

    def config(self) -> dict[str, Any]:
        """The name and hyper-parameters."""
        return {"name": self.name, "m": self.m, "lbd": self.lbd, "eta": self.eta}


class MACER(AbstractRecipe):
    """MACER (Zhai et al. 2020): maximise the certified radius through a soft smoothed classifier, see
    :func:`macer_loss`. Needs isotropic Gaussian noise (the surrogate is Cohen's Gaussian l2 radius).

    Parameters
    ----------
    m : int
        Noisy copies per example (16).
    lbd : float
        λ, the weight of the robustness term (12 on CIFAR-10 at σ ≤ 0.5; 16 on MNIST).
    gamma : float
        γ, the hinge margin on ξ (8).
    beta : float
        β, the inverse temperature of the soft smoothed classifier in the radius term (16).
    deferred_epochs : int
        Train with the classification term only for this many epochs first (0; Jeong & Shin's MNIST runs of
        MACER defer it until the first learning-rate drop).
    """

    name = "macer"

    def __init__(
        self, m: int = 16, lbd: float = 12.0, gamma: float = 8.0, beta: float = 16.0, deferred_epochs: int = 0
    ) -> None:
        self.m = check_positive_int(m, "the number of noisy copies m")
        self.lbd = _check_non_negative(lbd, "lbd (λ)")
        self.gamma = _check_non_negative(gamma, "gamma (γ)")
        beta = _check_non_negative(beta, "beta (β)")
        if beta == 0:
            raise ValueError("beta (β) must be > 0")
        self.beta = beta
        if isinstance(deferred_epochs, bool) or not isinstance(deferred_epochs, int) or deferred_epochs < 0:
            raise ValueError(f"deferred_epochs must be an integer >= 0, got {deferred_epochs!r}")
        self.deferred_epochs = deferred_epochs

    def check_noise(self, noise: AbstractNoise | None) -> None:
        """Isotropic Gaussian noise only."""
        if not isinstance(noise, Gaussian) or noise.name != Gaussian.name:
            raise ValueError(
                "MACER's radius term is the Gaussian l2 radius σ/2·(Φ⁻¹(p_A) − Φ⁻¹(p_B)): it needs the noise "
                f"'gaussian', got {noise!r}"
            )

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noise: AbstractNoise | None,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> RecipeStep:
        """:func:`macer_loss` of m noisy copies (λ = 0 during the deferred epochs)."""
        noise = _required(noise, self.name)
        logits = _noisy_logits(model, inputs, noise, self.m, generator)
        lbd = 0.0 if epoch < self.deferred_epochs else self.lbd
        loss = macer_loss(logits, targets, sigma=noise.sigma, lbd=lbd, gamma=self.gamma, beta=self.beta)
        return RecipeStep(loss, _correct(logits, targets), self.m)

    def config(self) -> dict[str, Any]:
        """The name and hyper-parameters."""
        return {
            "name": self.name,
            "m": self.m,
            "lbd": self.lbd,
            "gamma": self.gamma,
            "beta": self.beta,
            "deferred_epochs": self.deferred_epochs,
        }


class SmoothAdv(AbstractRecipe):
    """SmoothAdv (Salman et al. 2019): adversarial training of the soft smoothed classifier.

    For each batch, m noise draws δ_1..δ_m per example are fixed; an l2 PGD attack finds ``x' ∈ B_ε(x) ∩ [0,1]^d``
    that maximises :func:`smoothed_cross_entropy` over those draws (``steps`` normalised-gradient steps of
    length 2ε/steps, each followed by the clip to [0, 1] and the projection onto the ε-ball), run with the model
    in eval mode and its parameters frozen; the model is then trained on the cross-entropy of ``x' + δ_i``
    (mean over i). The attack radius grows linearly over the first ``warmup`` epochs:
    ``ε_e = min(ε, (e + 1)·ε / warmup)``. A batch of b examples gives b·m noisy inputs and one optimiser step
    (the authors' code instead splits each loaded batch into m chunks of b/m examples, one step each), so an
    epoch costs about (steps + 1)·m forward–backward passes per example.

    Parameters
    ----------
    m : int
        Noise draws per example (1; the paper tries 1, 2, 4, 8 — Jeong & Shin's MNIST runs use 4).
    epsilon : float
        ε ≥ 0, the l2 attack radius in [0, 1] pixel units (1.0; the paper's grid is 0.25, 0.5, 1, 2).
    steps : int
        PGD steps (10; the paper uses 1, 2, 4, 8 or 10).
    warmup : int
        Epochs over which ε grows to its value (10).
    """

    name = "smoothadv"

    def __init__(self, m: int = 1, epsilon: float = 1.0, steps: int = 10, warmup: int = 10) -> None:
        self.m = check_positive_int(m, "the number of noisy copies m")
        self.epsilon = _check_non_negative(epsilon, "epsilon (ε)")
        self.steps = check_positive_int(steps, "steps")
        self.warmup = check_positive_int(warmup, "warmup (epochs)")

    def radius(self, epoch: int) -> float:
        """The attack radius ε_e of epoch ``epoch`` (from 0) after the linear warm-up."""
        return min(self.epsilon, (epoch + 1) * self.epsilon / self.warmup)

    def attack(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noisy: Any,
        epsilon: float,
    ) -> torch.Tensor:
        """PGD on the soft smoothed classifier: the adversarial inputs ``x'`` (shape of ``inputs``).

        ``noisy(x)`` returns the m fixed noisy copies of ``x`` stacked as (m·b, ...), the same draws at each call.
        """
        delta = torch.zeros_like(inputs, requires_grad=True)
        step_size = 2 * epsilon / self.steps
        flat = (inputs.shape[0], -1)
        for _ in range(self.steps):
            logits = model(noisy(inputs + delta)).view(self.m, inputs.shape[0], -1)
            (gradient,) = torch.autograd.grad(smoothed_cross_entropy(logits, targets), delta)
            norms = gradient.reshape(flat).norm(dim=1).view(-1, *([1] * (inputs.dim() - 1)))
            direction = torch.where(norms > 0, gradient / norms.clamp_min(1e-12), torch.zeros_like(gradient))
            with torch.no_grad():
                moved = (inputs + delta + step_size * direction).clamp_(0, 1) - inputs
                lengths = moved.reshape(flat).norm(dim=1).view_as(norms)
                delta.copy_(moved * torch.clamp(epsilon / lengths.clamp_min(1e-12), max=1.0))
        return (inputs + delta).detach()

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        noise: AbstractNoise | None,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> RecipeStep:
        """Cross-entropy at the PGD inputs of :meth:`attack` under the same m noise draws."""
        required = _required(noise, self.name)
        state = generator.get_state()

        def noisy(x: torch.Tensor) -> torch.Tensor:
            generator.set_state(state)  # the same m draws for every step of the attack and for training
            return required.perturb(_copies(x, self.m), generator=generator)

        epsilon = self.radius(epoch)
        if epsilon > 0:
            with frozen(model), torch.autocast(inputs.device.type, enabled=False):
                adversarial = self.attack(model, inputs.float(), targets, noisy, epsilon)
        else:
            adversarial = inputs
        logits = model(noisy(adversarial))
        loss = nn.functional.cross_entropy(logits, targets.repeat(self.m))
        return RecipeStep(loss, _correct(logits.view(self.m, inputs.shape[0], -1), targets), self.m)

    def config(self) -> dict[str, Any]:
        """The name and hyper-parameters."""
        return {
            "name": self.name,
            "m": self.m,
            "epsilon": self.epsilon,
            "steps": self.steps,
            "warmup": self.warmup,
        }


_RECIPES: dict[str, type[AbstractRecipe]] = {
    cls.name: cls for cls in (GaussianAugmentation, Consistency, MACER, SmoothAdv)
}


def available_recipes() -> list[str]:
    """Names :func:`get_recipe` accepts."""
    return sorted(_RECIPES)


def recipe_class(name: str) -> type[AbstractRecipe]:
    """The class registered as ``name`` (its constructor's parameters are the hyper-parameters)."""
    check_name(name, _RECIPES, "recipe")
    return _RECIPES[name]


def get_recipe(name: str, **params: Any) -> AbstractRecipe:
    """Build a recipe by name, e.g. ``get_recipe("macer", lbd=16.0)``; unknown keywords are an error."""
    cls = recipe_class(name)
    try:
        return cls(**params)
    except TypeError as error:
        raise ValueError(f"recipe {name!r}: {error}") from None


def recipe_from_config(config: dict[str, Any]) -> AbstractRecipe:
    """Rebuild a recipe from :meth:`AbstractRecipe.config` (as checkpoints record it)."""
    params = dict(config)
    return get_recipe(params.pop("name"), **params)
