"""The text-to-image recipes in benchmarks/ still run against the library, on tiny pipelines the tests
build (a file of their own, so that the two test processes share the recipes' minutes)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_t2i_guidance_scores_class_accuracy_per_guidance_scale(tmp_path):
    """The guidance recipe on the tiny text-to-image pipeline and a random classifier of its two prompt
    classes: one row per guidance scale, each accuracy the fraction of images classed as prompted."""
    from tiny_sd import build_tiny_sd, build_two_class_classifier

    if not (BENCHMARKS / "t2i_guidance.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    sd = build_tiny_sd(tmp_path / "sd")
    clf = build_two_class_classifier(tmp_path / "clf")
    (tmp_path / "p.txt").write_text("a photo of a horse\na photo of a ship\n")
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "t2i_guidance.py"), "--model", str(sd), "--guidance", "1,2",
                        "--steps", "2", "--num-images", "6", "--batch-size", "4", "--prompts", str(tmp_path / "p.txt"),
                        "--classifier", str(clf), "--reference", "none", "--device", "cpu", "--output", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["guidance"], row["steps"]) for row in rows] == [(1.0, 2), (2.0, 2)]
    for row in rows:
        acc = row["class_accuracy"]
        assert acc["accuracy"] * 6 == pytest.approx(round(acc["accuracy"] * 6))  # a fraction of 6 images
        assert set(acc["by_class"]) == {"horse", "ship"} and "fid" not in row


def test_t2i_table5_rows_share_prompts_and_seeds(tmp_path):
    """The Table 5 recipe on the tiny text-to-image pipeline: every row's bundle (edge-dm's DNTC and
    pipeline calibrations and optimum-intel's two quantizations) is int8 and runs in edge-dm's loop; images come
    back whole from their parts, the fp32 row's are the Pipeline's own for seeds 0.. and prompts cycled,
    and each int8 row is scored against them. Variant rows: `dntc+vae-int8` is dntc's very UNet with a
    W8A8 VAE decoder beside it, `dntc+f32+deepcache2b0` dntc's bundle sampled at f32 with DeepCache at branch 0, each
    row's images what the Pipeline makes of its bundle with those options; an unknown variant stops
    the recipe before any work."""
    import numpy as np
    from tiny_sd import build_tiny_sd, build_two_class_classifier

    from edge_dm.bundle import Bundle
    from edge_dm.configs import DeviceConfig, SamplingConfig
    from edge_dm.pipeline import Pipeline
    from edge_dm.quantize import op_counts

    if not (BENCHMARKS / "t2i_table5.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    sd = build_tiny_sd(tmp_path / "sd")
    clf = build_two_class_classifier(tmp_path / "clf")
    prompts = ["a photo of a horse", "a photo of a ship", "a blurry photo of a horse"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    out, work = tmp_path / "t5.json", tmp_path / "w"
    args = [sys.executable, str(BENCHMARKS / "t2i_table5.py"), "all", "--workdir", str(work), "--model", str(sd),
            "--prompts", str(tmp_path / "p.txt"), "--steps", "3", "--guidance-scale", "3", "--num-images", "5",
            "--batch-size", "2", "--part-size", "3", "--num-samples", "4", "--optimum-samples", "4",
            "--iterations", "2", "--rounds", "1", "--classifier", str(clf), "--reference", "none",
            "--output", str(out), "--rows"]
    r = subprocess.run(args + ["fp32,dntc+bogus"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "unknown variant 'bogus'" in r.stderr and not work.exists()
    variants = ["dntc+vae-int8", "dntc+f32+deepcache2b0"]
    r = subprocess.run(args + [",".join(["fp32", "dntc", "pipeline", "optimum-hybrid", "optimum-int8"] + variants)],
                       capture_output=True, text=True, cwd=tmp_path)  # uniform: dntc's path, another kind
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["steps"], result["guidance_scale"]) == (3, 3.0)
    rows = {row["row"]: row for row in result["rows"]}
    bundles = [n for n in rows if n not in variants] + ["dntc+vae-int8"]
    assert ({(t["row"], t["images"]) for t in result["unet_latency"]["rows"]}
            == {(n, k) for n in bundles for k in (1, 16)})
    assert list(rows) == ["fp32", "dntc", "pipeline", "optimum-hybrid", "optimum-int8"] + variants
    assert sorted(p.name for p in (work / "images").glob("fp32.*.npz")) == ["fp32.0.npz", "fp32.1.npz"]
    for name, row in rows.items():
        assert row["num_images"] == 5 and set(row["class_accuracy"]["by_class"]) == {"horse", "ship"}
        unet = Bundle.from_pretrained(work / "bundles" / name.replace("+f32+deepcache2b0", "")).read_model()
        timestep = next(i for i in unet.inputs if i.get_partial_shape().rank.get_length() == 1)
        assert timestep.get_partial_shape().is_dynamic  # optimum's [1] re-saved as one per sample
        assert (row["ops"]["fake_quantize"] > 0) == (name != "fp32")
        assert ("drift_from_fp32" in row) == (name != "fp32")
    assert rows["optimum-hybrid"]["optimum"]["config"]["quant_method"] == "hybrid"
    assert rows["dntc"]["calibration"]["kind"] == "dntc" and rows["pipeline"]["calibration"]["kind"] == "pipeline"
    for name in ("dntc", "pipeline"):  # the fp32 row's export, not one of their own
        assert "fp32_export" in Bundle.from_pretrained(work / "bundles" / name).recipe
    dntc, vae8 = (Bundle.from_pretrained(work / "bundles" / n) for n in ("dntc", "dntc+vae-int8"))
    assert dntc.ir().with_suffix(".bin").read_bytes() == vae8.ir().with_suffix(".bin").read_bytes()
    assert op_counts(vae8.read_model("vae_decoder"))["fake_quantize"] > 0
    assert op_counts(dntc.read_model("vae_decoder"))["fake_quantize"] == 0
    assert rows["dntc+vae-int8"]["components"] == {"vae_decoder": "int8"}
    assert (rows["dntc+f32+deepcache2b0"]["images"]["cache_interval"], rows["dntc+f32+deepcache2b0"]["images"]
            ["cache_branch"]) == (2, 0)
    cycled = [prompts[i % 3] for i in range(5)]
    for name, bundle, hint, interval in (("fp32", "fp32", "f32", 1), ("dntc+vae-int8", "dntc+vae-int8", None, 1),
                                         ("dntc+f32+deepcache2b0", "dntc", "f32", 2)):  # branch 0 when cached
        images = np.concatenate([np.load(work / "images" / f"{name}.{k}.npz")["images"] for k in (0, 1)])
        pipe = Pipeline(Bundle.from_pretrained(work / "bundles" / bundle),
                        DeviceConfig(batch_size=2, precision_hint=hint))
        own = pipe.sample(5, SamplingConfig(steps=3, guidance_scale=3.0, cache_interval=interval,
                                            cache_branch=0 if interval > 1 else 1), cycled)
        np.testing.assert_array_equal(images, own)


def test_t2i_table5_takes_a_latent_consistency_model_and_its_own_sampling(tmp_path):
    """The few-step table's recipe: an LCM's optimum-intel row comes from OVLatentConsistencyModelPipeline
    and runs in edge-dm's loop; steps and guidance left out are the model's own."""
    from tiny_sd import build_tiny_lcm, build_two_class_classifier

    if not (BENCHMARKS / "t2i_table5.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    lcm = build_tiny_lcm(tmp_path / "lcm")
    clf = build_two_class_classifier(tmp_path / "clf")
    (tmp_path / "p.txt").write_text("a photo of a horse\na photo of a ship\n")
    out, work = tmp_path / "t5.json", tmp_path / "w"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "t2i_table5.py"), "all", "--workdir", str(work),
                        "--model", str(lcm), "--prompts", str(tmp_path / "p.txt"), "--rows", "fp32,optimum-int8",
                        "--num-images", "2", "--batch-size", "2", "--optimum-samples", "2", "--iterations", "1",
                        "--rounds", "1", "--classifier", str(clf), "--reference", "none", "--output", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["steps"], result["guidance_scale"]) == (4, 8.5)  # the LCM family's defaults (diffusers')
    rows = {row["row"]: row for row in result["rows"]}
    assert list(rows) == ["fp32", "optimum-int8"]
    assert rows["optimum-int8"]["ops"]["fake_quantize"] > 0 and "drift_from_fp32" in rows["optimum-int8"]


def test_lcm_search_trains_variants_at_once_and_scores_every_network(tmp_path):
    """The LCM search recipe on the tiny text-to-image teacher: two variants train side by side, each
    writing both EMAs and the online student, and the networks asked for are exported and scored at
    their own schedule and at others, each schedule once, at each guidance scale asked for; a field the
    distillation does not have, or a value it refuses, stops it before any work."""
    from tiny import write_cifar_tar
    from tiny_sd import build_tiny_sd, build_two_class_classifier

    if not (BENCHMARKS / "lcm_search.py").is_file():
        pytest.skip("benchmarks/ is not beside the tests")
    sd = build_tiny_sd(tmp_path / "sd")
    clf = build_two_class_classifier(tmp_path / "clf")
    data = write_cifar_tar(tmp_path, {"horse": 2, "ship": 2}, "labelled.tar.gz")
    (tmp_path / "p.txt").write_text("a photo of a horse\na photo of a ship\n")
    out, work = tmp_path / "s.json", tmp_path / "w"
    common = f"teacher={sd},max_steps=2,batch_size=2,guidance_dim=16,warmup_steps=1"
    args = [sys.executable, str(BENCHMARKS / "lcm_search.py"), "all", "--workdir", str(work), "--data", str(data),
            "--no-compile", "--baseline", "", "--networks", "online", "--num-images", "4", "--steps", "2",
            "--prompts", str(tmp_path / "p.txt"),
            "--classifier", str(clf), "--reference", "none", "--output", str(out)]
    r = subprocess.run(args + ["--variant", f"a:{common},bogus=1"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "unknown field 'bogus'" in r.stderr and not work.exists()
    r = subprocess.run(args + ["--variant", f"a:{common}", "--variant", f"b:{common},solver_steps=1"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == (
        "--variant b: solver_steps must be >= 2, guidance_dim an even number >= 2, huber_c >= 0")
    assert not work.exists()
    r = subprocess.run(args + ["--variant", f"a:{common}", "--schedules", "own,1"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode != 0 and "--schedules: each must be at least --steps (2)" in r.stderr and not work.exists()
    r = subprocess.run(args + ["--variant", f"a:{common}", "--guidance-scale", "2,0.5"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode != 0 and "--guidance-scale: guidance_scale must be >= 1" in r.stderr and not work.exists()
    r = subprocess.run(args + ["--variant", f"a:{common}", "--variant", f"b:{common},solver_steps=10",
                               "--schedules", "own,10", "--guidance-scale", "2,3"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(run["name"], run["returncode"], run["steps"]) for run in result["runs"]] == [("a", 0, 2), ("b", 0, 2)]
    assert json.loads((work / "runs" / "b" / "train_config.json").read_text())["solver_steps"] == 10
    assert sorted(p.name for p in (work / "runs" / "a").glob("pipeline-*")) == [
        "pipeline-0.95", "pipeline-0.999", "pipeline-online"]
    assert sorted((row["run"], row["network"], row["original_inference_steps"], row["guidance_scale"])
                  for row in result["rows"]) == [(run, "online", schedule, g) for run, schedule in
                                                 (("a", 10), ("a", 50), ("b", 10)) for g in (2.0, 3.0)]
    schedule = json.loads((work / "schedules" / "a-online-o10" / "scheduler" / "scheduler_config.json").read_text())
    assert schedule["original_inference_steps"] == 10
    assert json.loads((work / "runs" / "b" / "pipeline-online" / "scheduler" / "scheduler_config.json").read_text())[
        "original_inference_steps"] == 10
    assert all(row["class_accuracy"] * 4 == round(row["class_accuracy"] * 4) for row in result["rows"])
