"""Certify a data set to a TSV file, one row per example, resumable.

The first columns are Cohen et al.'s (``idx label predict radius correct time``; ``predict`` is -1 on
abstention, ``radius`` is in the method's native norm), then ``radius_l1 radius_l2 radius_linf p_lower norm
method sigma n0 n guaranteed`` (``n``: the votes that bounded the class, fewer than the cap with sequential
certification; ``guaranteed``: 1 for a certificate that holds with probability ≥ 1 − α, 0 for an approximate one)
and the method's :attr:`~manifoldcert.certifiers.AbstractCertifier.extra_columns`. Rows are flushed as they are
certified (and fsynced); running again with the same output file skips the indices already there, after checking
the file's run description (``<file>.json``: settings, versions, commit, command line) against this run's settings
and dropping a partial last line; a second process writing the same file is refused
(:mod:`manifoldcert.result_files`). Each example's noise comes
from a generator seeded by ``(seed, idx)``, so a resumed run writes exactly the rows an uninterrupted one would.
Vote-stream certifiers certify many examples at once through the estimator's scheduler; rows are still written
in the order of the examples (a finished one waits for those before it).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from manifoldcert._validation import check_output_path, check_positive_int
from manifoldcert.certificate import NORMS, Certificate
from manifoldcert.certifiers import AbstractCertifier
from manifoldcert.certifiers.base import DEFAULT_ALPHA, DEFAULT_N, DEFAULT_N0
from manifoldcert.confidence_sequences import CONFIDENCE_SEQUENCES
from manifoldcert.result_files import ResultFile, environment_about, jsonable, sha256_of, shard_path

BASE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
COMMON_COLUMNS = (
    "radius_l1",
    "radius_l2",
    "radius_linf",
    "p_lower",
    "norm",
    "method",
    "sigma",
    "n0",
    "n",
    "guaranteed",
    "base_predict",
)


def columns_for(certifier: AbstractCertifier) -> tuple[str, ...]:
    """The TSV header for ``certifier``."""
    return BASE_COLUMNS + COMMON_COLUMNS + tuple(certifier.extra_columns)


def example_seed(seed: int, idx: int) -> int:
    """The seed of example ``idx``'s generator: independent of run order and resumption."""
    return (int(seed) * 1_000_003 + int(idx)) % (2**63 - 1)


def certificate_row(
    certifier: AbstractCertifier, idx: int, label: int, cert: Certificate, base_predict: int
) -> list[str]:
    """One TSV row for ``cert`` of example ``idx`` with true ``label``; ``base_predict`` is the base classifier's
    class on the clean input (the report's base accuracy)."""
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
        int(cert.guaranteed),
        base_predict,
        *(_format(cert.params.get(key)) for key in certifier.extra_columns),
    ]
    return [str(v) for v in values]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def select_examples(
    count: int,
    indices: Sequence[int] | None,
    skip: int,
    max_count: int | None,
    num_shards: int,
    shard_index: int,
) -> list[int]:
    """The examples a run certifies: ``indices`` (default all ``count``), every ``skip``-th, at most ``max_count``,
    then shard ``shard_index`` of ``num_shards`` (every ``num_shards``-th, round robin)."""
    check_positive_int(skip, "skip")
    num_shards = check_positive_int(num_shards, "num_shards")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be an integer in [0, {num_shards}), got {shard_index!r}")
    if max_count is not None:
        check_positive_int(max_count, "max_count")
    chosen = list(range(count)) if indices is None else [int(i) for i in indices]
    return chosen[::skip][:max_count][shard_index::num_shards]


def as_examples(inputs: Any, labels: Sequence[int] | torch.Tensor | None) -> tuple[Any, Any]:
    """``(inputs, labels)`` for the runners: a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (a torchvision data
    set, say) is wrapped in :class:`~manifoldcert.sources.DatasetInputs`, whose labels serve when ``labels`` is
    None."""
    if isinstance(inputs, torch.utils.data.Dataset) and not hasattr(inputs, "iter_examples"):
        from manifoldcert.sources import DatasetInputs

        inputs = DatasetInputs(inputs)
    if labels is None:
        if not hasattr(inputs, "labels"):
            raise ValueError("give the labels (or a Dataset of (x, y) pairs, which carries them)")
        labels = inputs.labels
    return inputs, labels


def read_examples(
    inputs: Any, indices: Sequence[int], *, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(idx, x)`` for each of ``indices``, in order: through the DataLoader of a
    :class:`~manifoldcert.sources.DatasetInputs` (``num_workers`` workers, pinned memory when ``pin_memory``,
    which the runners set for a CUDA model), else by indexing ``inputs``."""
    if hasattr(inputs, "iter_examples"):
        for idx, x, _ in inputs.iter_examples(indices, num_workers=num_workers, pin_memory=pin_memory):
            yield idx, x
    else:
        if num_workers:
            raise ValueError("num_workers applies to inputs read through a DataLoader (DatasetInputs)")
        for idx in indices:
            yield idx, inputs[idx]


def run_config(
    certifier: AbstractCertifier,
    *,
    seed: int,
    evaluation: bool,
    certify_options: dict[str, Any],
    dataset: str | None = None,
    split: str | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """What a run's rows depend on: resuming a file or merging shards needs it equal (see
    :mod:`manifoldcert.result_files`). The batch size is left out: it changes no row."""
    params = certifier.params() if hasattr(certifier, "params") else {}
    noise = getattr(certifier, "noise", None)
    options = {k: v for k, v in certify_options.items() if k != "batch_size"}
    return jsonable(
        {
            "method": certifier.name,
            "certifier": type(certifier).__name__,
            "params": params,
            "noise": noise.config() if noise is not None and hasattr(noise, "config") else None,
            "input_range": certifier.input_range,
            "seed": int(seed),
            "evaluation": bool(evaluation),
            "options": {"n0": DEFAULT_N0, "n": DEFAULT_N, "alpha": DEFAULT_ALPHA, **options},
            "dataset": dataset,
            "split": split,
            "checkpoint_sha256": None if checkpoint is None else sha256_of(checkpoint),
        }
    )


def certify_dataset(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor] | torch.utils.data.Dataset,
    labels: Sequence[int] | torch.Tensor | None,
    out_path: str | os.PathLike[str],
    *,
    indices: Sequence[int] | None = None,
    skip: int = 1,
    max_count: int | None = None,
    seed: int = 0,
    progress: bool = True,
    evaluation: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    dataset: str | None = None,
    split: str | None = None,
    checkpoint: str | None = None,
    num_workers: int = 0,
    **certify_options: Any,
) -> str:
    """Certify examples to ``out_path``, appending to it and skipping indices it already holds.

    Parameters
    ----------
    certifier : AbstractCertifier
    inputs : Tensor, shape (N, *input_shape), a sequence of inputs, or a Dataset of ``(x, y)`` pairs
        Indexed by example index; only the selected ones are read (a Dataset lazily, see ``num_workers``).
    labels : sequence of int, length N, or None
        None for a Dataset: its own labels.
    out_path : path
        TSV output; its folder must exist. A run description ``<out_path>.json`` is written beside it, and the
        file is locked while the run appends to it (:class:`~manifoldcert.result_files.ResultFile`).
    indices : sequence of int, optional
        Which examples to certify (default: all); then every ``skip``-th of them, at most ``max_count``
        (Cohen et al.'s ``--skip`` / ``--max``).
    seed : int
        Base seed; example ``idx`` uses :func:`example_seed`, so shards and resumed runs write the rows a single
        uninterrupted run would.
    evaluation : bool
        Evaluation mode: bound each example's true label (``certify(label=...)``, no SELECT) — for benchmark
        tables only, not a deployable classifier.
    num_shards, shard_index : int
        Certify only every ``num_shards``-th of the selected examples, starting at ``shard_index`` (one file per
        shard; :func:`~manifoldcert.result_files.merge_results` joins them).
    dataset, split, checkpoint : str, optional
        Recorded in the run description (the checkpoint by its SHA-256), and checked when resuming.
    num_workers : int
        DataLoader workers reading the examples when ``inputs`` is a
        :class:`~manifoldcert.sources.DatasetInputs` (read lazily, in order; never the whole split at once).
    **certify_options
        ``n0``, ``n``, ``alpha``, ``batch_size``, ``sequential``, ``radii``, ``max_n`` ... passed to
        ``certifier.certify``.
    """
    out_path = check_output_path(out_path)
    inputs, labels = as_examples(inputs, labels)
    chosen = select_examples(len(labels), indices, skip, max_count, num_shards, shard_index)
    estimator = certifier.require_estimator()
    header = columns_for(certifier)
    config = run_config(
        certifier,
        seed=seed,
        evaluation=evaluation,
        certify_options=certify_options,
        dataset=dataset,
        split=split,
        checkpoint=checkpoint,
    )
    about = {
        **environment_about(),
        "guaranteed": getattr(certifier, "guaranteed", None),
        "checkpoint": checkpoint,
        "shard": {"index": shard_index, "count": num_shards},
        "indices": chosen,
    }
    with ResultFile(out_path, header, config, about) as results:
        todo = [i for i in chosen if i not in results.finished]
        base_predict: dict[int, int] = {}  # the base classifier on each clean input, one forward pass each
        pinned = estimator.device.type == "cuda"  # page-locked host copies for a CUDA model

        def examples() -> Iterator[tuple[int, torch.Tensor, torch.Generator, dict[str, int]]]:
            for idx, x in read_examples(inputs, todo, num_workers=num_workers, pin_memory=pinned):
                base_predict[idx] = estimator.base_prediction(x)
                yield (
                    idx,
                    x,
                    estimator.generator(example_seed(seed, idx)),
                    _label_option(evaluation, labels, idx),
                )

        stream = certifier.iter_certify(examples(), total=len(todo), progress=progress, **certify_options)
        # Rows are written in the order of the examples: finished ones wait for those before them.
        waiting: dict[int, Certificate] = {}
        written = 0
        for idx, cert in stream:
            assert isinstance(idx, int)  # the keys given above
            waiting[idx] = cert
            while written < len(todo) and todo[written] in waiting:
                done_idx = todo[written]
                label = int(labels[done_idx])
                cert = waiting.pop(done_idx)
                results.write_row(
                    certificate_row(certifier, done_idx, label, cert, base_predict.pop(done_idx))
                )
                written += 1
    return out_path


#: Cohen et al.'s predict.py columns (``predict`` is -1 on abstention).
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")


def predict_dataset(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor] | torch.utils.data.Dataset,
    labels: Sequence[int] | torch.Tensor | None,
    out_path: str | os.PathLike[str],
    *,
    n: int = DEFAULT_N,
    alpha: float = DEFAULT_ALPHA,
    batch_size: int | None = None,
    indices: Sequence[int] | None = None,
    skip: int = 1,
    max_count: int | None = None,
    seed: int = 0,
    progress: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
    dataset: str | None = None,
    split: str | None = None,
    checkpoint: str | None = None,
    num_workers: int = 0,
) -> str:
    """Cohen et al.'s PREDICT on every selected example, to a TSV of :data:`PREDICT_COLUMNS` (their predict.py's
    format), resumable, locked and described like :func:`certify_dataset`'s files; same seeds, skip, shards."""
    out_path = check_output_path(out_path)
    inputs, labels = as_examples(inputs, labels)
    chosen = select_examples(len(labels), indices, skip, max_count, num_shards, shard_index)
    estimator = certifier.require_estimator()
    options = {"n": n, "alpha": alpha}
    config = {
        **run_config(
            certifier,
            seed=seed,
            evaluation=False,
            certify_options=options,
            dataset=dataset,
            split=split,
            checkpoint=checkpoint,
        ),
        "task": "predict",
    }
    about = {**environment_about(), "shard": {"index": shard_index, "count": num_shards}, "indices": chosen}
    with ResultFile(out_path, PREDICT_COLUMNS, config, about) as results:
        todo = [i for i in chosen if i not in results.finished]
        examples = read_examples(
            inputs, todo, num_workers=num_workers, pin_memory=estimator.device.type == "cuda"
        )
        for idx, x in tqdm(
            examples, total=len(todo), desc=f"predict ({certifier.name})", disable=not progress
        ):
            start = time.perf_counter()
            generator = estimator.generator(example_seed(seed, idx))
            prediction = certifier.predict(x, n=n, alpha=alpha, batch_size=batch_size, generator=generator)
            label = int(labels[idx])
            predict = -1 if prediction is None else prediction
            results.write_row(
                [idx, label, predict, int(prediction == label), f"{time.perf_counter() - start:.4f}"]
            )
    return out_path


def predict_with_args(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[int] | torch.Tensor,
    out_path: str | os.PathLike[str],
    args: argparse.Namespace,
) -> str:
    """:func:`predict_dataset` with the options of :func:`add_run_arguments` (``--n``, ``--alpha``, ``--skip``,
    ``--max``, shards); returns the path written."""
    if args.sequential is not None or args.evaluation:
        raise ValueError("predict takes a fixed --n; --sequential and --evaluation apply to certify")
    out_path, options = _run_file_options(args, out_path)
    return predict_dataset(
        certifier, inputs, labels, out_path, n=args.n, alpha=args.alpha, batch_size=args.batch_size, **options
    )


def _run_file_options(
    args: argparse.Namespace, out_path: str | os.PathLike[str]
) -> tuple[str, dict[str, Any]]:
    """The output file (the shard's, with several shards) and the options :func:`certify_dataset` and
    :func:`predict_dataset` share, from the arguments of :func:`add_run_arguments` and the command's own."""
    num_shards, shard_index = resolve_shard(args.num_shards, args.shard_index)
    if num_shards > 1:
        out_path = shard_path(out_path, shard_index, num_shards)
    options = {
        "skip": args.skip,
        "max_count": args.max,
        "seed": args.seed,
        "num_shards": num_shards,
        "shard_index": shard_index,
        "dataset": getattr(args, "dataset_name", None) or getattr(args, "dataset", None),
        "split": getattr(args, "split", None),
        "checkpoint": getattr(args, "checkpoint_file", None) or getattr(args, "checkpoint", None),
        "num_workers": getattr(args, "workers", 0),
    }
    return os.fspath(out_path), options


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
        "--num-shards",
        type=int,
        default=None,
        help="split the examples into this many shards, one file each (default: WORLD_SIZE under torchrun, "
        "SLURM_ARRAY_TASK_COUNT in a SLURM array, else 1)",
    )
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="which shard this process certifies, in [0, num-shards) (default: RANK, or SLURM_ARRAY_TASK_ID − "
        "SLURM_ARRAY_TASK_MIN)",
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


def resolve_shard(
    num_shards: int | None, shard_index: int | None, environ: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """``(num_shards, shard_index)`` from the arguments, else from torchrun (``WORLD_SIZE``, ``RANK``) or a SLURM
    array (``SLURM_ARRAY_TASK_COUNT``, ``SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN``), else ``(1, 0)``.

    A count that disagrees with the environment's, an index outside ``[0, num_shards)`` or an index without a
    count are refused.
    """
    environ = os.environ if environ is None else environ
    found: tuple[int, int, str] | None = None
    if int(environ.get("WORLD_SIZE", "1")) > 1:
        found = (int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0")), "WORLD_SIZE (torchrun)")
    elif "SLURM_ARRAY_TASK_COUNT" in environ:
        index = int(environ.get("SLURM_ARRAY_TASK_ID", "0")) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        found = (int(environ["SLURM_ARRAY_TASK_COUNT"]), index, "SLURM_ARRAY_TASK_COUNT")
    if num_shards is None:
        if shard_index is not None and found is None:
            raise ValueError("--shard-index needs --num-shards")
        num_shards = found[0] if found else 1
    elif found is not None and num_shards != found[0]:
        raise ValueError(
            f"--num-shards {num_shards} disagrees with the environment's {found[2]} = {found[0]}"
        )
    if shard_index is None:
        shard_index = found[1] if found else 0
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"the shard index must be in [0, {num_shards}), got {shard_index}")
    return num_shards, shard_index


def certify_with_args(
    certifier: AbstractCertifier,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    labels: Sequence[int] | torch.Tensor,
    out_path: str | os.PathLike[str],
    args: argparse.Namespace,
) -> str:
    """:func:`certify_dataset` with the options of :func:`add_run_arguments` (and ``args.seed``).

    With several shards the file is :func:`~manifoldcert.result_files.shard_path` of ``out_path``; ``dataset``,
    ``split`` and ``checkpoint`` are read from ``args`` where it has them. Returns the path written.
    """
    out_path, options = _run_file_options(args, out_path)
    return certify_dataset(
        certifier,
        inputs,
        labels,
        out_path,
        evaluation=args.evaluation,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        **options,
        **sequential_options(args),
    )
