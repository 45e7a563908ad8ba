import json
import re

import pytest

from edge_dm.configs import BenchmarkConfig
from edge_dm.errors import BenchmarkError, ConfigError
from edge_dm.jobs.speed import benchmark, check_gate
from edge_dm.jobs.summary import measured
from edge_dm.jobs.timing import float_baseline


@pytest.fixture(scope="module")
def tiny_int8(tiny_int8):
    return tiny_int8[0]


def test_benchmark_writes_json_markdown_and_chart(tiny_model_dir, tiny_int8, tmp_path):
    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tiny_int8.path), output=str(tmp_path / "b"),
                          iterations=5, batch_sizes=(1, 2), steps=3, images=2, cache_intervals=(2,))
    said = []
    r = benchmark(cfg, log=said.append)
    names = [row["variant"] for row in r["rows"]]
    for row in r["rows"] + r["deepcache"]:  # each row's numbers are logged as it is measured
        assert f"{row['end_to_end_s_per_image']} s an image end to end" in said[said.index(measured(row))]
    assert names[:2] == ["torch fp32 (eager)", "OpenVINO fp32"] and "OpenVINO int8" in names
    fp32 = r["rows"][1]
    assert fp32["speedup_vs_ov_fp32"] == 1.0 and fp32["effective_precision"] == "f32"
    for row in r["rows"]:
        assert row["latency_b1"]["median_ms"] > 0 and set(row["throughput"]) == {"1", "2"}
    base = next(row for row in r["rows"] if row["variant"] == r["float_baseline"])
    assert [(row["variant"], row["cache_interval"]) for row in r["deepcache"]] == [("OpenVINO int8", 2),
                                                                                    (r["float_baseline"], 2)]
    for row in r["deepcache"]:  # an unconditional model: the end-to-end run's seconds per image
        assert row["speedup_vs_float_baseline"] == pytest.approx(
            base["end_to_end_s_per_image"] / row["end_to_end_s_per_image"], abs=1e-3)
    saved = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert saved["rows"] == r["rows"] and saved["deepcache"] == r["deepcache"]
    assert (tmp_path / "b" / "benchmark.png").stat().st_size > 0
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert "| OpenVINO int8 |" in md and "DeepCache: whole images" in md


def test_speedup_gate_fails_with_a_clear_error(tiny_model_dir, tiny_int8, tmp_path):
    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tiny_int8.path), output=str(tmp_path / "b"),
                          iterations=3, batch_sizes=(1,), images=1, torch_baseline=False,
                          min_int8_speedup=dict(avx2=1000.0, vnni=1000.0, amx=1000.0))
    with pytest.raises(BenchmarkError, match=r"int8 is \d+\.\d\dx OpenVINO (fp32|bf16) \(the UNet at batch 1\), "
                                             r"below the 1000.00x required on (avx2|vnni|amx) CPUs"):
        benchmark(cfg, log=lambda s: None)
    saved = json.loads((tmp_path / "b" / "benchmark.json").read_text())  # the numbers stay for inspection
    assert saved["float_baseline"] == float_baseline(saved["machine"]["isa"])
    assert saved["sampling"]["steps"] == tiny_int8.sampling().steps  # no --steps: the model's own
    gate = saved["gate"]  # measured in turns: both medians, and their ratio the gate reads
    assert gate["rounds"] == 3 and gate["ratio"] == pytest.approx(gate["float_ms"] / gate["int8_ms"], abs=2e-3)


GATES = dict(avx2=0.7, vnni=1.5, amx=0.75)
MEASURED = "int8 is 1.40x OpenVINO fp32"


@pytest.mark.parametrize("gate, target, passes, line", [
    (GATES, "vnni", False, f"{MEASURED}, below the 1.50x required on vnni CPUs"),
    (GATES, "avx2", True, f"speed gate passed: {MEASURED}, required 0.70x on avx2 CPUs"),
    (dict(vnni=1.5), "amx", True, f"speed gate: no --min-int8-speedup for amx CPUs; {MEASURED} (not gated)"),
    (1.5, "avx2", False, "below the 1.50x required on avx2 CPUs"),  # one number: every CPU class
])
def test_the_gate_applies_the_threshold_of_this_cpu_class(gate, target, passes, line):
    cfg, lines = BenchmarkConfig(min_int8_speedup=gate), []
    if passes:
        check_gate(cfg, target, "OpenVINO fp32", 1.4, lines.append)
        assert lines == [line]
    else:
        with pytest.raises(BenchmarkError, match=re.escape(line)):
            check_gate(cfg, target, "OpenVINO fp32", 1.4, lines.append)


@pytest.mark.parametrize("intervals", [(1,), (2, 0), (2.5,), (True,)])
def test_cache_intervals_are_integers_of_at_least_2(intervals):
    with pytest.raises(ConfigError, match=r"cache_intervals must be integers >= 2 \(1 is DeepCache off\), got"):
        BenchmarkConfig(cache_intervals=intervals)
    assert BenchmarkConfig(cache_intervals=(2, 3, 5)).cache_intervals == (2, 3, 5)


def test_a_named_int8_bundle_that_is_missing_is_an_error(tiny_model_dir, tmp_path):
    from edge_dm.errors import BundleError

    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(tmp_path / "typo"), output=str(tmp_path / "b"),
                          iterations=3, batch_sizes=(1,), steps=2, images=1, torch_baseline=False)
    with pytest.raises(BundleError, match="typo"):
        benchmark(cfg, log=lambda s: None)
    assert not (tmp_path / "b").exists()
