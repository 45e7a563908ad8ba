"""The portable recipes in benchmarks/ still run against the library (one quick one, on the tiny bundle)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_unet_throughput_writes_json_with_deepcache_parts(tiny_bundle, tmp_path):
    if not (BENCHMARKS / "unet_throughput.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "unet_throughput.py"), str(tiny_bundle.path),
                        "--request-batches", "4", "--streams", "auto", "--images", "8", "--repeats", "1",
                        "--cache-branch", "1", "--output", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {row["part"] for row in result["rows"]} == {"unet", "full", "shallow"}
    assert result["best"]["images_per_s"] > 0 and "isa" in result["machine"]
    assert set(result["cache_interval_images_per_s"]) == {str(n) for n in range(1, 9)}
