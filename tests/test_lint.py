"""ruff's lint of pyproject.toml's [tool.ruff] (pycodestyle's E and W with 120-character lines, pyflakes' F,
isort's I), kept by every test run rather than by hand. ruff is in the `test` extra, so a missing ruff fails
here instead of skipping."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "edge_dm", "benchmarks", "tests"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
