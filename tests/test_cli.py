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
    ["generate", "--scheduler", "lms9", "--output", "OUT"],
    ["generate", "--device", "NPU7", "--output", "OUT"],
    ["generate", "--parallel", "0", "--output", "OUT"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--parallel", "-2"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--feature-device", "gpu9"],
    ["generate", "--cache-interval", "0", "--output", "OUT"],
    ["evaluate", "--samples", "OUT", "--reference", "x.npz", "--cache-branch", "0"],
])
def test_bad_input_is_one_line_and_nonzero(args, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = run(*args)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_generate_with_deepcache(tiny_bundle, tmp_path):
    args = ["generate", "--model", tiny_bundle.path, "--num-images", 2, "--steps", 4, "--cache-interval", 2]
    r = run(*args, "--output", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert '"cache_interval": 2' in (tmp_path / "s" / "generate.json").read_text()
    r = run(*args, "--cache-branch", 2, "--output", tmp_path / "t")  # the tiny UNet has 2 up blocks
    assert r.exit_code == 1 and r.output.startswith("Error: cache branch must lie in [1, 1]"), r.output
    assert not (tmp_path / "t").exists()


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
    cached = list((Path(os.environ["EDGE_DM_HOME"]) / "stats").glob("*.npz"))
    assert len(cached) == 1
    assert (tmp_path / "r.json").exists()


def test_evaluate_missing_samples_is_one_line(tmp_path):
    r = run("evaluate", "--samples", tmp_path / "none", "--reference", tmp_path / "none.npz")
    assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1
