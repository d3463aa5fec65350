"""Bring your own model and data: load a base classifier from a spec and wrap any data set for certification.

Models (:func:`load_model`): an import path ``package.module:factory``, a TorchScript file, a ``torch.export``
file (``.pt2``) or a manifoldcert checkpoint, optionally wrapped in a per-channel normalisation
(:class:`NormalizedModel`) so that certification stays in [0, 1] pixel units (docs/conventions.md, "Units"), and
in a :class:`LogitsAdapter` when the model returns a dict, a ``ModelOutput`` or a tuple.

Data (:class:`DatasetInputs`): any ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, read lazily, with
:func:`image_folder` (a torchvision ``ImageFolder`` tree) and :func:`imagenet_val` (ImageNet's validation layout,
resized to 256 and centre-cropped to 224, in [0, 1]; normalisation belongs to the model).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "DatasetInputs",
    "LogitsAdapter",
    "ModelSourceError",
    "NormalizedModel",
    "image_folder",
    "imagenet_val",
    "load_model",
    "model_kind",
]

_IMPORT_PATH = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)(?P<args>\(.*\))?$", re.S)


class ModelSourceError(ValueError):
    """A model spec that names no loadable model, or a model that does not fit the given input and classes."""


# -- models -------------------------------------------------------------------------------------------------
class NormalizedModel(nn.Module):
    """``model((x − mean) / std)`` with per-channel ``mean`` and ``std`` (channel dimension 1).

    Parameters
    ----------
    model : nn.Module
        The classifier that expects normalised inputs.
    mean, std : sequence of float
        One value per channel; ``std`` must be positive.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).reshape(-1)
        if mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ValueError(
                f"normalize=(mean, std) needs two sequences of the same non-zero length (one value per "
                f"channel), got {len(mean_t)} means and {len(std_t)} stds"
            )
        if not bool((std_t > 0).all()) or not bool(torch.isfinite(mean_t).all()):
            raise ValueError(
                f"normalize std must be positive and mean finite, got mean={mean!r}, std={std!r}"
            )
        self.model = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> Any:
        if x.dim() < 2 or x.shape[1] != self.mean.numel():
            raise ValueError(
                f"normalize has {self.mean.numel()} channels but the input has shape {tuple(x.shape)} "
                "(expected (b, C, ...) with C channels)"
            )
        view = (1, -1) + (1,) * (x.dim() - 2)
        mean = self.mean.to(x.dtype).view(view)
        std = self.std.to(x.dtype).view(view)
        return self.model((x - mean) / std)


class LogitsAdapter(nn.Module):
    """Turn a model's structured output into its logits tensor.

    Handles dicts (``output[key]``), objects with a ``.logits`` attribute (e.g. Hugging Face ``ModelOutput``,
    which are also dicts) and tuples / lists (their first element); a tensor passes through.

    Parameters
    ----------
    model : nn.Module
    key : str
        The dict key (or attribute) holding the logits.
    """

    def __init__(self, model: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return extract_logits(self.model(x), self.key)


def extract_logits(output: Any, key: str = "logits") -> torch.Tensor:
    """The logits tensor inside ``output`` (see :class:`LogitsAdapter`); a clear error when there is none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if key not in output:
            raise ModelSourceError(
                f"the model returned a dict with keys {sorted(map(str, output))}, none of which is {key!r}; "
                "pass key= to LogitsAdapter"
            )
        return extract_logits(output[key], key)
    if hasattr(output, key):
        return extract_logits(getattr(output, key), key)
    if isinstance(output, (tuple, list)) and output:
        return extract_logits(output[0], key)
    raise ModelSourceError(
        f"the model returned a {type(output).__name__}, from which no logits tensor can be read "
        f"(expected a tensor, a dict with key {key!r}, an object with .{key}, or a tuple of them)"
    )


class _ExportedModule(nn.Module):
    """Holds a ``torch.export`` program's module, whose ``train`` / ``eval`` are not supported (it is frozen
    in the mode it was exported in)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _ExportedModule:
        self.training = mode  # the exported graph keeps its own mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self.module(x)


def model_kind(spec: str | os.PathLike[str]) -> str:
    """What ``spec`` names: ``"import"``, ``"torchscript"``, ``"export"`` or ``"checkpoint"``.

    Files are told apart by their content (the zip archive's entries), not only by their extension:
    ``torch.export`` archives hold ``archive_format``, TorchScript archives ``constants.pkl`` and ``code/``;
    any other file is read as a manifoldcert checkpoint.
    """
    text = os.fspath(spec)
    if not os.path.exists(text):
        if _IMPORT_PATH.match(text.strip()):
            return "import"
        raise ModelSourceError(
            f"model spec {text!r} is neither an existing file (TorchScript, torch.export .pt2, manifoldcert "
            "checkpoint) nor an import path 'package.module:factory'"
        )
    if os.path.isdir(text):
        raise ModelSourceError(
            f"model spec {text!r} is a folder; give a model file or 'package.module:factory'"
        )
    if zipfile.is_zipfile(text):
        with zipfile.ZipFile(text) as archive:
            names = archive.namelist()
        tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
        if "archive_format" in tails:
            return "export"
        if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
            return "torchscript"
    if text.endswith(".pt2"):
        return "export"
    return "checkpoint"


def _import_factory(spec: str) -> nn.Module:
    match = _IMPORT_PATH.match(spec.strip())
    assert match is not None
    module_name, attr, args = match["module"], match["attr"], match["args"]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSourceError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({error})"
        ) from error
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelSourceError(f"model spec {spec!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelSourceError(f"model spec {spec!r}: {module_name}:{attr} is not callable")
    kwargs = _parse_kwargs(spec, args)
    model = target(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelSourceError(
            f"model spec {spec!r}: {module_name}:{attr}() returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def _parse_kwargs(spec: str, args: str | None) -> dict[str, Any]:
    """Keyword arguments of ``factory(a=1, b='x')``: Python literals only (nothing is evaluated)."""
    if not args or args == "()":
        return {}
    try:
        call = ast.parse(f"f{args}", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            raise ValueError("only keyword arguments are accepted")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
    except (SyntaxError, ValueError) as error:
        raise ModelSourceError(
            f"model spec {spec!r}: the arguments {args} must be keyword arguments with literal values "
            f"(e.g. factory(num_classes=10)): {error}"
        ) from error


def _load_file(path: str, kind: str, device: torch.device | str | None) -> nn.Module:
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.* is deprecated", category=FutureWarning
                )
                return torch.jit.load(path, map_location=device)
        if kind == "export":
            return _ExportedModule(torch.export.load(path).module())
    except Exception as error:  # noqa: BLE001 - a foreign or corrupt file: one clear line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSourceError(f"cannot load {path!r} as a {kind} model: {reason}") from error
    from manifoldcert.models import load_checkpoint

    try:
        model, _ = load_checkpoint(path, device=device)
    except ValueError as error:
        raise ModelSourceError(
            f"{path!r} is not a TorchScript file, a torch.export archive or a manifoldcert checkpoint ({error})"
        ) from error
    return model


def load_model(
    spec: str | os.PathLike[str] | nn.Module,
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    logits_key: str = "logits",
) -> nn.Module:
    """Load a base classifier from ``spec``, ready to certify inputs in [0, 1] pixel units.

    Parameters
    ----------
    spec : str, path or nn.Module
        ``package.module:factory`` (called with no arguments, or ``factory(key=literal, ...)``), a TorchScript
        file, a ``torch.export`` archive (``.pt2``) or a manifoldcert checkpoint; an ``nn.Module`` is taken as is.
        See :func:`model_kind`.
    normalize : (mean, std), optional
        Per-channel statistics: the model is wrapped in :class:`NormalizedModel`, which applies
        ``(x − mean) / std`` first.
    num_classes, input_shape : optional
        When both are given, one forward pass on zeros of shape ``(1, *input_shape)`` must return logits of
        shape ``(1, num_classes)``; a dict, ``.logits`` or tuple output is then wrapped in a
        :class:`LogitsAdapter` automatically.
    device : torch.device or str, optional
        Where to put the model (default: CPU, or where the file's loader puts it).
    logits_key : str
        The key the automatic :class:`LogitsAdapter` reads.

    Returns
    -------
    nn.Module
        The model in eval mode.

    Raises
    ------
    ModelSourceError
        When ``spec`` names nothing loadable, or the model's output does not fit ``num_classes``.
    """
    if isinstance(spec, nn.Module):
        model = spec
    else:
        text = os.fspath(spec)
        kind = model_kind(text)
        model = _import_factory(text) if kind == "import" else _load_file(text, kind, device)
    if device is not None:
        model = model.to(device)
    if normalize is not None:
        if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
            raise ValueError(
                f"normalize must be a pair (mean, std) of per-channel sequences, got {normalize!r}"
            )
        model = NormalizedModel(model, *normalize)
        if device is not None:
            model = model.to(device)
    model = model.eval()
    if num_classes is not None and input_shape is not None:
        model = _check_output(model, int(num_classes), tuple(int(s) for s in input_shape), logits_key)
    return model


def _check_output(model: nn.Module, num_classes: int, input_shape: tuple[int, ...], key: str) -> nn.Module:
    """One dummy forward on zeros ``(1, *input_shape)``: adapt a structured output, refuse a wrong shape."""
    from manifoldcert.estimator import model_device, model_dtype

    zeros = torch.zeros((1, *input_shape), device=model_device(model), dtype=model_dtype(model))
    try:
        with torch.no_grad():
            output = model(zeros)
    except Exception as error:  # noqa: BLE001 - the model's own error, reported with the shape we gave it
        raise ModelSourceError(
            f"the model failed on an input of shape {(1, *input_shape)} (input_shape={input_shape}): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(output, torch.Tensor):
        extract_logits(output, key)  # a clear error when there is no logits tensor in it
        model = LogitsAdapter(model, key).eval()
        output = extract_logits(output, key)
    if tuple(output.shape) != (1, num_classes):
        raise ModelSourceError(
            f"on an input of shape {(1, *input_shape)} the model returned output of shape "
            f"{tuple(output.shape)}; expected logits of shape (1, {num_classes}) for num_classes={num_classes}"
        )
    try:  # certification evaluates batches of noisy inputs: a batch size fixed at export time would fail later
        with torch.no_grad():
            batch_shape = tuple(extract_logits(model(zeros.expand(2, *input_shape)), key).shape)
    except Exception as error:  # noqa: BLE001
        raise ModelSourceError(
            f"the model accepts one input of shape {(1, *input_shape)} but fails on a batch of 2 "
            f"({type(error).__name__}: {str(error).strip()[:200]}); a torch.export program must be exported "
            "with a dynamic batch dimension (dynamic_shapes={0: torch.export.Dim('batch')})"
        ) from error
    if batch_shape != (2, num_classes):
        raise ModelSourceError(
            f"on a batch of shape {(2, *input_shape)} the model returned output of shape {batch_shape}; "
            f"expected (2, {num_classes})"
        )
    return model


# -- data ---------------------------------------------------------------------------------------------------
class DatasetInputs:
    """Any ``Dataset`` of ``(x, y)`` pairs as the certification runner reads it, lazily.

    ``inputs[idx]`` is example ``idx``'s input (a float tensor); ``labels`` are read from ``dataset.targets``
    when present, otherwise item by item once and cached; :meth:`iter_examples` streams ``(idx, x, y)``
    through a ``DataLoader`` (workers, pinned memory), never holding the whole split in memory.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Returns ``(x, y)`` with ``x`` a tensor and ``y`` an integer class.
    """

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style Dataset with __len__, got {type(dataset).__name__}")
        self.dataset = dataset
        self._labels: torch.Tensor | None = None
        self._first: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, idx: int) -> tuple[torch.Tensor, int]:
        return _check_item(self.dataset[idx], idx)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self._item(int(idx))[0]

    @property
    def labels(self) -> torch.Tensor:
        """Class of every example, int64 ``(N,)`` (from ``dataset.targets`` when the data set has them)."""
        if self._labels is None:
            targets = getattr(self.dataset, "targets", None)
            if targets is not None and len(targets) == len(self):
                self._labels = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
            else:
                self._labels = torch.tensor([self._item(i)[1] for i in range(len(self))], dtype=torch.int64)
        return self._labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, read from the first item."""
        if len(self) == 0:
            raise ValueError("the data set is empty: it has no input shape")
        if self._first is None:
            self._first = self._item(0)
        return tuple(self._first[0].shape)

    @property
    def num_classes(self) -> int | None:
        """``len(dataset.classes)`` when the data set lists its classes, else ``None``."""
        classes = getattr(self.dataset, "classes", None)
        return None if classes is None else len(classes)

    def iter_examples(
        self,
        indices: Sequence[int] | None = None,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        batch_size: int = 1,
    ) -> Iterator[tuple[int, torch.Tensor, int]]:
        """Yield ``(idx, x, y)`` for each of ``indices`` (default: all), in that order, read by a DataLoader.

        Parameters
        ----------
        indices : sequence of int, optional
        num_workers, pin_memory, batch_size
            Passed to ``torch.utils.data.DataLoader``; batches are split back into single examples.
        """
        chosen = list(range(len(self))) if indices is None else [int(i) for i in indices]
        for i in chosen:
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for a data set of {len(self)} examples")
        loader = DataLoader(
            _CheckedItems(Subset(self.dataset, chosen), chosen),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        position = 0
        for xs, ys in loader:
            for x, y in zip(xs, ys.tolist(), strict=True):
                yield chosen[position], x, int(y)
                position += 1

    def __repr__(self) -> str:
        return f"DatasetInputs({type(self.dataset).__name__}, size={len(self)})"


class _CheckedItems(Dataset):
    """A subset whose items are checked ``(x, y)`` pairs (run in the DataLoader's workers)."""

    def __init__(self, subset: Subset, indices: Sequence[int]) -> None:
        self.subset, self.indices = subset, indices

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return _check_item(self.subset[position], self.indices[position])


def _check_item(item: Any, idx: int) -> tuple[torch.Tensor, int]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        shown = f"a {type(item).__name__}" + (
            f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""
        )
        raise TypeError(f"item {idx} of the data set is {shown}; expected an (x, y) pair")
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"item {idx} of the data set has x of type {type(x).__name__}; expected a tensor (add a ToTensor "
            "transform)"
        )
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise TypeError(
                f"item {idx} of the data set has a label of shape {tuple(y.shape)}; expected one class"
            )
        y = int(y.item())
    if isinstance(y, bool) or not isinstance(y, int):
        raise TypeError(f"item {idx} of the data set has label {y!r}; expected an integer class")
    return (x if x.is_floating_point() else x.float()), int(y)


def image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | Sequence[int] | None = None,
    center_crop: int | Sequence[int] | None = None,
) -> DatasetInputs:
    """A torchvision ``ImageFolder`` tree (one folder per class, classes sorted) as RGB tensors in [0, 1].

    Parameters
    ----------
    root : path
    image_size : int or (h, w), optional
        ``Resize`` first (an int resizes the shorter side).
    center_crop : int or (h, w), optional
        ``CenterCrop`` after resizing.
    """
    from torchvision import datasets, transforms

    if not os.path.isdir(root):
        raise FileNotFoundError(f"no image folder at {os.fspath(root)!r}")
    steps: list[Any] = []
    if image_size is not None:
        steps.append(transforms.Resize(image_size))
    if center_crop is not None:
        steps.append(transforms.CenterCrop(center_crop))
    steps.append(transforms.ToTensor())
    return DatasetInputs(datasets.ImageFolder(os.fspath(root), transform=transforms.Compose(steps)))


def imagenet_val(root: str | os.PathLike[str]) -> DatasetInputs:
    """ImageNet's validation set in its per-class layout (``root/<wnid>/*.JPEG``), resized to 256 and
    centre-cropped to 224, in [0, 1] (no normalisation: that is the model's, see ``load_model(normalize=...)``).

    The classes are the wnid folders sorted, which is the standard ImageNet label order.
    """
    inputs = image_folder(root, image_size=256, center_crop=224)
    classes = getattr(inputs.dataset, "classes", [])  # an ImageFolder's sorted class folders
    if len(classes) != 1000:
        warnings.warn(
            f"{os.fspath(root)!r} has {len(classes)} class folders, not ImageNet's 1000: labels 0..{len(classes) - 1} "
            "follow the sorted folder names and will not match an ImageNet model's classes",
            UserWarning,
            stacklevel=2,
        )
    return inputs
