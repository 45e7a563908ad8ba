"""Latent consistency models (LCM): a Stable Diffusion UNet distilled to sample in 1-8 steps with
LCMScheduler, guided through an embedding of the guidance scale (`timestep_cond`) instead of a
classifier-free batch, as diffusers' LatentConsistencyModelPipeline runs it.

Bundles have the optimum-intel layout of `OVLatentConsistencyModelPipeline` (that of Stable
Diffusion); its UNet takes sample, timestep, encoder_hidden_states and timestep_cond. A calibration
record is the UNet's input for one image: no guidance batch.
"""
from __future__ import annotations

import numpy as np

from edge_dm.configs import SamplingConfig
from edge_dm.errors import ConfigError
from edge_dm.families.base import SAMPLE, TIMESTEP, BundleFiles, Components
from edge_dm.families.stable_diffusion import SD15, TEXT, StableDiffusion, TextConditioning, part_config

GUIDANCE_EMBEDDING = "timestep_cond"


def guidance_embedding_tensor(w, dim: int):
    """diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding of the 1-D float tensor
    `w` (one guidance weight w = guidance_scale - 1 per image), on w's device, as torch computes it there."""
    import torch

    w = (w * 1000.0).to(torch.float32)
    half = dim // 2
    emb = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device)
                    * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    emb = w[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def guidance_embedding(w: float, dim: int, count: int) -> np.ndarray:
    """The guidance embedding of one w for `count` images, float32 (see guidance_embedding_tensor)."""
    import torch

    return guidance_embedding_tensor(torch.tensor(w).repeat(count), dim).numpy()


class LCMConditioning(TextConditioning):
    """Text embeddings per image and the guidance embedding of w = guidance_scale - 1; one net input
    per image."""

    sampling_defaults = {**TextConditioning.sampling_defaults, "scheduler": "lcm", "steps": 4,
                         "guidance_scale": 8.5}  # diffusers' LCM defaults
    net_inputs_names = (SAMPLE, TIMESTEP, TEXT, GUIDANCE_EMBEDDING)
    guided = False  # the guidance goes into the UNet, not into a classifier-free batch

    def check_sampling(self, bundle: BundleFiles, sampling: SamplingConfig) -> None:
        super().check_sampling(bundle, sampling)
        if sampling.negative_prompt:
            raise ConfigError("a latent consistency model takes no `negative_prompt`: it was distilled from "
                              "guidance against the empty prompt")

    def encode(self, parts: Components, prompts: list, sampling: SamplingConfig) -> dict | None:
        cond = super().encode(parts, prompts, sampling)
        if cond is None:
            return None
        g = self.sampling_defaults["guidance_scale"] if sampling.guidance_scale is None else sampling.guidance_scale
        dim = part_config(parts.path, "unet")["time_cond_proj_dim"]
        cond[GUIDANCE_EMBEDDING] = guidance_embedding(g - 1, dim, len(prompts))
        return cond


class LatentConsistency(StableDiffusion):
    name = "lcm"
    architectures = ("lcm-sd15",)
    conditioning = LCMConditioning()
    pipeline_classes = ("LatentConsistencyModelPipeline", "StableDiffusionPipeline")
    optimum_class = "OVLatentConsistencyModelPipeline"

    def takes_unet(self, unet_config: dict) -> bool:
        return bool(unet_config.get("time_cond_proj_dim"))

    def random_pipeline(self, arch: str):
        """SD 1.5's architecture with LCM's guidance embedding (256) and LCMScheduler, seeded random weights."""
        import torch
        from diffusers import LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel

        sd = super().random_pipeline("sd15")
        torch.manual_seed(1)
        scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 num_train_timesteps=1000, set_alpha_to_one=True, steps_offset=1)
        return LatentConsistencyModelPipeline(
            vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, scheduler=scheduler,
            unet=UNet2DConditionModel(**SD15["unet"], time_cond_proj_dim=256), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
