"""Model families: the one seam between edge-dm and a kind of diffusion model.

A family (`edge_dm.families.base.Family`) says how a model of its kind loads, exports to OpenVINO,
is laid out as a bundle, feeds its denoiser (inputs, conditioning, guidance), records calibration
inputs, keeps modules in float, and turns the loop's result into pixels. Everything else in edge-dm
works through these methods and never asks which family it runs.
"""
from __future__ import annotations

from edge_dm.families.base import Family, LoadedModel
from edge_dm.families.stable_diffusion import StableDiffusion
from edge_dm.families.unet2d import UNet2D

FAMILIES: dict[str, Family] = {f.name: f for f in (UNet2D(), StableDiffusion())}


def get(name: str | None) -> Family:
    """The family of that name; None (recipes written before families existed) is UNet2D."""
    from edge_dm.errors import BundleError

    if name is None:
        return FAMILIES[UNet2D.name]
    if name not in FAMILIES:
        raise BundleError(f"unknown model family {name!r}; this edge-dm knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def for_folder(path) -> Family | None:
    """The family whose diffusers layout the folder `path` has, or None."""
    return next((f for f in FAMILIES.values() if f.recognises(path)), None)


__all__ = ["FAMILIES", "Family", "LoadedModel", "get", "for_folder"]
