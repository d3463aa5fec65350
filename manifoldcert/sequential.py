"""Sequential certification: stop drawing votes for an input as soon as its answer is settled.

Cohen et al.'s CERTIFY draws a fixed ``n`` (100,000 by default) for every input. Most inputs are settled far
sooner: all votes agree and the radius asked for is reached after a few thousand, or the top class is clearly too
weak for the next radius. :class:`SequentialPlan` turns the radii a user asks for into thresholds on the top
class's probability; :class:`CertificationStream` is one input's vote stream — SELECT on ``n0`` votes (kept from
Cohen et al.), then votes in growing chunks read through a confidence sequence
(:mod:`manifoldcert.confidence_sequences`) until

- the lower bound reaches the threshold of the largest requested radius (*certified*), or
- the next radius not yet certified is out of reach (*settled below*): even an unbroken run of top-class votes up
  to ``max_n`` could not lift the lower bound to its threshold, or an upper confidence bound (at level
  ``futility_alpha``) on the top-class probability is below the probability at which ``max_n`` votes would reach
  it on average, or
- ``max_n`` votes were drawn (*budget*).

The radius reported is the one of the running lower bound at the stopping time, which the confidence sequence
makes valid whatever rule decided to stop (the futility level only trades samples against giving up on an input
that a longer run would have certified further): the certificate holds with probability ``>= 1 − alpha``, as a
fixed-n one does. The stream is a :class:`~manifoldcert.estimator.VoteJob`, so many inputs share forward batches
through :meth:`~manifoldcert.estimator.MonteCarloEstimator.run_jobs`.

*Evaluation mode* (``label=``) counts votes for a known true label instead of the class SELECT picks and skips
SELECT: the reported prediction is then the label when certified — what a certified-accuracy table counts, but not
a deployable classifier (it reads the ground truth). Use it for benchmark tables only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from manifoldcert._validation import check_alpha, check_positive_int
from manifoldcert.bounds import clopper_pearson_lower
from manifoldcert.confidence_sequences import ConfidenceSequence
from manifoldcert.estimator import VoteJob
from manifoldcert.noises import AbstractNoise

#: Why a stream stopped.
STOP_REASONS = ("fixed", "certified", "settled", "budget")

#: Level of the futility rule's upper bound (it steers stopping only; the certificate's level is ``alpha``).
DEFAULT_FUTILITY_ALPHA = 0.01

#: The largest probability thresholds are searched below (some radii are singular at p_A = 1).
_NEAR_ONE = 1.0 - 1e-12

#: The largest sample size :func:`needed_max_n` searches.
_LARGEST_MAX_N = 10**12


def check_radii(radii: Sequence[float] | None, target_radius: float | None) -> tuple[float, ...]:
    """The requested radii as a strictly increasing tuple of finite numbers >= 0 (exactly one argument given)."""
    if (radii is None) == (target_radius is None):
        raise ValueError("sequential certification needs exactly one of radii=(...) and target_radius=...")
    if radii is None:
        assert target_radius is not None
        values: tuple[float, ...] = (target_radius,)
    else:
        values = tuple(radii)
    if not values:
        raise ValueError("radii must not be empty")
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"radii must be finite numbers >= 0, got {value!r}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"radii must be strictly increasing, got {values}")
    return tuple(float(v) for v in values)


def probability_threshold(radius_of: Callable[[float], float], radius: float) -> float:
    """The smallest top-class probability ``p`` with ``radius_of(p) >= radius`` (bisection on [1/2, 1]).

    ``radius_of`` must be nondecreasing; the threshold only steers stopping, never the reported radius.
    Radius 0 needs ``p >= 1/2`` (no abstention); an unreachable radius gives a threshold above 1.
    """
    if radius <= 0:
        return 0.5
    if radius_of(_NEAR_ONE) < radius:
        return math.inf
    low, high = 0.5, _NEAR_ONE
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (low, middle) if radius_of(middle) >= radius else (middle, high)
    return high


def needed_max_n(sequence: ConfidenceSequence, threshold: float) -> int | None:
    """The smallest ``max_n`` at which an unbroken run of votes lifts ``sequence``'s lower bound to ``threshold``
    (``None`` when no sample size up to 10^12 does)."""

    def reaches(max_n: int) -> bool:
        return float(sequence.lower(max_n, max_n, max_n=max_n)) >= threshold

    high = 1
    while not reaches(high):
        high *= 2
        if high > _LARGEST_MAX_N:
            return None
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if not reaches(middle) else (low, middle)
    return high


def reachable_radii(
    sequence: ConfidenceSequence, radius_of: Callable[[float], float], radii: Sequence[float], max_n: int
) -> tuple[float, ...]:
    """The longest prefix of ``radii`` that ``max_n`` unbroken top-class votes can certify under ``sequence``."""
    best = float(sequence.lower(max_n, max_n, max_n=max_n))
    return tuple(r for r in check_radii(tuple(radii), None) if probability_threshold(radius_of, r) <= best)


@dataclass(frozen=True)
class SequentialPlan:
    """The stopping rule of one input: its confidence sequence, radii and their probability thresholds.

    Build it with :meth:`build`; ``thresholds[i]`` is the top-class probability ``radius_of`` maps to
    ``radii[i]``.
    """

    sequence: ConfidenceSequence
    radii: tuple[float, ...]
    thresholds: tuple[float, ...]
    max_n: int
    looks: np.ndarray
    #: Per radius: the top-class probability at which ``max_n`` votes reach its threshold on average.
    reach: tuple[float, ...]
    #: The confidence sequence of the futility rule (``futility_alpha``).
    futility: ConfidenceSequence
    _best: dict[int, float] = field(default_factory=dict, compare=False, repr=False)
    _unbroken: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    def unbroken_reach(self, index: int) -> int:
        """The smallest sample size at which unbroken top-class votes reach ``thresholds[index]``."""
        if index not in self._unbroken:
            threshold = self.thresholds[index]
            low, high = 0, self.max_n  # the plan guarantees that max_n unbroken votes reach every threshold
            while high - low > 1:
                middle = (low + high) // 2
                reached = float(self.sequence.lower(middle, middle, max_n=self.max_n)) >= threshold
                low, high = (low, middle) if reached else (middle, high)
            self._unbroken[index] = high
        return self._unbroken[index]

    def best_lower(self, failures: int) -> float:
        """The lower bound at ``max_n`` if every remaining vote went to the top class, after ``failures`` others."""
        if failures not in self._best:
            self._best[failures] = float(
                self.sequence.lower(self.max_n - failures, self.max_n, max_n=self.max_n)
            )
        return self._best[failures]

    @classmethod
    def build(
        cls,
        sequence: ConfidenceSequence,
        radius_of: Callable[[float], float],
        radii: tuple[float, ...],
        max_n: int,
        *,
        futility_alpha: float = DEFAULT_FUTILITY_ALPHA,
    ) -> SequentialPlan:
        """Thresholds for ``radii`` under ``radius_of`` (top-class probability → radius, nondecreasing).

        Raises
        ------
        ValueError
            When the largest radius cannot be certified with ``max_n`` votes even if all are for the top class;
            the message says which ``max_n`` would be needed.
        """
        max_n = check_positive_int(max_n, "max_n")
        thresholds = tuple(probability_threshold(radius_of, r) for r in radii)
        best = float(sequence.lower(max_n, max_n, max_n=max_n))
        if best < thresholds[-1]:
            reachable = radius_of(best) if best > 0.5 else 0.0
            needed = needed_max_n(sequence, thresholds[-1]) if math.isfinite(thresholds[-1]) else None
            advice = (
                "no sample size reaches it"
                if needed is None
                else f"it needs max_n >= {needed:,} with this confidence sequence"
            )
            raise ValueError(
                f"radius {radii[-1]:g} cannot be certified with max_n={max_n:,} even if every vote is for the "
                f"top class (the largest certifiable radius is {reachable:.4g}); {advice}"
            )
        reach = tuple(_reach(sequence, threshold, max_n) for threshold in thresholds)
        futility = sequence.with_alpha(check_alpha(futility_alpha, "futility_alpha"))
        return cls(sequence, radii, thresholds, max_n, sequence.looks(max_n), reach, futility)


def _reach(sequence: ConfidenceSequence, threshold: float, max_n: int) -> float:
    """The smallest ``p`` whose expected ``p·max_n`` successes in ``max_n`` votes bound ``p`` above ``threshold``."""
    if threshold <= 0.5:
        return 0.5

    def reaches(p: float) -> bool:
        return float(sequence.lower(math.floor(p * max_n), max_n, max_n=max_n)) >= threshold

    low, high = threshold, 1.0
    for _ in range(40):
        middle = 0.5 * (low + high)
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


class CertificationStream(VoteJob):
    """One input's votes: SELECT on ``n0``, then a fixed ``n`` (``plan=None``) or a sequential stream.

    Parameters
    ----------
    x : Tensor
        The input.
    noise : AbstractNoise
        The smoothing noise of both stages.
    generator : torch.Generator or None
        The input's own random stream.
    n0 : int
        Votes that select the class (skipped when ``top_class`` or ``label`` is given).
    n : int
        Votes of the fixed-n bound (ignored with a plan).
    alpha : float
        Level of the fixed-n Clopper–Pearson bound (a plan's sequence carries its own).
    plan : SequentialPlan, optional
        The stopping rule; ``None`` for Cohen et al.'s fixed n.
    top_class : int, optional
        The class to bound when it is already chosen (e.g. by an optimisation that ran SELECT itself).
    label : int, optional
        Evaluation mode: bound this true label instead of SELECT's class (see the module docstring).

    Attributes
    ----------
    top_class : int or None
        The class being bounded (after SELECT).
    counts : Tensor
        Votes per class of the bounding stage.
    n_used : int
        Votes of the bounding stage drawn so far.
    p_lower : float
        Lower confidence bound of the top class's probability (running maximum over looks when sequential).
    stop : str
        One of :data:`STOP_REASONS`, once finished.
    """

    def __init__(
        self,
        x: torch.Tensor,
        noise: AbstractNoise,
        generator: torch.Generator | None,
        *,
        n0: int,
        n: int,
        alpha: float,
        plan: SequentialPlan | None = None,
        top_class: int | None = None,
        label: int | None = None,
    ) -> None:
        self.x, self.noise, self.generator = x, noise, generator
        self.n0, self.n, self.alpha, self.plan = int(n0), int(n), float(alpha), plan
        self.top_class = int(label) if label is not None else top_class
        self.n0_used = 0 if self.top_class is not None else self.n0
        self.counts: torch.Tensor | None = None
        self.n_used = 0
        self.p_lower = 0.0
        self.p_upper = 1.0
        self.stop: str | None = None
        self._successes = 0
        self._certified = 0  # requested radii certified so far
        #: What the certifier that opened the stream needs to turn it into a certificate.
        self.context: dict = {}

    def request(self) -> int | None:
        if self.stop is not None:
            return None
        if self.top_class is None:
            return self.n0
        if self.plan is None:
            return self.n
        plan = self.plan
        look = int(plan.looks[np.searchsorted(plan.looks, self.n_used, side="right")])
        if plan.sequence.anytime and self._successes == self.n_used:
            # Unbroken so far: look exactly where the next radius becomes reachable, if that comes sooner.
            look = min(look, max(self.n_used + 1, plan.unbroken_reach(self._certified)))
        return look - self.n_used

    def receive(self, counts: torch.Tensor) -> None:
        if self.top_class is None:
            self.top_class = int(counts.argmax())
            return
        self.counts = counts if self.counts is None else self.counts + counts
        self.n_used += int(counts.sum())
        successes = int(self.counts[self.top_class]) if self.top_class < self.counts.numel() else 0
        if self.plan is None:
            self.p_lower = clopper_pearson_lower(successes, self.n_used, self.alpha)
            self.stop = "fixed"
            return
        self._successes = successes
        self.stop = self._decide(successes)

    def _decide(self, successes: int) -> str | None:
        """Read the confidence sequence at this look; the stop reason, or ``None`` to draw more."""
        plan, n = self.plan, self.n_used
        assert plan is not None  # update() decides by itself when there is no plan
        sequence = plan.sequence
        self.p_lower = max(self.p_lower, float(sequence.lower(successes, n, max_n=plan.max_n)))
        certified = self._certified = sum(threshold <= self.p_lower for threshold in plan.thresholds)
        if certified == len(plan.thresholds):
            return "certified"
        if n >= plan.max_n:
            return "budget"
        if plan.best_lower(n - successes) < plan.thresholds[certified]:
            return "settled"
        self.p_upper = min(self.p_upper, float(plan.futility.upper(successes, n, max_n=plan.max_n)))
        if self.p_upper < plan.reach[certified]:
            return "settled"
        return None


def check_label(label: int | None) -> int | None:
    """The evaluation mode's true label, checked (``None``: normal mode)."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise ValueError(f"label must be a class index >= 0, got {label!r}")
    return label


def stream_params(stream: CertificationStream) -> dict:
    """What a certificate records of its stream: with a plan, the sequence, the stop reason and ``max_n``."""
    if stream.plan is None:
        return {}
    return {
        "sequential": stream.plan.sequence.name,
        "stop": stream.stop,
        "max_n": stream.plan.max_n,
        "target_radii": list(stream.plan.radii),
    }
