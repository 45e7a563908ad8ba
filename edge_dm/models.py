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
from dataclasses import dataclass, field
from pathlib import Path

from edge_dm.errors import ConfigError, ModelNotFoundError
from edge_dm.families import FAMILIES, LoadedModel, for_folder, pipeline_classes
from edge_dm.resources import shipped_dataset, shipped_model_dir
from edge_dm.sampling import make_scheduler

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: str  # a hub id, or a path relative to the project
    description: str
    keep_float: tuple | None = None  # what quantize keeps in float by default (None: the family's default)
    smooth_quant_alpha: float | None = None  # quantize's SmoothQuant alpha by default (None: NNCF's)
    sampling: dict = field(default_factory=dict)  # sampling defaults beyond the family's (its model card's)
    prompts: str | None = None  # quantize's calibration prompts by default: a shipped prompt file (None: the family's)


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
        # What `--max-drop 0.02` returned to float (the `.a` halves of the two shortcuts as their whole
        # convolutions): held-out error 0.063 -> 0.023 over the family's default (docs/QUANTIZATION.md).
        RegistryEntry("edm-cifar10-t2i", "models/edm-cifar10-t2i",
                      "edge-dm's own text-to-image CIFAR-10 Stable Diffusion pipeline ('a photo of a horse'), "
                      "6.6M params, 32x32, shipped in models/",
                      keep_float=("conv_in", "conv_out", "down_blocks.0.resnets.0.conv2",
                                  "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2",
                                  "up_blocks.2.resnets.0.conv_shortcut", "up_blocks.2.resnets.1.conv_shortcut"),
                      smooth_quant_alpha=0.5,  # these and alpha 0.5: docs/QUANTIZATION.md, "Text-to-image defaults"
                      sampling=dict(steps=25, guidance_scale=3.0),  # its model card's
                      prompts="cifar10-prompts.txt"),  # its training captions, as every measurement calibrated
        # edm-cifar10-t2i distilled (edge-dm train --family lcm): its teacher's UNet and quantization policy.
        RegistryEntry("edm-cifar10-lcm", "models/edm-cifar10-lcm",
                      "edm-cifar10-t2i distilled into a 1-4 step latent consistency model, 32x32, shipped in models/",
                      keep_float=("conv_in", "conv_out", "down_blocks.0.resnets.0.conv2",
                                  "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2",
                                  "up_blocks.2.resnets.0.conv_shortcut", "up_blocks.2.resnets.1.conv_shortcut"),
                      smooth_quant_alpha=0.5, sampling=dict(steps=4, guidance_scale=2.0),
                      prompts="cifar10-prompts.txt"),
        RegistryEntry("ddpm-cifar10", "google/ddpm-cifar10-32",
                      "Ho et al.'s CIFAR-10 DDPM, 35.7M params, from the Hugging Face hub"),
        RegistryEntry("ddpm-celebahq", "google/ddpm-celebahq-256", "CelebA-HQ 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-church", "google/ddpm-church-256", "LSUN church 256x256 DDPM, from the hub"),
        RegistryEntry("ddpm-bedroom", "google/ddpm-bedroom-256", "LSUN bedroom 256x256 DDPM, from the hub"),
        RegistryEntry("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                      "Stable Diffusion 1.5, text-to-image, from the hub"),
        RegistryEntry("sd-turbo", "stabilityai/sd-turbo", "SD-Turbo (SD 2.1 UNet, 1-4 steps), from the hub",
                      sampling=dict(scheduler="euler-ancestral", steps=1, guidance_scale=1.0)),
        RegistryEntry("lcm-dreamshaper", "SimianLuo/LCM_Dreamshaper_v7",
                      "LCM Dreamshaper v7 (SD 1.5 UNet distilled to 4 steps), from the hub"),
        RegistryEntry("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "Stable Diffusion XL 1.0 base, from the hub"),
        RegistryEntry("sdxl-turbo", "stabilityai/sdxl-turbo", "SDXL-Turbo (1-4 steps, 512x512), from the hub",
                      sampling=dict(scheduler="euler-ancestral", steps=1, guidance_scale=1.0, height=512, width=512)),
    ]
}


def resolve(spec: str) -> str:
    """The directory or hub id that `spec` names."""
    if spec in REGISTRY:
        src = REGISTRY[spec].source
        if src.startswith("models/"):  # shipped with edge-dm: found wherever the install put it
            return str(shipped_model_dir(src.split("/", 1)[1]))
        return src
    return spec


def _hub_family(source: str):
    """The family of a hub model, from its model_index.json (cache first; offline: cache only)."""
    from huggingface_hub import hf_hub_download

    folder = Path(hf_hub_download(source, "model_index.json")).parent
    for sub in ("unet", "scheduler"):  # what the families read to recognise a model
        for name in ("config.json", "scheduler_config.json"):
            try:
                hf_hub_download(source, f"{sub}/{name}")
            except Exception:  # noqa: BLE001 - one of the two names does not exist
                pass
    family = for_folder(folder)
    if family is None:
        raise ModelNotFoundError(f"{source} is no pipeline edge-dm takes; it takes {', '.join(pipeline_classes())}")
    return family


def _not_found(spec: str, source: str, exc: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if offline else \
        "it could not be downloaded from the Hugging Face hub and is not in the cache"
    return ModelNotFoundError(
        f"model {spec!r} ({source}): {why} ({type(exc).__name__}); download it elsewhere with "
        f"`DiffusionPipeline.from_pretrained('{source}').save_pretrained(DIR)` and give that folder as `model`")


def _check_scheduler(m: LoadedModel, where) -> None:
    """ModelNotFoundError unless diffusers can build a scheduler from the model's scheduler config."""
    try:
        make_scheduler("ddpm", m.scheduler_config)
    except ConfigError as exc:
        raise ModelNotFoundError(f"cannot load the model in {where}: {exc}") from None


def peek_scheduler_config(spec: str) -> dict | None:
    """A local or registry model's scheduler config, read without loading the model (None: a hub id,
    random weights, or a folder without one), so options can be checked before the seconds a load takes."""
    if spec.startswith(RANDOM_PREFIX):
        return None
    try:
        path = Path(resolve(spec)).expanduser()
    except ModelNotFoundError:
        return None
    for candidate in (path / "scheduler" / "scheduler_config.json",
                      path.parent / "scheduler" / "scheduler_config.json"):
        try:
            return json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
    return None


def load_model(spec: str) -> LoadedModel:
    """The model `spec` names (module docstring), with its registry entry's defaults where it has one."""
    m = _load(spec)
    entry = REGISTRY.get(spec)
    if entry is None:
        return m
    return dataclasses.replace(m, keep_float=entry.keep_float if entry.keep_float else m.keep_float,
                               smooth_quant_alpha=entry.smooth_quant_alpha, sampling={**m.sampling, **entry.sampling},
                               prompts=str(shipped_dataset(entry.prompts)) if entry.prompts else m.prompts)


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
    if (path / "recipe.json").is_file():
        raise ModelNotFoundError(f"{path} is an edge-dm bundle, not a diffusers model: give the model it was made "
                                 "from (its recipe.json says which, as \"source\")")
    if path.exists():
        family = for_folder(path)
        if family is None:
            what = f"holds no pipeline edge-dm takes (it takes {', '.join(pipeline_classes())})" \
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
    except ModelNotFoundError:
        raise
    except Exception as exc:  # hub errors come in many types; all mean the same here
        raise _not_found(spec, source, exc) from None
    _check_scheduler(m, source)
    return m
