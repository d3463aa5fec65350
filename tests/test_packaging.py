"""Packaging: ``python -m manifoldcert``, the ``py.typed`` marker, the licence, the type check."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import manifoldcert

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_python_dash_m_prints_the_help_with_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "manifoldcert", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "certify", "report", "demo", "bench"):
        assert command in result.stdout


def test_py_typed_marker_ships_with_the_package():
    package_dir = pathlib.Path(manifoldcert.__file__).resolve().parent
    assert (package_dir / "py.typed").is_file()


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in text and "the manifoldcert authors" in text


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None
    or shutil.which("mypy", path=str(pathlib.Path(sys.executable).parent)) is None,
    reason="mypy is not installed",
)
def test_mypy_passes_on_a_small_module():
    mypy = shutil.which("mypy", path=str(pathlib.Path(sys.executable).parent))
    result = subprocess.run(
        [mypy, "--no-incremental", "--follow-imports=skip", "manifoldcert/_validation.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
