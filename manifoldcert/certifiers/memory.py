"""Memory-based certification for data-dependent smoothing, and the exact ellipsoid–ellipsoid intersection test.

Why a memory. DDRS, ANCER and RDDRS choose the smoothing covariance ``Σ(x)`` at the input ``x`` itself. The
certificate ``{x + δ : δᵀΣ(x)⁻¹δ < r²}`` holds for the smoothed classifier ``g_{Σ(x)}`` whose covariance is
*frozen* at ``Σ(x)``, but the data-dependent classifier ``x' ↦ g_{Σ(x')}(x')`` uses another covariance at
``x' = x + δ`` and may predict another class there. Alfarra et al. (2022, Sec. 4, "memory-based certification")
make the data-dependent classifier certifiable by remembering what it has certified; Eiras et al. (2022,
Sec. 5 and Appendix) extend the memory from balls to ellipsoids. :class:`CertificationMemory` implements the
ellipsoid version:

The rule, for a new input ``x`` (entries ``(x_i, c_i, Σ_i, r_i)`` are kept in the order they were stored):

1. **Look-up.** If ``x`` lies in a stored region, ``‖x − x_i‖_{Σ_i} < r_i`` with ``‖u‖_Σ = sqrt(uᵀΣ⁻¹u)``, the
   answer is ``c_i`` for the first such entry ``i``, with the region ``{x + δ : ‖δ‖_{Σ_i} < r_i − ‖x − x_i‖_{Σ_i}}``:
   the largest ellipsoid of shape ``Σ_i`` around ``x`` inside the stored one (triangle inequality of the
   ``Σ_i``-norm; tight towards the nearest boundary point). No sampling is done and nothing is stored.
2. **Certify and store.** Otherwise ``x`` is certified by the data-dependent method, giving ``(c, Σ, r)``. For
   every stored entry of another class whose region intersects the new one, ``r`` is reduced to the largest
   value for which the two open ellipsoids are disjoint (bisection on ``r`` with the exact test below; the
   disjointness is monotone in ``r``). The entry ``(x, c, Σ, r)`` is then stored. When the reduced radius is 0
   (``x`` on the boundary of a region of another class) the input gets no certificate and nothing is stored;
   abstentions are not stored either.

What it guarantees. By induction, stored regions of different classes are pairwise disjoint. Define the
memory-based classifier ``ĝ`` as: the class of the first stored region containing the query, else the
data-dependent smoothed classifier. Then for every input of the processed sequence that received a
certificate ``(c, x + E)`` — whether from step 1 or step 2 — ``ĝ`` predicts ``c`` at every point of ``x + E``,
for the memory as it stands after that input and at any later time (entries are only added, never removed).
This consistency is deterministic given the memory. What it does not give: (i) it concerns only the
sequence processed through this memory instance, in this order (another order gives another classifier);
(ii) outside the stored regions ``ĝ`` is the data-dependent classifier, which carries no certificate; (iii) the
statistical statement of each step-2 certificate is Cohen et al.'s — with probability at least ``1 − α`` over its
own certification samples, ``g_{Σ}`` with ``Σ`` frozen predicts ``c`` on the region — for each input separately,
not simultaneously over the sequence.

The intersection test (Gilitschenski and Hanebeck 2012, via convex duality). Write the closed ellipsoids as
``{y : (y − a)ᵀA⁻¹(y − a) ≤ 1}`` and ``{y : (y − b)ᵀB⁻¹(y − b) ≤ 1}`` with ``A = r_a²Σ_a``, ``B = r_b²Σ_b`` and
``v = b − a``. Then ``min_y max(f_a, f_b) = max_{s∈[0,1]} min_y ((1 − s) f_a + s f_b) = max_s F(s)`` with

    F(s) = s(1 − s) · vᵀ (s A + (1 − s) B)⁻¹ v,

a concave function (a minimum of functions affine in ``s``). The *open* ellipsoids are disjoint iff
``max_s F(s) ≥ 1``. With ``B = LLᵀ`` and ``L⁻¹AL⁻ᵀ = U diag(μ) Uᵀ`` (the generalised eigendecomposition of
``(A, B)``) and ``w = UᵀL⁻¹v``,

    F(s) = Σ_j w_j² s(1 − s) / (1 + s(μ_j − 1)),     F'(s) = Σ_j w_j² ((1 − s)² − μ_j s²) / (1 + s(μ_j − 1))²,

so one O(d³) decomposition is followed by O(d) work per value of ``s``; the maximiser is found by bisection on
the sign of the decreasing ``F'``. Rescaling ``A`` by ``t`` only rescales ``μ``, so the bisection on the new
radius reuses the decomposition.

References
----------
Alfarra, Bibi, Torr and Ghanem (2022), Data dependent randomized smoothing, UAI — Sec. 4, memory-based
certification.
Eiras, Alfarra, Kumar, Torr, Dokania, Ghanem and Bibi (2022), ANCER: anisotropic certification via sample-wise
volume maximization, TMLR — memory-based certification of anisotropic regions.
Gilitschenski and Hanebeck (2012), A robust computational test for overlap of two arbitrary-dimensional
ellipsoids in fault-detection of Kalman filters, FUSION.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from manifoldcert.certificate import Ellipsoid
from manifoldcert.geometry.covariance import Covariance

__all__ = [
    "CertificationMemory",
    "MemoryEntry",
    "MemoryHit",
    "ellipsoid_separation",
    "ellipsoids_intersect",
    "largest_disjoint_radius",
]

# Bisection steps on s ∈ [0, 1] (the maximiser of the concave F) and on the radius.
_S_STEPS = 60
_RADIUS_STEPS = 50
# Relative safety margin when shrinking: the stored regions satisfy max_s F(s) ≥ 1 + _MARGIN.
_MARGIN = 1e-9


def _as_center(point: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(point).detach().to(device="cpu", dtype=torch.float64).reshape(-1)


def _generalised_spectrum(
    shape_a: Covariance, shape_b: Covariance, offset: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``μ`` of ``L⁻¹Σ_aL⁻ᵀ`` (``Σ_b = LLᵀ``) and the squared coordinates ``w²`` of ``L⁻¹v``."""
    if shape_a.variances is not None and shape_b.variances is not None:  # both diagonal
        mu, w2 = shape_a.variances / shape_b.variances, offset.square() / shape_b.variances
        return mu.numpy(), w2.numpy()
    lower = shape_b.factor if shape_b.factor is not None else torch.diag(shape_b.scales())
    half = torch.linalg.solve_triangular(lower, shape_a.dense(), upper=False)
    whitened = torch.linalg.solve_triangular(lower, half.mT, upper=False)
    mu, vectors = torch.linalg.eigh((whitened + whitened.mT) / 2)
    w = vectors.mT @ torch.linalg.solve_triangular(lower, offset.unsqueeze(1), upper=False).squeeze(1)
    return mu.clamp_min(torch.finfo(mu.dtype).tiny).numpy(), w.square().numpy()


def _max_separation(mu: np.ndarray, w2: np.ndarray) -> float:
    """``max_{s∈[0,1]} Σ_j w_j² s(1 − s)/(1 + s(μ_j − 1))`` by bisection on the sign of its decreasing derivative."""
    if float(w2.sum()) == 0.0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(_S_STEPS):
        s = 0.5 * (low + high)
        denominator = 1.0 + s * (mu - 1.0)
        slope = float((w2 * ((1.0 - s) ** 2 - mu * s * s) / (denominator * denominator)).sum())
        low, high = (s, high) if slope > 0 else (low, s)
    s = 0.5 * (low + high)
    return float((w2 * (s * (1.0 - s)) / (1.0 + s * (mu - 1.0))).sum())


def ellipsoid_separation(
    center_a: torch.Tensor,
    shape_a: torch.Tensor,
    radius_a: float,
    center_b: torch.Tensor,
    shape_b: torch.Tensor,
    radius_b: float,
) -> float:
    """``max_{s∈[0,1]} s(1 − s)·vᵀ(s r_a²Σ_a + (1 − s) r_b²Σ_b)⁻¹v``, ``v = center_b − center_a``.

    The open ellipsoids ``{center + δ : δᵀΣ⁻¹δ < radius²}`` are disjoint iff the value is ``>= 1`` (module
    docstring); it is ``inf`` when either is empty (radius 0).

    Parameters
    ----------
    center_a, center_b : Tensor
        Centres, any shape with ``d`` elements (flattened).
    shape_a, shape_b : Tensor
        ``Σ``: a ``(d, d)`` SPD matrix, a ``(d,)`` vector of variances, or a scalar variance.
    radius_a, radius_b : float
        Mahalanobis radii ``r >= 0``.
    """
    a, b = _as_center(center_a), _as_center(center_b)
    if a.shape != b.shape:
        raise ValueError(f"the centres have {a.numel()} and {b.numel()} coordinates")
    if radius_a < 0 or radius_b < 0:
        raise ValueError(f"radii must be >= 0, got {radius_a} and {radius_b}")
    if radius_a == 0 or radius_b == 0:
        return math.inf
    dim = a.numel()
    mu, w2 = _generalised_spectrum(Covariance.coerce(shape_a, dim), Covariance.coerce(shape_b, dim), b - a)
    return _max_separation(mu * (radius_a / radius_b) ** 2, w2 / radius_b**2)


def ellipsoids_intersect(
    center_a: torch.Tensor,
    shape_a: torch.Tensor,
    radius_a: float,
    center_b: torch.Tensor,
    shape_b: torch.Tensor,
    radius_b: float,
) -> bool:
    """Whether the open ellipsoids ``{c + δ : δᵀΣ⁻¹δ < r²}`` share a point; see :func:`ellipsoid_separation`."""
    return ellipsoid_separation(center_a, shape_a, radius_a, center_b, shape_b, radius_b) < 1.0


def _largest_disjoint_radius(
    center: torch.Tensor,
    shape: Covariance,
    radius: float,
    other_center: torch.Tensor,
    other_shape: Covariance,
    other_radius: float,
    margin: float,
) -> float:
    if radius <= 0 or other_radius <= 0:
        return max(radius, 0.0)
    mu, w2 = _generalised_spectrum(shape, other_shape, other_center - center)
    w2 = w2 / other_radius**2

    def disjoint(r: float) -> bool:
        return r == 0 or _max_separation(mu * (r / other_radius) ** 2, w2) >= 1.0 + margin

    if disjoint(radius):
        return radius
    low, high = 0.0, radius  # the empty region (r = 0) is disjoint from anything
    for _ in range(_RADIUS_STEPS):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if disjoint(middle) else (low, middle)
    return low


def largest_disjoint_radius(
    center: torch.Tensor,
    shape: torch.Tensor,
    radius: float,
    other_center: torch.Tensor,
    other_shape: torch.Tensor,
    other_radius: float,
) -> float:
    """The largest ``r' <= radius`` for which ``{center + δ : δᵀΣ⁻¹δ < r'²}`` misses the other open ellipsoid.

    Bisection on ``r'`` (the separation of :func:`ellipsoid_separation` decreases as ``r'`` grows); the result is
    on the disjoint side, with a relative safety margin of 1e-9 on the separation. It equals the
    ``Σ``-Mahalanobis distance from ``center`` to the closure of the other ellipsoid (when below ``radius``).
    """
    c, o = _as_center(center), _as_center(other_center)
    dim = c.numel()
    return _largest_disjoint_radius(
        c,
        Covariance.coerce(shape, dim),
        float(radius),
        o,
        Covariance.coerce(other_shape, dim),
        float(other_radius),
        _MARGIN,
    )


@dataclass(frozen=True)
class MemoryEntry:
    """One stored certificate: centre ``x_i`` (flattened), class ``c_i``, covariance shape ``Σ_i``, radius ``r_i``."""

    center: torch.Tensor
    prediction: int
    shape: Covariance
    radius: float
    p_lower: float | None = None

    @property
    def covariance(self) -> torch.Tensor:
        """``Σ_i`` as a dense ``(d, d)`` float64 matrix."""
        return self.shape.dense()

    def region(self) -> Ellipsoid:
        """The stored region as an :class:`~manifoldcert.certificate.Ellipsoid` (around ``center``)."""
        return Ellipsoid(self.covariance, self.radius)


@dataclass(frozen=True)
class MemoryHit:
    """Step 1 of the rule: the query lies in stored region ``index`` at ``Σ_i``-distance ``distance``."""

    index: int
    entry: MemoryEntry
    distance: float

    @property
    def radius(self) -> float:
        """``r_i − ‖x − x_i‖_{Σ_i}``: the largest ``Σ_i``-ellipsoid around the query inside the stored region."""
        return self.entry.radius - self.distance


class CertificationMemory:
    """The memory of certified regions of Alfarra et al. (2022) and Eiras et al. (2022); the rule and what it
    guarantees are in the module docstring.

    A memory is passed to a data-dependent certifier (``memory=CertificationMemory()`` or ``memory=True``) and
    may be shared by several certifiers of the same model. It keeps every entry (centre, class, covariance,
    radius): a full ``d × d`` covariance costs ``8d²`` bytes per entry (a Cholesky factor), a diagonal one ``8d``.
    """

    def __init__(self) -> None:
        self._entries: list[MemoryEntry] = []
        self._outer: list[float] = []  # r_i·sqrt(λ_max(Σ_i)): the stored region lies in this l2 ball
        self._stacked: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CertificationMemory({len(self)} entries)"

    @property
    def entries(self) -> tuple[MemoryEntry, ...]:
        """The stored entries, in the order they were stored."""
        return tuple(self._entries)

    @property
    def dim(self) -> int | None:
        """The input dimension of the stored entries, ``None`` while the memory is empty."""
        return None if not self._entries else self._entries[0].center.numel()

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._outer.clear()
        self._stacked = None

    def _center_and_distances(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        center = _as_center(x)
        if self.dim is not None and center.numel() != self.dim:
            raise ValueError(
                f"this memory holds {self.dim}-dimensional inputs, got {center.numel()} coordinates"
            )
        if not self._entries:
            return center, torch.empty(0, dtype=torch.float64)
        if self._stacked is None:
            self._stacked = torch.stack([entry.center for entry in self._entries])
        return center, (self._stacked - center).norm(dim=1)

    def lookup(self, x: torch.Tensor) -> MemoryHit | None:
        """Step 1: the first stored region containing ``x`` (strictly), or ``None``."""
        center, distances = self._center_and_distances(x)
        for index in (
            torch.nonzero(distances < torch.tensor(self._outer, dtype=torch.float64)).flatten().tolist()
        ):
            entry = self._entries[index]
            distance = entry.shape.mahalanobis(center - entry.center)
            if distance < entry.radius:
                return MemoryHit(index, entry, distance)
        return None

    def admissible_radius(
        self, x: torch.Tensor, prediction: int, shape: torch.Tensor, radius: float
    ) -> float:
        """The radius step 2 would store for ``(x, prediction, Σ = shape, radius)``, without storing it.

        ``shape`` is a ``(d, d)`` matrix, a ``(d,)`` vector of variances or a scalar variance. The result is the
        largest ``r <= radius`` whose region misses every stored region of another class.
        """
        center, distances = self._center_and_distances(x)
        compact = Covariance.coerce(shape, center.numel())
        largest = float(compact.eigenvalues()[-1])
        return self._admissible(center, int(prediction), compact, largest, float(radius), distances)

    def _admissible(
        self,
        center: torch.Tensor,
        prediction: int,
        shape: Covariance,
        largest_eigenvalue: float,
        radius: float,
        distances: torch.Tensor,
    ) -> float:
        if radius <= 0 or not self._entries:
            return max(radius, 0.0)
        # Only regions whose bounding l2 balls meet the new one's can intersect it.
        reach = torch.tensor(self._outer, dtype=torch.float64) + radius * math.sqrt(largest_eigenvalue)
        for index in torch.nonzero(distances < reach).flatten().tolist():
            entry = self._entries[index]
            if entry.prediction != prediction and radius > 0:
                radius = _largest_disjoint_radius(
                    center, shape, radius, entry.center, entry.shape, entry.radius, _MARGIN
                )
        return radius

    def add(
        self,
        x: torch.Tensor,
        prediction: int,
        shape: torch.Tensor | Covariance,
        radius: float,
        *,
        p_lower: float | None = None,
    ) -> float:
        """Step 2: shrink ``radius`` until the new region misses every stored region of another class, store the
        entry when the result is positive, and return it (0.0: nothing stored).

        Parameters
        ----------
        x : Tensor
            The certified input (any shape; stored flattened, float64, on the CPU).
        prediction : int
            Its certified class.
        shape : Covariance or Tensor
            The covariance ``Σ``: a :class:`Covariance`, ``(d, d)``, ``(d,)`` variances, or a scalar variance.
        radius : float
            The Mahalanobis radius ``r`` certified at ``x``.
        p_lower : float, optional
            Kept with the entry and reported by look-ups.
        """
        center, distances = self._center_and_distances(x)
        compact = Covariance.coerce(shape, center.numel())
        largest = float(compact.eigenvalues()[-1])
        radius = self._admissible(center, int(prediction), compact, largest, float(radius), distances)
        if radius > 0:
            self._entries.append(MemoryEntry(center.clone(), int(prediction), compact, radius, p_lower))
            self._outer.append(radius * math.sqrt(largest))
            self._stacked = None
        return radius
