"""Benchmarks, each printing figures measured in one run.

- :func:`bench_estimator`: what the shared estimator adds on top of the base classifier's forward passes — on
  one model and one input, the time of ``certify`` with ``n`` samples (plus Cohen's ``n0`` selection samples)
  against the bare batched forward passes over ``n`` noisy inputs drawn beforehand; medians over ``repeats``
  interleaved runs after one warm-up.
- :func:`bench_scheduler`: images per second of the cross-input scheduler (``certify_batch``) against one
  ``certify`` call per image, at a small ``n`` where batches would otherwise be part-filled.
- :func:`bench_dssn`: DSSN's exact certificate against uniform smoothing's Monte Carlo one on the same model and
  inputs (Levine and Feizi 2021 report about 30× at σ = 3.5 on a GPU).
- :func:`bench_functional`: the ``functional`` certifier's per-image cost and the λ search's share of it, and
  the peak memory of drawing its noise statistics (:func:`functional_table_memory`, a fresh process per
  dimension, d = 784 and 3072 by default).
- :func:`bench_sound_sampling`: ``cohen``'s floating-point-sound grid sampler against ``randn`` per 10⁶ draws,
  and one certification with each.
- :func:`bench_sequential`: sequential certification against Cohen et al.'s fixed ``n`` on one model — forward
  passes and wall-clock per image, certified accuracies side by side.
- :func:`bench_rddrs`: time per RDDRS ascent step at d = 784 per metric — ours against the same metric through
  geomstats — split into the estimator's forward/backward passes and the geometry.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from unittest import mock

import torch

from manifoldcert.certifiers import DSSN, Cohen, Functional, SmoothingCertifier, UniCR, get_certifier
from manifoldcert.estimator import batch_sizes
from manifoldcert.models import build_model


def interleaved_medians(functions: Sequence[Callable[[], Any]], repeats: int, device: str) -> list[float]:
    """Median seconds of each function over ``repeats`` interleaved rounds (machine load hits all alike), after
    one warm-up call each; CUDA work is synchronised around every call."""

    def timed(function: Callable[[], Any]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for function in functions:
        function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for bucket, function in zip(times, functions, strict=True):
            bucket.append(timed(function))
    return [statistics.median(bucket) for bucket in times]


@dataclass(frozen=True)
class EstimatorBenchmark:
    """Seconds of one ``certify`` (``n0 + n`` samples) against the bare batched forward passes over ``n``
    noisy inputs drawn beforehand: medians of interleaved runs (see :func:`bench_estimator`).
    """

    arch: str
    input_shape: tuple[int, ...]
    n: int
    n0: int
    batch_size: int
    certify_seconds: float
    forward_seconds: float

    @property
    def ratio(self) -> float:
        """``certify_seconds / forward_seconds``: the cost of certifying relative to the forward passes alone."""
        return self.certify_seconds / self.forward_seconds

    def line(self) -> str:
        """One printed line: model, input shape, ``n``, ``n0``, batch size, both times and their ratio."""
        return (
            f"{self.arch:>5} {str(self.input_shape):>12}  n={self.n:,} n0={self.n0} batch={self.batch_size}  "
            f"certify {self.certify_seconds * 1e3:8.1f} ms  forward {self.forward_seconds * 1e3:8.1f} ms  "
            f"ratio {self.ratio:.3f}"
        )


def bench_estimator(
    arch: str = "cnn",
    input_shape: tuple[int, ...] = (1, 28, 28),
    *,
    n: int = 10_000,
    n0: int = 100,
    batch_size: int = 1000,
    repeats: int = 5,
    method: str = "cohen",
    device: str | None = None,
) -> EstimatorBenchmark:
    """Time ``certify`` against bare forward passes for one architecture; see the module docstring."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch, input_shape, 10).to(device).eval()
    # The benchmarked methods smooth with one fixed noise (``sigma=``).
    certifier = cast(SmoothingCertifier, get_certifier(method, model, sigma=0.25, batch_size=batch_size))
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(input_shape, generator=generator, device=device)
    noisy = certifier.noise.perturb(x.unsqueeze(0).expand(n, *input_shape), generator=generator).contiguous()

    def forward_only() -> None:
        with torch.inference_mode():
            start = 0
            for size in batch_sizes(n, batch_size):
                model(noisy[start : start + size]).argmax(1)
                start += size

    def certify() -> None:
        certifier.certify(x, n0=n0, n=n, alpha=0.001)

    certify_seconds, forward_seconds = interleaved_medians((certify, forward_only), repeats, device)
    return EstimatorBenchmark(arch, tuple(input_shape), n, n0, batch_size, certify_seconds, forward_seconds)


@dataclass(frozen=True)
class SchedulerBenchmark:
    """Images per second of ``certify_batch`` (the cross-input scheduler) against one ``certify`` per image."""

    arch: str
    n: int
    images: int
    batch_size: int
    scheduled_seconds: float
    one_by_one_seconds: float

    def line(self) -> str:
        """One printed line: images per second scheduled and one ``certify`` at a time, and their ratio."""
        scheduled = self.images / self.scheduled_seconds
        single = self.images / self.one_by_one_seconds
        return (
            f"{self.arch:>5} scheduler n={self.n:,} batch={self.batch_size} {self.images} images: "
            f"{scheduled:8.1f} img/s scheduled, {single:8.1f} img/s one at a time, ratio {scheduled / single:.2f}"
        )


def bench_scheduler(
    arch: str = "cnn",
    input_shape: tuple[int, ...] = (1, 28, 28),
    *,
    n: int = 1000,
    n0: int = 100,
    images: int = 50,
    batch_size: int = 1000,
    repeats: int = 3,
    device: str | None = None,
) -> SchedulerBenchmark:
    """``certify_batch`` with per-image generators against a loop of ``certify`` calls with the same generators
    (the same certificates); medians over ``repeats`` interleaved runs after a warm-up."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch, input_shape, 10).to(device).eval()
    certifier = get_certifier("cohen", model, sigma=0.25, batch_size=batch_size)
    estimator = certifier.require_estimator()
    source = torch.Generator(device=device).manual_seed(0)
    xs = [torch.rand(input_shape, generator=source, device=device) for _ in range(images)]

    def generators() -> list[torch.Generator]:
        return [estimator.generator(i) for i in range(images)]

    def scheduled() -> None:
        certifier.certify_batch(xs, generators=generators(), progress=False, n0=n0, n=n)

    def one_by_one() -> None:
        for x, generator in zip(xs, generators(), strict=True):
            certifier.certify(x, generator=generator, n0=n0, n=n)

    scheduled_seconds, single_seconds = interleaved_medians((scheduled, one_by_one), repeats, device)
    return SchedulerBenchmark(arch, n, images, batch_size, scheduled_seconds, single_seconds)


@dataclass(frozen=True)
class SoundSamplingBenchmark:
    """Seconds per 10⁶ noisy coordinates of the float sampler and of the sound grid sampler, and one certify each."""

    sigma: float
    dim: int
    float_seconds: float
    sound_seconds: float
    arch: str
    n: int
    certify_float_seconds: float
    certify_sound_seconds: float

    @property
    def ratio(self) -> float:
        """``sound_seconds / float_seconds``: the grid sampler's slowdown per draw against ``randn``."""
        return self.sound_seconds / self.float_seconds

    @property
    def certify_ratio(self) -> float:
        """Sound over float sampling: the slowdown of one whole ``cohen`` certification."""
        return self.certify_sound_seconds / self.certify_float_seconds

    def line(self) -> str:
        """One printed line: both samplers per 10⁶ draws and both certifications, with their ratios."""
        return (
            f"σ = {self.sigma}, d = {self.dim}: per 10⁶ draws randn {self.float_seconds * 1e3:.2f} ms, sound grid "
            f"sampler {self.sound_seconds * 1e3:.2f} ms ({self.ratio:.1f}×); cohen certify on {self.arch}, "
            f"n = {self.n:,}: float {self.certify_float_seconds:.3f} s, sound {self.certify_sound_seconds:.3f} s "
            f"({self.certify_ratio:.2f}×)"
        )


def bench_sound_sampling(
    sigma: float = 0.5,
    *,
    input_shape: tuple[int, ...] = (1, 28, 28),
    arch: str = "cnn",
    levels: int = 255,
    n: int = 10_000,
    batch_size: int = 1000,
    repeats: int = 5,
    device: str | None = None,
) -> SoundSamplingBenchmark:
    """The cost of ``cohen``'s ``sampling="sound"`` (:class:`~manifoldcert.noises.GridGaussian`) against ``randn``.

    Both ``perturb`` a batch of ``batch_size`` copies of one grid input (what the estimator does per forward
    batch); the figure is seconds per 10⁶ noisy coordinates, medians of ``repeats`` interleaved rounds. Then one
    ``certify`` with each sampling on an untrained ``arch`` (``n`` samples), which says what the sampler's cost is
    next to the forward passes.
    """
    from manifoldcert.noises import Gaussian, GridGaussian

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, levels + 1, input_shape, generator=generator, device=device).float().div_(levels)
    batch = x.unsqueeze(0).expand(batch_size, *input_shape)
    float_noise, sound_noise = Gaussian(sigma), GridGaussian(sigma, levels=levels)
    draws = batch.numel()
    float_seconds, sound_seconds = interleaved_medians(
        [
            lambda: float_noise.perturb(batch, generator=generator),
            lambda: sound_noise.perturb(batch, generator=generator),
        ],
        repeats,
        device,
    )
    model = build_model(arch, input_shape, 10).to(device).eval()
    certifiers = [
        get_certifier("cohen", model, sigma=sigma, sampling=sampling, levels=levels, batch_size=batch_size)
        for sampling in ("float", "sound")
    ]
    certify_float, certify_sound = interleaved_medians(
        [functools.partial(c.certify, x, n=n) for c in certifiers], max(1, repeats // 2), device
    )
    return SoundSamplingBenchmark(
        sigma,
        x.numel(),
        float_seconds * 1e6 / draws,
        sound_seconds * 1e6 / draws,
        arch,
        n,
        certify_float,
        certify_sound,
    )


@dataclass(frozen=True)
class DSSNBenchmark:
    """Seconds per image of DSSN's exact certificate (one forward pass per point of the splitting noise's
    support) against uniform smoothing's Monte Carlo one, same model and inputs (see :func:`bench_dssn`).
    """

    sigma: float
    support_size: int
    n_uniform: int
    images: int
    dssn_seconds: float
    uniform_seconds: float

    @property
    def ratio(self) -> float:
        """``uniform_seconds / dssn_seconds``: how many times faster the exact certificate is (Levine and Feizi 2021
        report about 30× at σ = 3.5 on a GPU).
        """
        return self.uniform_seconds / self.dssn_seconds

    def line(self) -> str:
        """One printed line: σ, the support size, both times per image and their ratio."""
        return (
            f"σ = {self.sigma}: dssn ({self.support_size:,} forward passes) {self.dssn_seconds:.3f} s/image, "
            f"uniform (n = {self.n_uniform:,} + 100) {self.uniform_seconds:.3f} s/image over {self.images} images: "
            f"uniform / dssn = {self.ratio:.1f}×"
        )


def bench_dssn(
    sigma: float = 3.5,
    *,
    arch: str = "cnn",
    input_shape: tuple[int, ...] = (1, 28, 28),
    levels: int = 255,
    n_uniform: int = 100_000,
    images: int = 2,
    batch_size: int = 1000,
    device: str | None = None,
) -> DSSNBenchmark:
    """Per-image certify time of ``dssn`` and of ``uniform`` with ``n_uniform`` samples, same model and inputs."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch, input_shape, 10).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    xs = (
        torch.randint(0, levels + 1, (images, *input_shape), generator=generator)
        .float()
        .div_(levels)
        .to(device)
    )
    dssn = cast(
        DSSN, get_certifier("dssn", model, sigma=sigma, levels=levels, offset_seed=0, batch_size=batch_size)
    )
    uniform = get_certifier("uniform", model, sigma=sigma, batch_size=batch_size)
    dssn.certify(xs[0]), uniform.certify(xs[0], n=batch_size)  # warm-up

    def per_image(certify) -> float:
        start = time.perf_counter()
        for x in xs:
            certify(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / images

    dssn_seconds = per_image(dssn.certify)
    uniform_seconds = per_image(lambda x: uniform.certify(x, n=n_uniform))
    support = dssn.noise_for(xs[0]).support_size
    return DSSNBenchmark(sigma, support, n_uniform, images, dssn_seconds, uniform_seconds)


@dataclass(frozen=True)
class TableMemory:
    """Peak resident memory of one process that only built a functional bound table (see
    :func:`functional_table_memory`)."""

    dim: int
    mc_samples: int
    seconds: float
    #: ``ru_maxrss`` after the imports and after building the table, in bytes.
    baseline_bytes: int
    peak_bytes: int

    def text(self) -> str:
        """The measurement as printed: ``d``, the peak in GiB, samples, seconds and the imports' own peak."""
        return (
            f"d={self.dim} {self.peak_bytes / 2**30:.2f} GiB ({self.mc_samples:,} samples, {self.seconds:.0f} s; "
            f"imports {self.baseline_bytes / 2**30:.2f} GiB)"
        )


@dataclass(frozen=True)
class FunctionalBenchmark:
    """The ``functional`` certifier's cost per image and the λ / radius search's share of it, with the peak
    memory of drawing its noise statistics per dimension (see :func:`bench_functional`, :class:`TableMemory`).
    """

    noise: str
    dim: int
    n: int
    mc_samples: int
    images: int
    table_seconds: float
    certify_seconds: float
    search_seconds: float
    memory: tuple[TableMemory, ...] = ()

    @property
    def search_share(self) -> float:
        """Fraction of the certify time spent in the λ-dual / radius search (the rest: sampling and forward passes)."""
        return self.search_seconds / self.certify_seconds

    def line(self) -> str:
        """The printed summary: statistics time, certify time per image, the search's share, then the memory lines."""
        text = (
            f"{self.noise} d={self.dim}: noise statistics ({self.mc_samples:,} samples, once) "
            f"{self.table_seconds:.1f} s; certify (n = {self.n:,} + 100) {self.certify_seconds:.3f} s/image over "
            f"{self.images} images, of which the λ / radius search {self.search_seconds * 1e3:.1f} ms "
            f"({100 * self.search_share:.1f} %) and the sampling + forward passes the rest"
        )
        if self.memory:
            text += "; peak RSS drawing the statistics alone: " + ", ".join(m.text() for m in self.memory)
        return text


def _max_rss_bytes() -> int:
    """This process's peak resident set size in bytes (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _table_memory_child(noise_name: str, params: dict[str, float], dim: int, mc_samples: int) -> None:
    """Body of :func:`functional_table_memory`'s subprocess: build one table, print the figures as JSON."""
    baseline = _max_rss_bytes()
    certifier = cast(
        Functional, get_certifier("functional", None, noise=noise_name, mc_samples=mc_samples, **params)
    )
    start = time.perf_counter()
    certifier.table(dim)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "baseline": baseline, "peak": _max_rss_bytes()}))


def functional_table_memory(
    noise_name: str = "zhang-l2",
    dim: int = 784,
    *,
    sigma: float = 0.5,
    k: float = 700.0,
    mc_samples: int = 1_000_000,
    timeout: float | None = None,
) -> TableMemory:
    """Peak RSS of building the ``functional`` certifier's noise statistics in dimension ``dim``.

    The table is built in a fresh Python process (the same interpreter, the same environment, so
    ``OMP_NUM_THREADS`` and the like carry over), so that the peak measured is this table's alone and not
    that of whatever the calling process allocated before.

    Parameters
    ----------
    noise_name, sigma, k
        The noise, as for :func:`bench_functional`.
    dim : int
        Input dimension of the table.
    mc_samples : int
        Noise samples (the certifier's default is 10⁶).
    timeout : float, optional
        Seconds after which the subprocess is stopped (``subprocess.TimeoutExpired``).

    Returns
    -------
    TableMemory
        Peak RSS after the imports and after the table, and the table's build time.
    """
    params = {"sigma": sigma} if noise_name in ("gaussian", "laplace") else {"sigma": sigma, "k": k}
    code = (
        "import sys, json; from manifoldcert.bench import _table_memory_child; "
        "_table_memory_child(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, noise_name, json.dumps(params), str(dim), str(mc_samples)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=dict(os.environ),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the table-memory subprocess failed:\n{completed.stderr[-2000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return TableMemory(dim, mc_samples, figures["seconds"], figures["baseline"], figures["peak"])


def bench_functional(
    noise_name: str = "zhang-l2",
    *,
    sigma: float = 0.5,
    k: float = 700.0,
    arch: str = "cnn",
    input_shape: tuple[int, ...] = (1, 28, 28),
    n: int = 10_000,
    mc_samples: int = 1_000_000,
    images: int = 5,
    batch_size: int = 1000,
    device: str | None = None,
    memory_dims: Sequence[int] = (784, 3072),
) -> FunctionalBenchmark:
    """Per-image cost of the ``functional`` certifier, the share of it spent searching λ and the radius, and the
    peak memory of its noise statistics.

    The noise statistics behind the bound are drawn once per dimension (timed separately); each certificate
    then costs the Monte Carlo counts (forward passes) plus a bisection over the radius grid, each step one
    λ-optimisation on the stored statistics (memoised across images). For each of ``memory_dims`` the
    statistics are also drawn, with ``mc_samples`` samples, in a fresh process whose peak RSS is reported
    (:func:`functional_table_memory`; empty: none).
    """
    memory = tuple(
        functional_table_memory(noise_name, dim, sigma=sigma, k=k, mc_samples=mc_samples)
        for dim in memory_dims
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch, input_shape, 10).to(device).eval()
    params = {"sigma": sigma} if noise_name in ("gaussian", "laplace") else {"sigma": sigma, "k": k}
    certifier = cast(
        Functional,
        get_certifier(
            "functional", model, noise=noise_name, mc_samples=mc_samples, batch_size=batch_size, **params
        ),
    )
    dim = 1
    for size in input_shape:
        dim *= size
    start = time.perf_counter()
    table = certifier.table(dim)
    table_seconds = time.perf_counter() - start
    search = {"seconds": 0.0}
    lookup = table.radius

    def timed_lookup(p: float, margin: float = 0.0) -> float:
        begin = time.perf_counter()
        try:
            return lookup(p, margin)
        finally:
            search["seconds"] += time.perf_counter() - begin

    generator = torch.Generator().manual_seed(0)
    xs = torch.rand((images, *input_shape), generator=generator).to(device)
    # An instance attribute: only this benchmark's table is instrumented.
    with mock.patch.object(table, "radius", timed_lookup):
        start = time.perf_counter()
        for x in xs:
            certifier.certify(x, n=n, alpha=0.001)
        certify_seconds = (time.perf_counter() - start) / images
    return FunctionalBenchmark(
        noise_name,
        dim,
        n,
        mc_samples,
        images,
        table_seconds,
        certify_seconds,
        search["seconds"] / images,
        memory,
    )


@dataclass(frozen=True)
class UniCRBenchmark:
    """UniCR's costs for one noise and norm (see :func:`bench_unicr`): building the ``p_A → R`` table, one
    radius lookup and, when measured, one certification against ``cohen``'s.
    """

    noise: str
    norm: str
    dim: int
    table_size: int
    mc_samples: int
    table_seconds: float
    lookup_seconds: float
    certify_seconds: float | None
    cohen_seconds: float | None

    def line(self) -> str:
        """The printed summary: table build, lookup and, when measured, certify against cohen per image."""
        text = (
            f"{self.noise} {self.norm} d={self.dim}: {self.table_size}-point table ({self.mc_samples:,} samples) "
            f"built in {self.table_seconds:.1f} s; radius lookup {self.lookup_seconds * 1e6:.1f} µs"
        )
        if self.certify_seconds is not None and self.cohen_seconds is not None:
            text += (
                f"; certify {self.certify_seconds * 1e3:.1f} ms vs cohen {self.cohen_seconds * 1e3:.1f} ms per "
                f"image (+{(self.certify_seconds - self.cohen_seconds) * 1e3:.2f} ms)"
            )
        return text


def bench_unicr(
    noise_name: str = "gaussian",
    norm: str = "l2",
    *,
    dim: int = 784,
    table_size: int = 50,
    mc_samples: int = 100_000,
    images: int = 0,
    n: int = 10_000,
    batch_size: int = 1000,
    noise_params: dict | None = None,
    device: str | None = None,
) -> UniCRBenchmark:
    """Time to build UniCR's ``p_A → R`` table, a lookup, and (with ``images``) certify with the table vs Cohen.

    The per-image comparison certifies the same random inputs with ``unicr`` (table lookup) and ``cohen`` (closed
    form) on one ``cnn`` with the same seed, so the difference is what the table lookup adds to the forward passes.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = (1, 28, 28) if dim == 784 else (dim,)
    model = build_model("cnn" if dim == 784 else "mlp", shape, 10).to(device).eval() if images else None
    certifier = cast(
        UniCR,
        get_certifier(
            "unicr",
            model,
            noise=noise_name,
            noise_params={"sigma": 0.5, **(noise_params or {})},
            norm=norm,
            input_shape=shape,
            table_size=table_size,
            mc_samples=mc_samples,
            search="symmetric",
            batch_size=batch_size,
        ),
    )
    start = time.perf_counter()
    table = certifier.table(dim)
    table_seconds = time.perf_counter() - start
    probabilities = torch.linspace(0.51, 0.9999, 1000).tolist()
    start = time.perf_counter()
    for p in probabilities:
        certifier.radius_for(p)
    lookup_seconds = (time.perf_counter() - start) / len(probabilities)
    certify_seconds = cohen_seconds = None
    if images:
        cohen = get_certifier("cohen", model, sigma=0.5, batch_size=batch_size)
        xs = torch.rand((images, *shape), generator=torch.Generator().manual_seed(0)).to(device)

        def per_image(certify) -> float:
            begin = time.perf_counter()
            for x in xs:
                certify(x, n=n)
            return (time.perf_counter() - begin) / images

        per_image(certifier.certify), per_image(cohen.certify)  # warm-up
        certify_seconds, cohen_seconds = per_image(certifier.certify), per_image(cohen.certify)
    return UniCRBenchmark(
        noise_name,
        norm,
        dim,
        table_size,
        mc_samples,
        table.seconds or table_seconds,
        lookup_seconds,
        certify_seconds,
        cohen_seconds,
    )


@dataclass(frozen=True)
class RDDRSBenchmark:
    """One metric's RDDRS stage: seconds per ascent step and the shares of its parts."""

    metric: str
    dim: int
    steps: int
    opt_samples: int
    seconds_per_step: float
    shares: dict[str, float]

    def line(self) -> str:
        """One printed line: metric, ``d``, steps × samples, seconds per step and the share of each part."""
        parts = "  ".join(f"{key} {share:5.1%}" for key, share in self.shares.items())
        return (
            f"{self.metric:>32}  d={self.dim} {self.steps} steps × {self.opt_samples:,} samples  "
            f"{self.seconds_per_step:6.3f} s/step  {parts}"
        )


class _Stopwatch:
    """Wall-clock totals per key; nested calls under one key count once (the outer call)."""

    def __init__(self) -> None:
        self.totals: defaultdict[str, float] = defaultdict(float)
        self._depth: defaultdict[str, int] = defaultdict(int)

    def wrap(self, key: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[key] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[key] -= 1
                if self._depth[key] == 0:
                    self.totals[key] += time.perf_counter() - start

        return timed


#: Timed methods of the metric, by the name of their share.
_GEOMETRY_PARTS = {"exp": "exp", "riemannian-gradient": "riemannian_gradient", "norms": "inner_product"}


def bench_rddrs(
    metrics: Sequence[str] = (
        "affine-invariant",
        "geomstats:SPDAffineMetric",
        "log-euclidean",
        "geomstats:SPDLogEuclideanMetric",
    ),
    *,
    steps: int = 5,
    opt_samples: int = 1000,
    sigma: float = 0.25,
    batch_size: int = 1000,
    device: str | None = None,
) -> list[RDDRSBenchmark]:
    """Time ``steps`` RDDRS ascent steps at d = 784 (an untrained ``cnn``, one random input in [0, 1]) from one
    anisotropic diagonal start, for each metric, on the same seed.

    Shares: ``estimator`` (forward/backward passes and sampling), ``exp`` / ``riemannian-gradient`` /
    ``norms`` (the metric's methods), ``projection`` (the eigenvalue floor), ``rest`` (Cholesky and its
    backward, ``slogdet``, ``λ_min``, the step rule). The CHOOSE votes are switched off (``choice_samples=0``).
    """
    from manifoldcert.certifiers.data_dependent import RDDRS
    from manifoldcert.geometry.covariance import Covariance
    from manifoldcert.geometry.spd import SPDMatrices

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = (1, 28, 28)
    model = build_model("cnn", shape, 10).to(device).eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    theta = sigma * (1 + torch.rand(784, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    start = Covariance.diagonal(theta)
    results = []
    for metric in metrics:
        certifier = RDDRS(
            model,
            sigma=sigma,
            metric=metric,
            start="sigma",
            iterations=steps,
            opt_samples=opt_samples,
            choice_samples=0,
            batch_size=batch_size,
            input_shape=shape,
        )
        top_class = certifier.select(x, 100)
        stopwatch = _Stopwatch()
        estimator = certifier.require_estimator()
        for name in ("mean_softmax_and_gradient", "mean_softmax", "class_counts"):
            setattr(estimator, name, stopwatch.wrap("estimator", getattr(estimator, name)))
        resolved = certifier.family.resolved_metric(784)
        for key, name in _GEOMETRY_PARTS.items():
            setattr(resolved, name, stopwatch.wrap(key, getattr(resolved, name)))
        with mock.patch.object(SPDMatrices, "project", stopwatch.wrap("projection", SPDMatrices.project)):
            began = time.perf_counter()
            result = certifier.run_stage(x, top_class, start, floor=sigma, generator=estimator.generator(2))
            total = time.perf_counter() - began
        parts = {key: stopwatch.totals[key] for key in ("estimator", *_GEOMETRY_PARTS, "projection")}
        parts["rest"] = max(total - sum(parts.values()), 0.0)
        results.append(
            RDDRSBenchmark(
                resolved.name,
                784,
                result.run.iterations,
                opt_samples,
                total / max(result.run.iterations, 1),
                {key: value / total for key, value in parts.items()},
            )
        )
    return results


@dataclass(frozen=True)
class CertificationRun:
    """One mode's outcome on a set of test images: forward passes, wall-clock and certified accuracies."""

    mode: str
    images: int
    forward_passes: int
    seconds: float
    accuracy: dict[float, float]

    @property
    def passes_per_image(self) -> float:
        """Forward passes of the base classifier per image."""
        return self.forward_passes / self.images

    @property
    def seconds_per_image(self) -> float:
        """Wall-clock seconds per image."""
        return self.seconds / self.images


@dataclass(frozen=True)
class SequentialBenchmark:
    """Sequential against fixed-n certification of one model (see :func:`bench_sequential`)."""

    name: str
    sigma: float
    n: int
    sequence: str
    settling_radii: tuple[float, ...]
    sequential: CertificationRun
    fixed: CertificationRun
    sequential_on_fixed_images: CertificationRun

    def lines(self) -> list[str]:
        """The printed table: images, passes and seconds per image and certified accuracy at each radius, for
        fixed ``n``, sequential on the fixed run's images and sequential on all images; then the differences in
        accuracy and the ratios of passes and wall-clock.
        """
        seq, fixed, common = self.sequential, self.fixed, self.sequential_on_fixed_images
        radii = sorted(fixed.accuracy)
        header = "  ".join(f"r={r:<5g}" for r in radii)
        rows = [
            f"{self.name} σ={self.sigma:g}: fixed n={self.n:,} vs sequential ({self.sequence}, settles at radii "
            f"{', '.join(f'{r:g}' for r in self.settling_radii)}, max_n={self.n:,})",
            f"  {'mode':<28} {'images':>6} {'passes/img':>11} {'s/img':>8}  certified accuracy  {header}",
        ]
        for label, run in (
            ("fixed", fixed),
            ("sequential (same images)", common),
            ("sequential (all images)", seq),
        ):
            accuracies = "  ".join(f"{run.accuracy[r]:7.3f}" for r in radii)
            rows.append(
                f"  {label:<28} {run.images:>6} {run.passes_per_image:>11,.0f} {run.seconds_per_image:>8.3f}  "
                f"{'':18}  {accuracies}"
            )
        differences = "  ".join(f"{100 * (common.accuracy[r] - fixed.accuracy[r]):+6.1f}p" for r in radii)
        rows.append(
            f"  {'difference (pp, same images)':<28} {'':>6} {'':>11} {'':>8}  {'':18}  {differences}"
        )
        rows.append(
            f"  ratios fixed / sequential: forward passes {fixed.passes_per_image / seq.passes_per_image:.1f}×, "
            f"wall-clock {fixed.seconds_per_image / seq.seconds_per_image:.1f}× (per image)"
        )
        return rows


def _certified_accuracy(certificates, labels, radius: float, norm: str) -> float:
    hits = [
        c.prediction == int(y) and c.radius[norm] >= radius for c, y in zip(certificates, labels, strict=True)
    ]
    return sum(hits) / len(hits)


def bench_sequential(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: Sequence[int],
    *,
    name: str,
    sigma: float,
    radii: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    n: int = 100_000,
    n0: int = 100,
    alpha: float = 0.001,
    fixed_images: int | None = None,
    batch_size: int = 1000,
    sequence: str = "mixture",
    seed: int = 0,
    progress: bool = True,
) -> SequentialBenchmark:
    """Cohen et al.'s fixed ``n`` against sequential certification with the same cap, in one process.

    Both modes certify the same images with the same per-image seeds through ``certify_batch`` (the cross-input
    scheduler); the sequential mode asks for the largest prefix of ``radii`` that ``n`` votes can certify. The
    fixed mode, ~``n`` forward passes per image, runs on the first ``fixed_images`` of them (default all);
    certified accuracies are compared on those, passes and seconds are per image.
    """
    from manifoldcert.runs import example_seed

    certifier = cast(Cohen, get_certifier("cohen", model, sigma=sigma, batch_size=batch_size))
    estimator = certifier.require_estimator()
    count = len(labels)
    fixed_count = count if fixed_images is None else min(int(fixed_images), count)
    dim = int(inputs[0].numel())
    settle = certifier.reachable_radii(radii, max_n=n, dim=dim, alpha=alpha, sequential=sequence)
    if not settle:
        raise ValueError(f"none of the radii {tuple(radii)} can be certified with {n:,} votes")

    def run(mode: str, chosen: range, **options: Any) -> tuple[CertificationRun, list]:
        generators = [estimator.generator(example_seed(seed, i)) for i in chosen]
        start = time.perf_counter()
        certificates = certifier.certify_batch(
            [inputs[i] for i in chosen],
            generators=generators,
            progress=progress,
            n0=n0,
            n=n,
            alpha=alpha,
            **options,
        )
        seconds = time.perf_counter() - start
        wanted = [labels[i] for i in chosen]
        accuracy = {r: _certified_accuracy(certificates, wanted, r, "l2") for r in radii}
        passes = sum(c.n0 + c.n for c in certificates)
        return CertificationRun(mode, len(chosen), passes, seconds, accuracy), certificates

    sequential, certificates = run("sequential", range(count), sequential=sequence, radii=settle)
    fixed, _ = run("fixed", range(fixed_count))
    common_certificates = certificates[:fixed_count]
    common = CertificationRun(  # the same images as the fixed run; seconds pro rata of the whole run
        "sequential",
        fixed_count,
        sum(c.n0 + c.n for c in common_certificates),
        sequential.seconds * fixed_count / count,
        {r: _certified_accuracy(common_certificates, labels[:fixed_count], r, "l2") for r in radii},
    )
    return SequentialBenchmark(name, sigma, n, sequence, settle, sequential, fixed, common)
