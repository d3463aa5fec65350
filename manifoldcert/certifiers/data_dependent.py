"""``ddrs``, ``ancer``, ``rddrs``: Gaussian smoothing whose covariance is optimised at each input.

One certifier, :class:`OptimisedSmoothing`, runs every data-dependent method; DDRS, ANCER and RDDRS are its
configurations — a chain of :class:`Stage`\\ s, each a covariance family on a manifold (with its objective) and
an optimiser, started from the previous stage's result:

=========  ================================================  =========================================
method     chain (``start`` default)                          last stage
=========  ================================================  =========================================
``ddrs``   ddrs                                              σ on :class:`PositiveReals` (log metric),
                                                             fixed gradient steps (Alfarra et al.)
``ancer``  ddrs → ancer                                      θ on :class:`PositiveDiagonals`, θ ≥ σ*,
                                                             Riemannian Adam = ANCER's Adam
``rddrs``  ddrs → ancer → rddrs                              Σ on :class:`SPDMatrices` (metric of your
                                                             choice), λ ≥ σ*², backtracking ascent
=========  ================================================  =========================================

``σ*`` (the floor) is the σ the DDRS stage chose, or ``σ₀`` / ``λ_min(C₀)^{1/2}`` without one.

Stages of certifying one input, each on its own fresh samples from the certifier's generator:

1. **SELECT** — the top class ``c_A`` from ``n0`` votes under the starting noise ``N(0, σ₀²I)`` (for RDDRS with
   ``initial_covariance=C₀``, ``N(0, C₀)``).
2. **OPTIMISE** — for each stage of the chain: the optimiser ascends the stage's objective (soft ``p_A`` with
   reparameterised gradients, :mod:`manifoldcert.certifiers.smoothing_objectives`) with ``opt_samples`` samples
   per step; then **CHOOSE** — among the kept iterates (the stage's start, evenly spaced iterates, the last),
   the one with the largest proxy radius ``Φ⁻¹(p̲)·det(Σ)^{1/(2d)}`` computed, as the certificate would be, from
   the Clopper–Pearson bound ``p̲`` on ``choice_samples`` fresh votes (0 or less than 1/2: radius 0). The choice
   uses samples that neither the ascent nor CERTIFY sees, so a stage cannot return an iterate worse than its start
   except by the Monte Carlo error of the choice, and the final bound stays valid (``choice_samples=0`` returns
   the last iterate, as the papers do).
3. **CERTIFY** — ``n`` fresh votes under the chosen noise ``N(0, Σ)``, the one-sided Clopper–Pearson bound
   ``p_lower`` of ``c_A`` at level ``alpha``; abstain when ``p_lower < 1/2``; otherwise the certified set is the
   ellipsoid ``{δ : δᵀΣ⁻¹δ < r²}``, ``r = Φ⁻¹(p_lower)`` (Eiras et al., Theorem 1 with ``p_B = 1 − p_A``; the
   paper's Eq. 2). The certificate reports ``region = Ellipsoid(Σ, r)``, the l2 radius ``r·sqrt(λ_min(Σ))`` of the
   ball inside it (also the l1 radius; l∞: divided by ``√d``), and ``params["proxy_radius"] = r·det(Σ)^{1/(2d)}``
   (docs/conventions.md).

What is guaranteed. Without a memory (``memory=False``), a certificate says: with probability at least
``1 − α`` over the CERTIFY samples, the smoothed classifier ``g_Σ`` whose covariance is FROZEN at the ``Σ``
chosen at ``x`` predicts ``c_A`` on ``x + region`` (``Σ`` depends only on the SELECT/OPTIMISE/CHOOSE samples,
independent of the CERTIFY ones). It says nothing about the data-dependent classifier ``x' ↦ g_{Σ(x')}(x')``,
which uses another covariance at ``x' = x + δ``; hence ``guaranteed=False``. With a memory (``memory=True`` or a
:class:`~manifoldcert.certifiers.memory.CertificationMemory`), inputs are answered by the memory-based
classifier of Alfarra et al. / Eiras et al.: its predictions are constant on every region it returned over the
processed sequence (see :mod:`manifoldcert.certifiers.memory`); hence ``guaranteed=True``.

References
----------
Alfarra, Bibi, Torr and Ghanem (2022), Data dependent randomized smoothing, UAI.
Eiras, Alfarra, Kumar, Torr, Dokania, Ghanem and Bibi (2022), ANCER: anisotropic certification via sample-wise
volume maximization, TMLR.
Labarbarie, Hajri and Arnaudon (2022), Riemannian data-dependent randomized smoothing for neural networks
certification, ICML 2022 workshop, Eq. 3–6.
"""

from __future__ import annotations

import abc
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from manifoldcert._validation import check_name, check_positive_float, check_positive_int
from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.certificate import Certificate, Ellipsoid
from manifoldcert.certifiers.base import (
    DEFAULT_ALPHA,
    DEFAULT_N,
    DEFAULT_N0,
    AbstractCertifier,
    Sequential,
    VoteOptions,
)
from manifoldcert.certifiers.memory import CertificationMemory, MemoryHit
from manifoldcert.certifiers.smoothing_objectives import (
    DiagonalObjective,
    FullCovarianceObjective,
    IsotropicObjective,
    SmoothingObjective,
    gaussian_noise,
    parameter_dtype,
)
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.geometry._geomstats import is_geomstats_object
from manifoldcert.geometry.base import Manifold
from manifoldcert.geometry.covariance import Covariance
from manifoldcert.geometry.metrics import GEOMSTATS_PREFIX, SPDMetric, resolve_metric
from manifoldcert.geometry.positive import PositiveDiagonals, PositiveReals
from manifoldcert.geometry.spd import SPDMatrices
from manifoldcert.noises import AbstractNoise
from manifoldcert.optimize import (
    GradientOptimizer,
    OptimizationResult,
    Problem,
    RiemannianAdam,
    RiemannianAscent,
    choose_iterate,
)
from manifoldcert.resources import check_full_covariance_fits
from manifoldcert.sequential import (
    CertificationStream,
    SequentialPlan,
    check_label,
    check_radii,
    stream_params,
)

__all__ = [
    "ANCER",
    "DDRS",
    "RDDRS",
    "ChainResult",
    "CovarianceFamily",
    "DiagonalFamily",
    "FullFamily",
    "IsotropicFamily",
    "OptimisedSmoothing",
    "Stage",
    "StageResult",
]

STARTS = {"ancer": ("ddrs", "sigma"), "rddrs": ("ancer", "ddrs", "sigma")}
#: Stopping reasons that are not a failure (no warning).
_NORMAL_STOPS = ("max iterations", "step too small", "stationary point")


# ---------------------------------------------------------------------------------------------------------------
# Covariance families: the manifold a stage searches, its objective, and how a previous result becomes its start
# ---------------------------------------------------------------------------------------------------------------


class CovarianceFamily(abc.ABC):
    """A family of Gaussian covariances parameterised by the points of a manifold, with its objective.

    Parameters
    ----------
    **objective_options
        Keyword options of :attr:`objective_type` (e.g. ``kappa``).
    """

    #: The smoothing objective a stage of this family ascends.
    objective_type: ClassVar[type[SmoothingObjective]]
    #: Whether the σ this family's stage chooses becomes the floor σ* of the later stages (DDRS's does).
    defines_floor: ClassVar[bool] = False
    #: Dense ``d × d`` float64 matrices a stage holds at once (checked against the free memory before sampling).
    dense_matrices: ClassVar[int] = 0

    def __init__(self, **objective_options: Any) -> None:
        self.objective_options = objective_options

    @abc.abstractmethod
    def manifold(self, dim: int, floor: float) -> Manifold:
        """The search space for inputs of ``dim`` coordinates with the floor ``σ*`` on the standard deviations."""

    @abc.abstractmethod
    def start_point(
        self, covariance: Covariance, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """The manifold point of ``covariance`` (the previous stage's result, or the chain's start)."""

    def objective(
        self,
        estimator: MonteCarloEstimator,
        x: torch.Tensor,
        top_class: int,
        *,
        n_samples: int,
        batch_size: int | None,
    ) -> SmoothingObjective:
        """The stage's objective at ``x`` for ``top_class``."""
        return self.objective_type(
            estimator, x, top_class, n_samples=n_samples, batch_size=batch_size, **self.objective_options
        )

    def check_resources(self, dim: int, device: torch.device) -> None:
        """Raise :class:`~manifoldcert.resources.CovarianceTooLargeError` before any sampling when the stage's
        dense matrices on ``dim`` coordinates cannot fit in the free memory of ``device``."""
        if self.dense_matrices:
            check_full_covariance_fits(dim, torch.float64, n_matrices=self.dense_matrices, device=device)


@final
class IsotropicFamily(CovarianceFamily):
    """``N(0, σ²I)``: the point σ on the positive reals with the log metric (gradient ascent on ``log σ``)."""

    objective_type = IsotropicObjective
    defines_floor = True

    def manifold(self, dim: int, floor: float) -> Manifold:
        return PositiveReals(metric="log")

    def start_point(
        self, covariance: Covariance, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        if covariance.kind != "isotropic":
            raise ValueError(f"an isotropic stage cannot start from a {covariance.kind} covariance")
        variances = covariance.variances
        assert variances is not None  # the isotropic kind keeps its variances
        return variances[0].sqrt().to(device=device, dtype=dtype)


@final
class DiagonalFamily(CovarianceFamily):
    """``N(0, diag(θ)²)``: θ on the positive diagonals, ``θ_i ≥ σ*``; ANCER's objective with weight ``kappa``."""

    objective_type = DiagonalObjective

    def __init__(self, kappa: float, *, metric: str = "euclidean") -> None:
        super().__init__(kappa=_check_kappa(kappa))
        self.metric = metric

    def manifold(self, dim: int, floor: float) -> Manifold:
        return PositiveDiagonals(dim, metric=self.metric, min_value=floor)

    def start_point(
        self, covariance: Covariance, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        if not covariance.is_diagonal:
            raise ValueError("a diagonal stage cannot start from a full covariance")
        return covariance.scales().to(device=device, dtype=dtype)


@final
class FullFamily(CovarianceFamily):
    """``N(0, Σ)``: Σ on SPD(d) with ``metric``, ``λ_i ≥ σ*²``; RDDRS's objective with weight ``kappa``.

    ``metric`` is anything :func:`~manifoldcert.geometry.metrics.resolve_metric` accepts; it is resolved once
    per input dimension (a geomstats class is equipped on ``SPDMatrices(d)`` then). A stage holds 6 dense
    ``d × d`` matrices (the covariance, its factor, gradients and the step).
    """

    objective_type = FullCovarianceObjective
    dense_matrices = 6

    def __init__(self, kappa: float, *, metric: Any = "affine-invariant") -> None:
        super().__init__(kappa=_check_kappa(kappa))
        self.metric = metric
        self._resolved: dict[int, SPDMetric] = {}

    def resolved_metric(self, dim: int) -> SPDMetric:
        """The :class:`SPDMetric` on SPD(dim)."""
        if dim not in self._resolved:
            self._resolved[dim] = resolve_metric(self.metric, dim)
        return self._resolved[dim]

    def manifold(self, dim: int, floor: float) -> Manifold:
        return SPDMatrices(dim, self.resolved_metric(dim), min_eigenvalue=floor**2)

    def start_point(
        self, covariance: Covariance, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        return covariance.dense().to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Stage:
    """One link of a chain: a covariance family searched by ``optimizer`` with ``samples`` samples per step."""

    name: str
    family: CovarianceFamily
    optimizer: GradientOptimizer
    samples: int


@dataclass(frozen=True)
class StageResult:
    """What one stage returned: the chosen covariance, the optimiser's run, which candidate was chosen and the
    choice's scores (proxy radii on fresh votes; empty when ``choice_samples=0``), the floor σ* it ran with, and
    the forward passes it cost (objective evaluations × samples, gradient ones with a backward pass, plus the
    choice's votes) and its wall-clock seconds."""

    name: str
    covariance: Covariance
    run: OptimizationResult
    chosen: int
    choice_scores: tuple[float, ...]
    floor: float
    forward_passes: int
    seconds: float

    @property
    def chosen_step(self) -> int:
        """The step of the chosen iterate (0: the stage's start)."""
        return self.run.candidates[self.chosen].step


@dataclass(frozen=True)
class ChainResult:
    """The stages' results, first to last (never empty); :attr:`covariance` is the one CERTIFY uses."""

    stages: tuple[StageResult, ...]

    @property
    def final(self) -> StageResult:
        """The last stage's result."""
        return self.stages[-1]

    @property
    def covariance(self) -> Covariance:
        """The last stage's chosen covariance: the one CERTIFY smooths with."""
        return self.final.covariance


# ---------------------------------------------------------------------------------------------------------------
# The certifier
# ---------------------------------------------------------------------------------------------------------------


class OptimisedSmoothing(AbstractCertifier):
    """SELECT / OPTIMISE (a chain of stages, each with its CHOOSE) / CERTIFY (module docstring).

    A configuration implements :meth:`stages` (the chain) and :meth:`method_params`.

    Parameters
    ----------
    model : nn.Module or None
    sigma : float
        ``σ₀``: the starting standard deviation (SELECT's noise and the chain's start), pixel units.
    choice_samples : int
        Votes per kept iterate in each stage's CHOOSE (0: keep the last iterate, as the papers do).
    memory : CertificationMemory or bool
        ``True`` makes a new :class:`~manifoldcert.certifiers.memory.CertificationMemory`; an instance is used
        (and may be shared); ``False`` certifies without one (``guaranteed=False``).
    max_region_dim : int
        Certificates carry ``region=Ellipsoid(Σ, r)`` (a dense ``d × d`` matrix) up to this dimension and
        ``region=None`` above it (the radii and ``params`` are reported either way).
    initial_covariance : Tensor, shape (d, d), optional
        Start the chain here instead of ``σ₀²I`` (checked SPD).
    **options
        ``batch_size``, ``num_classes``, ``input_shape``, ``seed`` as for every certifier.
    """

    native_norm = "l2"
    extra_columns = ("proxy_radius", "sigma_min", "sigma_max", "chosen_step", "memory")

    def __init__(
        self,
        model: nn.Module | None,
        *,
        sigma: float = 0.25,
        choice_samples: int = 1000,
        memory: CertificationMemory | bool = False,
        max_region_dim: int = 4096,
        initial_covariance: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.sigma = check_positive_float(sigma, "sigma")
        if isinstance(choice_samples, bool) or not isinstance(choice_samples, int) or choice_samples < 0:
            raise ValueError(f"choice_samples must be an integer >= 0, got {choice_samples!r}")
        self.choice_samples = choice_samples
        if isinstance(memory, CertificationMemory):
            self.memory: CertificationMemory | None = memory
        elif isinstance(memory, bool):
            self.memory = CertificationMemory() if memory else None
        else:
            raise TypeError(f"memory must be a CertificationMemory or a bool, got {type(memory).__name__}")
        self.max_region_dim = check_positive_int(max_region_dim, "max_region_dim")
        self.initial_covariance = None
        if initial_covariance is not None:
            matrix = torch.as_tensor(initial_covariance)
            if not matrix.is_floating_point():
                raise TypeError("initial_covariance must be a floating-point tensor")
            self.initial_covariance = Covariance.full(matrix, "initial_covariance")

    @abc.abstractmethod
    def stages(self) -> tuple[Stage, ...]:
        """The chain, first stage to last."""

    @abc.abstractmethod
    def method_params(self) -> dict[str, Any]:
        """Method-specific entries of ``Certificate.params``."""

    @property
    def guaranteed(self) -> bool:
        """True with a memory (consistency of the memory-based classifier), False without (module docstring)."""
        return self.memory is not None

    # -- the stages ---------------------------------------------------------------------------------------------
    def start_covariance(self, x: torch.Tensor) -> Covariance:
        """The chain's start: ``initial_covariance`` or ``σ₀²I``."""
        if self.initial_covariance is None:
            return Covariance.isotropic(self.sigma, x.numel())
        if self.initial_covariance.dim != x.numel():
            dim = self.initial_covariance.dim
            raise ValueError(f"initial_covariance is {dim}×{dim} but the input has {x.numel()} coordinates")
        return self.initial_covariance

    def _noise(self, covariance: Covariance) -> AbstractNoise:
        estimator = self.require_estimator()
        return gaussian_noise(covariance, dtype=estimator.dtype, device=estimator.device)

    def select(
        self,
        x: torch.Tensor,
        n0: int = DEFAULT_N0,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> int:
        """SELECT: the class with most of ``n0`` votes under the start noise."""
        counts = self.require_estimator().class_counts(
            x,
            self._noise(self.start_covariance(x)),
            n0,
            generator=self._generator_for(generator),
            batch_size=batch_size,
        )
        return int(counts.argmax())

    def check_resources(self, x: torch.Tensor) -> None:
        """Raise before any sampling when a stage cannot fit in memory for ``x``."""
        device = self.require_estimator().device
        for stage in self.stages():
            stage.family.check_resources(x.numel(), device)

    def _choice_score(
        self,
        x: torch.Tensor,
        top_class: int,
        covariance: Covariance,
        n: int,
        alpha: float,
        generator: torch.Generator | None,
        batch_size: int | None,
    ) -> float:
        """The proxy radius CERTIFY would report with ``n`` votes if ``p_A`` were the estimate from
        ``choice_samples`` fresh votes: ``Φ⁻¹(p̲)·det(Σ)^{1/(2d)}`` with ``p̲`` the Clopper–Pearson bound of
        ``⌊p̃ n⌋`` successes in ``n``, ``p̃ = (k + ½)/(m + 1)`` (0 when ``p̲ < 1/2``). Projecting to ``n`` keeps a
        choice on ``m < n`` votes from preferring volume where all ``m`` votes agree but ``n`` would not."""
        m = self.choice_samples
        counts = self.require_estimator().class_counts(
            x, self._noise(covariance), m, generator=generator, batch_size=batch_size
        )
        estimate = (int(counts[top_class]) + 0.5) / (m + 1)
        p_lower = clopper_pearson_lower(math.floor(estimate * n), n, alpha)
        return _mahalanobis_radius(p_lower) * covariance.proxy_scale()

    def optimise(
        self,
        x: torch.Tensor,
        top_class: int,
        *,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> ChainResult:
        """OPTIMISE: run the chain for ``top_class`` at ``x``; each stage starts from the previous one's choice.

        ``n`` and ``alpha`` are those of the CERTIFY to come (the choice predicts its radius).
        """
        generator = self._generator_for(generator)
        x = self._check_x(x)
        self.check_resources(x)
        start = self.start_covariance(x)
        covariance, floor = start, float(start.eigenvalues()[0].sqrt())
        stages = self.stages()
        if not stages:
            raise ValueError(f"{type(self).__name__}.stages() returned no stage")
        results: list[StageResult] = []
        for stage in stages:
            result = self._run_stage(stage, x, top_class, covariance, floor, n, alpha, generator, batch_size)
            results.append(result)
            covariance = result.covariance
            if stage.family.defines_floor:
                floor = float(covariance.eigenvalues()[0].sqrt())
        return ChainResult(tuple(results))

    def run_stage(
        self,
        x: torch.Tensor,
        top_class: int,
        covariance: Covariance,
        *,
        floor: float,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> StageResult:
        """Run only the chain's last stage from ``covariance`` with the floor ``σ* = floor`` (e.g. to compare
        metrics or optimisers from one shared start)."""
        x = self._check_x(x)
        self.check_resources(x)
        stage = self.stages()[-1]
        generator = self._generator_for(generator)
        return self._run_stage(stage, x, top_class, covariance, float(floor), n, alpha, generator, batch_size)

    def _run_stage(
        self,
        stage: Stage,
        x: torch.Tensor,
        top_class: int,
        covariance: Covariance,
        floor: float,
        n: int,
        alpha: float,
        generator: torch.Generator | None,
        batch_size: int | None,
    ) -> StageResult:
        """One stage: ascend from ``covariance``, then CHOOSE among the kept iterates on fresh votes."""
        estimator = self.require_estimator()
        began = time.perf_counter()
        objective = stage.family.objective(
            estimator, x, top_class, n_samples=stage.samples, batch_size=batch_size
        )
        point = stage.family.start_point(
            covariance, dtype=parameter_dtype(estimator.device), device=estimator.device
        )
        problem = Problem(stage.family.manifold(x.numel(), floor), objective)
        run = stage.optimizer.run(problem, point, generator=generator)
        if run.stopping_reason not in _NORMAL_STOPS:
            warnings.warn(
                f"{stage.name}: {run.stopping_reason} after {run.iterations} valid steps of "
                f"{stage.optimizer.max_iterations}; certifying the best valid iterate",
                RuntimeWarning,
                stacklevel=4,
            )
        covariances = [_covariance_or_none(objective, candidate.point) for candidate in run.candidates]
        valid = [index for index, covariance in enumerate(covariances) if covariance is not None]
        chosen = valid[-1]  # the start is always valid; without a choice: the last valid iterate
        scores: list[float] = []
        if self.choice_samples > 0 and len(valid) > 1:
            best, scores = choose_iterate(
                [covariance for covariance in covariances if covariance is not None],  # those at ``valid``
                lambda covariance: self._choice_score(
                    x, top_class, covariance, n, alpha, generator, batch_size
                ),
            )
            chosen = valid[best]
        passes = run.evaluations * stage.samples + len(scores) * self.choice_samples
        chosen_covariance = covariances[chosen]
        assert chosen_covariance is not None  # chosen is one of the valid indices
        seconds = time.perf_counter() - began
        return StageResult(stage.name, chosen_covariance, run, chosen, tuple(scores), floor, passes, seconds)

    def bound(
        self,
        x: torch.Tensor,
        top_class: int,
        covariance: Covariance,
        *,
        n: int,
        alpha: float,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> tuple[float, float]:
        """CERTIFY under ``N(0, covariance)``: the Clopper–Pearson bound ``p_lower`` of ``top_class`` on ``n`` fresh
        votes and the Mahalanobis radius ``r = Φ⁻¹(p_lower)`` (0 when ``p_lower < 1/2``)."""
        stream = self._bound_stream(x, top_class, covariance, n, alpha, None, generator, batch_size)
        return stream.p_lower, _mahalanobis_radius(stream.p_lower)

    def _bound_stream(
        self,
        x: torch.Tensor,
        top_class: int,
        covariance: Covariance,
        n: int,
        alpha: float,
        plan: SequentialPlan | None,
        generator: torch.Generator | None,
        batch_size: int | None,
    ) -> CertificationStream:
        """The final stage's votes for ``top_class`` under ``N(0, covariance)``: ``n`` of them, or a sequential
        stream under ``plan``."""
        stream = CertificationStream(
            x,
            self._noise(covariance),
            self._generator_for(generator),
            n0=0,
            n=n,
            alpha=alpha,
            plan=plan,
            top_class=top_class,
        )
        for _ in self.require_estimator().run_jobs([stream], batch_size=batch_size):
            pass
        return stream

    def noise_for(self, x: torch.Tensor) -> AbstractNoise:
        """The noise this certifier would use at ``x``: SELECT on ``n0 = 100`` votes, then OPTIMISE."""
        x = self._check_x(x)
        top_class = self.select(x, DEFAULT_N0, generator=self._generator)
        return self._noise(self.optimise(x, top_class, generator=self._generator).covariance)

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = DEFAULT_N0,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        sequential: Sequential = None,
        radii: Sequence[float] | None = None,
        target_radius: float | None = None,
        max_n: int | None = None,
        label: int | None = None,
    ) -> Certificate:
        """Certify one input: memory look-up (with a memory), then SELECT, OPTIMISE (+ CHOOSE) and CERTIFY.

        ``sequential``, ``radii`` / ``target_radius`` (l2 radii ``r·sqrt(λ_min Σ)``) and ``max_n`` make the final
        CERTIFY stage sequential (:mod:`manifoldcert.sequential`); ``label`` is the evaluation mode (the chain
        and the bound are run for the true label, SELECT is skipped). The choice of iterates predicts the radius
        at ``n`` votes in both modes.

        Returns
        -------
        Certificate
            ``region = Ellipsoid(Σ, r)``; ``radius`` l2 = l1 = ``r·sqrt(λ_min Σ)``, l∞ = l2/√d; ``params`` with
            ``proxy_radius``, ``sigma`` (``sqrt(tr Σ/d)``), ``sigma_min``/``sigma_max`` (``sqrt`` of the extreme
            eigenvalues), ``sigma_start``, ``sigma_floor``, ``chain``, ``iterations``, ``stop_reason``,
            ``objective`` and ``start_objective`` (the last stage's ascent estimates), ``chosen_step`` (0: the
            last stage's start was kept), ``choice_scores`` and ``memory`` (``off``, ``hit``, ``stored``,
            ``shrunk``, ``conflict`` or ``not stored``); with ``sequential`` also ``stop`` and ``max_n``.
        """
        self.require_estimator()
        x, alpha = self._check_protocol(x, n0, n, alpha)
        self.check_resources(x)
        if sequential not in (None, False):
            check_radii(radii, target_radius)  # refuse bad radii before the optimisation
        label = check_label(label)
        generator = self._generator_for(generator)
        start = time.perf_counter()
        if self.memory is not None:
            if label is not None:
                raise ValueError("the evaluation mode (label=) does not apply to a certifier with a memory")
            hit = self.memory.lookup(x)
            if hit is not None:
                return self._memory_certificate(hit, n0, n, alpha, start)
        top_class = self.select(x, n0, generator=generator, batch_size=batch_size) if label is None else label
        chain = self.optimise(x, top_class, n=n, alpha=alpha, generator=generator, batch_size=batch_size)
        covariance = chain.covariance
        sigma_min = math.sqrt(float(covariance.eigenvalues()[0]))
        options = VoteOptions(
            n0=n0,
            n=n,
            alpha=alpha,
            sequential=sequential,
            radii=radii,
            target_radius=target_radius,
            max_n=max_n,
        )
        plan = self._sequential_plan(
            options, alpha=alpha, radius_of=lambda p: _mahalanobis_radius(p) * sigma_min
        )
        stream = self._bound_stream(x, top_class, covariance, n, alpha, plan, generator, batch_size)
        p_lower, radius = stream.p_lower, _mahalanobis_radius(stream.p_lower)
        n = stream.n_used
        n0 = 0 if label is not None else n0
        abstain = p_lower < 0.5
        status = "off"
        if self.memory is not None:
            if abstain:
                status = "not stored"
            else:
                stored = self.memory.add(x, top_class, covariance, radius, p_lower=p_lower)
                status = "stored" if stored == radius else ("shrunk" if stored > 0 else "conflict")
                radius, abstain = stored, stored <= 0
        prediction = None if abstain else top_class
        final = chain.final
        params = {
            "sigma_start": self.sigma,
            "sigma_floor": final.floor,
            "chain": ">".join(result.name for result in chain.stages),
            "iterations": final.run.iterations,
            "stop_reason": final.run.stopping_reason,
            "objective": final.run.candidates[final.chosen].value,
            "start_objective": final.run.start_value,
            "chosen_step": final.chosen_step,
            "choice_scores": list(final.choice_scores),
            "memory": status,
            **self.method_params(),
            **stream_params(stream),
        }
        return self._certificate(
            prediction, covariance, radius, p_lower, params, n0, n, alpha, time.perf_counter() - start
        )

    # -- certificates -------------------------------------------------------------------------------------------
    def _certificate(
        self,
        prediction: int | None,
        covariance: Covariance,
        radius: float,
        p_lower: float | None,
        params: dict[str, Any],
        n0: int,
        n: int,
        alpha: float,
        seconds: float,
    ) -> Certificate:
        eigenvalues = covariance.eigenvalues()
        dim = covariance.dim
        if prediction is None:
            radius = 0.0
        l2 = radius * math.sqrt(float(eigenvalues[0]))
        region = None
        if prediction is not None and dim <= self.max_region_dim:
            region = Ellipsoid(covariance.dense(), radius)
        params = {
            "sigma": math.sqrt(float(eigenvalues.mean())),
            "proxy_radius": radius * covariance.proxy_scale(),
            "sigma_min": math.sqrt(float(eigenvalues[0])),
            "sigma_max": math.sqrt(float(eigenvalues[-1])),
            **params,
        }
        return Certificate(
            prediction=prediction,
            radius={"l1": l2, "l2": l2, "linf": l2 / math.sqrt(dim)},
            p_lower=p_lower,
            method=self.name,
            n0=n0,
            n=n,
            alpha=alpha,
            seconds=seconds,
            region=region,
            guaranteed=self.guaranteed,
            params=params,
        )

    def _memory_certificate(self, hit: MemoryHit, n0: int, n: int, alpha: float, start: float) -> Certificate:
        """Step 1 of the memory rule: the stored class, with the ``Σ_i``-ellipsoid around ``x`` inside ``E_i``."""
        entry = hit.entry
        params = {
            "sigma_start": self.sigma,
            "memory": "hit",
            "memory_index": hit.index,
            "memory_distance": hit.distance,
            **self.method_params(),
        }
        return self._certificate(
            entry.prediction,
            entry.shape,
            hit.radius,
            entry.p_lower,
            params,
            n0,
            n,
            alpha,
            time.perf_counter() - start,
        )

    def _predict(
        self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None, batch_size: int | None
    ) -> int | None:
        """PREDICT of the data-dependent (memory-based, with a memory) classifier: a memory look-up, else SELECT
        on 100 votes, OPTIMISE, and Cohen et al.'s binomial test on ``n`` votes under the chosen noise."""
        if self.memory is not None:
            hit = self.memory.lookup(x)
            if hit is not None:
                return hit.entry.prediction
        top_class = self.select(x, DEFAULT_N0, generator=generator, batch_size=batch_size)
        chain = self.optimise(x, top_class, n=n, alpha=alpha, generator=generator, batch_size=batch_size)
        return self._predict_with(x, self._noise(chain.covariance), n, alpha, generator, batch_size)


def _covariance_or_none(objective: SmoothingObjective, point: torch.Tensor) -> Covariance | None:
    """The covariance of an iterate, or ``None`` when rounding has made it numerically indefinite (a blown-up
    ascent: eigenvalue errors ``ε·λ_max`` beyond the floor); such iterates are never certified."""
    try:
        return objective.covariance(point)
    except ValueError:
        return None


def _mahalanobis_radius(p_lower: float) -> float:
    """``r = Φ⁻¹(p_lower)``, the radius of ``{δ : δᵀΣ⁻¹δ < r²}`` (0 when ``p_lower < 1/2``: abstain)."""
    return 0.0 if p_lower < 0.5 else float(torch.special.ndtri(torch.tensor(p_lower, dtype=torch.float64)))


def _check_kappa(kappa: float) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 <= kappa < math.inf:
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    return float(kappa)


def _check_iterations(iterations: int) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    return iterations


def _budget(
    name: str,
    iterations: int,
    opt_samples: int,
    learning_rate: float,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A stage's ``iterations``, ``opt_samples`` and ``learning_rate``: the defaults given, with the keys of
    ``options`` replaced (an error names unknown keys), checked."""
    options = dict(options or {})
    valid = ("iterations", "learning_rate", "opt_samples")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} keys {unknown}; valid keys are: {', '.join(valid)}")
    merged = {"iterations": iterations, "opt_samples": opt_samples, "learning_rate": learning_rate, **options}
    _check_iterations(merged["iterations"])
    check_positive_int(merged["opt_samples"], f"{name} opt_samples")
    check_positive_float(merged["learning_rate"], f"{name} learning_rate")
    return merged


def _ddrs_stage(settings: Mapping[str, Any], n_candidates: int) -> Stage:
    optimizer = RiemannianAscent(
        settings["learning_rate"],
        step_rule="fixed",
        max_iterations=settings["iterations"],
        n_candidates=n_candidates,
    )
    return Stage("ddrs", IsotropicFamily(), optimizer, settings["opt_samples"])


def _ancer_stage(settings: Mapping[str, Any], kappa: float, n_candidates: int) -> Stage:
    optimizer = RiemannianAdam(
        settings["learning_rate"], max_iterations=settings["iterations"], n_candidates=n_candidates
    )
    return Stage("ancer", DiagonalFamily(kappa), optimizer, settings["opt_samples"])


@final
class DDRS(OptimisedSmoothing):
    """``ddrs``: isotropic ``N(0, σ²I)`` with σ optimised at each input (Alfarra et al. 2022; the paper's Eq. 3).

    Gradient ascent of ``R(σ) = σ·Φ⁻¹(p_A(σ))`` on the positive reals with the log metric — steps
    ``log σ ← log σ + γ σ ∂R/∂σ`` from ``σ₀ = sigma`` (``learning_rate`` γ = 0.1, 100 iterations of 100 samples),
    then CHOOSE among the kept iterates. Alfarra et al. ascend σ itself with learning rate 1e-4 for up to 1,500
    iterations and keep the best σ; the log metric keeps σ > 0 and makes the step relative.

    Parameters
    ----------
    iterations, opt_samples, learning_rate
        The ascent's budget and step.
    n_candidates : int
        Iterates kept for CHOOSE (start and last included).
    **options
        As for :class:`OptimisedSmoothing`.
    """

    name = "ddrs"

    def __init__(
        self,
        model: nn.Module | None,
        *,
        iterations: int = 100,
        opt_samples: int = 100,
        learning_rate: float = 0.1,
        n_candidates: int = 5,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self._stages = (_ddrs_stage(_budget("ddrs", iterations, opt_samples, learning_rate), n_candidates),)

    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def method_params(self) -> dict[str, Any]:
        return {}


@final
class ANCER(OptimisedSmoothing):
    """``ancer``: diagonal ``N(0, diag(θ)²)`` optimised at each input (Eiras et al. 2022; the paper's Eq. 4).

    Maximises ``r(θ)·(∏θ_i)^{1/d} + κ·min_i θ_i·r(θ)`` by Riemannian Adam on the positive diagonals with the
    Euclidean metric — Adam on θ projected onto ``θ_i ≥ σ*`` (learning rate 0.04, 100 iterations of 100 samples,
    ``κ = 2``: ANCER's defaults) — then CHOOSE.

    Parameters
    ----------
    kappa : float
        Weight of the penalty ``min_i θ_i·r`` (ANCER's relaxation of "the isotropic DDRS ball stays inside").
    start : {"ddrs", "sigma"}
        ``"ddrs"``: run DDRS first and start from, and bound below by, its σ* (ANCER's procedure);
        ``"sigma"``: ``σ* = σ₀``.
    ddrs_options : mapping, optional
        ``iterations``, ``opt_samples``, ``learning_rate`` of the DDRS stage; by default this certifier's
        ``iterations`` and DDRS's ``opt_samples`` (100) and ``learning_rate`` (0.1).
    iterations, opt_samples, learning_rate, n_candidates
        The ANCER stage's budget, step and kept iterates.
    **options
        As for :class:`OptimisedSmoothing`.
    """

    name = "ancer"

    def __init__(
        self,
        model: nn.Module | None,
        *,
        kappa: float = 2.0,
        start: str = "ddrs",
        ddrs_options: Mapping[str, Any] | None = None,
        iterations: int = 100,
        opt_samples: int = 100,
        learning_rate: float = 0.04,
        n_candidates: int = 5,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.kappa = _check_kappa(kappa)
        self.start = check_name(start, STARTS["ancer"], "ancer start")
        own = _budget("ancer", iterations, opt_samples, learning_rate)
        ddrs = _budget("ddrs_options", own["iterations"], 100, 0.1, ddrs_options)
        chain = [_ddrs_stage(ddrs, n_candidates)] if self.start == "ddrs" else []
        self._stages = (*chain, _ancer_stage(own, self.kappa, n_candidates))

    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def method_params(self) -> dict[str, Any]:
        return {"kappa": self.kappa, "start": self.start}


@final
class RDDRS(OptimisedSmoothing):
    """``rddrs``: full covariance ``N(0, Σ)`` optimised on SPD(d) at each input (the paper's Eq. 5–6).

    Maximises ``H(Σ) = r(Σ)·det(Σ)^{1/(2d)} + κ·λ_min(Σ)^{1/2}·r(Σ)`` by Riemannian ascent
    ``Σ ← Π(Exp_Σ(V))`` on SPD(d) with the chosen metric, ``Π`` clipping the eigenvalues at ``σ*²``. By default
    the step is backtracking on common random numbers from a relative length ``learning_rate = 0.1`` in the
    metric's own norm (:class:`~manifoldcert.optimize.RiemannianAscent`), so one setting is the same move under
    every metric; ``step_rule="fixed"`` is the paper's ``V = γ·grad H`` in the metric's own units. 30 iterations of
    1,000 samples (the paper: 100 × 20,000), then CHOOSE among the kept iterates, the ANCER start included.

    Parameters
    ----------
    metric : str, SPDMetric (instance or subclass), or geomstats SPD metric (class or instance)
        ``"affine-invariant"`` (the paper's), ``"log-euclidean"``, ``"bures-wasserstein"``, a user's
        :class:`~manifoldcert.geometry.metrics.SPDMetric`, or e.g. geomstats' ``SPDLogEuclideanMetric`` — then
        the ascent steps through geomstats' exponential map (:class:`~manifoldcert.geometry.metrics.GeomstatsMetric`).
    kappa : float
        Weight of ``λ_min^{1/2}·r`` (default 1e-6, the paper's).
    start : {"ancer", "ddrs", "sigma"}
        Starting covariance: ANCER's ``diag(θ²)`` (chain DDRS → ANCER → RDDRS), DDRS's ``σ*²I``, or ``σ₀²I``.
    step_rule : {"backtracking", "normalised", "fixed"}
        The step of the default optimiser.
    optimizer : GradientOptimizer, optional
        Any optimiser of :mod:`manifoldcert.optimize` instead (e.g. ``RiemannianAdam``); its ``max_iterations``
        replaces ``iterations``.
    ddrs_options, ancer_options : mapping, optional
        Settings of the inner stages: ``iterations`` (default 100), ``opt_samples`` (100) and ``learning_rate``
        (DDRS 0.1, ANCER 0.04), and ``kappa`` for ANCER (2).
    iterations, opt_samples, learning_rate, n_candidates
        The RDDRS stage's budget, step and kept iterates.
    **options
        As for :class:`OptimisedSmoothing`; among them ``initial_covariance`` (a ``(d, d)`` tensor, checked
        SPD) starts here instead: SELECT then uses ``N(0, initial_covariance)`` and
        ``σ* = λ_min(initial_covariance)^{1/2}``.

    Notes
    -----
    Before anything is allocated, the ``d × d`` matrices are checked to fit in the available memory
    (:func:`~manifoldcert.resources.check_full_covariance_fits`).
    """

    name = "rddrs"

    def __init__(
        self,
        model: nn.Module | None,
        *,
        metric: Any = "affine-invariant",
        kappa: float = 1e-6,
        start: str = "ancer",
        step_rule: str = "backtracking",
        optimizer: GradientOptimizer | None = None,
        ddrs_options: Mapping[str, Any] | None = None,
        ancer_options: Mapping[str, Any] | None = None,
        iterations: int = 30,
        opt_samples: int = 1000,
        learning_rate: float = 0.1,
        n_candidates: int = 5,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.kappa = _check_kappa(kappa)
        self.start = check_name(start, STARTS["rddrs"], "rddrs start")
        dim = None if self.input_shape is None else math.prod(self.input_shape)
        if self.initial_covariance is not None:
            dim = self.initial_covariance.dim
        if isinstance(metric, type) and is_geomstats_object(metric) and dim is None:
            self.metric = f"{GEOMSTATS_PREFIX}{metric.__name__}"  # equipped on SPD(d) at the first input
        elif isinstance(metric, str) and metric.startswith(GEOMSTATS_PREFIX) and dim is None:
            resolve_metric(metric, 1)  # the class must exist
            self.metric = metric
        else:
            self.metric = resolve_metric(metric, dim).name  # refuse a bad metric now, not at the first input
        own = _budget("rddrs", iterations, opt_samples, learning_rate)
        if optimizer is None:
            optimizer = RiemannianAscent(
                own["learning_rate"],
                step_rule=step_rule,
                max_iterations=own["iterations"],
                n_candidates=n_candidates,
            )
        elif not isinstance(optimizer, GradientOptimizer):
            raise TypeError(f"optimizer must be a manifoldcert.optimize.GradientOptimizer, got {optimizer!r}")
        self.optimizer = optimizer
        ddrs = _budget("ddrs_options", 100, 100, 0.1, ddrs_options)
        ancer_options = dict(ancer_options or {})
        self.ancer_kappa = _check_kappa(ancer_options.pop("kappa", 2.0))
        ancer = _budget("ancer_options", 100, 100, 0.04, ancer_options)
        chain: list[Stage] = []
        if self.initial_covariance is None and self.start != "sigma":
            chain.append(_ddrs_stage(ddrs, n_candidates))
            if self.start == "ancer":
                chain.append(_ancer_stage(ancer, self.ancer_kappa, n_candidates))
        self.family = FullFamily(self.kappa, metric=metric)
        self._stages = (*chain, Stage("rddrs", self.family, optimizer, own["opt_samples"]))

    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def method_params(self) -> dict[str, Any]:
        start = "covariance" if self.initial_covariance is not None else self.start
        return {"metric": self.metric, "kappa": self.kappa, "start": start, "optimizer": repr(self.optimizer)}
