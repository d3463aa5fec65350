"""Certify a data set to a TSV file, one row per example, resumable.

The first columns are Cohen et al.'s (``idx label predict radius correct time``; ``predict`` is -1 on
abstention, ``radius`` is in the method's native norm), then ``radius_l1 radius_l2 radius_linf p_lower norm
method sigma n0 n`` (``n``: the votes that bounded the class, fewer than the cap with sequential certification)
and the method's :attr:`~manifoldcert.certifiers.AbstractCertifier.extra_columns`. Rows are flushed as they are
certified; running again with the same output file skips the indices already there. Each example's noise comes
from a generator seeded by ``(seed, idx)``, so a resumed run writes exactly the rows an uninterrupted one would.
Vote-stream certifiers certify many examples at once through the estimator's scheduler; rows are still written
in the order of the examples (a finished one waits for those before it).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from manifoldcert._validation import check_output_path, check_positive_int
from manifoldcert.certificate import NORMS, Certificate
from manifoldcert.certifiers import AbstractCertifier
from manifoldcert.confidence_sequences import CONFIDENCE_SEQUENCES

BASE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
COMMON_COLUMNS = ("radius_l1", "radius_l2", "radius_linf", "p_lower", "norm", "method", "sigma", "n0", "n")


def columns_for(certifier: AbstractCertifier) -> tuple[str, ...]:
    """The TSV header for ``certifier``."""
    return BASE_COLUMNS + COMMON_COLUMNS + tuple(certifier.extra_columns)


def example_seed(seed: int, idx: int) -> int:
    """The seed of example ``idx``'s generator: independent of run order and resumption."""
    return (int(seed) * 1_000_003 + int(idx)) % (2**63 - 1)


def certificate_row(certifier: AbstractCertifier, idx: int, label: int, cert: Certificate) -> list[str]:
    """One TSV row for ``cert`` of example ``idx`` with true ``label``."""
    predict = -1 if cert.prediction is None else cert.prediction
    radii = {norm: cert.radius.get(norm, math.nan) for norm in NORMS}
    values: list[Any] = [
        idx,
        label,
        predict,
        f"{cert.radius.get(certifier.native_norm, math.nan):.6g}",
        int(cert.prediction == label),
        f"{cert.seconds:.4f}",
        *(f"{radii[norm]:.6g}" for norm in NORMS),
        "" if cert.p_lower is None else f"{cert.p_lower:.6g}",
        certifier.native_norm,
        cert.method,
        _format(cert.params.get("sigma")),
        cert.n0,
        cert.n,
        *(_format(cert.params.get(key)) for key in certifier.extra_columns),
    ]
    return [str(v) for v in values]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def finished_indices(path: str, header: Sequence[str]) -> set[int]:
    """Indices already in the TSV at ``path`` (empty when the file does not exist); refuse another header."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    with open(path, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        found = next(reader, None)
        if found is not None and tuple(found) != tuple(header):
            raise ValueError(
                f"{path!r} holds results with other columns ({' '.join(found)}); "
                "use another output file to certify with this method"
            )
        return {int(row[0]) for row in reader if row and len(row) == len(header)}


def certify_dataset(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[int] | torch.Tensor,
    out_path: str | os.PathLike[str],
    *,
    indices: Sequence[int] | None = None,
    skip: int = 1,
    max_count: int | None = None,
    seed: int = 0,
    progress: bool = True,
    evaluation: bool = False,
    **certify_options: Any,
) -> str:
    """Certify examples to ``out_path``, appending to it and skipping indices it already holds.

    Parameters
    ----------
    certifier : AbstractCertifier
    inputs : Tensor, shape (N, *input_shape), or a sequence of inputs
        Indexed by example index; only the selected ones are read.
    labels : sequence of int, length N
    out_path : path
        TSV output; its folder must exist.
    indices : sequence of int, optional
        Which examples to certify (default: all); then every ``skip``-th of them, at most ``max_count``
        (Cohen et al.'s ``--skip`` / ``--max``).
    seed : int
        Base seed; example ``idx`` uses :func:`example_seed`.
    evaluation : bool
        Evaluation mode: bound each example's true label (``certify(label=...)``, no SELECT) — for benchmark
        tables only, not a deployable classifier.
    **certify_options
        ``n0``, ``n``, ``alpha``, ``batch_size``, ``sequential``, ``radii``, ``max_n`` ... passed to
        ``certifier.certify``.
    """
    out_path = check_output_path(out_path)
    check_positive_int(skip, "skip")
    if max_count is not None:
        check_positive_int(max_count, "max_count")
    estimator = certifier.require_estimator()
    header = columns_for(certifier)
    chosen = list(range(len(labels))) if indices is None else [int(i) for i in indices]
    chosen = chosen[::skip][:max_count]
    done = finished_indices(out_path, header)
    todo = [i for i in chosen if i not in done]
    new_file = not os.path.exists(out_path) or os.path.getsize(out_path) == 0
    written = 0
    try:
        with open(out_path, "a", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            if new_file:
                writer.writerow(header)
                handle.flush()
            examples = (
                (
                    idx,
                    inputs[idx],
                    estimator.generator(example_seed(seed, idx)),
                    _label_option(evaluation, labels, idx),
                )
                for idx in todo
            )
            results = certifier.iter_certify(examples, total=len(todo), progress=progress, **certify_options)
            # Rows are written in the order of the examples: finished ones wait for those before them.
            waiting: dict[int, Certificate] = {}
            for idx, cert in results:
                waiting[idx] = cert
                while written < len(todo) and todo[written] in waiting:
                    done_idx = todo[written]
                    row = certificate_row(certifier, done_idx, int(labels[done_idx]), waiting.pop(done_idx))
                    writer.writerow(row)
                    written += 1
                handle.flush()
    except BaseException:
        if new_file and written == 0 and os.path.exists(out_path):
            os.remove(out_path)  # a failure before the first row leaves no header-only file behind
        raise
    return out_path


def _label_option(evaluation: bool, labels, idx: int) -> dict[str, int]:
    """The per-example option of the evaluation mode: bound the true label."""
    return {"label": int(labels[idx])} if evaluation else {}


def add_run_arguments(parser: argparse.ArgumentParser, *, n: int = 100_000, skip: int = 1) -> None:
    """Add the options of a certification run: ``--n0 --n --alpha --batch-size --skip --max``, and
    ``--sequential --radii --max-n --evaluation``.

    Shared by ``manifoldcert certify`` and the experiment scripts; ``n`` and ``skip`` set their defaults.
    """
    parser.add_argument("--n0", type=int, default=100, help="samples that select the class")
    parser.add_argument("--n", type=int, default=n, help="samples that bound its probability")
    parser.add_argument(
        "--alpha", type=float, default=0.001, help="the certificate fails with probability <= alpha"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy inputs per forward pass")
    parser.add_argument("--skip", type=int, default=skip, help="certify every skip-th example")
    parser.add_argument("--max", type=int, default=None, help="certify at most this many examples")
    parser.add_argument(
        "--sequential",
        choices=sorted(CONFIDENCE_SEQUENCES),
        default=None,
        help="stop each example's votes once settled, read through this confidence sequence (needs --radii)",
    )
    parser.add_argument(
        "--radii",
        type=float,
        nargs="+",
        default=None,
        help="with --sequential: the radii that settle an example",
    )
    parser.add_argument(
        "--max-n", type=int, default=None, help="with --sequential: at most this many votes (default --n)"
    )
    parser.add_argument(
        "--evaluation",
        action="store_true",
        help="evaluation mode: bound the true label instead of the selected class (benchmark tables only)",
    )


def sequential_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``certify`` options of ``--sequential --radii --max-n`` (empty without ``--sequential``)."""
    if args.sequential is None:
        if args.radii is not None or args.max_n is not None:
            raise ValueError("--radii and --max-n apply to --sequential certification only")
        return {}
    return {"sequential": args.sequential, "radii": args.radii, "max_n": args.max_n}


def certify_with_args(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[int] | torch.Tensor,
    out_path: str | os.PathLike[str],
    args: argparse.Namespace,
) -> str:
    """:func:`certify_dataset` with the options of :func:`add_run_arguments` (and ``args.seed``)."""
    return certify_dataset(
        certifier,
        inputs,
        labels,
        out_path,
        skip=args.skip,
        max_count=args.max,
        seed=args.seed,
        evaluation=args.evaluation,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        **sequential_options(args),
    )
