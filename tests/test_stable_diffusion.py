"""The text-to-image family on a tiny Stable Diffusion pipeline the test builds (tests/tiny_sd.py):
export through optimum-intel, DNTC, NNCF, generate, and both OpenVINO loaders, for real, offline."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_sd import IMAGE

from edge_dm.cli import main
from edge_dm.configs import GenerateConfig, SamplingConfig
from edge_dm.errors import ConfigError, DataError

PROMPT = "a photo of a horse"
STEPS = 4


def diffusers_latents(sd_dir, prompts, seeds, guidance, steps=STEPS):
    """Latents of diffusers' own StableDiffusionPipeline (torch) after each step, per image."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir)
    seen = []
    pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=IMAGE, width=IMAGE,
         generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent",
         callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].clone()) or {},
         callback_on_step_end_tensor_inputs=["latents"])
    return seen


def test_edge_dm_loop_equals_diffusers_pipeline(sd_dir, sd_fp32):
    """edge-dm's own loop on the fp32 OpenVINO UNet, with guidance, gives diffusers' latents."""
    from edge_dm.configs import DeviceConfig
    from edge_dm.pipeline import Pipeline
    from edge_dm.sampling import generate, make_scheduler

    pipe = Pipeline(sd_fp32, DeviceConfig(precision_hint="f32"))
    s = sd_fp32.sampling(SamplingConfig(steps=STEPS, seed=3, guidance_scale=5.0))
    cond = pipe.conditioning.encode(pipe.components, [PROMPT, "a red car"], s)
    ours = generate(pipe.denoiser(s), make_scheduler("ddim", pipe.bundle.scheduler_config), 2, 2, STEPS, 3,
                    pipe.conditioning.sample_shape(pipe.bundle, s), cond=cond)
    ref = diffusers_latents(sd_dir, [PROMPT, "a red car"], [3, 4], 5.0)[-1].numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("runtime", [dict(batch_size=2), dict(batch_size=5), dict(batch_size=3, parallel=2)])
def test_an_image_depends_on_its_seed_not_on_the_batching(sd_fp32, runtime):
    """As tests/test_pipeline.py asks of the unconditional UNet, with prompts and guidance: one batch
    of 5 runs on one stream of all cores, batches of 1 or 2 on the device's several streams."""
    from edge_dm.configs import DeviceConfig
    from edge_dm.pipeline import Pipeline

    prompts = [PROMPT, "a photo of a ship", "a blurry photo of a horse", PROMPT, "a photo of a ship"]
    s = SamplingConfig(steps=2, seed=10, guidance_scale=3.0)
    reference = Pipeline(sd_fp32, DeviceConfig(batch_size=1, precision_hint="f32")).sample(5, s, prompts)
    images = Pipeline(sd_fp32, DeviceConfig(precision_hint="f32", **runtime)).sample(5, s, prompts)
    np.testing.assert_array_equal(images, reference)  # byte-identical pixels
    tail = Pipeline(sd_fp32, DeviceConfig(precision_hint="f32", **runtime)).sample(2, s.replace(seed=13), prompts[3:])
    np.testing.assert_array_equal(tail, reference[3:])  # seeds 13, 14 alone: the same images


def test_each_dntc_record_equals_an_independent_pipeline_run(sd_dir, sd_int8):
    """Record k is the UNet's whole input at its step: [x, x], [t, t], [uncond, text] of a diffusers
    run from the same seed and prompt (lane j: seed j, prompt j of the file)."""
    from edge_dm.calibration import CalibrationSet, assign_lanes

    bundle, _ = sd_int8
    cal = CalibrationSet.load(bundle.path / "calibration.npz")
    prompts = ["a photo of a horse", "a red car", "a blurry photo of a ship"]
    assert cal.inputs["sample"].shape[1] == 2 and cal.inputs["encoder_hidden_states"].shape[1:] == (2, 77, 32)
    for lane, members in enumerate(assign_lanes(cal.step, 4)):
        from diffusers.utils.torch_utils import randn_tensor

        after = diffusers_latents(sd_dir, [prompts[lane % 3]], [lane], 7.5)
        start = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(lane))
        for k in members:
            step = int(cal.step[k])
            x = (start if step == 0 else after[step - 1])[0].numpy()
            rec = cal.record(k)
            np.testing.assert_allclose(rec["sample"][0], x, atol=1e-4)
            np.testing.assert_array_equal(rec["sample"][0], rec["sample"][1])
            assert rec["timestep"][0] == rec["timestep"][1] == cal.t[k]
            # unconditional half first, as diffusers orders it; the text half differs
            assert np.abs(rec["encoder_hidden_states"][0] - rec["encoder_hidden_states"][1]).max() > 1e-3


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


def test_int8_folder_runs_unchanged_in_optimum_intel(sd_int8):
    from optimum.intel import OVStableDiffusionPipeline

    bundle, _ = sd_int8
    pipe = OVStableDiffusionPipeline.from_pretrained(str(bundle.path))
    image = pipe(PROMPT, num_inference_steps=2, height=IMAGE, width=IMAGE, output_type="np").images[0]
    assert image.shape == (IMAGE, IMAGE, 3) and np.isfinite(image).all()


def test_int8_folder_runs_unchanged_in_openvino_genai(sd_int8):
    genai = pytest.importorskip("openvino_genai")
    bundle, _ = sd_int8
    image = genai.Text2ImagePipeline(str(bundle.path), "CPU").generate(PROMPT, num_inference_steps=2, width=IMAGE,
                                                                        height=IMAGE)
    assert image.data.shape == (1, IMAGE, IMAGE, 3)


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


@pytest.mark.parametrize("args,message", [
    (["--prompt", "a horse", "--model", "UNCOND"], "takes no prompt"),
    ([], "give --prompt"),
    (["--prompt", "a horse", "--height", "36"], "multiple of 8"),
    (["--prompt", "a horse", "--guidance-scale", "0.5"], "guidance-scale must be >= 1"),
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
    from edge_dm.classifier import build_classifier, load_classifier, predict, save_classifier
    from edge_dm.configs import DeviceConfig, EvaluateConfig
    from edge_dm.jobs.evaluation import evaluate
    from edge_dm.pipeline import Pipeline

    bundle, _ = sd_int8
    torch.manual_seed(0)
    folder = save_classifier(build_classifier((8, 16), 2), tmp_path / "clf", (8, 16), ["horse", "ship"], IMAGE)
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


def test_benchmark_times_the_unet_at_the_pipelines_batch(sd_dir, sd_int8, tmp_path):
    from edge_dm.configs import BenchmarkConfig
    from edge_dm.jobs.speed import benchmark

    bundle, _ = sd_int8
    r = benchmark(BenchmarkConfig(model=sd_dir, int8=str(bundle.path), output=str(tmp_path / "b"), iterations=2,
                                  batch_sizes=(1,), steps=2, images=1, torch_baseline=False), log=lambda s: None)
    rows = {row["variant"]: row for row in r["rows"]}
    assert r["family"] == "stable-diffusion" and rows["OpenVINO int8"]["net_batch"] == 2  # guidance doubles it
    assert rows["OpenVINO fp32"]["end_to_end_s_per_image"] > 0 and r["int8_speedup_vs_float_baseline"] > 0
    assert (tmp_path / "b" / "benchmark.md").exists()


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
