"""Training recipes (consistency, MACER, SmoothAdv) against hand computations; the noise transform; the loop."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from manifoldcert import noises
from manifoldcert.data import load_dataset
from manifoldcert.models import build_model, load_checkpoint
from manifoldcert.recipes import (
    MACER,
    Consistency,
    SmoothAdv,
    available_recipes,
    consistency_loss,
    get_recipe,
    macer_loss,
    recipe_from_config,
    smoothed_cross_entropy,
)
from manifoldcert.train import RandomCropFlip, iterate_batches, train_checkpoint, train_model

# Two noisy copies (m = 2) of a batch of three examples over K = 3 classes.
LOGITS = torch.tensor(
    [
        [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 3.0, 0.0]],
        [[1.5, 1.0, -0.5], [0.4, -0.2, 0.1], [0.5, 2.0, 0.3]],
    ],
    dtype=torch.float64,
)
TARGETS = torch.tensor([0, 2, 1])


def _softmax(row):
    row = np.asarray(row, dtype=np.float64)
    e = np.exp(row - row.max())
    return e / e.sum()


def test_recipes_are_registered():
    assert available_recipes() == ["consistency", "gaussian", "macer", "smoothadv"]
    for name in available_recipes():
        recipe = get_recipe(name)
        assert recipe_from_config(recipe.config()).config() == recipe.config()


def test_smoothed_cross_entropy_by_hand():
    expected = 0.0
    for j, y in enumerate(TARGETS.tolist()):
        mean = (_softmax(LOGITS[0, j]) + _softmax(LOGITS[1, j])) / 2
        expected -= math.log(mean[y] + 1e-10)
    assert float(smoothed_cross_entropy(LOGITS, TARGETS)) == pytest.approx(expected / 3, rel=1e-12)


def test_consistency_loss_by_hand():
    lbd, eta = 10.0, 0.5
    total = 0.0
    for j, y in enumerate(TARGETS.tolist()):
        p = [_softmax(LOGITS[i, j]) for i in range(2)]
        mean = (p[0] + p[1]) / 2
        cross_entropy = -(math.log(p[0][y]) + math.log(p[1][y])) / 2
        kl = sum(float(np.sum(mean * np.log(mean / p[i]))) for i in range(2)) / 2
        entropy = -float(np.sum(mean * np.log(mean)))
        total += cross_entropy + lbd * kl + eta * entropy
    loss = consistency_loss(LOGITS, TARGETS, lbd=lbd, eta=eta)
    assert float(loss) == pytest.approx(total / 3, rel=1e-12)
    # With one copy the KL term vanishes: cross-entropy plus η times the entropy of the prediction.
    single = consistency_loss(LOGITS[:1], TARGETS, lbd=lbd, eta=0.0)
    assert float(single) == pytest.approx(float(nn.functional.cross_entropy(LOGITS[0], TARGETS)), rel=1e-12)


def test_macer_loss_by_hand():
    sigma, lbd, gamma, beta = 0.5, 12.0, 8.0, 2.0
    classification = float(smoothed_cross_entropy(LOGITS, TARGETS))
    hinge = 0.0
    for j, y in enumerate(TARGETS.tolist()):
        soft = (_softmax(beta * LOGITS[0, j].numpy()) + _softmax(beta * LOGITS[1, j].numpy())) / 2
        order = np.argsort(soft)[::-1]
        if order[0] != y:
            continue  # only examples the β-classifier gets right enter the hinge
        xi = stats.norm.ppf(soft[order[0]]) - stats.norm.ppf(soft[order[1]])
        hinge += max(gamma - xi, 0.0)
    expected = classification + lbd * sigma / 2 * hinge / 3
    assert float(macer_loss(LOGITS, TARGETS, sigma=sigma, lbd=lbd, gamma=gamma, beta=beta)) == pytest.approx(
        expected, rel=1e-10
    )
    # λ = 0 leaves the classification term alone.
    assert float(macer_loss(LOGITS, TARGETS, sigma=sigma, lbd=0.0, gamma=gamma, beta=beta)) == pytest.approx(
        classification, rel=1e-12
    )
    # A margin the radius already exceeds gives no hinge: γ = 0.
    assert float(macer_loss(LOGITS, TARGETS, sigma=sigma, lbd=lbd, gamma=0.0, beta=beta)) == pytest.approx(
        classification, rel=1e-12
    )


def test_macer_gradient_is_finite_when_a_probability_rounds_to_one():
    logits = torch.tensor([[[60.0, 0.0, 0.0], [1.0, 0.5, 0.0]]], dtype=torch.float32, requires_grad=True)
    loss = macer_loss(logits, torch.tensor([0, 0]), sigma=0.25, lbd=16.0, gamma=8.0, beta=16.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 1].abs().sum() > 0  # the finite example still trains


class _Linear(nn.Module):
    def __init__(self, d: int = 12, k: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(d, k)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(k, d, generator=torch.Generator().manual_seed(1)))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.layer(x.flatten(1))


def test_smoothadv_attacks_inside_the_ball_with_the_same_noise_at_every_step():
    model = _Linear()
    inputs = torch.rand(5, 1, 3, 4, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 0, 1])
    recipe = SmoothAdv(m=3, epsilon=0.4, steps=4, warmup=1)
    noise = noises.Gaussian(0.25)
    generator = torch.Generator().manual_seed(7)
    start = generator.get_state()
    step = recipe.loss(model, inputs, targets, noise, generator=generator, epoch=0)
    assert len(model.inputs) == recipe.steps + 1 and torch.isfinite(step.loss) and step.copies == 3
    # The generator moved by exactly one draw of m·b noisy copies: the attack replayed the same draws.
    replay = torch.Generator().manual_seed(0)
    replay.set_state(start)
    drawn = noise.sample(15, inputs.shape[1:], generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())
    for seen in model.inputs:
        shift = (seen - drawn).view(3, 5, -1) - inputs.view(1, 5, -1)  # δ of each copy
        assert torch.allclose(
            shift, shift[:1].expand_as(shift), atol=1e-6
        )  # one δ per example for all copies
        assert (shift[0].norm(dim=1) <= 0.4 + 1e-6).all()
        assert ((inputs.view(5, -1) + shift[0]) >= -1e-6).all() and (
            (inputs.view(5, -1) + shift[0]) <= 1 + 1e-6
        ).all()
    adversarial = inputs.view(5, -1) + ((model.inputs[-1] - drawn).view(3, 5, -1)[0] - inputs.view(5, -1))
    # The attack raised the soft smoothed cross-entropy over the same draws.
    with torch.no_grad():

        def smoothed(x):
            logits = model.layer(x.repeat(3, 1) + drawn.view(15, -1)).view(3, 5, -1)
            return float(smoothed_cross_entropy(logits, targets))

        assert smoothed(adversarial) > smoothed(inputs.view(5, -1))
    assert all(p.requires_grad for p in model.parameters()) and model.training is True


def test_smoothadv_warm_up_is_linear():
    recipe = SmoothAdv(epsilon=1.0, warmup=4)
    assert [recipe.radius(e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Consistency(m=0), "m must be an integer >= 1"),
        (lambda: Consistency(lbd=-1.0), "lbd"),
        (lambda: Consistency(eta=-0.1), "eta"),
        (lambda: MACER(gamma=-1.0), "gamma"),
        (lambda: MACER(beta=0.0), "beta"),
        (lambda: MACER(lbd=float("nan")), "lbd"),
        (lambda: MACER(deferred_epochs=-1), "deferred_epochs"),
        (lambda: SmoothAdv(epsilon=-0.5), "epsilon"),
        (lambda: SmoothAdv(steps=0), "steps"),
        (lambda: SmoothAdv(warmup=0), "warmup"),
        (lambda: get_recipe("mixup"), "valid recipes are: consistency, gaussian, macer, smoothadv"),
        (lambda: get_recipe("macer", alpha=1.0), "recipe 'macer'"),
    ],
)
def test_hyper_parameters_outside_their_domain_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_recipes_refuse_noises_they_are_not_defined_for():
    with pytest.raises(ValueError, match="needs the noise 'gaussian'"):
        MACER().check_noise(noises.Laplace(0.5))
    with pytest.raises(ValueError, match="needs a smoothing noise"):
        Consistency().check_noise(None)
    model = build_model("mlp", (1, 8, 8), 10)
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="needs the noise 'gaussian'"):
        train_model(model, data, noises.Uniform(0.5), recipe=MACER(), progress=False)


def _every_registered_noise():
    d = 12
    special = {
        "cauchy": {"scale": 0.2},
        "derandomized-splitting": {"sigma": 0.3, "dim": d, "offset_seed": 0},
        "diagonal-gaussian": {"scales": torch.linspace(0.1, 0.5, d)},
        "full-gaussian": {"covariance": 0.1 * torch.eye(d) + 0.01},
    }
    return [noises.get(name, **special.get(name, {"sigma": 0.3})) for name in noises.available()]


@pytest.mark.parametrize("noise", _every_registered_noise(), ids=lambda noise: noise.name)
def test_noise_transform_draws_what_the_noise_draws(noise):
    x = torch.randint(0, 256, (4, 1, 3, 4), generator=torch.Generator().manual_seed(3)).float() / 255
    transform = noises.NoiseTransform(noise, generator=torch.Generator().manual_seed(11))
    expected = noise.perturb(x, generator=torch.Generator().manual_seed(11))
    assert torch.equal(transform(x), expected)
    if type(noise).perturb is noises.AbstractNoise.perturb:  # additive noise: exactly x + sample
        sample = noise.sample(4, x.shape[1:], generator=torch.Generator().manual_seed(11))
        assert torch.equal(expected, x + sample)
    # Per-example use (a dataset transform) and a seed instead of a generator.
    single = noises.NoiseTransform(noise, seed=11, batched=False)
    assert torch.equal(single(x[0]), noise.perturb(x[:1], generator=torch.Generator().manual_seed(11))[0])


def test_noise_transform_refuses_bad_input():
    noise = noises.Gaussian(0.5)
    with pytest.raises(TypeError, match="AbstractNoise"):
        noises.NoiseTransform("gaussian")
    with pytest.raises(ValueError, match="not both"):
        noises.NoiseTransform(noise, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="batched=False"):
        noises.NoiseTransform(noise)(torch.rand(5))
    with pytest.raises(TypeError, match="float tensors"):
        noises.NoiseTransform(noise)(torch.zeros(2, 3, dtype=torch.uint8))


def test_crop_flip_moves_each_example_as_a_loop_would():
    x = torch.rand(6, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    augment = RandomCropFlip(padding=2)
    out = augment(x, torch.Generator().manual_seed(4))
    replay = torch.Generator().manual_seed(4)
    tops = torch.randint(5, (6, 1), generator=replay)
    lefts = torch.randint(5, (6, 1), generator=replay)
    coins = torch.rand(6, generator=replay) < 0.5
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for j in range(6):
        crop = padded[j, :, tops[j, 0] : tops[j, 0] + 5, lefts[j, 0] : lefts[j, 0] + 5]
        assert torch.equal(out[j], crop.flip(-1) if coins[j] else crop)
    assert torch.equal(RandomCropFlip(padding=0, flip=False)(x, torch.Generator()), x)
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)


def test_training_data_must_be_pairs():
    model = build_model("mlp", (1, 8, 8), 10)
    triples = torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.zeros(4), torch.zeros(4))
    with pytest.raises(TypeError, match=r"\(x, y\) pairs; batch 0 is a list of 3 items"):
        train_model(model, triples, None, progress=False)
    with pytest.raises(TypeError, match="x must be a float tensor"):
        list(
            iterate_batches(
                [(torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(2))], batch_size=2, device="cpu"
            )
        )
    with pytest.raises(TypeError, match="one integer class per input"):
        list(
            iterate_batches(
                [(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))], batch_size=2, device="cpu"
            )
        )


@pytest.mark.parametrize(
    "recipe",
    [Consistency(m=2, lbd=20.0), MACER(m=4, lbd=16.0, deferred_epochs=1), SmoothAdv(m=2, steps=2, warmup=2)],
    ids=lambda recipe: recipe.name,
)
def test_each_recipe_trains_reproducibly_from_a_data_loader(recipe):
    train = load_dataset("digits", "train").subset(slice(0, 256))
    runs = []
    for _ in range(2):
        loader = torch.utils.data.DataLoader(
            train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        model = build_model("mlp", train.input_shape, 10, seed=0)
        result = train_model(
            model, loader, noises.Gaussian(0.25), recipe=recipe, epochs=2, seed=0, progress=False
        )
        runs.append(([p.detach().clone() for p in model.parameters()], result))
    assert all(torch.equal(p, q) for p, q in zip(runs[0][0], runs[1][0], strict=True))
    result = runs[0][1]
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)
    assert all(0 <= a <= 1 for a in result.accuracies) and all(s > 0 for s in result.seconds)


def test_checkpoint_records_the_recipe_and_reuse_checks_it(tmp_path):
    train = load_dataset("digits", "train").subset(slice(0, 128))
    path = tmp_path / "m.pt"
    recipe = Consistency(m=2, lbd=5.0)
    _, info = train_checkpoint(
        "mlp",
        train,
        noises.Gaussian(0.25),
        path,
        recipe=recipe,
        augment=RandomCropFlip(1),
        epochs=1,
        progress=False,
    )
    _, loaded = load_checkpoint(path)
    assert loaded.training["recipe"] == {"name": "consistency", "m": 2, "lbd": 5.0, "eta": 0.5}
    assert loaded.training["augment"] == {"name": "crop-flip", "padding": 1, "flip": True}
    assert len(loaded.training["seconds_per_epoch"]) == 1
    train_checkpoint("mlp", train, noises.Gaussian(0.25), path, recipe=recipe, epochs=1, reuse=True)
    with pytest.raises(ValueError, match="remove it or choose another path"):
        train_checkpoint("mlp", train, noises.Gaussian(0.25), path, recipe=Consistency(lbd=6.0), reuse=True)


def test_cli_trains_with_a_recipe_and_certifies_the_result(tmp_path, capsys):
    from manifoldcert.cli import main

    path = tmp_path / "macer.pt"
    train = ["train", "--dataset", "digits", "--sigma", "0.25", "--epochs", "2", "--recipe", "macer"]
    assert main([*train, "--copies", "4", "--lbd", "8", "--deferred-epochs", "1", "--out", str(path)]) == 0
    assert "MACER(m=4, lbd=8.0, gamma=8.0, beta=16.0, deferred_epochs=1)" in capsys.readouterr().out
    _, info = load_checkpoint(path)
    assert info.training["recipe"] == {
        "name": "macer",
        "m": 4,
        "lbd": 8.0,
        "gamma": 8.0,
        "beta": 16.0,
        "deferred_epochs": 1,
    }
    out = tmp_path / "macer.tsv"
    assert main(["certify", "--checkpoint", str(path), "--n", "200", "--max", "2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--recipe", "gaussian", "--lbd", "3"], "--lbd does not apply to --recipe gaussian"),
        (
            ["--recipe", "consistency", "--epsilon", "1"],
            r"--epsilon does not apply .*it takes --copies, --eta, --lbd",
        ),
        (["--recipe", "smoothadv", "--epsilon", "-1"], "epsilon"),
        (["--recipe", "macer", "--noise", "laplace"], "needs the noise 'gaussian'"),
        (["--recipe", "consistency", "--noise", "none"], "needs a smoothing noise"),
        (["--amp"], "mixed_precision needs a CUDA model"),
    ],
)
def test_cli_refuses_recipe_flags_that_do_not_apply(tmp_path, capsys, extra, match):
    from manifoldcert.cli import main

    path = tmp_path / "m.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "1", *extra, "--out", str(path)]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not path.exists()
