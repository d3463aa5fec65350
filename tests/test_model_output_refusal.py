"""A base classifier whose output is not finite ``(b, num_classes)`` logits is refused, never certified."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from manifoldcert.certifiers import get_certifier
from manifoldcert.estimator import ModelOutputError, MonteCarloEstimator
from manifoldcert.noises import Gaussian
from manifoldcert.runs import certify_dataset


class ConstantOutput(nn.Module):
    """Returns ``fill`` in every logit of ``(b, outputs)``, or ``shape(b)`` when given."""

    def __init__(self, fill: float = 0.0, outputs: int = 10, shape=None, poison_every: int = 0) -> None:
        super().__init__()
        self.fill, self.outputs, self.shape, self.poison_every = fill, outputs, shape, poison_every
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.shape is not None:
            return torch.zeros(self.shape(b))
        logits = torch.zeros(b, self.outputs)
        logits[:, -1] = 1.0  # the last class always wins
        if self.poison_every:
            logits[:: self.poison_every, 0] = self.fill
        elif self.fill != 0.0:
            logits.fill_(self.fill)
        return logits


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_refused_by_cohen(fill):
    model = ConstantOutput(fill)
    certifier = get_certifier("cohen", model, sigma=0.25, num_classes=10)
    with pytest.raises(ModelOutputError, match="ConstantOutput returned NaN or infinite logits"):
        certifier.certify(torch.full((4,), 0.5), n0=10, n=100)


def test_one_non_finite_row_in_a_packed_batch_is_refused():
    model = ConstantOutput(float("nan"), poison_every=997)  # one noisy input in 997 is NaN
    certifier = get_certifier("cohen", model, sigma=0.25, batch_size=500)
    xs = [torch.full((4,), 0.5) for _ in range(3)]
    with pytest.raises(ModelOutputError):
        certifier.certify_batch(xs, n0=10, n=1000, progress=False)


def test_non_finite_logits_are_refused_in_soft_smoothing_and_gradients():
    estimator = MonteCarloEstimator(ConstantOutput(float("nan")), batch_size=8)
    with pytest.raises(ModelOutputError):
        estimator.mean_softmax(torch.zeros(4), Gaussian(0.5), 16)
    sigma = torch.tensor(0.5, requires_grad=True)
    with pytest.raises(ModelOutputError):
        estimator.mean_softmax_and_gradient(
            torch.zeros(4), Gaussian(sigma), 16, [sigma], weights=torch.eye(10)[0]
        )


def test_more_outputs_than_num_classes_are_refused():
    model = ConstantOutput(outputs=12)  # would vote class 11 of a 10-class problem
    certifier = get_certifier("cohen", model, sigma=0.25, num_classes=10)
    with pytest.raises(ModelOutputError, match="12 logits per input, but num_classes is 10"):
        certifier.certify(torch.full((4,), 0.5), n0=10, n=100)
    certifier = get_certifier("cohen", model, sigma=0.25, num_classes=10, batch_size=1)
    with pytest.raises(ModelOutputError, match="12 logits"):
        certifier.certify(torch.full((4,), 0.5), n0=2, n=3)


@pytest.mark.parametrize(
    "shape, what",
    [
        (lambda b: (b,), r"shape \(7,\)"),
        (lambda b: (b, 10, 2), r"shape \(7, 10, 2\)"),
        (lambda b: (1, 10), r"shape \(1, 10\) for a batch of 7"),
    ],
)
def test_outputs_of_the_wrong_rank_or_batch_are_refused(shape, what):
    estimator = MonteCarloEstimator(ConstantOutput(shape=shape), batch_size=7)
    with pytest.raises(ModelOutputError, match=what):
        estimator.class_counts(torch.zeros(4), Gaussian(0.5), 7)


def test_a_non_tensor_output_is_refused():
    class ReturnsDict(nn.Module):
        def forward(self, x):
            return {"logits": torch.zeros(x.shape[0], 3)}

    with pytest.raises(ModelOutputError, match="returned a dict"):
        MonteCarloEstimator(ReturnsDict(), batch_size=4).class_counts(torch.zeros(2), Gaussian(0.5), 4)


def test_nothing_is_written_for_a_refused_model(tmp_path):
    certifier = get_certifier("cohen", ConstantOutput(float("nan")), sigma=0.25, num_classes=10)
    out = tmp_path / "run.tsv"
    with pytest.raises(ModelOutputError):
        certify_dataset(certifier, torch.full((3, 4), 0.5), [0, 1, 2], out, n0=10, n=100, progress=False)
    assert not os.path.exists(out)


def test_finite_models_are_unaffected():
    certifier = get_certifier("cohen", ConstantOutput(), sigma=0.25, num_classes=10)
    certificate = certifier.certify(torch.full((4,), 0.5), n0=10, n=100)
    assert certificate.prediction == 9 and certificate.radius["l2"] > 0
