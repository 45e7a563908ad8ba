"""Stable Diffusion XL and SDXL-Turbo: a UNet conditioned on two CLIP text encoders (their
penultimate hidden states side by side) and on added text-and-time embeddings (the second encoder's
pooled, projected output, and the image's size and crop), as diffusers' StableDiffusionXLPipeline
runs it. Turbo models are the same pipeline distilled to 1-4 steps without guidance.

Bundles have the optimum-intel layout of `OVStableDiffusionXLPipeline` (text_encoder/, text_encoder_2/,
tokenizer/, tokenizer_2/, unet/, vae_decoder/, vae_encoder/, scheduler/); its UNet takes sample,
timestep, encoder_hidden_states, text_embeds and time_ids.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edge_dm.configs import SamplingConfig
from edge_dm.families.base import SAMPLE, TIMESTEP, Components, Layout
from edge_dm.families.stable_diffusion import (
    TEXT,
    UNCOND,
    StableDiffusion,
    TextConditioning,
    byte_level_tokenizer,
    tokenize,
)
from edge_dm.runtime import TorchNet

POOLED, TIME_IDS = "text_embeds", "time_ids"
ENCODERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))

# SDXL 1.0's architecture (diffusers configs), for timing with seeded random weights
SDXL = dict(
    unet=dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
              transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
              use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
              projection_class_embeddings_input_dim=2816),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
             layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, scaling_factor=0.13025),
    text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
    text_2=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                max_position_embeddings=77, projection_dim=1280, hidden_act="gelu"),
)


def _penultimate(outputs: dict) -> np.ndarray:
    """hidden_states[-2] of a text encoder's outputs (optimum names them hidden_states.0 ... .L)."""
    layers = sorted(int(m.group(1)) for k in outputs if (m := re.fullmatch(r"hidden_states\.(\d+)", k)))
    return outputs[f"hidden_states.{layers[-2]}"]


class SDXLConditioning(TextConditioning):
    sampling_defaults = {**TextConditioning.sampling_defaults, "scheduler": "euler", "steps": 50,
                         "guidance_scale": 5.0}  # diffusers' SDXL defaults
    net_inputs_names = (SAMPLE, TIMESTEP, TEXT, POOLED, TIME_IDS)

    def embed(self, parts: Components, texts: list) -> dict:
        hidden, pooled = [], None
        for encoder, tokenizer in ENCODERS:
            ids = tokenize(parts.path / tokenizer, texts)
            outs = [parts.run(encoder, ids[i:i + 1]) for i in range(len(texts))]
            hidden.append(np.concatenate([_penultimate(o) for o in outs]))
            first = [next(iter(o.values())) for o in outs]
            if first[0].ndim == 2:  # the projected pooled output of CLIPTextModelWithProjection: the last one's counts
                pooled = np.concatenate(first)
        return {TEXT: np.concatenate(hidden, axis=-1), POOLED: pooled}

    def encode(self, parts: Components, prompts: list, sampling: SamplingConfig) -> dict | None:
        """As TextConditioning's, with the size conditioning (time_ids: original size, crop origin 0, 0,
        target size); the empty negative prompt is zeros where the pipeline says so
        (force_zeros_for_empty_prompt), as diffusers does."""
        if not prompts:
            return None
        zeros = not sampling.negative_prompt and _index(parts.path).get("force_zeros_for_empty_prompt", True)
        guided = self.guidance(sampling) is not None
        texts = sorted(set(prompts) | ({sampling.negative_prompt} if guided and not zeros else set()))
        table = self.embed(parts, texts)
        index = {t: i for i, t in enumerate(texts)}
        rows = np.array([index[p] for p in prompts])
        cond = {k: v[rows] for k, v in table.items()}
        if guided:
            neg = np.full(len(prompts), index.get(sampling.negative_prompt, 0))
            cond.update({UNCOND + k: np.zeros_like(v[rows]) if zeros else v[neg] for k, v in table.items()})
        h, w = self.image_size(parts.path, sampling)
        cond[TIME_IDS] = np.tile(np.array([h, w, 0, 0, h, w], np.float32), (len(prompts), 1))
        return cond


def _index(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}


class SDXLTorchNet(TorchNet):
    """An SDXL UNet in torch as a net: text_embeds and time_ids go in as its added_cond_kwargs."""

    def run(self, inputs: dict) -> list:
        import torch

        inputs = dict(inputs)
        added = {k: inputs.pop(k) for k in (POOLED, TIME_IDS)}
        with torch.no_grad():
            args = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            extra = {k: torch.from_numpy(v).to(self.device) for k, v in added.items()}
            return [self.module(**args, added_cond_kwargs=extra).sample.float().cpu().numpy()]


class StableDiffusionXL(StableDiffusion):
    name = "sdxl"
    architectures = ("sdxl", "sdxl-turbo")
    layout = Layout(components={"unet": "unet/openvino_model.xml", "text_encoder": "text_encoder/openvino_model.xml",
                                "text_encoder_2": "text_encoder_2/openvino_model.xml",
                                "vae_decoder": "vae_decoder/openvino_model.xml"},
                    scheduler_file="scheduler/scheduler_config.json")
    conditioning = SDXLConditioning()
    pipeline_classes = ("StableDiffusionXLPipeline",)
    parts = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae", "scheduler")
    optimum_class = "OVStableDiffusionXLPipeline"
    tokenizers = ("tokenizer", "tokenizer_2")

    def random(self, arch: str):
        m = super().random(arch)
        if m is not None and arch == "sdxl-turbo":  # SDXL-Turbo's card: 1 step, no guidance, 512x512
            m.sampling.update(scheduler="euler-ancestral", steps=1, guidance_scale=1.0, height=512, width=512)
        return m

    def random_pipeline(self, arch: str):
        """SDXL 1.0's architecture with seeded random weights (Turbo: its scheduler)."""
        import tempfile

        import torch
        from diffusers import (
            AutoencoderKL,
            EulerAncestralDiscreteScheduler,
            EulerDiscreteScheduler,
            StableDiffusionXLPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = byte_level_tokenizer(Path(tmp) / "tokenizer")
        betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     steps_offset=1)
        scheduler = EulerAncestralDiscreteScheduler(**betas, timestep_spacing="trailing") if arch == "sdxl-turbo" \
            else EulerDiscreteScheduler(**betas, timestep_spacing="leading")
        return StableDiffusionXLPipeline(
            vae=AutoencoderKL(**SDXL["vae"]), unet=UNet2DConditionModel(**SDXL["unet"]), scheduler=scheduler,
            text_encoder=CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **SDXL["text"])),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tokenizer), **SDXL["text_2"])),
            tokenizer=tokenizer, tokenizer_2=tokenizer)

    def torch_net(self, m, device: str = "cpu", dtype=None):
        return SDXLTorchNet(m.unet, device, dtype)
