"""The portable recipes in benchmarks/ still run against the library (one quick one, on the tiny bundle)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_unet_throughput_writes_json_with_deepcache_parts(tiny_bundle, tmp_path):
    if not (BENCHMARKS / "unet_throughput.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "unet_throughput.py"), str(tiny_bundle.path),
                        "--request-batches", "4", "--streams", "auto", "--images", "8", "--repeats", "1",
                        "--cache-branch", "0", "--output", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {row["part"] for row in result["rows"]} == {"unet", "full", "shallow"}
    assert result["best"]["images_per_s"] > 0 and "isa" in result["machine"]
    assert set(result["cache_interval_images_per_s"]) == {str(n) for n in range(1, 9)}


@pytest.fixture(scope="module")
def tiny_int8(tiny_int8):
    return tiny_int8[0].path


def test_unet_profile_sums_layer_times_of_float_and_int8(tiny_model_dir, tiny_int8, tmp_path):
    int8 = tiny_int8
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "unet_profile.py"), "--model", tiny_model_dir,
                        "--int8", str(int8), "--batch", "2", "--runs", "2", "--output", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"bf16", "f32", "int8"}
    for row in rows.values():
        total = row["total_ms"]
        assert total > 0 and abs(sum(row["by_layer_type"].values()) - total) <= 0.05 * total + 0.1
    # int8 kernels run only in the int8 IR
    int8_kernel = lambda row: any(k.lower().endswith(("_i8", "_u8")) for k in row["by_kernel"])  # noqa: E731
    assert int8_kernel(rows["int8"]) and not int8_kernel(rows["f32"])


def test_unet_profile_under_throughput_streams_and_its_precisions(tiny_model_dir, tiny_int8, tmp_path):
    """--hint THROUGHPUT: every stream's request in flight, per-call milliseconds their mean; --precisions
    picks the IRs, and a name it does not know is refused before any work."""
    script = [sys.executable, str(BENCHMARKS / "unet_profile.py"), "--model", tiny_model_dir, "--int8", str(tiny_int8)]
    bad = subprocess.run(script + ["--precisions", "f32,fp8"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("unknown fp8 (of bf16, f32, int8)")
    out = tmp_path / "p.json"
    r = subprocess.run(script + ["--hint", "THROUGHPUT", "--precisions", "f32,int8", "--runs", "2",
                                 "--output", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"f32", "int8"}
    for row in rows.values():
        assert row["requests"] >= 1 and row["calls_per_s"] > 0 and row["images_per_s"] == row["calls_per_s"]
        total = row["total_ms"]
        assert total > 0 and abs(sum(row["by_layer_type"].values()) - total) <= 0.05 * total + 0.1


def test_groupnorm_times_each_ir_as_exported_and_as_edge_dm_compiles_it(tiny_model_dir, tiny_int8, tmp_path):
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "groupnorm.py"), "--model", tiny_model_dir, "--int8",
                        str(tiny_int8), "--batch", "2", "--rounds", "1", "--iterations", "3", "--calls", "2",
                        "--output", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert sorted((row["variant"], row["groupnorm"]) for row in rows) == sorted(
        (v, g) for v in ("bf16", "f32", "int8") for g in ("as exported", "one MVN a group"))
    assert all(row["b1_ms"] > 0 and row["images_per_s"] > 0 for row in rows)
