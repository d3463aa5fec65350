"""σ is in [0, 1] pixel units: inputs outside [0, 1] are refused unless the user says otherwise."""

from __future__ import annotations

import pytest
import torch

from manifoldcert.certifiers import get_certifier
from tests.conftest import LinearBinaryClassifier


@pytest.fixture
def model():
    return LinearBinaryClassifier(torch.ones(4, dtype=torch.float64), -2.0)


@pytest.mark.parametrize("method", ["cohen", "laplace", "uniform"])
def test_a_0_to_255_image_is_refused_by_default(model, method):
    image = torch.tensor([0.0, 64.0, 128.0, 255.0], dtype=torch.float64)
    certifier = get_certifier(method, model, sigma=0.25)
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*input_range=None"):
        certifier.certify(image, n0=10, n=100)
    with pytest.raises(ValueError, match="outside"):
        certifier.predict(image, n=100)


@pytest.mark.parametrize("input_range", [None, (0, 255)])
def test_another_range_is_allowed_explicitly(model, input_range):
    image = torch.tensor([0.0, 64.0, 128.0, 255.0], dtype=torch.float64)
    certificate = get_certifier("cohen", model, sigma=0.25, input_range=input_range).certify(
        image, n0=10, n=100
    )
    assert certificate.prediction == 1


def test_a_range_that_excludes_the_input_is_refused(model):
    certifier = get_certifier("cohen", model, sigma=0.25, input_range=(-1.0, 0.5))
    with pytest.raises(ValueError, match=r"outside \[-1, 0.5\]"):
        certifier.certify(torch.full((4,), 0.75, dtype=torch.float64), n0=10, n=100)


@pytest.mark.parametrize("bad", [(1.0, 0.0), (0.0,), (0.0, float("inf")), "01"])
def test_bad_ranges_are_refused(model, bad):
    with pytest.raises(ValueError, match="input_range"):
        get_certifier("cohen", model, sigma=0.25, input_range=bad)


def test_grid_methods_keep_the_unit_range(model):
    with pytest.raises(ValueError, match="input_range must be \\(0, 1\\)"):
        get_certifier("ssn", model, sigma=0.25, input_range=None)
