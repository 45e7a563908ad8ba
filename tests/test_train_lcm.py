"""Latent consistency distillation (edge_dm.jobs.training_lcm): its parts against diffusers' own
schedulers, and a few steps of a run on the tiny Stable Diffusion pipeline and a few random images."""
import json
from dataclasses import replace

import numpy as np
import pytest
from tiny import write_cifar_tar
from tiny_sd import build_tiny_lcm, build_tiny_sd

from edge_dm.errors import ConfigError, ModelNotFoundError
from edge_dm.jobs.training_lcm import (
    LCMTrainConfig,
    consistency_output,
    ddim_step,
    lcm_scheduler,
    solver_timesteps,
    student_from_teacher,
    train_lcm,
)

quiet = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("teacher") / "sd")


def _teacher_pipe(path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(path)


def test_student_starts_as_the_teacher_whatever_the_guidance(teacher):
    import torch

    unet = _teacher_pipe(teacher).unet.eval()
    student = student_from_teacher(unet, 16).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999, 259])
    text = torch.randn(2, 77, 32, generator=g)
    w = torch.randn(2, 16, generator=g) * 3
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=text).sample
        got = student(x, t, encoder_hidden_states=text, timestep_cond=w).sample
        assert torch.allclose(got, want, atol=1e-6)
        student.time_embedding.cond_proj.weight.normal_()  # the embedding is wired into the prediction
        assert not torch.allclose(student(x, t, encoder_hidden_states=text, timestep_cond=w).sample, want, atol=1e-3)


def test_solver_step_is_ddim_and_consistency_is_lcm_schedulers(teacher):
    import torch
    from diffusers import DDIMScheduler

    config = _teacher_pipe(teacher).scheduler.config
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)

    ddim = DDIMScheduler.from_config(config)
    ddim.set_timesteps(50)
    lcm = lcm_scheduler(config, 50)
    alphas = lcm.alphas_cumprod
    for start in (39, 19):  # the solver's first step ends at alphas_cumprod[0], as DDIM's final step does
        a = alphas[start]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        want = ddim.step(eps, start, x, eta=0.0).prev_sample
        assert torch.allclose(ddim_step(x0, eps, alphas[max(start - 20, 0)]), want, atol=1e-5)

    for steps in (1, 2, 4, 8):  # the LCM sampler's steps are solver steps: what the student was taught at
        lcm.set_timesteps(steps)
        assert set(lcm.timesteps.tolist()) <= set(solver_timesteps(1000, 50).tolist())
    lcm.set_timesteps(4)
    for t in lcm.timesteps[:2]:
        denoised = lcm.step(eps, t, x).denoised
        assert torch.allclose(consistency_output(lcm, eps, x, t.repeat(2)), denoised, atol=1e-5)


def test_distils_resumes_and_loads_as_a_latent_consistency_pipeline(teacher, tmp_path):
    import torch
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    from edge_dm.families import for_folder

    data = write_cifar_tar(tmp_path, {"cat": 3, "ship": 3}, "labelled.tar.gz")
    run = tmp_path / "run"
    cfg = LCMTrainConfig(data=str(data), output=str(run), teacher=str(teacher), max_steps=2, batch_size=4,
                         warmup_steps=1, guidance_dim=16, lr=1e-3)
    out = train_lcm(cfg, **quiet)
    logs = []
    train_lcm(replace(cfg, max_steps=3), log=logs.append)
    assert any("resumed at step 2" in line for line in logs)
    assert json.loads((run / "train_state.json").read_text())["step"] == 3
    assert json.loads((run / "train_config.json").read_text())["guidance_range"] == [1.5, 4.5]

    pipe = LatentConsistencyModelPipeline.from_pretrained(out)
    source = _teacher_pipe(teacher)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.original_inference_steps == 50
    assert pipe.scheduler.config.beta_schedule == source.scheduler.config.beta_schedule
    assert pipe.unet.config.time_cond_proj_dim == 16
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    moved = [k for k, v in pipe.unet.state_dict().items()
             if k in source.unet.state_dict() and not torch.equal(v, source.unet.state_dict()[k].half().float())]
    assert moved  # the student trained
    online = LatentConsistencyModelPipeline.from_pretrained(run / "pipeline-online").unet.state_dict()
    assert any(not torch.equal(v, online[k]) for k, v in pipe.unet.state_dict().items())  # the target lags it
    for part in ("vae", "text_encoder"):  # the rest is the teacher's, unchanged
        for k, v in getattr(pipe, part).state_dict().items():
            assert torch.equal(v, getattr(source, part).state_dict()[k].half().float() if part == "vae"
                               else getattr(source, part).state_dict()[k]), (part, k)
    images = pipe("a photo of a cat", num_inference_steps=2, guidance_scale=3.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()
    assert for_folder(out).name == "lcm"


def test_init_goes_on_from_an_lcm_pipelines_unet(teacher, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel

    lcm = build_tiny_lcm(tmp_path / "lcm")
    start = UNet2DConditionModel.from_pretrained(lcm / "unet").state_dict()
    data = write_cifar_tar(tmp_path, {"cat": 2, "ship": 2}, "labelled.tar.gz")
    logs = []
    cfg = LCMTrainConfig(data=str(data), output=str(tmp_path / "run"), teacher=str(teacher), init=str(lcm),
                         max_steps=1, batch_size=2, warmup_steps=1, guidance_dim=32, lr=1e-9)
    train_lcm(cfg, log=logs.append)
    assert any(f"student: {lcm}'s UNet" in line for line in logs)
    online = UNet2DConditionModel.from_pretrained(tmp_path / "run" / "pipeline-online" / "unet").state_dict()
    # one step at lr 1e-9 leaves the LCM's weights (fp16 as saved), not the teacher's zero guidance projection
    assert all(torch.allclose(v, start[k].half().float(), atol=1e-3) for k, v in online.items())
    assert online["time_embedding.cond_proj.weight"].abs().max() > 0.01
    run = tmp_path / "bad"
    with pytest.raises(ConfigError, match="guidance embedding of 32, not --guidance-dim 16"):
        train_lcm(replace(cfg, output=str(run), guidance_dim=16), **quiet)
    with pytest.raises(ModelNotFoundError, match="no UNet folder"):
        train_lcm(replace(cfg, output=str(run), init=str(tmp_path)), **quiet)
    assert not run.exists()


def test_bad_teachers_and_options_are_one_clear_error_before_any_output(teacher, tmp_path):
    data = write_cifar_tar(tmp_path, {"cat": 1}, "labelled.tar.gz")
    run = tmp_path / "run"
    with pytest.raises(ModelNotFoundError, match="no diffusers pipeline folder"):
        train_lcm(LCMTrainConfig(data=str(data), output=str(run), teacher=str(tmp_path)), **quiet)
    with pytest.raises(ConfigError, match="already takes a guidance embedding"):
        train_lcm(LCMTrainConfig(data=str(data), output=str(run), teacher=str(build_tiny_lcm(tmp_path / "lcm"))),
                  **quiet)
    assert not run.exists()
    for bad in (dict(guidance_range=(0.5, 2.0)), dict(guidance_range=(3.0, 2.0)), dict(guidance_dim=15),
                dict(solver_steps=1), dict(ema_decays=(1.0,))):
        with pytest.raises(ConfigError):
            LCMTrainConfig(data="d", output="o", **bad)


def test_cli_distils(teacher, tmp_path):
    from click.testing import CliRunner

    from edge_dm.cli import main

    data = write_cifar_tar(tmp_path, {"cat": 2, "ship": 1}, "labelled.tar.gz")
    r = CliRunner().invoke(main, ["train", "--family", "lcm", "--teacher", str(teacher), "--data", str(data),
                                  "--output", str(tmp_path / "run"), "--minutes", "0.001", "--batch-size", "2",
                                  "--guidance-range", "2,4", "--solver-steps", "10"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"pipeline: {tmp_path / 'run' / 'pipeline'}"
    assert "Loading" not in r.output
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["guidance_range"] == [2.0, 4.0] and saved["solver_steps"] == 10
    r = CliRunner().invoke(main, ["train", "--family", "lcm", "--data", str(data), "--output", str(tmp_path / "r2"),
                                  "--stage", "vae"])
    assert r.exit_code != 0 and "--stage" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "--family", "lcm", "--teacher", str(teacher), "--data", str(data),
                                  "--output", str(tmp_path / "r3"), "--init", str(tmp_path)])
    assert r.exit_code != 0 and "--init" in r.output and "no UNet folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "--data", str(data), "--output", str(tmp_path / "r4"),
                                  "--solver-steps", "10"])
    assert r.exit_code != 0 and "--solver-steps is an option of --family lcm" in r.output
    assert not (tmp_path / "r4").exists()
