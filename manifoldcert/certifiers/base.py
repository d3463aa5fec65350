"""What every certifier shares: the contract of docs/design.md ("Certifiers", "Adding a certifier") and Cohen
et al.'s two-stage protocol.

:class:`AbstractCertifier` holds the model, the shared :class:`~manifoldcert.estimator.MonteCarloEstimator`
and a seeded generator, and implements ``predict`` and ``certify_batch``; each method implements
``certify``. :class:`SmoothingCertifier` is the family whose radius is a closed function of the class
probabilities (Cohen, Teng, Yang): it implements the protocol once and asks subclasses only for
``radius_for``.

References
----------
Cohen, Rosenfeld and Kolter (2019), Certified adversarial robustness via randomized smoothing, ICML —
Algorithms PREDICT and CERTIFY.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from manifoldcert._validation import (
    check_alpha,
    check_input,
    check_name,
    check_positive_int,
    check_value_range,
)
from manifoldcert.bounds import (
    binomial_test_pvalue,
    hoeffding_lower,
    hoeffding_upper,
    top_two_bounds,
)
from manifoldcert.certificate import NORMS, Certificate, CertificateBatch, implied_radius
from manifoldcert.confidence_sequences import ConfidenceSequence, resolve_sequence
from manifoldcert.estimator import MonteCarloEstimator
from manifoldcert.noises import AbstractNoise
from manifoldcert.sequential import (
    CertificationStream,
    SequentialPlan,
    check_label,
    check_radii,
    reachable_radii,
    stream_params,
)

#: ``certify(sequential=...)``: a confidence sequence, its name, or True for the default one.
Sequential = ConfidenceSequence | str | bool | None

DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001


@dataclass(frozen=True)
class VoteOptions:
    """The options of ``certify`` for a certifier whose certificate is one vote stream per input.

    Attributes
    ----------
    n0, n, alpha
        Cohen et al.'s selection and bounding sample sizes and the level.
    batch_size : int, optional
        Noisy inputs per forward pass (default: the certifier's).
    generator : torch.Generator, optional
        The input's random stream (default: the certifier's own).
    runner_up : bool
        Bound ``p_A`` and ``p_B`` together (fixed n, hard smoothing only).
    sequential : True, str or ConfidenceSequence, optional
        Stop the votes as soon as the answer is settled (:mod:`manifoldcert.sequential`): ``True`` or
        ``"mixture"`` (the Beta-mixture confidence sequence), ``"clopper-pearson"`` (union-bound schedule), or an
        instance. Hard smoothing only.
    radii, target_radius : optional
        With ``sequential``: the radii (the method's native norm, strictly increasing) whose certification
        settles an input, or one target radius.
    max_n : int, optional
        With ``sequential``: at most this many bounding votes (default ``n``).
    label : int, optional
        Evaluation mode: bound this true label instead of SELECT's class — for benchmark tables, not for
        deployment (it reads the ground truth).
    """

    n0: int = DEFAULT_N0
    n: int = DEFAULT_N
    alpha: float = DEFAULT_ALPHA
    batch_size: int | None = None
    generator: torch.Generator | None = None
    runner_up: bool = False
    sequential: Sequential = None
    radii: Sequence[float] | None = None
    target_radius: float | None = None
    max_n: int | None = None
    label: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")


class AbstractCertifier(abc.ABC):
    """A certifier for one base classifier.

    Parameters
    ----------
    model : nn.Module or None
        Base classifier returning logits; ``None`` allows only probability-to-radius queries.
    batch_size : int
        Largest number of noisy inputs per forward pass.
    num_classes : int, optional
        Read from the model's output when omitted.
    input_shape : tuple of int, optional
        Shape of one input; when given, inputs of another shape are refused.
    seed : int
        Seed of the certifier's own generator: the same seed and the same calls give the same certificates.
    autocast, channels_last, compile
        Opt-in fast forward passes of the estimator (see :class:`~manifoldcert.estimator.MonteCarloEstimator`).
    input_range : (low, high) or None
        Inputs with values outside this range are refused (default ``(0, 1)``: σ and the radii are in [0, 1]
        pixel units, so a 0..255 image would be certified at a radius that means something else). ``None``
        accepts any finite input (features, toy problems); σ is then in the input's own units.
    """

    name: ClassVar[str]
    #: The norm the method's radius is stated in (the TSV's ``radius`` column); :data:`NORMS` lists all.
    native_norm: str
    #: Method-specific ``Certificate.params`` keys written as extra TSV columns.
    extra_columns: ClassVar[tuple[str, ...]] = ()
    #: True for methods whose noise is defined on the [0, 1] pixel grid (SSN, DSSN): ``input_range`` is then fixed.
    requires_unit_range: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module | None,
        *,
        batch_size: int = 1000,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        seed: int = 0,
        autocast: torch.dtype | str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        input_range: Sequence[float] | None = (0.0, 1.0),
    ) -> None:
        self.input_range = check_value_range(input_range)
        if self.requires_unit_range and self.input_range != (0.0, 1.0):
            raise ValueError(
                f"{self.name} smooths inputs on the [0, 1] pixel grid: input_range must be (0, 1)"
            )
        self.model = model
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.seed = int(seed)
        self.estimator = (
            None
            if model is None
            else MonteCarloEstimator(
                model,
                batch_size=batch_size,
                num_classes=num_classes,
                autocast=autocast,
                channels_last=channels_last,
                compile=compile,
            )
        )
        self._generator = None if self.estimator is None else self.estimator.generator(self.seed)
        self._plans: dict[Hashable, SequentialPlan] = {}  # sequential plans shared by inputs alike

    # -- helpers ------------------------------------------------------------------------------------------------
    def require_estimator(self) -> MonteCarloEstimator:
        """The shared estimator of this certifier's model; a clear error when it was built without a model."""
        if self.estimator is None:
            raise ValueError(
                f"{self.name}: this certifier was built without a model; pass one to certify inputs"
            )
        return self.estimator

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        return check_input(x, input_shape=self.input_shape, value_range=self.input_range)

    def _resolve_dim(self, dim: int | None) -> int:
        """The input dimension of a probability-to-radius query: ``dim``, or the one of ``input_shape``."""
        expected = None if self.input_shape is None else math.prod(self.input_shape)
        if dim is None:
            if expected is None:
                raise ValueError("radius_for needs the input dimension: pass dim= or build with input_shape")
            return expected
        dim = check_positive_int(dim, "dim")
        if expected is not None and dim != expected:
            raise ValueError(f"dim={dim} does not match the certifier's input_shape {self.input_shape}")
        return dim

    def _generator_for(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self._generator

    def _check_protocol(self, x: torch.Tensor, n0: int, n: int, alpha: float) -> tuple[torch.Tensor, float]:
        """Validate one input and the protocol's sample sizes and level; return the input and ``alpha``."""
        x = self._check_x(x)
        check_positive_int(n0, "n0")
        check_positive_int(n, "n")
        return x, check_alpha(alpha)

    # -- the contract ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = DEFAULT_N0,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """Certify one input ``x`` of shape ``(C, H, W)`` or ``(d,)``."""

    @abc.abstractmethod
    def noise_for(self, x: torch.Tensor) -> AbstractNoise:
        """The smoothing noise used at ``x`` (fixed for closed-form methods)."""

    def predict(
        self,
        x: torch.Tensor,
        *,
        n: int = DEFAULT_N,
        alpha: float = DEFAULT_ALPHA,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> int | None:
        """PREDICT: the smoothed classifier's class at ``x``, or ``None`` (abstain); wrong with probability at most
        ``alpha``. Checks the arguments and hands over to :meth:`_predict`."""
        self.require_estimator()
        x = self._check_x(x)
        check_positive_int(n, "n")
        return self._predict(x, n, check_alpha(alpha), self._generator_for(generator), batch_size)

    def _predict(
        self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None, batch_size: int | None
    ) -> int | None:
        """Cohen et al.'s PREDICT with the noise of :meth:`noise_for` (see :meth:`_predict_with`)."""
        return self._predict_with(x, self.noise_for(x), n, alpha, generator, batch_size)

    def _predict_with(
        self,
        x: torch.Tensor,
        noise: AbstractNoise,
        n: int,
        alpha: float,
        generator: torch.Generator | None,
        batch_size: int | None,
    ) -> int | None:
        """Cohen et al.'s PREDICT under ``noise``: abstain unless the two-sided binomial test of the top two vote
        counts of ``n`` samples rejects equality at level ``alpha``."""
        counts = self.require_estimator().class_counts(
            x, noise, n, generator=generator, batch_size=batch_size
        )
        top2 = torch.topk(counts, k=min(2, counts.numel()))
        n_a = int(top2.values[0])
        n_b = int(top2.values[1]) if counts.numel() > 1 else 0
        if binomial_test_pvalue(n_a, n_a + n_b) > alpha:
            return None
        return int(top2.indices[0])

    def _sequential_plan(
        self,
        options: VoteOptions,
        *,
        alpha: float,
        radius_of: Callable[[float], float],
        cache_key: Hashable | None = None,
    ) -> SequentialPlan | None:
        """The stopping rule of ``certify(sequential=...)``, or ``None`` for Cohen et al.'s fixed ``n``.

        ``radius_of`` maps a top-class probability to the certificate's radius in :attr:`native_norm`; the
        requested ``radii`` are in that norm; ``max_n`` defaults to ``n``; ``alpha`` is the level of the bound.
        Plans of inputs that share ``cache_key`` (what ``radius_of`` depends on besides the probability) are
        built once.
        """
        sequential, radii, max_n = options.sequential, options.radii, options.max_n
        if sequential is None or sequential is False:
            if radii is not None or options.target_radius is not None or max_n is not None:
                raise ValueError("radii, target_radius and max_n apply to sequential=... certification only")
            return None
        max_n = options.n if max_n is None else check_positive_int(max_n, "max_n")
        sequence = resolve_sequence(sequential, alpha)
        radii = check_radii(radii, options.target_radius)
        if cache_key is None:
            return SequentialPlan.build(sequence, radius_of, radii, max_n)
        key = (cache_key, repr(sequence), radii, max_n)
        if key not in self._plans:
            self._plans[key] = SequentialPlan.build(sequence, radius_of, radii, max_n)
        return self._plans[key]

    def certify_batch(
        self,
        xs: torch.Tensor | Iterable[torch.Tensor],
        *,
        progress: bool = True,
        generators: Sequence[torch.Generator | None] | None = None,
        **options: Any,
    ) -> CertificateBatch:
        """Certify each input of ``xs`` (a batch tensor or an iterable of inputs) with the same options.

        ``generators`` gives each input its own random stream (default: the certifier's generator); see
        :meth:`iter_certify` for how inputs share forward batches. The result is a
        :class:`~manifoldcert.certificate.CertificateBatch`: the list of certificates, in the order of ``xs``,
        with array views (``predictions``, ``radii``, ``p_lower``).
        """
        items = list(xs)
        if generators is not None and len(generators) != len(items):
            raise ValueError(f"got {len(generators)} generators for {len(items)} inputs")
        streams = [None] * len(items) if generators is None else list(generators)
        certificates: list[Certificate | None] = [None] * len(items)
        inputs = ((index, x, streams[index]) for index, x in enumerate(items))
        for index, certificate in self.iter_certify(inputs, total=len(items), progress=progress, **options):
            assert isinstance(index, int)  # the keys given above
            certificates[index] = certificate
        return CertificateBatch(certificates)

    def iter_certify(
        self,
        inputs: Iterable[tuple],
        *,
        total: int | None = None,
        progress: bool = True,
        max_active: int = 64,
        **options: Any,
    ) -> Iterator[tuple[Hashable, Certificate]]:
        """Certify ``(key, x, generator)`` triples (read lazily), yielding ``(key, certificate)`` as each finishes.

        An item may carry a fourth element, a dict of options for that input alone (e.g. ``{"label": y}``).

        Certifiers whose certificate is one vote stream per input (:class:`VoteStreamCertifier`) go through the
        estimator's cross-input scheduler: up to ``max_active`` inputs share forward batches of ``batch_size``
        noisy inputs, so short (sequential) streams fill the batches together; results may then come out of
        order. Every other certifier certifies one input after the other. Each input's certificate is the one
        ``certify(x, generator=generator, **options)`` gives.
        """
        bar = tqdm(total=total, desc=self.name, disable=not progress)
        try:
            if isinstance(self, VoteStreamCertifier) and self.streams_votes:
                estimator = self.require_estimator()

                def opened() -> Iterator[CertificationStream]:
                    for key, x, generator, *own in inputs:
                        own_options = {**options, **(own[0] if own else {}), "generator": generator}
                        stream = self.open_stream(x, VoteOptions(**own_options))
                        stream.context["key"] = key
                        yield stream

                finished = estimator.run_jobs(
                    opened(), batch_size=options.get("batch_size"), max_active=max_active
                )
                for stream in finished:
                    assert isinstance(stream, CertificationStream)  # the jobs opened above
                    bar.update()
                    yield stream.context["key"], self.close_stream(stream)
            else:
                for key, x, generator, *own in inputs:
                    certificate = self.certify(x, generator=generator, **options, **(own[0] if own else {}))
                    bar.update()
                    yield key, certificate
        finally:
            bar.close()


class VoteStreamCertifier(AbstractCertifier):
    """A certifier whose certificate is read off one vote stream per input (SELECT, then bound the top class).

    It opens a :class:`~manifoldcert.sequential.CertificationStream` for an input (:meth:`open_stream`) and turns
    the finished stream into a certificate (:meth:`close_stream`); ``certify`` runs the one stream, and
    :meth:`~AbstractCertifier.iter_certify` runs many through the estimator's cross-input scheduler. Both
    fixed-n and sequential certification (``sequential=``, ``radii=`` / ``target_radius=``, ``max_n=``) and the
    evaluation mode (``label=``) come with it; see :mod:`manifoldcert.sequential`.
    """

    @property
    def streams_votes(self) -> bool:
        """Whether this configuration certifies through a vote stream (False e.g. for soft smoothing)."""
        return True

    @abc.abstractmethod
    def open_stream(self, x: torch.Tensor, options: VoteOptions) -> CertificationStream:
        """Validate the input and options of ``certify`` and open the input's stream (nothing is drawn yet)."""

    @abc.abstractmethod
    def close_stream(self, stream: CertificationStream) -> Certificate:
        """The certificate of a finished stream."""

    def _certify_stream(self, x: torch.Tensor, options: VoteOptions) -> Certificate:
        """``certify`` through one stream."""
        stream = self.open_stream(x, options)
        jobs = self.require_estimator().run_jobs([stream], batch_size=options.batch_size)
        for _ in jobs:
            pass
        return self.close_stream(stream)


class SmoothingCertifier(VoteStreamCertifier):
    """A fixed noise whose certified radius is a closed function of ``p_A`` (and optionally ``p_B``).

    ``certify`` follows Cohen et al.'s CERTIFY: ``n0`` samples select the class, ``n`` fresh samples bound its
    probability with the one-sided Clopper–Pearson bound at level ``alpha``, abstain when the bound is below
    1/2, otherwise report ``radius_for(p_lower)`` in every norm of :attr:`norms`.

    Options of ``certify`` beyond Cohen's:

    - ``runner_up=True`` bounds ``p_A`` from below and ``p_B`` from above simultaneously (Bonferroni, see
      :func:`~manifoldcert.bounds.top_two_bounds`) and uses the two-probability radius;
    - ``soft=True`` (constructor) smooths the softmax instead of the votes; ``p_A`` is then bounded with
      Hoeffding's inequality, which holds for any [0, 1]-valued base function.
    """

    extra_columns: ClassVar[tuple[str, ...]] = ("noise", "smoothing")

    def __init__(
        self, model: nn.Module | None, noise: AbstractNoise, *, soft: bool = False, **options: Any
    ) -> None:
        super().__init__(model, **options)
        self.noise = noise
        self.soft = bool(soft)

    @property
    def sigma(self) -> float:
        """The smoothing noise's ``σ = sqrt(E‖z‖²/d)``, the RMS per coordinate in pixel units (docs/conventions.md)."""
        return self.noise.sigma

    def params(self) -> dict[str, Any]:
        """What the TSV's method columns record: the noise family, σ and the smoothing mode."""
        return {"noise": self.noise.name, "sigma": self.sigma, "smoothing": "soft" if self.soft else "hard"}

    def noise_for(self, x: torch.Tensor) -> AbstractNoise:
        return self.noise

    def _predict(
        self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None, batch_size: int | None
    ) -> int | None:
        """PREDICT for the smoothed classifier this certifier certifies.

        Hard smoothing: Cohen et al.'s binomial test (see :meth:`AbstractCertifier._predict`). Soft smoothing:
        Hoeffding bounds on every class's mean softmax, α/2 for the top class and α/(2(K − 1)) for each other
        one; the top class is returned only when its lower bound exceeds every other upper bound, so a wrong
        class is returned with probability at most ``alpha``.
        """
        if not self.soft:
            return super()._predict(x, n, alpha, generator, batch_size)
        mean = (
            self.require_estimator()
            .mean_softmax(x, self.noise, n, generator=generator, batch_size=batch_size)
            .tolist()
        )
        top_class = max(range(len(mean)), key=mean.__getitem__)
        per_class_alpha = alpha / (2 * max(len(mean) - 1, 1))
        runner_up = max(
            (hoeffding_upper(m, n, per_class_alpha) for k, m in enumerate(mean) if k != top_class),
            default=0.0,
        )
        return top_class if hoeffding_lower(mean[top_class], n, alpha / 2) > runner_up else None

    def convert_radius(self, radius: float, norm: str, dim: int | None) -> float:
        """The radius in ``norm`` implied by ``radius`` in the method's :attr:`native_norm`."""
        return implied_radius(radius, certified_norm=self.native_norm, norm=norm, dim=dim)

    @property
    def guaranteed(self) -> bool:
        """Whether certificates hold with probability ``>= 1 − alpha`` (False for approximate radii)."""
        return True

    def _probability_alpha(self, alpha: float) -> float:
        """The part of the confidence budget ``alpha`` spent on bounding ``p_A`` (all of it unless the radius
        itself is estimated by Monte Carlo, as in the functional bound)."""
        return alpha

    @abc.abstractmethod
    def _native_radius(self, p_a: float, p_b: float) -> float:
        """Radius in :attr:`native_norm` for ``p_A > p_B`` (the closed form of the method's paper)."""

    def radius_for(
        self, p_a: float, p_b: float | None = None, *, norm: str | None = None, dim: int | None = None
    ) -> float:
        """Certified radius as a function of the class probabilities (or their confidence bounds).

        Parameters
        ----------
        p_a : float
            (Lower bound of) the top class probability, in [0, 1].
        p_b : float, optional
            (Upper bound of) the runner-up probability; ``1 - p_a`` when omitted.
        norm : str, optional
            One of ``"l1"``, ``"l2"``, ``"linf"``; the method's native norm when omitted.
        dim : int, optional
            Input dimension, needed when ``norm`` differs from the native norm.

        Returns
        -------
        float
            The radius; 0.0 when ``p_a <= p_b`` (nothing is certified), ``inf`` when ``p_a = 1``.
        """
        norm = self.native_norm if norm is None else check_name(norm, NORMS, "norm")
        p_a = check_probability(p_a, "p_a")
        p_b = 1.0 - p_a if p_b is None else check_probability(p_b, "p_b")
        if p_a + p_b > 1.0 + 1e-12:
            raise ValueError(f"p_a + p_b must not exceed 1, got {p_a} + {p_b}")
        if p_a <= p_b:
            return 0.0
        return self.convert_radius(self._native_radius(p_a, p_b), norm, dim)

    @property
    def streams_votes(self) -> bool:
        return not self.soft

    def certify(self, x: torch.Tensor, **options: Any) -> Certificate:
        """Certify one input: Cohen et al.'s CERTIFY, or its sequential form.

        Parameters
        ----------
        x : Tensor
            One input of shape ``(C, H, W)`` or ``(d,)``.
        **options
            The fields of :class:`VoteOptions`: ``n0``, ``n``, ``alpha``, ``batch_size``, ``generator``,
            ``runner_up``, ``sequential``, ``radii`` / ``target_radius``, ``max_n``, ``label``.
        """
        vote_options = VoteOptions(**options)
        if self.soft:
            return self._certify_soft(x, vote_options)
        return self._certify_stream(x, vote_options)

    def reachable_radii(
        self,
        radii: Sequence[float],
        *,
        max_n: int,
        dim: int,
        alpha: float = DEFAULT_ALPHA,
        sequential: Sequential = True,
    ) -> tuple[float, ...]:
        """The longest prefix of ``radii`` that sequential certification with ``max_n`` votes can certify (what
        to pass as ``radii=`` when a table's largest radii are out of reach)."""
        if sequential is None or sequential is False:
            raise ValueError(
                "reachable_radii is about sequential certification: give sequential=True or a sequence"
            )
        sequence = resolve_sequence(sequential, self._probability_alpha(check_alpha(alpha)))
        return reachable_radii(sequence, self._radius_of(dim), radii, max_n)

    def _radius_of(self, dim: int) -> Callable[[float], float]:
        """Top-class probability → native radius at dimension ``dim`` (0 up to p_A = 1/2): what plans invert."""
        return lambda p: self.radius_for(p, dim=dim) if p > 0.5 else 0.0

    def open_stream(self, x: torch.Tensor, options: VoteOptions) -> CertificationStream:
        n0, n, alpha, runner_up = options.n0, options.n, options.alpha, options.runner_up
        start = time.perf_counter()
        self.require_estimator()
        x, alpha = self._check_protocol(x, n0, n, alpha)
        if self.soft:
            raise ValueError(
                "soft smoothing averages softmax scores, not votes: it has no vote stream (and sequential "
                "certification, whose confidence sequences bound a binomial proportion, does not apply to it)"
            )
        p_alpha = self._probability_alpha(alpha)
        dim = x.numel()
        plan = self._sequential_plan(
            options,
            alpha=p_alpha,
            radius_of=self._radius_of(dim),
            cache_key=dim,
        )
        if runner_up and plan is not None:
            raise ValueError("runner_up=True is available with a fixed n only, not with sequential=...")
        stream = CertificationStream(
            x,
            self.noise,
            self._generator_for(options.generator),
            n0=n0,
            n=n,
            alpha=p_alpha,
            plan=plan,
            label=check_label(options.label),
        )
        stream.context.update(
            setup_seconds=time.perf_counter() - start, dim=dim, alpha=alpha, runner_up=runner_up
        )
        return stream

    def close_stream(self, stream: CertificationStream) -> Certificate:
        context = stream.context
        top_class, dim = stream.top_class, context["dim"]
        assert top_class is not None and stream.counts is not None  # a finished stream selected and counted
        if context["runner_up"]:
            p_lower, p_upper_b = top_two_bounds(stream.counts.numpy(), top_class, stream.alpha)
        else:
            p_lower, p_upper_b = stream.p_lower, None
        return self._smoothing_certificate(
            top_class,
            p_lower,
            p_upper_b,
            dim,
            n0=stream.n0_used,
            n=stream.n_used,
            alpha=context["alpha"],
            seconds=stream.seconds + context["setup_seconds"],
            extra=stream_params(stream),
        )

    def _certify_soft(self, x: torch.Tensor, options: VoteOptions) -> Certificate:
        """Soft smoothing: the top class of the mean softmax on ``n0`` samples, Hoeffding's bound on ``n``."""
        estimator = self.require_estimator()
        n0, n, batch_size = options.n0, options.n, options.batch_size
        x, alpha = self._check_protocol(x, n0, n, options.alpha)
        if options.runner_up:
            raise ValueError("runner_up=True is available for hard (vote) smoothing only")
        if options.sequential not in (None, False) or options.label is not None:
            raise ValueError(
                "sequential certification and the evaluation mode bound vote counts (a binomial proportion); "
                "soft smoothing averages softmax scores, to which they do not apply: use hard smoothing"
            )
        generator = self._generator_for(options.generator)
        start = time.perf_counter()
        p_alpha = self._probability_alpha(alpha)
        top_class = int(
            estimator.mean_softmax(x, self.noise, n0, generator=generator, batch_size=batch_size).argmax()
        )
        mean = estimator.mean_softmax(x, self.noise, n, generator=generator, batch_size=batch_size)
        p_lower = hoeffding_lower(float(mean[top_class]), n, p_alpha)
        return self._smoothing_certificate(
            top_class, p_lower, None, x.numel(), n0=n0, n=n, alpha=alpha, seconds=time.perf_counter() - start
        )

    def _smoothing_certificate(
        self,
        top_class: int,
        p_lower: float,
        p_upper_b: float | None,
        dim: int,
        *,
        n0: int,
        n: int,
        alpha: float,
        seconds: float,
        extra: dict[str, Any] | None = None,
    ) -> Certificate:
        """Abstain when the bound is below 1/2 (or below ``p_B``'s), else the radius in every norm.

        The bounds are first widened by the noise's :meth:`~manifoldcert.noises.AbstractNoise.sampling_error`:
        they bound the sampled law, the radius needs the law the theorem is about.
        """
        error = self.noise.sampling_error(dim)
        if error:
            p_lower = max(0.0, p_lower - error)
            p_upper_b = None if p_upper_b is None else min(1.0, p_upper_b + error)
        abstain = p_lower < 0.5 if p_upper_b is None else p_lower <= p_upper_b
        # One radius in the method's own norm; the others follow from norm inequalities.
        native = 0.0 if abstain else self.radius_for(p_lower, p_upper_b, dim=dim)
        radius = {norm: self.convert_radius(native, norm, dim) for norm in NORMS}
        radius.setdefault(self.native_norm, native)
        return Certificate(
            prediction=None if abstain else top_class,
            radius=radius,
            p_lower=p_lower,
            method=self.name,
            n0=n0,
            n=n,
            alpha=alpha,
            seconds=seconds,
            guaranteed=self.guaranteed,
            params={**self.params(), **(extra or {})},
        )


def lipschitz_l1_radius(lambda_: float, p_a: float, p_b: float) -> float:
    """``λ (p_A − p_B)``: the l1 radius when every class score is ``1/(2λ)``-Lipschitz in l1.

    Each score moves by at most ``‖δ‖₁/(2λ)``, so the gap ``p_A − p_B`` stays positive for ``‖δ‖₁ < λ(p_A − p_B)``
    (Levine and Feizi 2021, Sec. 2 and Theorems 1–2; uniform noise: Lee et al. 2019).
    """
    return lambda_ * (p_a - p_b)


def check_probability(p: float, name: str) -> float:
    """Return ``p`` as a float after checking that it is a probability in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)
