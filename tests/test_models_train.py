"""Reference models, checkpoints and noise-augmented training."""

from __future__ import annotations

import pytest
import torch

from manifoldcert import noises
from manifoldcert.data import load_dataset
from manifoldcert.models import (
    CheckpointInfo,
    build_model,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from manifoldcert.train import accuracy, train_model


@pytest.mark.parametrize(
    "arch, shape",
    [
        ("mlp", (1, 8, 8)),
        ("cnn", (1, 8, 8)),
        ("cnn", (1, 28, 28)),
        ("mlp", (3, 32, 32)),
        ("resnet20", (3, 32, 32)),
    ],
)
def test_architectures_map_inputs_to_logits(arch, shape):
    model = build_model(arch, shape, 10).eval()
    with torch.no_grad():
        assert model(torch.rand(4, *shape)).shape == (4, 10)


def test_resnet110_has_the_right_depth():
    model = build_model("resnet110", (3, 32, 32), 10)
    convs = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert convs + 1 == 110  # 108 3×3 convolutions and the final linear layer


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("mlp", (1, 8, 8), 10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_model("mlp", (1, 8, 8), 10, seed=3)
    c = build_model("mlp", (1, 8, 8), 10, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_bad_architectures_are_refused():
    with pytest.raises(ValueError, match="valid architectures are: cnn, mlp, resnet110, resnet20"):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("cnn", (1, 30, 30), 10)
    with pytest.raises(ValueError, match="6n"):
        build_model("resnet20", (3, 32, 32), 10, depth=21)


def test_checkpoint_round_trip_and_compatibility(tmp_path):
    model = build_model("cnn", (1, 8, 8), 10, seed=1)
    info = CheckpointInfo("cnn", "digits", (1, 8, 8), 10, noises.Laplace(0.5).config(), seed=1)
    path = save_checkpoint(tmp_path / "m.pt", model, info)
    loaded, loaded_info = load_checkpoint(path)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert loaded_info == info
    assert noises.from_config(loaded_info.noise).sigma == pytest.approx(0.5)
    check_compatible(loaded_info, "digits", (1, 8, 8))
    with pytest.raises(ValueError, match="trained on 'digits', not 'mnist'"):
        check_compatible(loaded_info, "mnist", (1, 28, 28))
    with pytest.raises(ValueError, match="shape"):
        check_compatible(loaded_info, "digits", (1, 28, 28))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a manifoldcert checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "m.pt", build_model("mlp", (1, 8, 8), 10), None)


def test_noise_augmented_training_learns_digits_and_is_reproducible():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    noise = noises.Gaussian(0.25)
    weights = []
    for _ in range(2):
        model = build_model("mlp", train.input_shape, 10, seed=0)
        result = train_model(model, train, noise, epochs=8, seed=0, progress=False)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert result.losses[-1] < result.losses[0]
    assert accuracy(model, test) > 0.85
    assert accuracy(model, test, noise=noise) > 0.8
    # The same data as a plain Dataset of (x, y) (through a DataLoader) and as a user's DataLoader.
    assert accuracy(model, torch.utils.data.TensorDataset(test.inputs(), test.labels)) == accuracy(model, test)
    loader = torch.utils.data.DataLoader(test, batch_size=64)
    assert accuracy(model, loader) == accuracy(model, test)
    assert all(torch.equal(p, q) for p, q in zip(*weights, strict=True))


def test_training_refuses_bad_arguments():
    model = build_model("mlp", (1, 8, 8), 10)
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs"):
        train_model(model, data, None, epochs=0)
    with pytest.raises(ValueError, match="valid optimizers"):
        train_model(model, data, None, optimizer="lbfgs")
    with pytest.raises(ValueError, match="empty"):
        train_model(model, torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)), None)
    with pytest.raises(ValueError, match="mixed_precision needs a CUDA model"):
        train_model(model, data, None, mixed_precision=True)


def test_train_checkpoint_records_and_reuses(tmp_path):
    from manifoldcert.train import train_checkpoint

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    path = tmp_path / "m.pt"
    model, info = train_checkpoint(
        "mlp", train, noises.Uniform(0.3), path, test=test, epochs=1, progress=False
    )
    assert info.dataset == "digits" and info.noise == {"name": "uniform", "sigma": 0.3}
    assert 0 <= info.training["test_accuracy_noisy"] <= 1 and info.training["epochs"] == 1
    reloaded, reloaded_info = train_checkpoint("mlp", train, noises.Uniform(0.3), path, epochs=1, reuse=True)
    assert reloaded_info == info
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reloaded.parameters(), strict=True))
    with pytest.raises(ValueError, match="remove it or choose another path"):
        train_checkpoint("mlp", train, noises.Uniform(0.5), path, epochs=1, reuse=True)
