import json

import pytest

from edge_dm.benchmark import benchmark
from edge_dm.configs import BenchmarkConfig, CalibrationConfig, QuantizeConfig, SamplingConfig
from edge_dm.errors import BenchmarkError
from edge_dm.jobs import quantize


@pytest.fixture(scope="module")
def tiny_int8(tiny_model_dir, tmp_path_factory):
    cfg = QuantizeConfig(model=tiny_model_dir, output=str(tmp_path_factory.mktemp("bq") / "int8"),
                         calibration=CalibrationConfig(num_samples=8, sampling=SamplingConfig(steps=6)), eval_trajectories=1)
    return quantize(cfg, progress=False)[0]


def test_benchmark_writes_json_markdown_and_chart(tiny_model_dir, tiny_int8, tmp_path):
    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tiny_int8.path), output=str(tmp_path / "b"),
                          iterations=5, batch_sizes=(1, 2), steps=2, images=2)
    r = benchmark(cfg, log=lambda s: None)
    names = [row["variant"] for row in r["rows"]]
    assert names[:2] == ["torch fp32 (eager)", "OpenVINO fp32"] and "OpenVINO int8" in names
    fp32 = r["rows"][1]
    assert fp32["speedup_vs_ov_fp32"] == 1.0 and fp32["effective_precision"] == "f32"
    for row in r["rows"]:
        assert row["latency_b1"]["median_ms"] > 0 and set(row["throughput"]) == {"1", "2"}
    saved = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert saved["rows"] == r["rows"]
    assert (tmp_path / "b" / "benchmark.png").stat().st_size > 0
    assert "| OpenVINO int8 |" in (tmp_path / "b" / "benchmark.md").read_text()


def test_speedup_gate_fails_with_a_clear_error(tiny_model_dir, tiny_int8, tmp_path):
    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tiny_int8.path), output=str(tmp_path / "b"),
                          iterations=3, batch_sizes=(1,), steps=1, images=1, torch_baseline=False,
                          min_int8_speedup=1000.0)
    with pytest.raises(BenchmarkError, match="below the required 1000.00x"):
        benchmark(cfg, log=lambda s: None)
    assert (tmp_path / "b" / "benchmark.json").exists()  # the numbers stay for inspection


def test_a_named_int8_bundle_that_is_missing_is_an_error(tiny_model_dir, tmp_path):
    from edge_dm.errors import BundleError

    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tmp_path / "typo"), output=str(tmp_path / "b"),
                          iterations=3, batch_sizes=(1,), steps=1, images=1, torch_baseline=False)
    with pytest.raises(BundleError, match="typo"):
        benchmark(cfg, log=lambda s: None)
    assert not (tmp_path / "b").exists()
