"""Model families: the one seam between edge-dm and a kind of diffusion model.

A family (`edge_dm.families.base.Family`) says how a model of its kind loads, exports to OpenVINO
and is laid out as a bundle; its `conditioning` how its denoiser is fed and its result becomes
pixels; its `policy` what quantization does to it by default. Everything else in edge-dm works
through these and never asks which family it runs. A new family is a module here, registered in
FAMILIES.
"""
from __future__ import annotations

from pathlib import Path

from edge_dm.errors import BundleError
from edge_dm.families.base import Family, LoadedModel
from edge_dm.families.lcm import LatentConsistency
from edge_dm.families.sdxl import StableDiffusionXL
from edge_dm.families.stable_diffusion import StableDiffusion
from edge_dm.families.unet2d import UNet2D

FAMILIES: dict[str, Family] = {f.name: f for f in (UNet2D(), StableDiffusion(), LatentConsistency(),
                                                   StableDiffusionXL())}


def get(name: str | None) -> Family:
    """The family of that name; None (recipes written before families existed) is UNet2D."""
    if name is None:
        return FAMILIES[UNet2D.name]
    if name not in FAMILIES:
        raise BundleError(f"unknown model family {name!r}; this edge-dm knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def for_folder(path: Path) -> Family | None:
    """The family whose diffusers layout the folder `path` has, or None."""
    return next((f for f in FAMILIES.values() if f.recognises(path)), None)


def pipeline_classes() -> list[str]:
    """The diffusers pipeline classes edge-dm's families take (model_index.json's _class_name)."""
    classes = [c for f in FAMILIES.values() for c in getattr(f, "pipeline_classes", ())]
    return ["UNet2DModel + scheduler (DDPMPipeline)", *dict.fromkeys(classes)]


__all__ = ["FAMILIES", "Family", "LoadedModel", "get", "for_folder", "pipeline_classes"]
