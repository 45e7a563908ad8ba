"""The text-to-image family on a tiny Stable Diffusion pipeline the tests build (tests/tiny_sd.py):
what tests/test_contracts.py does not check for every family (the bundle's layout and report, class
accuracy, the benchmark of a guided UNet), for real, offline."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_sd import build_two_class_classifier

from edge_dm.cli import main
from edge_dm.configs import GenerateConfig, SamplingConfig
from edge_dm.errors import ConfigError, DataError

PROMPT = "a photo of a horse"
STEPS = 4


def test_int8_bundle_layout_recipe_and_report(sd_int8):
    from edge_dm.quantize import op_counts

    bundle, summary = sd_int8
    for rel in ("model_index.json", "unet/openvino_model.xml", "text_encoder/openvino_model.xml",
                "vae_decoder/openvino_model.xml", "vae_encoder/openvino_model.xml", "scheduler/scheduler_config.json",
                "tokenizer/openvino_tokenizer.xml", "tokenizer/openvino_detokenizer.xml", "recipe.json",
                "calibration.npz", "report.png"):
        assert (bundle.path / rel).exists(), rel
    recipe = json.loads((bundle.path / "recipe.json").read_text())
    assert recipe["family"] == "stable-diffusion" and recipe["precision"] == "int8"
    assert op_counts(bundle.read_model())["fake_quantize"] > 0
    assert op_counts(bundle.read_model("text_encoder"))["fake_quantize"] == 0  # stays float by default
    assert summary["calibration_samples"] == 8 and len(summary["noise_prediction_rel_l2"]) == STEPS


def test_generate_by_prompt_same_seed_same_image(sd_int8, tmp_path):
    from edge_dm.jobs import generate

    bundle, _ = sd_int8
    s = SamplingConfig(steps=STEPS, seed=5)
    a = generate(GenerateConfig(model=str(bundle.path), output=str(tmp_path / "a"), num_images=3, prompts=(PROMPT,),
                                sampling=s), progress=False)
    generate(GenerateConfig(model=str(bundle.path), output=str(tmp_path / "b"), num_images=1, prompts=(PROMPT,),
                            sampling=s.replace(seed=6)), progress=False)
    assert a["images"] == 3 and (tmp_path / "a" / "grid.png").exists()
    assert (tmp_path / "a" / "00006.png").read_bytes() == (tmp_path / "b" / "00006.png").read_bytes()


@pytest.mark.parametrize("args,message", [  # more in tests/test_contracts.py, for every family
    (["--prompt", "a horse", "--guidance-scale", "0.5"], "--guidance-scale must be >= 1"),
    (["--prompts", "EMPTY"], "holds no prompt"),
])
def test_bad_text_to_image_input_is_one_line_and_writes_nothing(sd_int8, tiny_bundle, tmp_path, args, message):
    bundle, _ = sd_int8
    (tmp_path / "empty.txt").write_text("\n\n")
    args = [str(tiny_bundle.path) if a == "UNCOND" else str(tmp_path / "empty.txt") if a == "EMPTY" else a
            for a in args]
    if "--model" not in args:
        args = ["--model", str(bundle.path), *args]
    r = CliRunner().invoke(main, ["generate", *args, "--steps", "2", "--output", str(tmp_path / "out")])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert not (tmp_path / "out").exists()


def test_class_accuracy_scores_each_image_against_its_prompts_class(sd_int8, tmp_path):
    """evaluate --classifier: image i against the class prompt i names (prompts cycling), the same as
    running the classifier on the pipeline's own images; a prompt naming no class fails before any work."""
    from edge_dm.classifier import load_classifier, predict
    from edge_dm.configs import DeviceConfig, EvaluateConfig
    from edge_dm.jobs.evaluation import evaluate
    from edge_dm.pipeline import Pipeline

    bundle, _ = sd_int8
    folder = build_two_class_classifier(tmp_path / "clf")
    prompts, s = ("a photo of a horse", "a blurry photo of a ship"), SamplingConfig(steps=2, seed=3)
    r = evaluate(EvaluateConfig(samples=str(bundle.path), classifier=str(folder), prompts=prompts, num_images=5,
                                sampling=s, runtime=DeviceConfig(batch_size=2)), progress=False)
    images = Pipeline(bundle).sample(5, s, [prompts[i % 2] for i in range(5)])
    right = predict(load_classifier(folder)[0], images) == np.array([0, 1, 0, 1, 0])
    assert r["class_accuracy"] == dict(accuracy=float(right.mean()),
                                       by_class=dict(horse=float(right[::2].mean()), ship=float(right[1::2].mean())))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", "--samples", str(bundle.path), "--classifier", str(folder),
                                    "--prompt", "a red car", "--num-images", "2", "--output", str(out)])
    assert res.exit_code == 1 and res.output.startswith("Error: the prompt 'a red car' names none"), res.output
    res = CliRunner().invoke(main, ["evaluate", "--samples", str(bundle.path), "--classifier", str(tmp_path / "none"),
                                    "--prompt", PROMPT, "--num-images", "2", "--output", str(out)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "no classifier there" in res.output
    assert not out.exists()


def test_prompt_file_errors():
    from edge_dm.families.stable_diffusion import read_prompts

    with pytest.raises(DataError, match="cannot read"):
        read_prompts("/no/such/prompts.txt")
    with pytest.raises(ConfigError, match="guidance"):
        SamplingConfig(guidance_scale=0.9)


@pytest.mark.e2e
def test_benchmark_times_the_unet_at_the_pipelines_batch(sd_dir, sd_int8, tmp_path):
    from edge_dm.configs import BenchmarkConfig
    from edge_dm.jobs.speed import benchmark

    bundle, _ = sd_int8  # no model given: the float variants are the int8 bundle's own model
    c, h, w = bundle.sample_shape
    f = bundle.family.conditioning.vae_scale(bundle.path)
    size = dict(height=2 * h * f, width=w * f)  # not the model's own size
    r = benchmark(BenchmarkConfig(int8=str(bundle.path), output=str(tmp_path / "b"), iterations=2,
                                  batch_sizes=(1,), steps=2, images=2, torch_baseline=False, **size),
                  log=lambda s: None)
    rows = {row["variant"]: row for row in r["rows"]}
    assert r["model"] == bundle.recipe["model"] == sd_dir
    assert r["family"] == "stable-diffusion" and rows["OpenVINO int8"]["net_batch"] == 2  # guidance doubles it
    assert all(row["sample_shape"] == [c, 2 * h, w] for row in rows.values()) and r["sampling"]["steps"] == 2
    assert rows["OpenVINO fp32"]["end_to_end_s_per_image"] > 0 and r["int8_speedup_vs_float_baseline"] > 0
    assert all(row["image"]["images_per_s_throughput"] > 0 for row in rows.values())  # 2 images in flight
    assert (tmp_path / "b" / "benchmark.md").exists()


@pytest.mark.e2e
def test_benchmark_times_whole_images_with_deepcache(sd_int8, tmp_path):
    """--cache-intervals: int8 and the float baseline with DeepCache, each image's UNet calls whole
    every `interval` steps and shallow between, and the speed-up on the float baseline without it."""
    from edge_dm.configs import BenchmarkConfig
    from edge_dm.jobs.speed import benchmark
    from edge_dm.jobs.timing import float_baseline
    from edge_dm.targets import cpu_info

    bundle, _ = sd_int8
    baseline, steps, interval = float_baseline(cpu_info()[1]), 3, 2
    only = ("bf16",) if baseline == "OpenVINO bf16" else ("f32",)  # the float baseline's own row, no other
    r = benchmark(BenchmarkConfig(int8=str(bundle.path), output=str(tmp_path / "b"), iterations=2, batch_sizes=(1,),
                                  steps=steps, images=1, torch_baseline=False, float_precisions=only,
                                  cache_intervals=(interval,)), log=lambda s: None)  # the family's branch: 0
    rows = {row["variant"]: row for row in r["rows"]}
    cached = {row["variant"]: row for row in r["deepcache"]}
    assert len(r["deepcache"]) == 2 and set(cached) == {"OpenVINO int8", baseline}
    assert cached["OpenVINO int8"]["precision_hint"] == rows["OpenVINO int8"]["precision_hint"]
    for row in cached.values():  # one image, one UNet call a step (guidance batches its two inputs)
        im = row["image"]
        assert (row["cache_interval"], row["cache_branch"]) == (interval, 0) and im["seconds"] > 0
        assert row["end_to_end_s_per_image"] == im["seconds"] and im["images_per_s_throughput"] is None  # 1 image
        assert im["unet_calls"] == steps and im["unet_full_calls"] == len(range(0, steps, interval))
        assert row["speedup_vs_float_baseline"] == pytest.approx(rows[baseline]["image"]["seconds"] / im["seconds"],
                                                                 abs=1e-3)
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["deepcache"] == r["deepcache"]
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert "DeepCache: whole images (branch 0)" in md and f"| OpenVINO int8 | {interval} |" in md


def test_deepcache_branch_0_cuts_the_ir_where_the_torch_reference_does(sd_dir, sd_fp32):
    """Branch 0 (DeepCache's own SD setting): the cache is the state entering the last up block's last
    layer, here a cross-attention block's output. The OpenVINO split equals diffusers' UNet hooked at
    the same place, on a cache from another step too; the shallow IR keeps none of the deeper blocks."""
    import torch
    from diffusers import UNet2DConditionModel

    from edge_dm.caching import OpenVINOCachedNet, TorchCachedNet

    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet").eval()
    ov_net = OpenVINOCachedNet(sd_fp32.read_model(), 0, sd_fp32.family, precision_hint="f32")
    ref = TorchCachedNet(unet, 0)
    g = np.random.default_rng(0)

    def inputs(t):
        return dict(sample=g.standard_normal((2, 4, 8, 8)).astype(np.float32), timestep=np.array([t, t], np.int64),
                    encoder_hidden_states=g.standard_normal((2, 77, 32)).astype(np.float32))

    old, new = inputs(800), inputs(600)
    ov_eps, ov_cache = ov_net.run_full(old)
    torch_eps, torch_cache = ref.run_full(old)
    assert ov_cache.shape == (2, 32, 8, 8)  # full resolution, the last up block's width
    np.testing.assert_allclose(ov_cache, torch_cache, atol=1e-4)
    np.testing.assert_allclose(ov_eps, torch_eps, atol=1e-4)
    np.testing.assert_allclose(ov_net.run_shallow(new, ov_cache), ref.run_shallow(new, torch_cache), atol=1e-4)
    with torch.no_grad():  # and a stale cache does change the prediction
        fresh = ref.run(new)[0]
    assert np.abs(ov_net.run_shallow(new, ov_cache) - fresh).max() > 1e-3
    kept = {op.get_friendly_name().split("/")[0] for op in ov_net.shallow_net.model.get_ops()
            if op.get_type_name() == "Convolution"}
    assert not any("down_blocks" in n or "up_blocks.0" in n or "mid_block" in n for n in kept), kept


def test_benchmark_refuses_an_int8_bundle_of_another_model_before_any_work(sd_int8, tiny_model_dir, tmp_path):
    """... and a size the model cannot take."""
    from edge_dm.configs import BenchmarkConfig
    from edge_dm.errors import BenchmarkError, ConfigError
    from edge_dm.jobs.speed import benchmark

    bundle, _ = sd_int8
    cfg = BenchmarkConfig(model=tiny_model_dir, int8=str(bundle.path), output=str(tmp_path / "b"))
    with pytest.raises(BenchmarkError, match="quantized from .* not model"):
        benchmark(cfg, log=lambda s: None)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="height 13 does not suit this model"):
        benchmark(cfg.replace(model=None, height=13), log=lambda s: None)
    assert not (tmp_path / "b").exists()


@pytest.mark.e2e
def test_t2i_options_recipe_compares_options_on_one_calibration_set(sd_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "benchmarks" / "t2i_options.py"
    if not recipe.is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    out = tmp_path / "o.json"
    r = subprocess.run([sys.executable, str(recipe), "--model", sd_dir, "--steps", "3", "--num-samples", "4",
                        "--samples-per-trajectory", "4", "--iterations", "2", "--output", str(out),
                        "--only", "defaults,performance-spr-sdpa-float"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["OpenVINO f32", "OpenVINO bf16", "defaults", "performance-spr-sdpa-float"]
    assert rows["OpenVINO f32"]["speedup_vs_f32"] == 1.0
    for name in ("defaults", "performance-spr-sdpa-float"):
        assert rows[name]["mean_rel_l2"] > 0 and rows[name]["e2e_s_per_image"] > 0
        assert rows[name]["profile"]["by_layer_type"]
    # the attention inputs stay float in the second option: fewer quantizers than the defaults
    assert rows["performance-spr-sdpa-float"]["ops"]["fake_quantize"] < rows["defaults"]["ops"]["fake_quantize"]
