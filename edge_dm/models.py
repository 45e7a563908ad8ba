"""Where models come from: registry names, Hugging Face hub ids, local diffusers folders.

`load_model(spec)` returns a `LoadedModel` (its family, torch modules, scheduler config). A spec is
- a registry name (`edge-dm models` lists them): edge-dm's own shipped models or hub aliases;
- a local folder: a saved diffusers pipeline (`model_index.json`), or a folder with `unet/` and `scheduler/`;
- `random:<architecture>`: that architecture with seeded random weights (speed measurements only);
- any other string: a Hugging Face hub id, loaded with diffusers' `from_pretrained` (the HF cache
  first; with HF_HUB_OFFLINE=1 only the cache).
The family (edge_dm.families) is told by the folder's layout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edge_dm.errors import ModelNotFoundError
from edge_dm.families import FAMILIES, LoadedModel, for_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"
RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: str  # a hub id, or a path relative to the project
    description: str
    keep_float: tuple | None = None  # what quantize keeps in float by default (None: the family's default)


REGISTRY = {
    e.name: e
    for e in [
        # Its family's three, and the six full-resolution up-path convolutions `--max-drop 0.012` returned
        # to float: int8 FID at 10k from +0.87 to +0.18 over fp32 (docs/QUANTIZATION.md, Table 5).
        RegistryEntry("edm-cifar10-ddpm", "models/edm-cifar10-ddpm",
                      "edge-dm's own CIFAR-10 DDPM, 9.0M params, shipped in models/ (offline default)",
                      keep_float=("conv_in", "conv_out", "time_emb", "up_blocks.3.resnets.0.conv1",
                                  "up_blocks.3.resnets.0.conv_shortcut.a", "up_blocks.3.resnets.1.conv_shortcut",
                                  "up_blocks.3.resnets.2.conv_shortcut")),
        RegistryEntry("edm-cifar10-t2i", "models/edm-cifar10-t2i",
                      "edge-dm's own text-to-image CIFAR-10 Stable Diffusion pipeline ('a photo of a horse'), "
                      "6.6M params, 32x32, shipped in models/"),
        RegistryEntry("ddpm-cifar10", "google/ddpm-cifar10-32",
                      "Ho et al.'s CIFAR-10 DDPM, 35.7M params, from the Hugging Face hub"),
        RegistryEntry("ddpm-celebahq", "google/ddpm-celebahq-256", "CelebA-HQ 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-church", "google/ddpm-church-256", "LSUN church 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-bedroom", "google/ddpm-bedroom-256", "LSUN bedroom 256x256 DDPM, from the hub"),
        RegistryEntry("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                      "Stable Diffusion 1.5, text-to-image, from the hub"),
        RegistryEntry("sd-turbo", "stabilityai/sd-turbo", "SD-Turbo (SD 2.1 UNet, 1-4 steps), from the hub"),
    ]
}


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


def _hub_family(source: str):
    """The family of a hub model, from its model_index.json (cache first; offline: cache only)."""
    from huggingface_hub import hf_hub_download

    index = json.loads(Path(hf_hub_download(source, "model_index.json")).read_text())
    folder_like = {k for k, v in index.items() if isinstance(v, list)}
    if {"text_encoder", "unet", "vae"} <= folder_like:
        return FAMILIES["stable-diffusion"]
    return FAMILIES["unet2d"]


def _not_found(spec: str, source: str, exc: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if offline else \
        "it could not be downloaded from the Hugging Face hub and is not in the cache"
    return ModelNotFoundError(
        f"model {spec!r} ({source}): {why} ({type(exc).__name__}); download it elsewhere with "
        f"`DiffusionPipeline.from_pretrained('{source}').save_pretrained(DIR)` and pass --model DIR")


def _check_scheduler(m: LoadedModel, where) -> None:
    """ModelNotFoundError unless diffusers can build a scheduler from the model's scheduler config."""
    from edge_dm.errors import ConfigError
    from edge_dm.sampling import make_scheduler

    try:
        make_scheduler("ddpm", m.scheduler_config)
    except ConfigError as exc:
        raise ModelNotFoundError(f"cannot load the model in {where}: {exc}") from None


def load_model(spec: str) -> LoadedModel:
    m = _load(spec)
    entry = REGISTRY.get(spec)
    return dataclasses.replace(m, keep_float=entry.keep_float) if entry and entry.keep_float else m


def _load(spec: str) -> LoadedModel:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # no "install accelerate" advice on every load

    if spec.startswith(RANDOM_PREFIX):
        arch = spec[len(RANDOM_PREFIX):]
        for family in FAMILIES.values():
            m = family.random(arch)
            if m is not None:
                return m
        known = [a for f in FAMILIES.values() for a in getattr(f, "architectures", ())]
        raise ModelNotFoundError(f"unknown architecture {arch!r}; known: {', '.join(known)}")
    source = resolve(spec)
    path = Path(source).expanduser()
    if path.exists():
        family = for_folder(path)
        if family is None:
            what = "has model_index.json but no unet/ and scheduler/ folders of a known kind" \
                if (path / "model_index.json").exists() else \
                "is not a diffusers model folder: expected model_index.json or unet/ and scheduler/"
            raise ModelNotFoundError(f"{path} {what}")
        try:
            m = family.load(spec, str(path))
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot load the model in {path}: {str(exc).splitlines()[0]}") from None
        _check_scheduler(m, path)
        return m
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelNotFoundError(
            f"model {spec!r} not found: not a registry name ({', '.join(REGISTRY)}), "
            "not an existing directory, and not a hub id of the form owner/name")
    try:
        family = _hub_family(source)
        m = family.load(spec, source)
    except Exception as exc:  # hub errors come in many types; all mean the same here
        raise _not_found(spec, source, exc) from None
    _check_scheduler(m, source)
    return m
