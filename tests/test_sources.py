"""Bring your own model and data: manifoldcert.sources, certify's batch refusal and CertificateBatch."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from sources_factories import linear
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from manifoldcert.certificate import Certificate, CertificateBatch
from manifoldcert.certifiers import get_certifier
from manifoldcert.estimator import ModelOutputError, MonteCarloEstimator
from manifoldcert.models import CheckpointInfo, build_model, save_checkpoint
from manifoldcert.noises import Gaussian
from manifoldcert.sources import (
    DatasetInputs,
    LogitsAdapter,
    ModelSourceError,
    NormalizedModel,
    image_folder,
    imagenet_val,
    load_model,
    model_kind,
)

SHAPE = (3, 4, 4)


# -- models -------------------------------------------------------------------------------------------------
def test_import_path_with_and_without_arguments():
    x = torch.rand(2, *SHAPE)
    model = load_model("sources_factories:linear", num_classes=3, input_shape=SHAPE)
    assert torch.equal(model(x), linear()(x))
    assert not model.training
    model = load_model(
        "sources_factories:linear(num_classes=5, size=2)", num_classes=5, input_shape=(3, 2, 2)
    )
    assert model(torch.rand(1, 3, 2, 2)).shape == (1, 5)
    assert model_kind("sources_factories:linear") == "import"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_package_xyz.models:net", r"cannot import module 'no_such_package_xyz.models'"),
        ("sources_factories:missing", r"module 'sources_factories' has no attribute 'missing'"),
        ("sources_factories:not_a_factory", r"is not callable"),
        ("sources_factories:returns_int", r"returned a int, not an nn.Module"),
        ("sources_factories:linear(3)", r"keyword arguments with literal values"),
        ("sources_factories:linear(num_classes=len([]))", r"keyword arguments with literal values"),
        ("/no/such/file.pt", r"neither an existing file .* nor an import path"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ModelSourceError, match=message):
        load_model(spec)


def test_a_folder_or_a_foreign_file_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="is a folder"):
        load_model(tmp_path)
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(
        ModelSourceError, match="not a TorchScript file, a torch.export archive or a manifoldcert"
    ):
        load_model(garbage)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")  # a torch.save zip, not a checkpoint
    with pytest.raises(ModelSourceError, match="not a manifoldcert checkpoint"):
        load_model(tmp_path / "state.pt")


def test_torchscript_file(tmp_path):
    base = linear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(base).save(str(tmp_path / "net.ts"))  # no telling extension: read from the content
    assert model_kind(tmp_path / "net.ts") == "torchscript"
    model = load_model(tmp_path / "net.ts", num_classes=3, input_shape=SHAPE)
    x = torch.rand(5, *SHAPE)
    torch.testing.assert_close(model(x), base(x))


def test_torch_export_file_certifies(tmp_path):
    base = linear()
    program = torch.export.export(
        base, (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp_path / "net.pt2"))
    assert model_kind(tmp_path / "net.pt2") == "export"
    model = load_model(
        tmp_path / "net.pt2", normalize=([0.5] * 3, [0.25] * 3), num_classes=3, input_shape=SHAPE
    )
    x = torch.rand(6, *SHAPE)
    torch.testing.assert_close(model(x), base((x - 0.5) / 0.25))
    # The estimator puts models in eval mode, which an exported module alone refuses.
    certificate = get_certifier("cohen", model, sigma=0.25, batch_size=50).certify(x[0], n0=10, n=50)
    assert isinstance(certificate, Certificate)


def test_torch_export_with_a_static_batch_is_refused(tmp_path):
    program = torch.export.export(linear(), (torch.zeros(1, *SHAPE),))
    torch.export.save(program, str(tmp_path / "static.pt2"))
    with pytest.raises(ModelSourceError, match="fails on a batch of 2.*dynamic batch dimension"):
        load_model(tmp_path / "static.pt2", num_classes=3, input_shape=SHAPE)


def test_manifoldcert_checkpoint(tmp_path):
    net = build_model("mlp", SHAPE, 4, seed=1)
    info = CheckpointInfo(arch="mlp", dataset="toy", input_shape=SHAPE, num_classes=4, noise={}, seed=1)
    path = save_checkpoint(tmp_path / "mlp.pt", net, info)
    assert model_kind(path) == "checkpoint"
    model = load_model(path, num_classes=4, input_shape=SHAPE)
    x = torch.rand(3, *SHAPE)
    torch.testing.assert_close(model(x), net.eval()(x))


def test_normalisation_is_exact():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    inner = nn.Identity()
    model = load_model(inner, normalize=(mean, std))
    assert isinstance(model, NormalizedModel)
    x = torch.rand(2, 3, 5, 5)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match="normalize has 3 channels but the input has shape"):
        model(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="same non-zero length"):
        NormalizedModel(inner, (0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match="std must be positive"):
        NormalizedModel(inner, (0.5,), (0.0,))


def test_wrong_num_classes_and_failing_forward_are_refused():
    with pytest.raises(ModelSourceError, match=r"returned output of shape \(1, 3\); expected .*\(1, 10\)"):
        load_model("sources_factories:linear", num_classes=10, input_shape=SHAPE)
    with pytest.raises(ModelSourceError, match=r"failed on an input of shape \(1, 1, 28, 28\).*RuntimeError"):
        load_model("sources_factories:linear", num_classes=3, input_shape=(1, 28, 28))


@dataclass
class FakeModelOutput:
    logits: torch.Tensor
    hidden_states: tuple = ()


class Structured(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.net = kind, linear()

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "dict":
            return {"logits": logits, "aux": logits * 0}
        if self.kind == "object":
            return FakeModelOutput(logits)
        if self.kind == "tuple":
            return logits, x
        return {"scores": logits}


@pytest.mark.parametrize("kind", ["dict", "object", "tuple"])
def test_logits_adapter_and_automatic_adaptation(kind):
    x = torch.rand(4, *SHAPE)
    expected = linear()(x)
    assert torch.equal(LogitsAdapter(Structured(kind))(x), expected)
    model = load_model(Structured(kind), num_classes=3, input_shape=SHAPE)
    assert isinstance(model, LogitsAdapter)
    assert torch.equal(model(x), expected)
    assert torch.equal(LogitsAdapter(Structured("other"), key="scores")(x), expected)


def test_logits_adapter_refuses_an_output_without_logits():
    with pytest.raises(ModelSourceError, match=r"dict with keys \['scores'\], none of which is 'logits'"):
        load_model(Structured("other"), num_classes=3, input_shape=SHAPE)


def test_estimator_points_to_the_logits_adapter():
    estimator = MonteCarloEstimator(Structured("dict"), batch_size=8)
    with pytest.raises(ModelOutputError, match="returned a dict.*manifoldcert.sources.LogitsAdapter"):
        estimator.class_counts(torch.rand(SHAPE), Gaussian(0.25), 8)
    estimator = MonteCarloEstimator(Structured("object"), batch_size=8)
    with pytest.raises(ModelOutputError, match="FakeModelOutput.*LogitsAdapter"):
        estimator.class_counts(torch.rand(SHAPE), Gaussian(0.25), 8)


# -- data ---------------------------------------------------------------------------------------------------
class CountingDataset(Dataset):
    """``(x_i, i mod 3)``, recording which items were read."""

    def __init__(self, size: int = 10, bad: object = None) -> None:
        self.size, self.bad, self.reads = size, bad, []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx):
        self.reads.append(idx)
        if self.bad is not None:
            return self.bad
        return torch.full(SHAPE, idx / self.size), idx % 3


def test_dataset_inputs_on_a_tensor_dataset():
    xs, ys = torch.rand(7, *SHAPE), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    inputs = DatasetInputs(TensorDataset(xs, ys))
    assert len(inputs) == 7 and inputs.input_shape == SHAPE and inputs.num_classes is None
    assert torch.equal(inputs[3], xs[3])
    assert inputs.labels.dtype == torch.int64 and torch.equal(inputs.labels, ys)
    got = list(inputs.iter_examples([5, 1, 6], batch_size=2))
    assert [idx for idx, _, _ in got] == [5, 1, 6]
    assert all(torch.equal(x, xs[idx]) and y == int(ys[idx]) for idx, x, y in got)


def test_iter_examples_is_lazy_and_in_order():
    dataset = CountingDataset(10)
    inputs = DatasetInputs(dataset)
    stream = inputs.iter_examples([9, 2, 4, 0])
    assert dataset.reads == []
    idx, x, y = next(stream)
    assert (idx, y) == (9, 0) and torch.equal(x, torch.full(SHAPE, 0.9))
    assert dataset.reads == [9]  # one item read, not the split
    assert [i for i, _, _ in stream] == [2, 4, 0]
    dataset.reads.clear()
    assert inputs.labels.tolist() == [i % 3 for i in range(10)]  # no targets: read once, then cached
    assert inputs.labels.tolist() == [i % 3 for i in range(10)] and len(dataset.reads) == 10
    with pytest.raises(IndexError, match="index 10 is out of range for a data set of 10"):
        list(inputs.iter_examples([10]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3), r"item 0 of the data set is a Tensor; expected an \(x, y\) pair"),
        ((torch.zeros(3), 1, 2), r"is a tuple of length 3; expected an \(x, y\) pair"),
        (([0.5, 0.5], 1), r"has x of type list; expected a tensor"),
        ((torch.zeros(3), "cat"), r"has label 'cat'; expected an integer class"),
    ],
)
def test_bad_items_are_refused(bad, message):
    inputs = DatasetInputs(CountingDataset(3, bad=bad))
    with pytest.raises(TypeError, match=message):
        inputs[0]
    with pytest.raises(TypeError, match=message):
        next(inputs.iter_examples([0]))


def _write_tree(root, classes, per_class, size, ext):
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(root / c)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"img{i}.{ext}")


def test_image_folder(tmp_path):
    _write_tree(tmp_path, ["b_dog", "a_cat"], 3, (40, 30), "png")
    inputs = image_folder(tmp_path)
    assert len(inputs) == 6 and inputs.num_classes == 2 and inputs.input_shape == (3, 30, 40)
    assert inputs.labels.tolist() == [0, 0, 0, 1, 1, 1]  # classes sorted: a_cat = 0
    x = inputs[0]
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    expected = torch.from_numpy(np.array(Image.open(tmp_path / "a_cat" / "img0.png"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(x, expected.float())
    cropped = image_folder(tmp_path, image_size=16, center_crop=12)
    assert cropped.input_shape == (3, 12, 12)
    with pytest.raises(FileNotFoundError, match="no image folder"):
        image_folder(tmp_path / "missing")


def test_imagenet_val(tmp_path):
    wnids = ["n01440764", "n01443537", "n01484850"]
    _write_tree(tmp_path, wnids[::-1], 2, (300, 260), "JPEG")
    with pytest.warns(UserWarning, match="3 class folders, not ImageNet's 1000"):
        inputs = imagenet_val(tmp_path)
    assert inputs.input_shape == (3, 224, 224) and inputs.num_classes == 3
    assert inputs.dataset.classes == wnids and inputs.labels.tolist() == [0, 0, 1, 1, 2, 2]
    x = inputs[5]
    assert 0 <= float(x.min()) and float(x.max()) <= 1


# -- certify_batch and CertificateBatch ---------------------------------------------------------------------
def test_certify_refuses_a_batch_and_points_to_certify_batch():
    certifier = get_certifier("cohen", linear(), sigma=0.25, input_shape=SHAPE, batch_size=50)
    with pytest.raises(ValueError, match=r"a batch of 2 inputs.*certify_batch"):
        certifier.certify(torch.rand(2, *SHAPE), n0=10, n=20)
    unknown = get_certifier("cohen", linear(), sigma=0.25, batch_size=50)
    with pytest.raises(ValueError, match=r"a batch of 2 inputs.*certify_batch"):
        unknown.certify(torch.rand(2, *SHAPE), n0=10, n=20)
    assert isinstance(unknown.certify(torch.rand(SHAPE), n0=10, n=20), Certificate)  # (C, H, W) is one input


def test_certificate_batch_arrays():
    certifier = get_certifier("cohen", linear(), sigma=0.25, batch_size=100)
    xs = torch.rand(4, *SHAPE)
    batch = certifier.certify_batch(xs, n0=10, n=100, progress=False)
    assert isinstance(batch, CertificateBatch) and isinstance(batch, list) and len(batch) == 4
    assert all(isinstance(c, Certificate) for c in batch) and batch[0] is list(batch)[0]
    assert batch.predictions.dtype == np.int64
    assert batch.predictions.tolist() == [-1 if c.prediction is None else c.prediction for c in batch]
    assert set(batch.radii) == {"l1", "l2", "linf"}
    assert np.array_equal(batch.radii["l2"], [c.radius["l2"] for c in batch])
    assert np.array_equal(batch.p_lower, [c.p_lower for c in batch])
    labels = batch.predictions.clip(0)
    assert batch.correct(labels).tolist() == [c.prediction is not None for c in batch]
    manual = CertificateBatch(
        [
            Certificate(prediction=None, radius={"l2": 0.0}, p_lower=None, method="x"),
            Certificate(prediction=2, radius={"l2": 0.5}, p_lower=0.9, method="x"),
        ]
    )
    assert manual.predictions.tolist() == [-1, 2]
    assert math.isnan(manual.p_lower[0]) and manual.p_lower[1] == 0.9
    assert manual.certified([0, 2], 0.4, "l2").tolist() == [False, True]
    with pytest.raises(ValueError, match="labels must have shape"):
        manual.correct([1])


def test_resnet18_on_an_image_folder_through_the_api(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    classes = [f"class{k}" for k in range(10)]
    _write_tree(tmp_path, classes, 2, (32, 32), "png")  # 20 images
    inputs = image_folder(tmp_path)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)  # random init, nothing downloaded
    model = load_model(
        net,
        normalize=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        num_classes=10,
        input_shape=inputs.input_shape,
    )
    certifier = get_certifier(
        "cohen",
        model,
        sigma=0.25,
        batch_size=50,
        num_classes=inputs.num_classes,
        input_shape=inputs.input_shape,
    )
    examples = list(inputs.iter_examples([0, 13]))
    batch = certifier.certify_batch([x for _, x, _ in examples], n0=10, n=100, progress=False)
    assert len(batch) == 2 and batch.predictions.shape == (2,) and batch.radii["l2"].shape == (2,)
    assert [y for _, _, y in examples] == [0, 6]
    assert np.all((batch.predictions >= -1) & (batch.predictions < 10))
