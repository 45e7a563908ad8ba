import json

import pytest
from click.testing import CliRunner

from edge_dm.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_export_then_generate(tiny_model_dir, tmp_path):
    r = run("export", "--model", tiny_model_dir, "--output", tmp_path / "b")
    assert r.exit_code == 0, r.output
    r = run("generate", "--model", tmp_path / "b", "--num-images", 3, "--batch-size", 3, "--steps", 3,
            "--output", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert "images/s" in r.output and (tmp_path / "s" / "00002.png").exists()


@pytest.mark.parametrize("args", [
    ["export", "--model", "/no/such/model", "--output", "OUT"],
    ["generate", "--model", "/no/such/bundle", "--output", "OUT"],
    ["generate", "--num-images", "-2", "--output", "OUT"],
    ["generate", "--device", "NPU7", "--output", "OUT"],
    ["generate", "--parallel", "0", "--output", "OUT"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--parallel", "-2"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--feature-device", "gpu9"],
    ["generate", "--cache-interval", "0", "--output", "OUT"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--cache-branch", "0"],
    ["benchmark", "--min-int8-speedup", "avx512=2", "--output", "OUT"],
    ["benchmark", "--min-int8-speedup", "vnni=fast", "--output", "OUT"],
    ["benchmark", "--min-int8-speedup", "amx=-1", "--output", "OUT"],
    ["benchmark", "--cache-intervals", "2,1", "--output", "OUT"],
    ["benchmark", "--cache-intervals", "2,x", "--output", "OUT"],
])
def test_bad_input_is_one_line_and_nonzero(args, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = run(*args)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["generate", "--scheduler", "lms9", "--output", "OUT"],
    ["quantize", "--calibration", "gauss", "--output", "OUT"],
    ["quantize", "--target", "sse4", "--output", "OUT"],
    ["generate", "--steps", "many", "--output", "OUT"],
])
def test_usage_errors_exit_2_and_end_in_one_error_line(args, tmp_path):
    r = run(*[str(tmp_path / "out") if a == "OUT" else a for a in args])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("Error:"), r.output
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_generate_with_deepcache(tiny_bundle, tmp_path):
    args = ["generate", "--model", tiny_bundle.path, "--num-images", 2, "--steps", 4, "--cache-interval", 2]
    r = run(*args, "--output", tmp_path / "s")
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "s" / "generate.json").read_text())["config"]["sampling"]
    assert (written["cache_interval"], written["cache_branch"]) == (2, 0)  # the model's branch
    r = run(*args, "--cache-branch", 2, "--output", tmp_path / "t")  # the tiny UNet has 2 up blocks
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: cache branch must lie in [0, 1] for this UNet, got 2"), r.output
    assert not (tmp_path / "t").exists()


def test_benchmark_refuses_a_cache_interval_as_long_as_the_run_before_any_work(tiny_model_dir, tiny_int8, tmp_path):
    r = run("benchmark", "--model", tiny_model_dir, "--int8", tiny_int8[0].path, "--cache-intervals", "2,5",
            "--steps", 4, "--output", tmp_path / "b")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert lines[0].startswith("Error: cache_interval 5 leaves no step after the first"), r.output
    assert not (tmp_path / "b").exists()


def test_unknown_device_with_a_real_bundle(tiny_bundle, tmp_path):
    r = run("generate", "--model", tiny_bundle.path, "--device", "GPU.7", "--output", tmp_path / "o")
    assert r.exit_code == 1 and "available: CPU" in r.output


def test_models_and_devices_list():
    assert "edm-cifar10-ddpm" in run("models").output
    assert "CPU" in run("devices").output


def test_evaluate_folder_against_a_folder_reference_caches_the_stats(tmp_path):
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("samples", "ref"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    args = ["evaluate", "--samples", tmp_path / "samples", "--reference", tmp_path / "ref", "--output",
            tmp_path / "r.json"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "FID" in r.output and "SFID" in r.output and "IS    n/a" in r.output
    assert "note: 3 images are not more than the Inception features' dimensions (FID 2048, sFID 2023)" in r.output
    cached = list((Path(os.environ["EDGE_DM_HOME"]) / "stats").glob("*.npz"))
    assert len(cached) == 1
    assert "rank-deficient" in json.loads((tmp_path / "r.json").read_text())["caveat"]


def test_evaluate_missing_samples_is_one_line(tmp_path):
    r = run("evaluate", "--samples", tmp_path / "none", "--reference", tmp_path / "none.npz")
    assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1


def test_every_option_default_is_its_configs_default():
    """The CLI takes defaults from the configs; an option whose name is a config field must agree."""
    import dataclasses

    from edge_dm import configs
    from edge_dm.jobs.training import TrainConfig

    classes = {
        "export": [configs.ExportConfig],
        "generate": [configs.GenerateConfig, configs.SamplingConfig, configs.DeviceConfig],
        "evaluate": [configs.EvaluateConfig, configs.SamplingConfig, configs.DeviceConfig],
        "quantize": [configs.QuantizeConfig, configs.CalibrationConfig, configs.SamplingConfig],
        "benchmark": [configs.BenchmarkConfig],
        "train": [TrainConfig],
    }
    checked = 0
    for command, config_classes in classes.items():
        fields = {}
        for cls in config_classes:
            for f in dataclasses.fields(cls):
                fields.setdefault(f.name, configs.default(cls, f.name))
        for param in main.commands[command].params:
            if param.name in fields and not param.multiple and not param.is_flag:
                want = fields[param.name]
                if want is dataclasses.MISSING:  # a required field: the option is required too
                    assert param.required, (command, param.name)
                    continue
                got = None if param.default is None or "UNSET" in repr(param.default) else param.default
                if isinstance(want, tuple):  # a list option written as text, e.g. --batch-sizes 1,8,32 ("": none)
                    got = tuple(type(want[0])(v) for v in str(got).split(",")) if got else ()
                elif want is not None and got is not None:
                    got = type(want)(got)
                assert got == want, (command, param.name, got, want)
                checked += 1
    assert checked >= 40
