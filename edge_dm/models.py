"""Where models come from: registry names, Hugging Face hub ids, local diffusers directories.

`load_model(spec)` returns the UNet2DModel (fp32, eval mode) and its scheduler config. A spec is
- a registry name (`edge-dm models` lists them): edge-dm's own shipped model or a hub alias;
- a local directory: a saved pipeline (`model_index.json`), or a folder with `unet/` and `scheduler/`;
- `random:ddpm-cifar10`: that architecture with seeded random weights (speed measurements only);
- any other string: a Hugging Face hub id, loaded with diffusers' `from_pretrained` (the HF cache
  first; with HF_HUB_OFFLINE=1 only the cache).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edge_dm.errors import ModelNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: str  # a hub id, or a path relative to the project
    description: str


REGISTRY = {
    e.name: e
    for e in [
        RegistryEntry("edm-cifar10-ddpm", "models/edm-cifar10-ddpm",
                      "edge-dm's own CIFAR-10 DDPM, 9.0M params, shipped in models/ (offline default)"),
        RegistryEntry("ddpm-cifar10", "google/ddpm-cifar10-32",
                      "Ho et al.'s CIFAR-10 DDPM, 35.7M params, from the Hugging Face hub"),
        RegistryEntry("ddpm-celebahq", "google/ddpm-celebahq-256", "CelebA-HQ 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-church", "google/ddpm-church-256", "LSUN church 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-bedroom", "google/ddpm-bedroom-256", "LSUN bedroom 256x256 DDPM, from the hub"),
    ]
}


# google/ddpm-cifar10-32's exact UNet2DModel config (35.7M parameters), for timing without the weights
ARCHITECTURES = {
    "ddpm-cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_eps=1e-6, freq_shift=1,
        flip_sin_to_cos=False, downsample_padding=0, attention_head_dim=None),
}
RANDOM_PREFIX = "random:"


@dataclass
class LoadedModel:
    spec: str  # what the user passed
    source: str  # the resolved directory or hub id
    unet: object  # diffusers.UNet2DModel
    scheduler_config: dict

    @property
    def sample_shape(self) -> tuple:
        c = self.unet.config
        size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
        return (c.in_channels, size, size)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))


def slug(spec: str) -> str:
    """A file-name-safe name for a model spec, used for its default bundle folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", str(spec).strip("/")) or "model"


def resolve(spec: str) -> str:
    """The directory or hub id that `spec` names."""
    if spec in REGISTRY:
        src = REGISTRY[spec].source
        if src.startswith("models/"):  # shipped with edge-dm: found wherever the install put it
            from edge_dm.resources import shipped_model_dir
            return str(shipped_model_dir(src.split("/", 1)[1]))
        return src
    return spec


def _local_layout(path: Path) -> tuple[Path, Path]:
    """(unet dir, scheduler dir) of a local model folder, or ModelNotFoundError."""
    if (path / "unet").is_dir() and (path / "scheduler").is_dir():
        return path / "unet", path / "scheduler"
    if (path / "model_index.json").exists():
        raise ModelNotFoundError(f"{path} has model_index.json but no unet/ and scheduler/ folders")
    raise ModelNotFoundError(
        f"{path} is not a diffusers model folder: expected model_index.json or unet/ and scheduler/")


def load_model(spec: str) -> LoadedModel:
    import torch  # noqa: F401  (diffusers needs it; imported here to keep the CLI start fast)
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # no "install accelerate" advice on every load

    if spec.startswith(RANDOM_PREFIX):
        arch = spec[len(RANDOM_PREFIX):]
        if arch not in ARCHITECTURES:
            raise ModelNotFoundError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        torch.manual_seed(0)
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").config
        return LoadedModel(spec, spec, UNet2DModel(**ARCHITECTURES[arch]).eval(), dict(sched))
    source = resolve(spec)
    path = Path(source).expanduser()
    if path.exists():
        unet_dir, sched_dir = _local_layout(path)
        try:
            unet = UNet2DModel.from_pretrained(unet_dir)
            sched = DDPMScheduler.load_config(sched_dir)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelNotFoundError(f"cannot load the model in {path}: {str(exc).splitlines()[0]}") from None
    else:
        if source.startswith((".", "/", "~")) or source.count("/") != 1:
            raise ModelNotFoundError(
                f"model {spec!r} not found: not a registry name ({', '.join(REGISTRY)}), "
                "not an existing directory, and not a hub id of the form owner/name")
        try:
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            sched = DDPMScheduler.load_config(source, subfolder="scheduler")
        except Exception as exc:  # hub errors come in many types; all mean the same here
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if offline else \
                "it could not be downloaded from the Hugging Face hub and is not in the cache"
            raise ModelNotFoundError(
                f"model {spec!r} ({source}): {why} ({type(exc).__name__}); download it elsewhere with "
                f"`DDPMPipeline.from_pretrained('{source}').save_pretrained(DIR)` and pass --model DIR"
            ) from None
    unet = unet.float().eval()
    return LoadedModel(spec=spec, source=str(source), unet=unet, scheduler_config=dict(sched))


def build_tiny_unet(seed: int = 0, size: int = 8, channels: tuple = (4, 8), attention: bool = True):
    """A seeded UNet2DModel of a few thousand parameters, for tests and examples."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=channels,
                       layers_per_block=1, down_block_types=down, up_block_types=up,
                       norm_num_groups=2, attention_head_dim=None).eval()


def save_pipeline(unet, path: str | Path, num_train_timesteps: int = 1000) -> Path:
    """Save a UNet with a linear-beta DDPMScheduler as a diffusers DDPMPipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return Path(path)
