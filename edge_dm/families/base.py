"""What a model family is, in three parts, and the denoiser built on it.

- `Family`: where models of the kind come from and how they become a bundle (load, random weights,
  export, the bundle layout, the rewrites quantization may ask for, DeepCache's cut).
- `Conditioning`: how the denoiser is fed and its result becomes pixels (sampling defaults, request
  checks, per-image conditioning from prompts, the net's inputs for a batch, guidance, decoding).
  It works on a bundle's files and compiled components, never on a Pipeline.
- `QuantizationPolicy`: data saying what quantization does to this family by default.

A *denoiser* (`Denoiser`) is a conditioning on a net (edge_dm.runtime): the callable the one
denoising loop (edge_dm.sampling) calls as `denoiser(x, t, cond) -> eps`. Net inputs are named as
diffusers' UNets name their forward arguments (`sample`, `timestep`, `encoder_hidden_states`, ...),
which is also how edge-dm and optimum-intel name the IR's inputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_dm.configs import SamplingConfig
from edge_dm.errors import BundleError, ConfigError
from edge_dm.images import to_uint8
from edge_dm.runtime import TorchNet

SAMPLE, TIMESTEP = "sample", "timestep"


class Net(Protocol):
    """A network callable on named numpy inputs (edge_dm.runtime.OpenVINOModel, TorchNet)."""

    def run(self, inputs: dict) -> list: ...


class BundleFiles(Protocol):
    """What a family reads of a bundle: its folder and its IRs (edge_dm.bundle.Bundle)."""

    path: Path

    def read_model(self, ir: str = "unet"): ...


class Components(Protocol):
    """A bundle's components besides the denoiser (text encoders, VAE decoder), compiled on a device."""

    path: Path

    def run(self, component: str, *inputs: np.ndarray) -> dict:
        """{output name: array} of the component on inputs given in the order of its IR's inputs."""


@dataclass
class LoadedModel:
    """A model as loaded from diffusers: its family, torch modules and scheduler config."""
    spec: str  # what the user passed
    source: str  # the resolved directory or hub id
    family: "Family"
    modules: dict  # torch modules by component name ("unet", ...)
    scheduler_config: dict
    extra: dict = field(default_factory=dict)  # family-specific facts
    keep_float: tuple | None = None  # what quantize keeps in float by default (None: the family's policy)
    smooth_quant_alpha: float | None = None  # NNCF's SmoothQuant alpha by default (None: NNCF's)
    sampling: dict = field(default_factory=dict)  # this model's sampling defaults beyond its family's
    prompts: str | None = None  # this model's calibration prompt file by default (None: its family's)

    @property
    def unet(self):
        return self.modules["unet"]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def sample_shape(self) -> tuple:
        """The UNet's sample shape (C, H, W) at its trained size."""
        c = self.unet.config
        size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
        return (c.in_channels, size, size)

    @property
    def sampling_defaults(self) -> dict:
        return {**self.family.conditioning.sampling_defaults, **self.sampling}


@dataclass(frozen=True)
class Layout:
    """Where a bundle of the family keeps its parts."""
    components: dict  # component name -> IR path inside a bundle; "unet" is the denoiser
    scheduler_file: str  # the scheduler config inside a bundle
    fp32_copy: str = ""  # where an int8 bundle keeps the fp32 denoiser IR it came from ("": nowhere)


@dataclass(frozen=True)
class QuantizationPolicy:
    """What `edge-dm quantize` does to a model of the family unless told otherwise."""
    keep_float: tuple = ()  # module names left in float
    split_shortcut: bool | None = None  # Q-Diffusion's shortcut split for int8 (None: the family has none)
    report_images: int = 0  # prompts whose fp32 and int8 images report.png shows side by side

    def splits(self, cfg) -> bool:
        """Whether a QuantizeConfig splits shortcut convolutions: its own choice, else the policy's for
        int8 (weight compression has no activation scales to separate)."""
        if cfg.split_shortcut is None:
            return bool(self.split_shortcut) and cfg.mode == "int8"
        return cfg.split_shortcut


class Conditioning:
    """How a family's denoiser is fed: the unconditional case; text-to-image families override."""

    takes_prompts = False
    # DeepCache branch 0 for every family: it scored better than branch 1 on both shipped models
    sampling_defaults: dict = dict(scheduler="ddim", steps=100, cache_branch=0)
    net_inputs_names: tuple = (SAMPLE, TIMESTEP)

    def sample_shape(self, bundle: BundleFiles, sampling: SamplingConfig) -> tuple:
        """The shape (without batch) of the sampler's state for `sampling`'s image size."""
        model = bundle.read_model()
        return tuple(d.get_length() for d in list(model.input(SAMPLE).get_partial_shape())[1:])

    def guidance(self, sampling: SamplingConfig) -> float | None:
        """The classifier-free guidance scale in effect (None: the net runs once per image)."""
        return None

    def net_batch(self, sampling: SamplingConfig) -> int:
        """How many net inputs one image takes (2 with classifier-free guidance)."""
        return 2 if self.guidance(sampling) else 1

    def check(self, bundle: BundleFiles, sampling: SamplingConfig, prompts: list) -> None:
        """ConfigError if prompts, guidance or sizes do not suit this model (before any work)."""
        if prompts:
            raise ConfigError(f"{bundle.path} holds an unconditional model: it takes no prompt")
        self.check_sampling(bundle, sampling)

    def check_sampling(self, bundle: BundleFiles, sampling: SamplingConfig) -> None:
        """ConfigError if the sampling options do not suit this model."""
        if sampling.guidance_scale is not None:
            raise ConfigError("`guidance_scale` is for text-to-image models; this one is unconditional")
        if sampling.height or sampling.width:
            raise ConfigError("`height`/`width` are for text-to-image models; this one has a fixed size")
        if sampling.negative_prompt:
            raise ConfigError("`negative_prompt` is for text-to-image models; this one is unconditional")

    def check_ir(self, model) -> None:
        """BundleError unless the denoiser IR takes exactly the inputs this conditioning feeds it."""
        names = {i.get_any_name() for i in model.inputs}
        if names != set(self.net_inputs_names):
            raise BundleError(f"the denoiser IR takes {sorted(names)}, this model family feeds it "
                              f"{sorted(self.net_inputs_names)}")

    def calibration_prompts(self, prompts_file: str | None) -> tuple[list, list]:
        """(calibration prompts, held-out prompts); empty for unconditional models."""
        if prompts_file:
            raise ConfigError("`prompts` are for text-to-image models; this one is unconditional")
        return [], []

    def encode(self, parts: Components, prompts: list, sampling: SamplingConfig) -> dict | None:
        """Conditioning for each image: a dict of arrays with a leading image axis, or None."""
        return None

    def net_inputs(self, x: np.ndarray, t: np.ndarray, cond: dict | None, guidance: float | None) -> dict:
        """The net's named inputs for a batch (x, t and the batch's slice of cond)."""
        return {SAMPLE: x, TIMESTEP: t}

    def combine(self, out: np.ndarray, guidance: float | None) -> np.ndarray:
        """The noise prediction from the net's first output (guidance, where used)."""
        return out

    def component_inputs(self, bundle: BundleFiles, component: str, prompts: list, latents) -> list[tuple]:
        """Calibration records of a component besides the denoiser: per record, its inputs in IR order,
        as the pipeline feeds it (`latents`: final states of the loop, for a decoder)."""
        raise ConfigError(f"this model has no component {component!r} to quantize")

    def decode(self, parts: Components, x: np.ndarray) -> np.ndarray:
        """uint8 NHWC images from the loop's final state."""
        return to_uint8(x)


class Denoiser:
    """A conditioning on a net: `denoiser(x, t, cond) -> eps` (torch tensors).

    `inputs(x, t, cond)` is what the net receives for that call: a calibration record is exactly
    this, for one image. With a cached net (DeepCache, edge_dm.caching) it also has `full` and
    `shallow` calls.
    """

    def __init__(self, conditioning: Conditioning, net, guidance: float | None = None):
        self.conditioning, self.net, self.guidance = conditioning, net, guidance

    def inputs(self, x, t, cond=None) -> dict:
        return self.conditioning.net_inputs(x.numpy(), t.numpy(), cond, self.guidance)

    def _eps(self, out):
        import torch

        return torch.from_numpy(self.conditioning.combine(out, self.guidance))

    def __call__(self, x, t, cond=None):
        return self._eps(self.net.run(self.inputs(x, t, cond))[0])

    def full(self, x, t, cond=None):
        eps, cache = self.net.run_full(self.inputs(x, t, cond))
        return self._eps(eps), cache

    def shallow(self, x, t, cache, cond=None):
        return self._eps(self.net.run_shallow(self.inputs(x, t, cond), cache))

    # statistics of the net below (UNet calls, images, seconds), where it keeps them
    calls = property(lambda self: getattr(self.net, "calls", 0))
    images = property(lambda self: getattr(self.net, "images", 0))
    seconds = property(lambda self: getattr(self.net, "seconds", 0.0))
    parallel = property(lambda self: getattr(self.net, "parallel", 1))


def torch_denoiser(m: LoadedModel, device: str = "cpu", dtype=None, guidance: float | None = None) -> Denoiser:
    """The loaded model's torch UNet as a denoiser: the reference OpenVINO runs are checked against."""
    return Denoiser(m.family.conditioning, m.family.torch_net(m, device, dtype), guidance)


class Family:
    """A kind of diffusion model. Subclasses set the attributes and implement the methods."""

    name: str = ""
    architectures: tuple = ()  # `random:<arch>` names this family builds
    layout: Layout
    conditioning: Conditioning = Conditioning()
    policy: QuantizationPolicy = QuantizationPolicy()
    reuse_export = False  # quantize copies the cached fp32 bundle of `edge-dm export` instead of exporting

    def recognises(self, path: Path) -> bool:
        """Whether the diffusers folder `path` holds a model of this family."""
        raise NotImplementedError

    def load(self, spec: str, source: str) -> LoadedModel:
        """Load the model at `source` (a local folder or a hub id)."""
        raise NotImplementedError

    def random(self, arch: str) -> LoadedModel | None:
        """`random:<arch>`: an architecture with seeded random weights, for timing; None if unknown."""
        return None

    def export(self, m: LoadedModel, folder: Path, precision: str) -> tuple[dict, object]:
        """Write the model's OpenVINO IRs and configs into `folder` in this family's bundle layout;
        return recipe fields (inputs, ...) and the fp32 denoiser as an openvino.Model."""
        raise NotImplementedError

    def for_quantization(self, m: LoadedModel, split_shortcut: bool) -> tuple[LoadedModel, dict]:
        """The model `edge-dm quantize` exports, calibrates and quantizes: `m`, rewritten into the same
        function as asked, and recipe fields saying what changed."""
        if split_shortcut:
            raise ConfigError(f"`split_shortcut` is for unet2d models, not {self.name}")
        return m, {}

    def ir_for_quantization(self, model, split_shortcut: bool) -> tuple[object, dict]:
        """The fp32 denoiser IR `edge-dm quantize` calibrates, quantizes and measures against: `model`
        (the openvino.Model of the fp32 export, left unchanged) rewritten into the same function as
        asked, and recipe fields saying what changed. The quantize job calls it right after the fp32
        export, with the split flag it passed to for_quantization. Here: `model` as it is."""
        return model, {}

    def float_names(self, names: tuple, split_shortcut: bool) -> tuple:
        """The module names to keep in float in the model for_quantization made of it."""
        return names

    def torch_net(self, m: LoadedModel, device: str = "cpu", dtype=None):
        """The model's torch UNet as a net (the reference OpenVINO is checked against)."""
        return TorchNet(m.unet, device, dtype)

    def scheduler_config(self, folder: Path) -> dict:
        try:
            return json.loads((Path(folder) / self.layout.scheduler_file).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"unreadable scheduler config in {folder}: {exc}") from None

    def cache_features(self, model) -> dict:
        """DeepCache: where the UNet IR `model` can be cut, by branch: the output (an openvino Output)
        whose value the shallow part reads from the cache (edge_dm.families.unet2d.cache_cuts)."""
        return {}
