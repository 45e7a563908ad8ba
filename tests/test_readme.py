"""The README's Python example runs as written, on the shipped model (about a minute on 2 cores)."""
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_python_example_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## In Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    from PIL import Image

    assert Image.open(tmp_path / "seed-0.png").size == (32, 32)
    assert (tmp_path / "int8" / "recipe.json").exists() and (tmp_path / "int8" / "unet_fp32.xml").exists()
