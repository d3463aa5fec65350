"""The README's Python example runs as written."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4  # prediction, label, radius, p_lower
    # The second example continues the first (same model and input): RDDRS with a geomstats metric.
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4 and namespace["c"].params["metric"] == "geomstats:SPDLogEuclideanMetric"
