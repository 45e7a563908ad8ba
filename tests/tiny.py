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


def write_cifar_tar(tmp_path, counts: dict, name: str = "cifar.tar.gz") -> Path:
    """Seeded random 32x32 PNGs laid out as CIFAR-10's copy is (`tmp_path/cifar10/train/<class>/NNNN.png`,
    `counts[class]` of each, drawn in the order of `counts`), and a .tar.gz of them named `name`."""
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        folder = tmp_path / "cifar10" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "cifar10", arcname="cifar10")
    return path
