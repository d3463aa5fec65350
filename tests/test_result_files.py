"""Result files that cannot be corrupted: lock, partial lines, run descriptions, resume checks, shards and merge."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from manifoldcert.certifiers import get_certifier
from manifoldcert.cli import main
from manifoldcert.result_files import (
    ResultFile,
    ResultFileLockedError,
    description_path,
    merge_results,
    read_description,
    shard_path,
)
from manifoldcert.runs import certify_dataset, columns_for, resolve_shard
from tests.conftest import LinearBinaryClassifier

N_EXAMPLES = 12


def _certifier(seed: int = 0):
    model = LinearBinaryClassifier(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64), 0.1)
    return get_certifier("cohen", model, sigma=0.25, seed=seed, batch_size=200)


def _inputs():
    generator = torch.Generator().manual_seed(3)
    return torch.rand(N_EXAMPLES, 6, generator=generator, dtype=torch.float64), [
        i % 2 for i in range(N_EXAMPLES)
    ]


def _run(path, **options):
    inputs, labels = _inputs()
    options = {"n0": 20, "n": 300, "progress": False, **options}
    return certify_dataset(_certifier(), inputs, labels, str(path), **options)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _without_time(rows):
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_run_description_and_guaranteed_column(tmp_path):
    path = _run(tmp_path / "a.tsv", max_count=4)
    rows = _rows(path)
    assert [r["guaranteed"] for r in rows] == ["1"] * 4
    description = read_description(path)
    config, about = description["config"], description["about"]
    assert config["method"] == "cohen" and config["seed"] == 0
    assert config["options"] == {"n0": 20, "n": 300, "alpha": 0.001}
    assert config["params"]["sigma"] == 0.25 and config["noise"] == {"name": "gaussian", "sigma": 0.25}
    assert about["guaranteed"] is True and about["indices"] == [0, 1, 2, 3]
    assert {"manifoldcert", "torch", "git_commit", "command"} <= set(about)


def test_second_writer_is_refused_and_nothing_is_lost(tmp_path):
    path = tmp_path / "a.tsv"
    _run(path, max_count=3)
    config = read_description(path)["config"]
    with ResultFile(str(path), columns_for(_certifier()), config):
        with pytest.raises(ResultFileLockedError, match="another process"):
            _run(path)
    assert len(_rows(path)) == 3  # the refused writer removed nothing
    _run(path)
    assert [int(r["idx"]) for r in _rows(path)] == list(range(N_EXAMPLES))


def test_truncated_last_line_is_dropped_and_resumed(tmp_path):
    reference = _rows(_run(tmp_path / "whole.tsv"))
    path = tmp_path / "cut.tsv"
    _run(path, max_count=7)
    with open(path, "rb+") as handle:
        data = handle.read()
        handle.truncate(len(data) - 9)  # the 7th row cut mid-line, as a killed job leaves it
    _run(path)
    rows = _rows(path)
    assert _without_time(rows) == _without_time(reference)


def test_resuming_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "a.tsv"
    _run(path, max_count=3)
    for other in ({"n": 400}, {"seed": 1}, {"alpha": 0.01}, {"evaluation": True}):
        with pytest.raises(ValueError, match="other settings"):
            _run(path, **other)
    inputs, labels = _inputs()
    laplace = get_certifier("laplace", _certifier().model, sigma=0.25, batch_size=200)
    with pytest.raises(ValueError, match="other columns|other settings"):
        certify_dataset(laplace, inputs, labels, str(path), n0=20, n=300, progress=False)
    os.remove(description_path(path))
    with pytest.raises(ValueError, match="no run description"):
        _run(path)


def test_corrupted_middle_line_is_refused(tmp_path):
    path = _run(tmp_path / "a.tsv", max_count=4)
    lines = Path(path).read_text().splitlines(keepends=True)
    lines[2] = "1\t0\n"
    Path(path).write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3: 2 fields"):
        _run(path)


def test_failure_before_the_first_row_leaves_no_file(tmp_path):
    path = tmp_path / "a.tsv"
    with pytest.raises(ValueError):
        _run(path, n0=0)
    assert not path.exists() and not os.path.exists(description_path(path))


def test_shards_merge_to_the_single_run(tmp_path):
    single = _rows(_run(tmp_path / "single.tsv"))
    shards = [shard_path(tmp_path / "run.tsv", i, 3) for i in range(3)]
    for i, path in enumerate(shards):
        _run(path, num_shards=3, shard_index=i)
    assert [int(r["idx"]) for r in _rows(shards[1])] == list(range(1, N_EXAMPLES, 3))
    summary = merge_results([*shards, shards[0]], tmp_path / "merged.tsv")  # a shard twice: deduplicated
    assert summary == {"rows": N_EXAMPLES, "duplicates": N_EXAMPLES // 3, "missing": []}
    assert _without_time(_rows(tmp_path / "merged.tsv")) == _without_time(single)
    assert read_description(tmp_path / "merged.tsv")["config"] == read_description(shards[0])["config"]


def test_merge_refuses_conflicts_and_reports_missing(tmp_path):
    shards = [shard_path(tmp_path / "run.tsv", i, 2) for i in range(2)]
    _run(shards[0], num_shards=2, shard_index=0)
    _run(shards[1], num_shards=2, shard_index=1, max_count=6)  # stopped early: examples 7, 9, 11 never came
    other = tmp_path / "other.tsv"
    _run(other, num_shards=2, shard_index=1, n=500)
    with pytest.raises(ValueError, match="another run configuration"):
        merge_results([shards[0], other], tmp_path / "x.tsv")
    summary = merge_results(shards, tmp_path / "merged.tsv")
    assert summary["missing"] == [] and summary["rows"] == 9  # max_count applies before sharding
    conflicting = tmp_path / "conflict.tsv"
    lines = Path(shards[0]).read_text().splitlines(keepends=True)
    fields = lines[1].split("\t")
    fields[9] = "0.123"  # another p_lower for the same example
    lines[1] = "\t".join(fields)
    conflicting.write_text("".join(lines))
    Path(description_path(conflicting)).write_text(Path(description_path(shards[0])).read_text())
    with pytest.raises(ValueError, match="two different rows"):
        merge_results([shards[0], conflicting], tmp_path / "y.tsv")
    with pytest.raises(ValueError, match="exists"):
        merge_results(shards, tmp_path / "merged.tsv")


def test_merge_reports_planned_examples_without_rows(tmp_path):
    path = tmp_path / "a.tsv"
    _run(path)
    description = json.loads(Path(description_path(path)).read_text())
    description["about"]["indices"].append(99)
    Path(description_path(path)).write_text(json.dumps(description))
    assert merge_results([path], tmp_path / "merged.tsv")["missing"] == [99]


def test_shard_resolution_from_arguments_torchrun_and_slurm():
    assert resolve_shard(None, None, {}) == (1, 0)
    assert resolve_shard(4, 2, {}) == (4, 2)
    assert resolve_shard(None, None, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == (2, 1)
    slurm = {"SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_ID": "13", "SLURM_ARRAY_TASK_MIN": "10"}
    assert resolve_shard(None, None, slurm) == (8, 3)
    with pytest.raises(ValueError, match="disagrees"):
        resolve_shard(4, None, {"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        resolve_shard(4, 4, {})
    with pytest.raises(ValueError, match="needs --num-shards"):
        resolve_shard(None, 1, {})
    assert shard_path("out/r.tsv", 3, 16) == "out/r.shard-03-of-16.tsv"


_KILLED_RUN = """
import sys, torch
from manifoldcert.certifiers import get_certifier
from manifoldcert.runs import certify_dataset
from tests.conftest import LinearBinaryClassifier
model = LinearBinaryClassifier(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64), 0.1)
certifier = get_certifier("cohen", model, sigma=0.25, batch_size=200)
inputs = torch.rand(40, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
certify_dataset(certifier, inputs, [i % 2 for i in range(40)], sys.argv[1], n0=20, n=20000, progress=False)
"""


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Killed five times mid-run, then resumed: the rows are the uninterrupted run's, none lost, doubled or broken."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    path = tmp_path / "killed.tsv"
    chooser = random.Random(0)
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(path)], env=env, cwd=root)
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        time.sleep(chooser.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run([sys.executable, "-c", _KILLED_RUN, str(path)], env=env, cwd=root, check=True)
    whole = tmp_path / "whole.tsv"
    subprocess.run([sys.executable, "-c", _KILLED_RUN, str(whole)], env=env, cwd=root, check=True)
    assert _without_time(_rows(path)) == _without_time(_rows(whole))
    assert path.read_text().endswith("\n")


def test_torchrun_two_processes_merge_to_a_single_run(tmp_path):
    """torchrun (2 CPU processes) certifies 40 digits images as two shards; merged, they are the single run's rows."""
    checkpoint = tmp_path / "digits.pt"
    train = ["train", "--dataset", "digits", "--noise", "gaussian", "--epochs", "2", "--out", str(checkpoint)]
    assert main(train) == 0
    options = ["--checkpoint", str(checkpoint), "--max", "40", "--n", "500", "--batch-size", "250"]
    single = tmp_path / "single.tsv"
    assert main(["certify", *options, "--out", str(single)]) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A wrapper script: torchrun's own parser would take --max for its --max-restarts.
    launcher = tmp_path / "certify.sh"
    arguments = " ".join([*options, "--out", str(tmp_path / "sharded.tsv")])
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m manifoldcert certify {arguments}\n")
    launcher.chmod(0o755)
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "--no-python", str(launcher)]
    subprocess.run(command, env=env, check=True)
    shards = [shard_path(tmp_path / "sharded.tsv", i, 2) for i in range(2)]
    assert all(os.path.exists(s) for s in shards)
    assert main(["merge", *shards, "--out", str(tmp_path / "merged.tsv")]) == 0
    assert _without_time(_rows(tmp_path / "merged.tsv")) == _without_time(_rows(single))


def test_predict_writes_cohen_predict_rows(tmp_path, capsys):
    """manifoldcert predict: Cohen et al.'s predict.py TSV (idx label predict correct time), resumable."""
    checkpoint = tmp_path / "digits.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--out", str(checkpoint)]) == 0
    out = tmp_path / "predict.tsv"
    base = ["predict", "--checkpoint", str(checkpoint), "--n", "200", "--out", str(out)]
    assert main([*base, "--max", "4"]) == 0
    assert main([*base, "--max", "8"]) == 0  # resumed: four more
    rows = _rows(out)
    assert list(rows[0]) == ["idx", "label", "predict", "correct", "time"]
    assert [int(r["idx"]) for r in rows] == list(range(8))
    assert all(r["correct"] == str(int(r["predict"] == r["label"])) for r in rows)
    assert sum(r["correct"] == "1" for r in rows) >= 4
    assert read_description(out)["config"]["task"] == "predict"
    assert main([*base, "--sequential", "mixture", "--radii", "0.1"]) == 2
    assert "fixed --n" in capsys.readouterr().err


class _PairDataset(torch.utils.data.Dataset):
    """A torchvision-style data set: items are (x, y) pairs, no ``targets`` attribute."""

    def __init__(self) -> None:
        self.inputs, self.labels = _inputs()

    def __len__(self) -> int:
        return N_EXAMPLES

    def __getitem__(self, idx: int):
        return self.inputs[idx], self.labels[idx]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_dataset_of_pairs_is_certified_lazily_like_the_tensors(tmp_path, workers):
    """certify_dataset takes a Dataset of (x, y) pairs as it is (read through a DataLoader, labels its own): the
    rows are those of the same examples given as tensors."""
    reference = _rows(_run(tmp_path / "tensors.tsv"))
    path = tmp_path / "dataset.tsv"
    certify_dataset(
        _certifier(), _PairDataset(), None, str(path), n0=20, n=300, progress=False, num_workers=workers
    )
    assert _without_time(_rows(path)) == _without_time(reference)
    with pytest.raises(ValueError, match="DataLoader"):
        _run(tmp_path / "x.tsv", num_workers=2)
