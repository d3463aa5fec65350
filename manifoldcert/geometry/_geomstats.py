"""The one place manifoldcert imports geomstats.

geomstats 2.8 reads ``GEOMSTATS_BACKEND`` once, at its first import (this module asks for ``pytorch``), and
switches torch's default dtype to float64 for the whole process; :func:`import_geomstats_spd` restores the
caller's default at once, so importing manifoldcert or using a geomstats metric leaves torch's global state as
it was.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

__all__ = ["import_geomstats_spd", "is_geomstats_object"]


def is_geomstats_object(value: Any) -> bool:
    """True for a class or instance defined in a geomstats module (checked without importing geomstats)."""
    module = (value if isinstance(value, type) else type(value)).__module__ or ""
    return module == "geomstats" or module.startswith("geomstats.")


def import_geomstats_spd() -> Any:
    """``geomstats.geometry.spd_matrices`` with the pytorch backend, keeping torch's default dtype."""
    backend = os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")
    if backend != "pytorch":
        raise RuntimeError(
            f"GEOMSTATS_BACKEND is set to {backend!r}; manifoldcert needs geomstats' 'pytorch' backend "
            "(unset the variable or set it to 'pytorch' before starting Python)"
        )
    default_dtype = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            # geomstats' backend importer triggers an ImportWarning (exec_module not found) on import.
            warnings.simplefilter("ignore")
            import geomstats.backend as geomstats_backend
            import geomstats.geometry.spd_matrices as spd_matrices
    finally:
        torch.set_default_dtype(default_dtype)  # geomstats switches it to float64
    loaded = geomstats_backend.__name__
    if loaded != "geomstats.pytorch":
        raise RuntimeError(
            f"geomstats was already imported with another backend ({loaded}); import manifoldcert's "
            "geometry before geomstats or set GEOMSTATS_BACKEND=pytorch"
        )
    return spd_matrices
