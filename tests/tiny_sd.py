"""A tiny, seeded Stable Diffusion pipeline folder for tests (no downloads).

`build_tiny_sd(path, seed)` writes what `StableDiffusionPipeline.save_pretrained` writes: a CLIP
tokenizer over a byte-level vocab made here (no merges, so one token per character), a 2-layer
CLIP text encoder of width 32, a 2-level UNet on 8x8x4 latents, and a 3-level VAE (downsampling
factor 2 ** (3 - 1) = 4, so images are 32x32; the factor differs from len(block_out_channels) on
purpose), with SD 1.x's DDIM scheduler settings. Same seed -> identical weights.
"""
import json
from pathlib import Path

LATENT = 8  # UNet sample_size
VAE_FACTOR = 4  # 2 ** (len(vae block_out_channels) - 1)
IMAGE = LATENT * VAE_FACTOR  # 32 pixels
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode():
    """GPT-2/CLIP's reversible map of the 256 bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    return CLIPTokenizer.from_pretrained(
        folder, model_max_length=77,
        bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
    )


def build_tiny_sd(path, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tokenizer = _tokenizer(path / "tokenizer")  # vocab.json and merges.txt stay beside tokenizer.json
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )).eval()
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=32, sample_size=IMAGE, scaling_factor=0.18215,
    ).eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_lcm(path, seed: int = 0) -> Path:
    """The tiny SD pipeline as a LatentConsistencyModelPipeline: its UNet takes the guidance embedding
    (time_cond_proj_dim 32), with LCMScheduler."""
    import torch
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    sd = StableDiffusionPipeline.from_pretrained(build_tiny_sd(Path(path).with_name(Path(path).name + "-sd"), seed))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**{**sd.unet.config, "time_cond_proj_dim": 32}).eval()
    scheduler = LCMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                             beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True, steps_offset=1,
                             original_inference_steps=50)
    pipe = LatentConsistencyModelPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_two_class_classifier(path) -> Path:
    """edge-dm's classifier of the classes "horse" and "ship" at the tiny pipelines' image size, seeded
    random weights (torch seed 0), saved to `path`."""
    import torch

    from edge_dm.classifier import build_classifier, save_classifier

    torch.manual_seed(0)
    return save_classifier(build_classifier((8, 16), 2), path, (8, 16), ["horse", "ship"], IMAGE)


def build_tiny_sdxl(path, seed: int = 0, turbo: bool = False) -> Path:
    """A tiny StableDiffusionXLPipeline: two byte-level CLIP text encoders (the second with a projection),
    a UNet with SDXL's added text-and-time conditioning, the tiny VAE; EulerDiscreteScheduler (turbo:
    EulerAncestralDiscreteScheduler with trailing timesteps, as SDXL-Turbo ships)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    tokenizer, tokenizer_2 = _tokenizer(path / "tokenizer"), _tokenizer(path / "tokenizer_2")
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=77, projection_dim=32,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text)).eval()
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, use_linear_projection=True,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=32, sample_size=IMAGE, scaling_factor=0.13025,
    ).eval()
    betas = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1)
    scheduler = EulerAncestralDiscreteScheduler(**betas, timestep_spacing="trailing") if turbo else \
        EulerDiscreteScheduler(**betas, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


if __name__ == "__main__":  # python tests/tiny_sd.py OUT: build, reload, and draw one image
    import os
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionPipeline

    out = build_tiny_sd(sys.argv[1] if len(sys.argv) > 1 else "tiny-sd")
    pipe = StableDiffusionPipeline.from_pretrained(out)
    image = pipe("a photo of a horse", num_inference_steps=2).images[0]
    print(out, image.size, pipe.tokenizer("a photo of a horse").input_ids)
