"""Argument checks shared by every public entry point.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the offending argument and
what was expected, before any work is done, so that nothing is left half-written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import torch


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as a float after checking that it lies in the open interval (0, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {alpha!r}")
    return float(alpha)


def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` after checking that it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_positive_float(value: float, name: str) -> float:
    """Return ``value`` as a float after checking that it is finite and > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_name(value: str, valid: Iterable[str], kind: str) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ``ValueError`` listing them."""
    valid = sorted(valid)
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(valid)}")
    return value


def check_input(
    x: torch.Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    name: str = "x",
) -> torch.Tensor:
    """Check one input to be certified and return it.

    Parameters
    ----------
    x : Tensor
        One input, shape ``(C, H, W)`` or ``(d,)``; floating point.
    input_shape : sequence of int, optional
        The shape the model expects; a mismatch is an error.
    value_range : (low, high), optional
        Require every value in ``[low, high]`` (``(0, 1)``: pixel space, see docs/conventions.md).
    name : str
        The argument's name in error messages.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must be one input of shape (C, H, W) or (d,), got a scalar")
    batched = (
        x.dim() == len(input_shape) + 1 and tuple(x.shape[1:]) == tuple(input_shape)
        if input_shape is not None
        else x.dim() == 4
    )
    if batched:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: a batch of {x.shape[0]} inputs, but certify takes one input "
            f"(shape {tuple(input_shape) if input_shape is not None else '(C, H, W) or (d,)'}); certify a batch "
            "with certifier.certify_batch(xs), or pass xs[i]"
        )
    if input_shape is not None and tuple(x.shape) != tuple(input_shape):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but the model expects one input of shape {tuple(input_shape)}"
            " (pass a single input, not a batch)"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if value_range is not None:
        low, high = value_range
        found_low, found_high = float(x.min()), float(x.max())
        if found_low < low or found_high > high:
            raise ValueError(
                f"{name} has values in [{found_low:.4g}, {found_high:.4g}], outside [{low:g}, {high:g}]; "
                "manifoldcert adds noise in [0, 1] pixel space, where σ and the radii are measured "
                "(scale images to [0, 1] and normalise inside the model, or pass input_range=None to "
                "certify inputs of another range)"
            )
    return x


def check_value_range(
    value_range: Sequence[float] | None, name: str = "input_range"
) -> tuple[float, float] | None:
    """``None`` or a finite ``(low, high)`` with ``low < high``, as a tuple of floats."""
    if value_range is None:
        return None
    values = tuple(value_range)
    if (
        len(values) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values)
        or not values[0] < values[1]
    ):
        raise ValueError(f"{name} must be None or a pair of finite numbers low < high, got {value_range!r}")
    return float(values[0]), float(values[1])


def check_output_path(path: str | os.PathLike[str]) -> str:
    """Check that ``path`` is not a folder and that the folder it goes into exists; return it as a string."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path!r}: it is a folder; give a file path (e.g. {path}/results.tsv)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    return path
