"""The ``manifoldcert`` command end to end on digits: train, certify (resumable), report, demo, errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from manifoldcert import noises
from manifoldcert.cli import main
from manifoldcert.demo import run_demo
from manifoldcert.runs import BASE_COLUMNS, COMMON_COLUMNS


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--arch",
                "mlp",
                "--noise",
                "laplace",
                "--sigma",
                "0.25",
                "--epochs",
                "3",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def test_certify_writes_cohen_compatible_rows_and_resumes(checkpoint, tmp_path, capsys):
    out = tmp_path / "laplace.tsv"
    args = [
        "certify",
        "--checkpoint",
        str(checkpoint),
        "--method",
        "laplace",
        "--out",
        str(out),
        "--n",
        "300",
        "--batch-size",
        "150",
    ]
    assert main([*args, "--max", "4"]) == 0
    rows = _rows(out)
    assert list(rows[0])[: len(BASE_COLUMNS) + len(COMMON_COLUMNS)] == [*BASE_COLUMNS, *COMMON_COLUMNS]
    assert [r["idx"] for r in rows] == ["0", "1", "2", "3"]
    assert {r["method"] for r in rows} == {"laplace"} and {r["sigma"] for r in rows} == {"0.25"}
    assert all(r["radius"] == r["radius_l1"] for r in rows)
    # Rerunning resumes: the four finished rows stay, only new indices are added, and they equal a fresh run's.
    assert main([*args, "--max", "6"]) == 0
    rows = _rows(out)
    assert [r["idx"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    fresh = tmp_path / "fresh.tsv"
    assert main([*args[:-6], "--out", str(fresh), "--n", "300", "--batch-size", "150", "--max", "6"]) == 0
    strip_time = [{k: v for k, v in r.items() if k != "time"} for r in _rows(fresh)]
    assert strip_time == [{k: v for k, v in r.items() if k != "time"} for r in rows]
    # --skip takes every k-th example.
    skipped = tmp_path / "skip.tsv"
    assert main([*args[:-6], "--out", str(skipped), "--n", "100", "--skip", "50", "--max", "3"]) == 0
    assert [r["idx"] for r in _rows(skipped)] == ["0", "50", "100"]
    # report: table, robustness score and a plot.
    plot = tmp_path / "curve.png"
    assert main(["report", str(out), "--norm", "l1", "--radii", "0", "0.5", "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "Robustness score" in text and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_certify_errors_are_clear(checkpoint, tmp_path, capsys):
    base = ["certify", "--checkpoint", str(checkpoint), "--n", "100"]
    assert main([*base, "--out", str(tmp_path / "missing" / "r.tsv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r.tsv"), "--method", "nope"]) == 2
    assert "valid methods are" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r.tsv"), "--dataset", "mnist-5k"]) == 2
    assert "trained on 'digits'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r.tsv"), "--alpha", "2"]) == 2
    assert "alpha" in capsys.readouterr().err
    # Another method's file is not resumed into.
    assert main([*base, "--out", str(tmp_path / "r2.tsv"), "--max", "1"]) == 0
    (tmp_path / "r2.tsv").write_text("idx\tlabel\tother\n")
    assert main([*base, "--out", str(tmp_path / "r2.tsv"), "--max", "1"]) == 2
    assert "other columns" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar100", "--out", str(tmp_path / "m.pt")]) == 2
    assert "valid datasets" in capsys.readouterr().err


def test_demo_runs_end_to_end_on_a_small_budget(tmp_path, capsys):
    paths = run_demo(str(tmp_path), n=200, max_count=20, epochs=2, geometry_count=2)
    geometry = ["rddrs-affine-invariant", "rddrs-log-euclidean", "ancer"]
    assert sorted(paths) == sorted(["cohen", "laplace", "uniform", "cohen-sequential", *geometry])
    assert all(len(_rows(paths[m])) == 20 for m in ("cohen", "laplace", "uniform", "cohen-sequential"))
    assert all(len(_rows(paths[m])) == 2 for m in geometry)
    text = capsys.readouterr().out
    assert "Certified accuracy on digits" in text and "| cohen |" in text
    assert "Sequential certification (cohen" in text and "| sequential |" in text
    sequential = _rows(paths["cohen-sequential"])
    assert all(int(row["n"]) <= 200 for row in sequential)
    assert "Ellipsoids on digits" in text and all(
        f"| {label} |" in text for label in ("cohen (ball)", *geometry)
    )
    assert (tmp_path / "certified_accuracy_l2.png").exists() and (
        tmp_path / "certified_accuracy_l1.png"
    ).exists()


def test_sequential_certification_from_the_command_line(checkpoint, tmp_path):
    out = tmp_path / "sequential.tsv"
    base = ["certify", "--checkpoint", str(checkpoint), "--method", "laplace", "--n", "4000", "--max", "5"]
    assert main([*base, "--out", str(out), "--sequential", "mixture", "--radii", "0.1", "0.2"]) == 0
    rows = _rows(out)
    assert [r["idx"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all(int(r["n0"]) == 100 and 0 < int(r["n"]) <= 4000 for r in rows)
    evaluation = tmp_path / "evaluation.tsv"
    argv = [*base, "--out", str(evaluation), "--sequential", "mixture", "--radii", "0.1", "--evaluation"]
    assert main(argv) == 0
    assert all(r["n0"] == "0" for r in _rows(evaluation))
    assert main([*base, "--out", str(tmp_path / "bad.tsv"), "--radii", "0.1"]) != 0
    assert not (tmp_path / "bad.tsv").exists()
    unreachable = [*base, "--out", str(tmp_path / "far.tsv"), "--sequential", "mixture", "--radii", "9.0"]
    assert main(unreachable) != 0 and not (tmp_path / "far.tsv").exists()


def test_sound_sampling_through_the_command_line(checkpoint, tmp_path, capsys):
    """cohen --sampling sound smooths on the data set's own grid (digits: levels 16) and records the noise."""
    base = ["certify", "--checkpoint", str(checkpoint), "--n", "500", "--max", "4", "--sigma", "0.25"]
    sound, plain = tmp_path / "sound.tsv", tmp_path / "float.tsv"
    assert main([*base, "--method", "cohen", "--sampling", "sound", "--out", str(sound)]) == 0
    assert main([*base, "--method", "cohen", "--out", str(plain)]) == 0
    rows, float_rows = _rows(sound), _rows(plain)
    assert [r["noise"] for r in rows] == ["grid-gaussian"] * 4 and float_rows[0]["noise"] == "gaussian"
    assert sum(r["correct"] == "1" for r in rows) >= 2  # the same model still classifies under the grid noise
    assert main([*base, "--method", "laplace", "--sampling", "sound", "--out", str(tmp_path / "x.tsv")]) == 2
    assert "--sampling applies to --method cohen only" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()


def test_bring_your_own_model_by_import_path_on_an_image_folder(tmp_path, capsys):
    """A torchvision ResNet-18 (random init, normalisation in front) certified from the CLI by import path on a
    20-image ImageFolder tree; the run description records where the data came from."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(10):
        (tmp_path / "tree" / f"class{k}").mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "tree" / f"class{k}" / f"{i}.png")
    out = tmp_path / "resnet.tsv"
    args = [
        "certify",
        "--model",
        "tests.sources_factories:resnet18_cifar",
        "--image-folder",
        str(tmp_path / "tree"),
    ]
    args += [
        "--normalize",
        "0.4914,0.4822,0.4465",
        "0.2470,0.2435,0.2616",
        "--sigma",
        "0.25",
        "--num-classes",
        "10",
    ]
    assert (
        main([*args, "--n", "40", "--n0", "10", "--batch-size", "25", "--max", "3", "--out", str(out)]) == 0
    )
    rows = _rows(out)
    assert [r["idx"] for r in rows] == ["0", "1", "2"] and {r["method"] for r in rows} == {"cohen"}
    description = json.loads((tmp_path / "resnet.tsv.json").read_text())
    assert description["config"]["dataset"].startswith("folder:")
    bad = [
        "certify",
        "--model",
        "tests.sources_factories:resnet18_cifar",
        "--image-folder",
        str(tmp_path / "tree"),
    ]
    assert main([*bad, "--sigma", "0.25", "--num-classes", "7", "--out", str(tmp_path / "x.tsv")]) == 2
    assert "7" in capsys.readouterr().err and not (tmp_path / "x.tsv").exists()
    assert main(["certify", "--model", "nowhere.module:factory", "--out", str(tmp_path / "y.tsv")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_dssn_through_the_command_line(checkpoint, tmp_path, capsys):
    model = tmp_path / "dssn.pt"
    assert (
        main(
            [
                "train",
                "--noise",
                "derandomized-splitting",
                "--sigma",
                "0.5",
                "--offset-seed",
                "7",
                "--epochs",
                "2",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    out = tmp_path / "dssn.tsv"
    assert (
        main(["certify", "--checkpoint", str(model), "--method", "dssn", "--out", str(out), "--max", "5"])
        == 0
    )
    rows = _rows(out)
    assert (
        len(rows) == 5 and {r["offset_seed"] for r in rows} == {"7"} and {r["levels"] for r in rows} == {"16"}
    )
    assert {r["p_lower"] for r in rows} == {""} and {r["lambda"] for r in rows} == {str(27 / 32)}
    inclusive = tmp_path / "dssn_inclusive.tsv"
    args = ["--method", "dssn", "--dssn-radius", "grid-inclusive", "--out", str(inclusive), "--max", "5"]
    assert main(["certify", "--checkpoint", str(model), *args]) == 0
    wider = _rows(inclusive)
    assert {r["radius_rule"] for r in wider} == {"grid-inclusive"} and {r["radius_rule"] for r in rows} == {
        "strict"
    }
    for w, r in zip(
        wider, rows, strict=True
    ):  # grid steps (q = 16) certified: closed ball ⊇ strict open ball
        strict_steps = max(math.ceil(float(r["radius"]) * 16 - 1e-9) - 1, 0)
        assert round(float(w["radius"]) * 16, 6) >= strict_steps
    assert main(["certify", "--checkpoint", str(model), "--dssn-radius", "strict", "--out", str(out)]) == 2
    assert "--dssn-radius applies to --method dssn only" in capsys.readouterr().err
    # A checkpoint trained with other noise has no offset vector.
    assert (
        main(
            ["certify", "--checkpoint", str(checkpoint), "--method", "dssn", "--out", str(tmp_path / "x.tsv")]
        )
        == 2
    )
    assert "derandomized-splitting" in capsys.readouterr().err


def test_dssn_trained_with_the_reference_offset_convention(tmp_path, capsys):
    """train --offsets numpy-randomstate draws the offset vector as Levine and Feizi's code does (numpy's
    RandomState(seed).randint), the checkpoint records it, and certify uses the same vector."""
    from manifoldcert.models import load_checkpoint

    model = tmp_path / "dssn_np.pt"
    train = ["train", "--noise", "derandomized-splitting", "--sigma", "0.5", "--offset-seed", "3"]
    assert main([*train, "--offsets", "numpy-randomstate", "--epochs", "1", "--out", str(model)]) == 0
    _, info = load_checkpoint(model)
    noise = noises.from_config(info.noise)
    expected = np.random.RandomState(3).randint(0, noise.num_splits, size=64)
    assert noise.offset_convention == "numpy-randomstate"
    assert noise.offset_steps.tolist() == expected.tolist()
    out = tmp_path / "dssn_np.tsv"
    assert (
        main(["certify", "--checkpoint", str(model), "--method", "dssn", "--out", str(out), "--max", "3"])
        == 0
    )
    assert {r["offsets"] for r in _rows(out)} == {"numpy-randomstate"}
    bad = ["train", "--noise", "laplace", "--offsets", "numpy-randomstate", "--out", str(tmp_path / "x.pt")]
    assert (
        main(bad) == 2
        and "--offsets applies to --noise derandomized-splitting only" in capsys.readouterr().err
    )
    assert not (tmp_path / "x.pt").exists()


def test_input_dependent_through_the_command_line(tmp_path, capsys):
    model = tmp_path / "id.pt"
    assert (
        main(
            [
                "train",
                "--noise",
                "mean-scaled-gaussian",
                "--sigma",
                "0.5",
                "--offset",
                "0.5",
                "--epochs",
                "2",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    out = tmp_path / "id.tsv"
    assert (
        main(
            [
                "certify",
                "--checkpoint",
                str(model),
                "--method",
                "input-dependent",
                "--out",
                str(out),
                "--max",
                "4",
                "--n",
                "500",
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert len(rows) == 4 and all(float(r["radius_l2"]) <= float(r["naive_radius"]) for r in rows)
    assert {r["semi_elasticity"] for r in rows} == {str(1 / (0.5 * 8))}
    assert (
        main(["certify", "--checkpoint", str(model), "--method", "cohen", "--out", str(tmp_path / "c.tsv")])
        == 2
    )
    assert "--method input-dependent" in capsys.readouterr().err


def test_train_and_certify_with_a_zhang_family(tmp_path):
    """``--noise zhang-l1 --k`` trains with the ‖z‖^-k family; ``--method functional`` certifies with it."""
    checkpoint = tmp_path / "zhang.pt"
    train = ["train", "--dataset", "digits", "--noise", "zhang-l1", "--sigma", "0.25", "--k", "8"]
    assert main([*train, "--epochs", "2", "--out", str(checkpoint)]) == 0
    out = tmp_path / "functional.tsv"
    certify = ["certify", "--checkpoint", str(checkpoint), "--method", "functional", "--n", "300"]
    assert main([*certify, "--max", "3", "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["functional"] * 3
    assert all(r["norm"] == "l1" and r["radius"] == r["radius_l1"] and r["k"] == "8" for r in rows)
    assert {r["noise"] for r in rows} == {"zhang-l1"}


def test_certify_with_a_data_dependent_method_and_metric(checkpoint, tmp_path):
    """``--method rddrs --metric log-euclidean --memory`` on the digits model (d = 64)."""
    out = tmp_path / "rddrs.tsv"
    args = ["certify", "--checkpoint", str(checkpoint), "--method", "rddrs", "--metric", "log-euclidean"]
    assert main([*args, "--memory", "--n", "200", "--n0", "20", "--max", "2", "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["rddrs", "rddrs"]
    assert all(float(r["proxy_radius"]) >= float(r["radius_l2"]) - 1e-9 for r in rows)
    geomstats_out = tmp_path / "rddrs-geomstats.tsv"
    metric = ["--metric", "geomstats:SPDAffineMetric"]
    assert (
        main([*args[:-2], *metric, "--n", "200", "--n0", "20", "--max", "1", "--out", str(geomstats_out)])
        == 0
    )
    assert _rows(geomstats_out)[0]["method"] == "rddrs"
    assert main([*args[:-2], "--metric", "nope", "--out", str(tmp_path / "x.tsv"), "--max", "1"]) == 2
    assert main([*args[:3], "--method", "cohen", "--metric", "log-euclidean", "--out", str(out)]) == 2


def test_certify_with_unicr_uses_the_training_noise_and_a_table_cache(checkpoint, tmp_path):
    out, cache = tmp_path / "unicr.tsv", tmp_path / "cache"
    args = ["certify", "--checkpoint", str(checkpoint), "--method", "unicr", "--norm", "l1"]
    assert main([*args, "--cache-dir", str(cache), "--n", "200", "--max", "2", "--out", str(out)]) == 0
    rows = _rows(out)
    assert all(r["method"] == "unicr" and r["norm"] == "l1" and r["noise"] == "laplace" for r in rows)
    assert len(list(cache.glob("unicr-*.json"))) == 1
    assert main([*args[:4], "cohen", "--norm", "l1", "--out", str(tmp_path / "c.tsv")]) == 2


def test_invalid_arguments_unreadable_checkpoints_and_folders_give_one_line_errors(
    checkpoint, tmp_path, capsys
):
    base = ["certify", "--checkpoint", str(checkpoint), "--max", "2"]
    for bad in (["--alpha", "2"], ["--n", "0"], ["--n0", "-1"]):
        out = tmp_path / "bad.tsv"
        assert main([*base, "--n", "100", "--out", str(out), *bad]) == 2
        assert not out.exists(), f"{bad} left a file behind"
    capsys.readouterr()
    assert main([*base, "--n", "100", "--out", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err
    for name, content in (
        ("truncated.pt", checkpoint.read_bytes()[:500]),
        ("garbage.pt", b"not a checkpoint"),
    ):
        broken = tmp_path / name
        broken.write_bytes(content)
        out = tmp_path / f"{name}.tsv"
        assert main(["certify", "--checkpoint", str(broken), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot read the checkpoint") and err.count("\n") == 1
        assert not out.exists()
