"""RDDRS time per image at d = 784, per SPD metric, split into exponential map, estimator calls and the rest.

A ``cnn`` on ``1×28×28`` inputs (untrained on random inputs in ``[0, 1]`` by default; ``--checkpoint`` loads a
trained model and ``--dataset`` takes the first ``--images`` test images instead) is certified by ``rddrs``
with each metric of ``--metrics``. The timing is done from outside the library: on each certifier instance the
methods ``manifold.exp`` and ``manifold.retract_step`` and the estimator's ``mean_softmax_and_gradient``,
``mean_softmax`` and ``class_counts`` are replaced by wrappers that add up their wall-clock time. One line per
metric gives the seconds per image (the whole ``certify``: SELECT, the inner DDRS and ANCER runs of
``start="ancer"``, the RDDRS ascent and CERTIFY) and the shares of

- ``exp``: ``SPDManifold.exp`` (the Riemannian exponential of Eq. 6),
- ``riem-grad``: the rest of ``retract_step`` (the Euclidean → Riemannian gradient conversion),
- ``estimator``: the Monte Carlo forward/backward passes (the estimator calls, inner DDRS/ANCER runs included),
- ``rest``: everything else (Cholesky and its backward, ``slogdet``, the ``λ_min`` and eigenvalue-clipping
  ``eigh`` calls, sampling ``A ε``, Python).

    OMP_NUM_THREADS=1 python experiments/bench_rddrs.py --dataset mnist \
        --checkpoint results/spd_mnist/mnist_cnn_sigma_0.25.pt --images 2 --iterations 10 --opt-samples 200

(the budget of experiments/spd_mnist.py; without ``--iterations``/``--opt-samples`` the class defaults, 100
steps × 1,000 samples, take about five minutes per image and metric on two CPU cores). Results:
docs/results/spd_mnist.md.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from manifoldcert.certifiers import get_certifier
from manifoldcert.data import load_dataset
from manifoldcert.geometry.spd import METRICS
from manifoldcert.models import build_model, load_checkpoint

ESTIMATOR_METHODS = ("mean_softmax_and_gradient", "mean_softmax", "class_counts")


class Stopwatch:
    """Wall-clock totals per key; nested calls of the same key are counted once (the outer call)."""

    def __init__(self) -> None:
        self.totals: defaultdict[str, float] = defaultdict(float)
        self._depth: defaultdict[str, int] = defaultdict(int)

    def wrap(self, key: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with its time added to ``totals[key]``."""

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[key] += 1
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth[key] -= 1
                if self._depth[key] == 0:
                    self.totals[key] += time.perf_counter() - start

        return timed


def instrument(certifier: Any, stopwatch: Stopwatch) -> None:
    """Wrap the exponential map, the retraction step and the estimator calls of ``certifier`` (instance only)."""
    manifold = certifier.manifold
    manifold.exp = stopwatch.wrap("exp", manifold.exp)
    manifold.retract_step = stopwatch.wrap("retract_step", manifold.retract_step)
    estimator = certifier.require_estimator()
    for name in ESTIMATOR_METHODS:
        setattr(estimator, name, stopwatch.wrap("estimator", getattr(estimator, name)))


def bench_metric(
    model: torch.nn.Module, inputs: torch.Tensor, metric: str, args: argparse.Namespace
) -> dict[str, float]:
    """Seconds per image and the time shares of one metric over ``inputs``."""
    certifier = get_certifier(
        "rddrs",
        model,
        sigma=args.sigma,
        metric=metric,
        start=args.start,
        iterations=args.iterations,
        opt_samples=args.opt_samples,
        learning_rate=args.learning_rate,
        ddrs_options={"iterations": args.inner_iterations},
        ancer_options={"iterations": args.inner_iterations},
        batch_size=args.batch_size,
        input_shape=tuple(inputs.shape[1:]),
    )
    stopwatch = Stopwatch()
    instrument(certifier, stopwatch)
    estimator = certifier.require_estimator()
    total, stops = 0.0, []
    for index, x in enumerate(inputs):
        start = time.perf_counter()
        cert = certifier.certify(x, n0=args.n0, n=args.n, generator=estimator.generator(args.seed + index))
        total += time.perf_counter() - start
        stops.append(str(cert.params.get("stop_reason")))
    exp, retract, est = (stopwatch.totals[k] for k in ("exp", "retract_step", "estimator"))
    return {
        "seconds": total / len(inputs),
        "exp": exp / total,
        "riem-grad": (retract - exp) / total,
        "estimator": est / total,
        "rest": (total - retract - est) / total,
        "stops": ",".join(sorted(set(stops))),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS))
    parser.add_argument("--input-shape", type=int, nargs=3, default=[1, 28, 28])
    parser.add_argument("--dataset", default=None, help="certify its first test images (default: random)")
    parser.add_argument("--checkpoint", default=None, help="a trained model (default: an untrained cnn)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--start", default="ancer", choices=["ancer", "ddrs", "sigma"])
    parser.add_argument("--iterations", type=int, default=100, help="RDDRS ascent steps (class default 100)")
    parser.add_argument("--opt-samples", type=int, default=1000, help="RDDRS samples per step (default 1000)")
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--inner-iterations", type=int, default=100, help="steps of the inner DDRS and ANCER")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.dataset is not None:
        test = load_dataset(args.dataset, split="test")
        inputs = test.inputs()[: args.images]
    else:
        inputs = torch.rand(
            (args.images, *args.input_shape), generator=torch.Generator().manual_seed(args.seed)
        )
    if args.checkpoint is not None:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        model = build_model("cnn", tuple(inputs.shape[1:]), 10, seed=args.seed).eval()
    d = inputs[0].numel()
    print(
        f"RDDRS on {args.images} image(s) of shape {tuple(inputs.shape[1:])} (d = {d}), "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained cnn'}, σ₀ = {args.sigma}, "
        f"start = {args.start}, {args.iterations} steps × {args.opt_samples} samples (inner DDRS/ANCER "
        f"{args.inner_iterations} steps × 100), n0 = {args.n0}, n = {args.n}, torch threads "
        f"{torch.get_num_threads()}"
    )
    for metric in args.metrics:
        row = bench_metric(model, inputs, metric, args)
        print(
            f"{metric:>17}: {row['seconds']:8.2f} s/image | exp {row['exp']:6.1%} | "
            f"riem-grad {row['riem-grad']:6.1%} | estimator {row['estimator']:6.1%} | rest {row['rest']:6.1%} "
            f"| stop: {row['stops']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
