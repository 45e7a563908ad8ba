"""One entry per model family for the shared contract tests (tests/test_contracts.py): how to build a
tiny seeded model of it, how diffusers runs that model (the reference), and what to sample with.

A new family gets every contract test by adding its Case here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

PROMPTS = ("a photo of a horse", "a red car", "a blurry photo of a ship")


@dataclass(frozen=True)
class Case:
    family: str
    build: Callable[[Path], Path]  # writes the tiny model's diffusers folder at the path, returns it
    pipeline: str  # the diffusers pipeline class that runs it
    steps: int  # sampling steps in the tests (the model's scheduler)
    prompts: tuple = ()  # () for unconditional models
    guidance: float | None = None  # None: the model's default
    sampling: dict = field(default_factory=dict)  # other SamplingConfig options for every test
    bad: tuple = ()  # (CLI args to generate, a part of the one error line it must print)


def _unet2d(path: Path) -> Path:
    from tiny import build_tiny_unet, save_pipeline

    return save_pipeline(build_tiny_unet(seed=0), path)


def _sd(path: Path) -> Path:
    from tiny_sd import build_tiny_sd

    return build_tiny_sd(path)


def _lcm(path: Path) -> Path:
    from tiny_sd import build_tiny_lcm

    return build_tiny_lcm(path)


def _sdxl_turbo(path: Path) -> Path:
    from tiny_sd import build_tiny_sdxl

    return build_tiny_sdxl(path, turbo=True)


CASES = {c.family: c for c in [
    Case("unet2d", _unet2d, "DDIMPipeline", steps=5, sampling=dict(scheduler="ddim"),
         bad=((["--prompt", "a horse"], "takes no prompt"), (["--guidance-scale", "3"], "--guidance-scale is for"),
              (["--steps", "2000"], "--steps 2000 is more than"))),
    Case("stable-diffusion", _sd, "StableDiffusionPipeline", steps=3, prompts=PROMPTS, guidance=5.0,
         bad=(([], "give --prompt"), (["--prompt", "a horse", "--height", "36"], "multiple of 8"),
              (["--prompt", "a horse", "--steps", "1"], "first timestep"))),
    Case("lcm", _lcm, "LatentConsistencyModelPipeline", steps=3, prompts=PROMPTS,
         bad=((["--prompt", "a horse", "--negative-prompt", "blur"], "takes no --negative-prompt"),
              (["--prompt", "a horse", "--steps", "60"], "cannot run 60 --steps"))),
    Case("sdxl", _sdxl_turbo, "StableDiffusionXLPipeline", steps=2, prompts=PROMPTS, guidance=2.0,
         sampling=dict(scheduler="euler-ancestral"),
         bad=((["--prompt", "a horse", "--width", "30"], "multiple of 8"),)),
]}


def reference_images(case: Case, model_dir, seeds, prompts, sampling) -> np.ndarray:
    """uint8 NHWC images of diffusers' own pipeline for the tiny model, one generator per image."""
    import diffusers

    pipe = getattr(diffusers, case.pipeline).from_pretrained(model_dir)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    if case.family == "unet2d":
        from edge_dm.sampling import make_scheduler

        pipe = diffusers.DDIMPipeline(unet=pipe.unet, scheduler=make_scheduler("ddim", dict(pipe.scheduler.config)))
        images = pipe(batch_size=len(seeds), generator=gens, num_inference_steps=sampling.steps, eta=0.0,
                      output_type="np").images
    else:
        pipe.scheduler = getattr(diffusers, _scheduler_class(sampling.scheduler)).from_config(pipe.scheduler.config)
        size = dict(height=sampling.height, width=sampling.width) if sampling.height else {}
        images = pipe(list(prompts), num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale,
                      generator=gens, output_type="np", **size).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def _scheduler_class(name: str) -> str:
    from edge_dm.configs import SCHEDULERS

    return SCHEDULERS[name]


def reference_unet_inputs(case: Case, model_dir, seed: int, prompt: str | None, sampling) -> list[dict]:
    """The UNet's inputs at each step of diffusers' pipeline for one image (seed, prompt), named as
    edge-dm's net inputs: what a calibration record at that step must equal."""
    import diffusers

    pipe = getattr(diffusers, case.pipeline).from_pretrained(model_dir)
    seen = []

    def hook(module, args, kwargs):
        named = dict(kwargs)
        for name, value in zip(("sample", "timestep", "encoder_hidden_states"), args):
            named[name] = value
        named.update(named.pop("added_cond_kwargs", None) or {})
        out = {}
        for k, v in named.items():
            if isinstance(v, torch.Tensor):
                out[k] = v.detach().numpy().copy()
        seen.append(out)

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    gens = [torch.Generator().manual_seed(seed)]
    if case.family == "unet2d":
        from edge_dm.sampling import make_scheduler

        ddim = diffusers.DDIMPipeline(unet=pipe.unet, scheduler=make_scheduler("ddim", dict(pipe.scheduler.config)))
        ddim(batch_size=1, generator=gens, num_inference_steps=sampling.steps, eta=0.0, output_type="np")
    else:
        pipe.scheduler = getattr(diffusers, _scheduler_class(sampling.scheduler)).from_config(pipe.scheduler.config)
        pipe([prompt], num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale, generator=gens,
             output_type="latent")
    return seen
