"""Tiny seeded models the tests build themselves (no downloads)."""
from pathlib import Path


def build_tiny_unet(seed: int = 0, size: int = 8, channels: tuple = (4, 8), attention: bool = True):
    """A seeded UNet2DModel of a few thousand parameters."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=channels,
                       layers_per_block=1, down_block_types=down, up_block_types=up,
                       norm_num_groups=2, attention_head_dim=None).eval()


def save_pipeline(unet, path, num_train_timesteps: int = 1000) -> Path:
    """Save a UNet with a linear-beta DDPMScheduler as a diffusers DDPMPipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return Path(path)
