"""What every certifier returns: a :class:`Certificate`, and for anisotropic methods an :class:`Ellipsoid`.

Ellipsoid convention (shared by DDRS, ANCER and RDDRS; see docs/conventions.md): for a smoothing covariance
``Σ`` the certified set is ``{δ : δᵀ Σ⁻¹ δ < r²}``. The largest l2 ball inside it has radius ``r·sqrt(λ_min(Σ))``;
the *proxy radius* used to compare with balls is ``r·det(Σ)^(1/(2d))``, the radius of the ball of equal volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

NORMS = ("l1", "l2", "linf")


@dataclass(frozen=True)
class Ellipsoid:
    """The certified set ``{δ : δᵀ Σ⁻¹ δ < r²}`` around an input.

    Parameters
    ----------
    shape_matrix : Tensor, shape (d, d)
        The covariance ``Σ`` of the smoothing noise (symmetric positive definite).
    radius : float
        ``r``, in units of the Mahalanobis norm of ``Σ``.
    """

    shape_matrix: torch.Tensor
    radius: float

    def __post_init__(self) -> None:
        m = self.shape_matrix
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"shape_matrix must be a square matrix, got shape {tuple(m.shape)}")
        if not torch.allclose(m, m.mT, rtol=1e-5, atol=1e-8):
            raise ValueError("shape_matrix must be symmetric")
        if float(torch.linalg.eigvalsh(m.double()).min()) <= 0:
            raise ValueError("shape_matrix must be positive definite")

    @property
    def dim(self) -> int:
        """``d``, the dimension of the input space (the size of ``Σ``)."""
        return int(self.shape_matrix.shape[0])

    @property
    def l2_ball_radius(self) -> float:
        """Radius ``r·sqrt(λ_min(Σ))`` of the largest l2 ball inside the ellipsoid."""
        return self.radius * math.sqrt(float(torch.linalg.eigvalsh(self.shape_matrix.double()).min()))

    @property
    def proxy_radius(self) -> float:
        """Radius ``r·det(Σ)^(1/(2d))`` of the l2 ball with the same volume (computed through log det)."""
        log_det = float(torch.linalg.slogdet(self.shape_matrix.double()).logabsdet)
        return self.radius * math.exp(log_det / (2 * self.dim))

    def contains(self, delta: torch.Tensor) -> torch.Tensor:
        """Whether perturbations lie strictly inside; ``delta`` of shape ``(..., d)`` gives a bool ``(...)``."""
        m = self.shape_matrix.to(delta.dtype)
        solved = torch.linalg.solve(m, delta.unsqueeze(-1)).squeeze(-1)
        return (delta * solved).sum(-1) < self.radius**2


@dataclass
class Certificate:
    """The outcome of certifying one input.

    Attributes
    ----------
    prediction : int or None
        The smoothed classifier's class, or ``None`` when it abstains (TSV files write -1, as Cohen et al. do).
    radius : dict of str to float
        Certified radius for every norm the method certifies (``"l1"``, ``"l2"``, ``"linf"``); 0.0 on abstention.
    p_lower : float or None
        Lower confidence bound of the top class's smoothed probability; ``None`` for exact methods.
    method : str
        Registry name of the certifier.
    n0, n : int
        Samples used to select the class and to bound its probability.
    alpha : float
        The certificate holds with probability ``>= 1 - alpha`` over the Monte Carlo samples.
    seconds : float
        Wall-clock time of the certification.
    region : Ellipsoid or None
        The certified set for anisotropic methods; ``None`` for balls.
    exact : bool
        True only for deterministic certificates.
    guaranteed : bool
        False where the radius is an approximation rather than a guarantee (see the method's docs).
    params : dict
        Method parameters (σ, noise, ...), written to the TSV's trailing columns.
    """

    prediction: int | None
    radius: dict[str, float]
    p_lower: float | None
    method: str
    n0: int = 0
    n: int = 0
    alpha: float = 0.0
    seconds: float = 0.0
    region: Ellipsoid | None = None
    exact: bool = False
    guaranteed: bool = True
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        """Whether the smoothed classifier abstained (``prediction is None``): no class, no radius."""
        return self.prediction is None

    def radius_in(self, norm: str) -> float:
        """The certified radius in ``norm``; a clear error when the method does not certify that norm."""
        if norm not in self.radius:
            raise ValueError(f"{self.method} certifies {sorted(self.radius)}, not {norm!r}")
        return self.radius[norm]


def implied_radius(radius: float, *, certified_norm: str, norm: str, dim: int | None) -> float:
    """Radius in ``norm`` implied by a certified ball of ``radius`` in ``certified_norm``, in dimension ``dim``.

    Uses ``‖δ‖∞ ≤ ‖δ‖₂ ≤ ‖δ‖₁ ≤ √d‖δ‖₂ ≤ d‖δ‖∞``: a ball of radius R in a norm contains the ball of radius R
    in any larger norm (l2 ⊇ l1-ball, l∞ ⊇ l2- and l1-balls), and the l2 ball of radius R contains the l∞ ball of
    radius R/√d; the l1 ball of radius R contains the l2 ball of radius R/√d and the l∞ ball of radius R/d.
    """
    if certified_norm not in NORMS or norm not in NORMS:
        raise ValueError(f"norms must be among {NORMS}, got {certified_norm!r} and {norm!r}")
    exponents = {"l1": 1.0, "l2": 2.0, "linf": math.inf}
    if exponents[norm] > exponents[certified_norm] and dim is None:
        raise ValueError(f"converting an {certified_norm} radius to {norm} needs the input dimension dim")
    return lp_implied_radius(radius, exponents[certified_norm], exponents[norm], dim)


def lp_implied_radius(radius: float, p: float, q: float, dim: int | None) -> float:
    """Radius of the largest l_q ball inside the l_p ball of ``radius`` in dimension ``dim`` (any p, q > 0).

    ``‖δ‖_p ≤ ‖δ‖_q`` when ``p ≥ q`` and ``‖δ‖_p ≤ d^(1/p − 1/q)·‖δ‖_q`` when ``p < q`` (Hölder; also for the
    quasi-norms p < 1), so the answer is ``radius`` or ``radius / d^(1/p − 1/q)``.
    """
    if p >= q:
        return radius
    if dim is None or dim < 1:
        raise ValueError(
            f"converting an l{p:g} radius to l{q:g} needs the input dimension dim >= 1, got {dim}"
        )
    return radius / dim ** (1.0 / p - (0.0 if math.isinf(q) else 1.0 / q))


class CertificateBatch(list):
    """The certificates of many inputs: a ``list`` of :class:`Certificate` (index and iterate as before) with
    array views over them.

    Attributes
    ----------
    predictions : ndarray of int64
        Each input's class, -1 where the smoothed classifier abstains (or the certificate is missing).
    radii : dict of str to ndarray of float64
        For every norm any certificate reports, the radius per input (NaN where one does not report it).
    p_lower : ndarray of float64
        The lower confidence bound per input, NaN where there is none (exact methods).
    """

    @property
    def predictions(self) -> np.ndarray:
        """Each input's class, ``int64``; -1 where the smoothed classifier abstains or the certificate is missing."""
        return np.array(
            [-1 if c is None or c.prediction is None else int(c.prediction) for c in self], dtype=np.int64
        )

    @property
    def radii(self) -> dict[str, np.ndarray]:
        """For every norm any certificate reports, the radius per input (``float64``, NaN where it reports none)."""
        norms = sorted({norm for c in self if c is not None for norm in c.radius}, key=_norm_order)
        return {
            norm: np.array(
                [np.nan if c is None else float(c.radius.get(norm, np.nan)) for c in self], dtype=np.float64
            )
            for norm in norms
        }

    @property
    def p_lower(self) -> np.ndarray:
        """The lower confidence bound on ``p_A`` per input (``float64``), NaN where there is none (exact methods)."""
        return np.array(
            [np.nan if c is None or c.p_lower is None else float(c.p_lower) for c in self], dtype=np.float64
        )

    def correct(self, labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Whether each prediction equals its label (an abstention is never correct), bool ``(len(self),)``."""
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        if labels.shape != (len(self),):
            raise ValueError(
                f"labels must have shape ({len(self)},) (one per certificate), got {labels.shape}"
            )
        return self.predictions == labels

    def certified(
        self, labels: Sequence[int] | np.ndarray | torch.Tensor, radius: float, norm: str
    ) -> np.ndarray:
        """Whether each input is correctly classified and certified at ``radius`` in ``norm`` (bool array)."""
        radii = self.radii
        if norm not in radii:
            raise ValueError(f"these certificates report {sorted(radii)}, not {norm!r}")
        return self.correct(labels) & (radii[norm] >= radius)


def _norm_order(norm: str) -> tuple[int, str]:
    return (NORMS.index(norm) if norm in NORMS else len(NORMS), norm)
