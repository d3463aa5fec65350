"""Anytime-valid confidence bounds on a binomial proportion: confidence sequences.

A fixed-n bound (:mod:`manifoldcert.bounds`) holds at one sample size chosen in advance; reading it after every
batch and stopping when it looks good breaks its guarantee. A *confidence sequence* holds simultaneously at
every sample size it may be read at (its :meth:`~ConfidenceSequence.looks`):

``P(∃ look t : lower_t > p) ≤ alpha``  and  ``P(∃ look t : upper_t < p) ≤ alpha``,

so the bound read at a data-dependent stopping time — "stop as soon as the answer is settled" — is as valid as
Cohen et al.'s fixed-n one. Two constructions, numpy/scipy only:

- :class:`BetaMixture` — the test martingale of a conjugate Beta(a, b) mixture of likelihood ratios (Robbins
  1970; the Krichevsky–Trofimov mixture is a = b = 1/2); Ville's inequality gives the guarantee at every
  sample size, so it may be read after any batch. The default prior ``Beta(1, 1/8)`` puts its mass near 1,
  where the top-class probabilities of certifiable inputs lie; with all votes for the top class the bound
  costs about ``b·log n`` nats more than a fixed-n Clopper–Pearson bound at the same n.
- :class:`ScheduledClopperPearson` — Clopper–Pearson bounds at a geometric schedule of sample sizes with the
  level split over the looks by a union bound (``alpha / K`` each); exact, but readable only at its looks.

Both are vectorised over many streams (arrays of successes and sample sizes), so a scheduler certifying many
inputs at once reads all their bounds in one call.

References
----------
Robbins, H. (1970). Statistical methods related to the law of the iterated logarithm. Ann. Math. Stat. 41(5).
Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform, nonparametric, nonasymptotic
confidence sequences. Ann. Statist. 49(2) — conjugate mixtures, Sec. 3.
Waudby-Smith, I. and Ramdas, A. (2024). Estimating means of bounded random variables by betting. JRSS B 86(1)
— test martingales and the KT mixture for bounded observations.
Ville, J. (1939). Étude critique de la notion de collectif — ``P(∃t: M_t ≥ 1/α) ≤ α`` for a nonnegative
supermartingale with ``M_0 = 1``.
"""

from __future__ import annotations

import abc
import math

import numpy as np
from scipy import optimize, special, stats

from manifoldcert._validation import check_alpha, check_positive_int
from manifoldcert.bounds import clopper_pearson_lower

#: Bisection steps of :meth:`BetaMixture.lower`: the bracket shrinks to 2^-60 of [0, 1], below float64's
#: resolution near 1, and the returned end is always on the safe side.
_BISECTION_STEPS = 60


def _as_counts(successes, n) -> tuple[np.ndarray, np.ndarray]:
    successes = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    successes, n = np.broadcast_arrays(successes, n)
    if (
        np.any(n < 1)
        or np.any(successes < 0)
        or np.any(successes > n)
        or np.any(successes != np.round(successes))
    ):
        raise ValueError("need integer counts with 0 <= successes <= n and n >= 1")
    return successes, n


def _clopper_pearson_lower(successes: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """Elementwise one-sided Clopper–Pearson lower bounds (``bounds.clopper_pearson_lower`` over arrays)."""
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(level, successes, n - successes + 1)
    return np.where(successes > 0, np.nan_to_num(bound, nan=0.0), 0.0)


def geometric_looks(max_n: int, *, first: int, growth: float) -> np.ndarray:
    """Sample sizes ``first, ⌈first·g⌉, ⌈first·g²⌉, …`` (strictly increasing) up to and including ``max_n``."""
    max_n = check_positive_int(max_n, "max_n")
    first = check_positive_int(first, "first")
    if not growth > 1.0:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    looks = [min(first, max_n)]
    while looks[-1] < max_n:
        looks.append(min(max_n, max(looks[-1] + 1, math.ceil(looks[-1] * growth))))
    return np.asarray(looks, dtype=np.int64)


class ConfidenceSequence(abc.ABC):
    """One-sided bounds on a binomial proportion, valid simultaneously over every look.

    Parameters
    ----------
    alpha : float
        The lower bounds all hold together with probability ``>= 1 − alpha``; so do the upper bounds.
    first : int
        The first look (sample size).
    growth : float
        Ratio between consecutive looks; the overshoot past the sample size that would have settled a stream is
        at most this factor.
    """

    #: Registry name (``certify(sequential=name)``).
    name: str
    #: True when the bounds hold at every sample size, so a stream may be read anywhere (not only at looks).
    anytime: bool = False

    def __init__(self, alpha: float = 0.001, *, first: int = 64, growth: float = 1.15) -> None:
        self.alpha = check_alpha(alpha)
        self.first = check_positive_int(first, "first")
        if not growth > 1.0:
            raise ValueError(f"growth must be > 1, got {growth!r}")
        self.growth = float(growth)
        self._looks: dict[int, np.ndarray] = {}

    def looks(self, max_n: int) -> np.ndarray:
        """The sample sizes at which the bounds may be read when at most ``max_n`` samples are drawn (built once
        per ``max_n``, read-only)."""
        if max_n not in self._looks:
            looks = geometric_looks(max_n, first=self.first, growth=self.growth)
            looks.flags.writeable = False
            self._looks[max_n] = looks
        return self._looks[max_n]

    @abc.abstractmethod
    def lower(self, successes, n, *, max_n: int | None = None) -> np.ndarray | float:
        """Lower bounds after ``n`` samples with ``successes`` successes (arrays broadcast), for streams capped
        at ``max_n``; ``n`` must be one of :meth:`looks` ``(max_n)``."""

    def upper(self, successes, n, *, max_n: int | None = None) -> np.ndarray | float:
        """Upper bounds: one minus the lower bound of the failure proportion (the same guarantee)."""
        if type(successes) is int and type(n) is int:
            return 1.0 - self.lower(n - successes, n, max_n=max_n)
        successes, n = _as_counts(successes, n)
        return 1.0 - self.lower(n - successes, n, max_n=max_n)

    def with_alpha(self, alpha: float) -> ConfidenceSequence:
        """The same construction at another level."""
        return type(self)(alpha, **self._options())

    def _options(self) -> dict:
        return {"first": self.first, "growth": self.growth}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}(alpha={self.alpha!r}, {options})"


class BetaMixture(ConfidenceSequence):
    """The conjugate Beta-mixture confidence sequence (Robbins 1970; Howard et al. 2021, Sec. 3).

    For each candidate ``p`` the mixture of likelihood ratios

    ``M_n(p) = ∫ q^S (1 − q)^(n−S) dBeta(q; a, b) / (p^S (1 − p)^(n−S))
             = B(S + a, n − S + b) / (B(a, b) · p^S (1 − p)^(n−S))``

    is a nonnegative martingale with ``M_0 = 1`` when ``p`` is the true proportion, so by Ville's inequality
    ``P(∃n: M_n(p) ≥ 1/alpha) ≤ alpha``. The confidence set ``{p : M_n(p) < 1/alpha}`` is an interval around
    ``S/n`` (``log M_n`` is convex in ``p``); :meth:`lower` is its left end, found by bisection and returned on
    the safe side, and :meth:`upper` its right end. Both ends hold *jointly* at level ``alpha`` at every n, so
    the bounds may be read after any number of samples (``looks`` only sets how often they are).

    A *final look*: a stream that runs to its cap ``max_n`` has a fixed sample size there, where the exact
    Clopper–Pearson bound is tighter than any anytime one. With ``final_share = s > 0`` the mixture runs at level
    ``(1 − s)·alpha`` and the bound read at ``n = max_n`` is the larger of the mixture's and the one-sided
    Clopper–Pearson bound at level ``s·alpha``; by the union bound every bound still holds jointly at ``alpha``
    (the event "the stream reached ``max_n`` and the Clopper–Pearson bound there is wrong" is contained in the
    Clopper–Pearson bound of the first ``max_n`` draws being wrong, probability ``<= s·alpha``).

    Parameters
    ----------
    alpha, first, growth
        See :class:`ConfidenceSequence`.
    a, b : float
        The Beta prior's parameters: a = b = 1/2 is the Krichevsky–Trofimov mixture; the default (1, 1/8) favours
        proportions near 1, the regime of certification.
    final_share : float in [0, 1)
        The part of ``alpha`` spent on the final look (0: none; the bounds at ``max_n`` are then the mixture's).
    """

    name = "mixture"
    anytime = True

    def __init__(
        self,
        alpha: float = 0.001,
        *,
        a: float = 1.0,
        b: float = 0.125,
        final_share: float = 0.25,
        first: int = 64,
        growth: float = 1.15,
    ) -> None:
        super().__init__(alpha, first=first, growth=growth)
        if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"the Beta prior needs a > 0 and b > 0, got a={a!r}, b={b!r}")
        if not 0.0 <= final_share < 1.0:
            raise ValueError(f"final_share must be in [0, 1), got {final_share!r}")
        self.a, self.b, self.final_share = float(a), float(b), float(final_share)
        self._mixture_alpha = self.alpha * (1.0 - self.final_share)

    def _options(self) -> dict:
        return {"a": self.a, "b": self.b, "final_share": self.final_share, **super()._options()}

    def lower(self, successes, n, *, max_n: int | None = None) -> np.ndarray | float:
        if type(successes) is int and type(n) is int and 0 <= successes <= n and n >= 1:
            return np.float64(self._scalar_bound(successes, n, max_n))  # one stream: no array overhead
        successes, n = _as_counts(successes, n)
        bound = self._mixture_lower(successes, n)
        if max_n is None or self.final_share == 0.0 or not np.any(n == max_n):
            return bound
        exact = _clopper_pearson_lower(successes, n, self.alpha * self.final_share)
        return np.where(n == max_n, np.maximum(bound, exact), bound)

    def _scalar_bound(self, successes: int, n: int, max_n: int | None) -> float:
        bound = self._scalar_lower(successes, n)
        if max_n is not None and n == max_n and self.final_share > 0.0:
            bound = max(bound, clopper_pearson_lower(successes, n, self.alpha * self.final_share))
        return bound

    def log_martingale(self, successes, n, p) -> np.ndarray:
        """``log M_n(p)`` (arrays broadcast); ``+inf`` where ``p`` is impossible given the data."""
        successes, n = _as_counts(successes, n)
        failures = n - successes
        p = np.asarray(p, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_likelihood = special.xlogy(successes, p) + special.xlog1py(failures, -p)
        log_mixture = special.betaln(successes + self.a, failures + self.b) - special.betaln(self.a, self.b)
        return np.where(np.isfinite(log_likelihood), log_mixture - log_likelihood, np.inf)

    def _mixture_lower(self, successes: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The mixture's own lower bound (level ``(1 − final_share)·alpha``)."""
        if successes.size == 1:
            return np.full(successes.shape, self._scalar_lower(int(successes.flat[0]), int(n.flat[0])))
        threshold = math.log(1.0 / self._mixture_alpha)
        log_mixture = special.betaln(successes + self.a, n - successes + self.b) - special.betaln(
            self.a, self.b
        )
        # On [0, S/n] log M_n decreases from +inf to <= 0; bisect for the crossing and keep the left end, where
        # the martingale is still >= 1/alpha: every p below it is rejected.
        low, high = np.zeros_like(n), successes / n
        for _ in range(_BISECTION_STEPS):
            middle = 0.5 * (low + high)
            with np.errstate(divide="ignore"):
                log_likelihood = special.xlogy(successes, middle) + special.xlog1py(n - successes, -middle)
            rejected = log_mixture - log_likelihood >= threshold
            low, high = np.where(rejected, middle, low), np.where(rejected, high, middle)
        return np.where(successes > 0, low, 0.0)

    def _log_mixture_scalar(self, successes: int, failures: int) -> float:
        """``log B(S + a, F + b) − log B(a, b)``: the numerator of ``M_n``, independent of ``p``."""
        return (
            math.lgamma(successes + self.a)
            + math.lgamma(failures + self.b)
            - math.lgamma(successes + failures + self.a + self.b)
            - math.lgamma(self.a)
            - math.lgamma(self.b)
            + math.lgamma(self.a + self.b)
        )

    def _scalar_lower(self, successes: int, n: int) -> float:
        """One stream's lower bound: closed form when every sample succeeded, else Brent's root then a step to
        the safe side (the martingale at the returned point is verified to be >= 1/alpha)."""
        if successes == 0:
            return 0.0
        failures = n - successes
        threshold = math.log(1.0 / self._mixture_alpha)
        log_mixture = self._log_mixture_scalar(successes, failures)

        def excess(p: float) -> float:
            """``log M_n(p) − log(1/alpha)``: >= 0 where ``p`` is rejected."""
            log_likelihood = successes * math.log(p) + (failures * math.log1p(-p) if failures else 0.0)
            return log_mixture - log_likelihood - threshold

        if failures == 0:
            bound = math.exp((log_mixture - threshold) / n)
        else:
            estimate, tiny = successes / n, 1e-300
            if excess(estimate) >= 0 or excess(tiny) < 0:  # cannot happen: M_n(S/n) <= 1, M_n(0+) = ∞
                return 0.0
            bound = optimize.brentq(
                excess, tiny, estimate, xtol=tiny, rtol=1e-13
            )  # relative: roots can be ~1e-9
        # Step down until the point is rejected: every p below it then is (log M_n decreases on [0, S/n]).
        while excess(bound) < 0:
            bound = bound * (1.0 - 1e-12) - 1e-300
        return bound


class ScheduledClopperPearson(ConfidenceSequence):
    """Clopper–Pearson bounds at a geometric schedule of looks, ``alpha`` split evenly over them.

    With ``K`` looks up to ``max_n`` each bound is the one-sided Clopper–Pearson bound at level ``alpha / K``
    (Clopper and Pearson 1934); by the union bound all lower bounds hold together with probability
    ``>= 1 − alpha``. Exact at every look, but it may be read only at :meth:`looks` ``(max_n)``.
    """

    name = "clopper-pearson"

    def __init__(self, alpha: float = 0.001, *, first: int = 64, growth: float = 1.5) -> None:
        super().__init__(alpha, first=first, growth=growth)

    def level_per_look(self, max_n: int) -> float:
        """``alpha / K``: the level each look spends."""
        return self.alpha / len(self.looks(max_n))

    def lower(self, successes, n, *, max_n: int | None = None) -> np.ndarray:
        successes, n = _as_counts(successes, n)
        if max_n is None:
            raise ValueError(f"{type(self).__name__} needs max_n: its level per look depends on the schedule")
        looks = self.looks(max_n)
        if not np.isin(n, looks).all():
            raise ValueError(f"{type(self).__name__} may be read only at its looks {looks.tolist()}")
        return _clopper_pearson_lower(successes, n, self.level_per_look(max_n))


#: The confidence sequences by name, for ``certify(sequential=name)``.
CONFIDENCE_SEQUENCES: dict[str, type[ConfidenceSequence]] = {
    BetaMixture.name: BetaMixture,
    ScheduledClopperPearson.name: ScheduledClopperPearson,
}


def resolve_sequence(sequential: str | ConfidenceSequence | bool, alpha: float) -> ConfidenceSequence:
    """The confidence sequence at level ``alpha`` named or given by ``sequential`` (True: the default mixture)."""
    if sequential is True:
        return BetaMixture(alpha)
    if isinstance(sequential, ConfidenceSequence):
        return sequential.with_alpha(alpha) if sequential.alpha != alpha else sequential
    if isinstance(sequential, str) and sequential in CONFIDENCE_SEQUENCES:
        return CONFIDENCE_SEQUENCES[sequential](alpha)
    raise ValueError(
        f"sequential must be True, a ConfidenceSequence or one of {sorted(CONFIDENCE_SEQUENCES)}, "
        f"got {sequential!r}"
    )
