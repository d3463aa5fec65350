"""Memory budgets: whether the dense ``d × d`` matrices of a full-covariance method fit before anything is allocated."""

from __future__ import annotations

import torch

from manifoldcert._validation import check_positive_int

__all__ = [
    "CovarianceTooLargeError",
    "available_memory_bytes",
    "check_full_covariance_fits",
    "full_covariance_bytes",
]


class CovarianceTooLargeError(MemoryError, ValueError):
    """A full ``d × d`` covariance (with its work matrices) would not fit in the available memory."""


def full_covariance_bytes(d: int, dtype: torch.dtype = torch.float32, *, n_matrices: int = 4) -> int:
    """Bytes taken by ``n_matrices`` dense ``d × d`` matrices of ``dtype``.

    The default 4 counts a covariance, its factor and two work matrices (a gradient, an update), what one
    RDDRS step on a full covariance holds at once.
    """
    d = check_positive_int(d, "d")
    n_matrices = check_positive_int(n_matrices, "n_matrices")
    return n_matrices * d * d * torch.empty((), dtype=dtype).element_size()


def available_memory_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory on ``device``: CUDA's free memory, or MemAvailable of /proc/meminfo; None if unknown."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_full_covariance_fits(
    d: int,
    dtype: torch.dtype = torch.float32,
    budget_bytes: int | None = None,
    *,
    n_matrices: int = 4,
    device: torch.device | str | None = None,
) -> int:
    """Return the bytes a full ``d × d`` covariance needs (see :func:`full_covariance_bytes`) if they fit.

    Parameters
    ----------
    d : int
        Input dimension (the covariance is ``d × d``).
    dtype : torch.dtype
        Dtype of the covariance.
    budget_bytes : int, optional
        Memory allowed; default :func:`available_memory_bytes` of ``device`` (no check when that is unknown).
    n_matrices : int
        Dense ``d × d`` matrices held at once.
    device : torch.device or str, optional
        Where the matrices live (CPU by default).

    Raises
    ------
    CovarianceTooLargeError
        (a ``MemoryError`` and a ``ValueError``) when they exceed the budget.
    """
    needed = full_covariance_bytes(d, dtype, n_matrices=n_matrices)
    budget = available_memory_bytes(device) if budget_bytes is None else int(budget_bytes)
    if budget is not None and needed > budget:
        raise CovarianceTooLargeError(
            f"a full {d}×{d} covariance in {dtype} needs {needed:,} bytes ({needed / 2**30:.2f} GiB: "
            f"{n_matrices} matrices of {d}×{d}, the covariance, its factor and work matrices) but only "
            f"{budget:,} bytes ({budget / 2**30:.2f} GiB) are available; use a diagonal or isotropic "
            "covariance (ancer, ddrs) or a lower-dimensional input"
        )
    return needed
