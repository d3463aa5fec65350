"""manifoldcert: certified robustness of PyTorch classifiers by randomized smoothing.

Every certifier draws its samples through one Monte Carlo estimator (:mod:`manifoldcert.estimator`) and
returns a :class:`Certificate`. Quick start::

    import manifoldcert
    cert = manifoldcert.get_certifier("cohen", model, sigma=0.25)
    c = cert.certify(x, n0=100, n=10_000, alpha=0.001)
    c.prediction, c.radius["l2"]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from manifoldcert import geometry as geometry
from manifoldcert import noises as noises
from manifoldcert import optimize as optimize
from manifoldcert import recipes as recipes
from manifoldcert.bounds import clopper_pearson_lower as clopper_pearson_lower
from manifoldcert.certificate import Certificate as Certificate
from manifoldcert.certificate import Ellipsoid as Ellipsoid
from manifoldcert.certifiers import available as available_methods
from manifoldcert.certifiers import get_certifier as get_certifier
from manifoldcert.data import available_datasets as available_datasets
from manifoldcert.data import load_dataset as load_dataset
from manifoldcert.denoise import DenoisedClassifier as DenoisedClassifier
from manifoldcert.estimator import MonteCarloEstimator as MonteCarloEstimator
from manifoldcert.models import build_model as build_model
from manifoldcert.models import load_checkpoint as load_checkpoint
from manifoldcert.noises import NoiseTransform as NoiseTransform
from manifoldcert.recipes import get_recipe as get_recipe
from manifoldcert.train import train_model as train_model

__version__ = "0.1.0"


def certify(model: nn.Module, x: torch.Tensor, method: str = "cohen", **options: Any) -> Certificate:
    """Certify one input in one call: ``certify(model, x, method="cohen", sigma=0.25, n=10_000)``.

    Options that the certifier's constructor takes (``sigma``, ``batch_size``, ``seed``, ...) go to it; the
    rest (``n0``, ``n``, ``alpha``, ...) go to :meth:`certify`.
    """
    certify_keys = {"n0", "n", "alpha", "batch_size", "generator", "runner_up"}
    build = {k: v for k, v in options.items() if k not in certify_keys}
    run = {k: v for k, v in options.items() if k in certify_keys}
    return get_certifier(method, model, **build).certify(x, **run)


__all__ = [
    "Certificate",
    "DenoisedClassifier",
    "Ellipsoid",
    "MonteCarloEstimator",
    "NoiseTransform",
    "available_datasets",
    "available_methods",
    "build_model",
    "certify",
    "clopper_pearson_lower",
    "geometry",
    "get_certifier",
    "get_recipe",
    "load_checkpoint",
    "load_dataset",
    "noises",
    "optimize",
    "recipes",
    "train_model",
]
