"""What every model family provides, and the denoiser built on it.

A *net* is anything with `run(inputs: dict[str, numpy]) -> list[numpy]`: a compiled OpenVINO model
(`edge_dm.denoiser.OpenVINOModel`) or a torch module (`TorchNet`). A family turns a net into a
*denoiser* (`Denoiser`): the callable the one denoising loop (`edge_dm.sampling`) calls as
`denoiser(x, t, cond) -> eps`, where x is the sampler's state, t the timesteps and cond the batch's
conditioning (None for unconditional models).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_dm.errors import BundleError, ConfigError

# roles of a denoiser's inputs, found in an IR by rank: the state, the timestep, the text
SAMPLE, TIMESTEP, TEXT = "sample", "timestep", "text"


@dataclass
class LoadedModel:
    """A model as loaded from diffusers: its family, torch modules and scheduler config."""
    spec: str  # what the user passed
    source: str  # the resolved directory or hub id
    family: "Family"
    modules: dict  # torch modules by component name ("unet", ...)
    scheduler_config: dict
    extra: dict = field(default_factory=dict)  # family-specific facts (default image size, ...)
    keep_float: tuple | None = None  # what quantize keeps in float by default (None: the family's default)

    @property
    def unet(self):
        return self.modules["unet"]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def sample_shape(self) -> tuple:
        return self.family.model_sample_shape(self)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def input_roles(model) -> dict:
    """{role: input name} of a denoiser IR, by rank: 4 the sample, 0-1 the timestep, 3 the text."""
    by_rank = {4: SAMPLE, 0: TIMESTEP, 1: TIMESTEP, 3: TEXT}
    roles = {}
    for inp in model.inputs:
        role = by_rank.get(inp.get_partial_shape().rank.get_length())
        if role is None or role in roles:
            raise BundleError(f"cannot tell what the denoiser input {inp.get_any_name()!r} "
                              f"({inp.get_partial_shape()}) is")
        roles[role] = inp.get_any_name()
    if SAMPLE not in roles or TIMESTEP not in roles:
        raise BundleError(f"the denoiser IR has no sample or timestep input: {[i.get_any_name() for i in model.inputs]}")
    return roles


class TorchNet:
    """A diffusers UNet (torch, eval mode) as a net: named numpy inputs in, [noise prediction] out."""

    def __init__(self, module, device: str = "cpu", dtype=None):
        self.module, self.device, self.dtype = module.eval().to(device), device, dtype

    def run(self, inputs: dict) -> list:
        import torch

        with torch.no_grad(), torch.autocast(device_type=self.device.split(":")[0],
                                             dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            args = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            return [self.module(**args).sample.float().cpu().numpy()]


class Denoiser:
    """A family's noise prediction on a net: `denoiser(x, t, cond) -> eps` (torch tensors).

    `inputs(x, t, cond)` is what the net receives for that call: a calibration record is exactly
    this, for one image. With a cached net (DeepCache, `edge_dm.caching`) it also has `full` and
    `shallow` calls.
    """

    def __init__(self, family: "Family", net, roles: dict, guidance: float | None = None):
        self.family, self.net, self.roles, self.guidance = family, net, roles, guidance

    def inputs(self, x, t, cond=None) -> dict:
        return self.family.net_inputs(self.roles, x.numpy(), t.numpy(), cond, self.guidance)

    def _eps(self, out):
        import torch

        return torch.from_numpy(self.family.combine(out, self.guidance))

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


class Family:
    """A kind of diffusion model. Subclasses set the attributes and implement the methods."""

    name: str = ""
    conditional = False  # takes prompts
    default_keep_float: tuple = ()  # module names left in float by default
    components: dict = {}  # component name -> IR path inside a bundle; "unet" is the denoiser
    scheduler_file = ""  # the scheduler config inside a bundle
    fp32_copy = ""  # where an int8 bundle keeps its fp32 denoiser IR ("": it keeps none)

    # --- where models come from -------------------------------------------------------------
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

    def for_quantization(self, m: LoadedModel, cfg) -> tuple[LoadedModel, dict]:
        """The model `edge-dm quantize` exports, calibrates and quantizes: `m`, rewritten as the
        QuantizeConfig `cfg` asks into the same function, and recipe fields saying what changed.
        ConfigError for a rewrite this family does not offer."""
        if self.splits_shortcuts(cfg):
            raise ConfigError(f"--split-shortcut is for unet2d models, not {self.name}")
        return m, {}

    def keep_float_for(self, m: LoadedModel, cfg) -> tuple:
        """The modules `quantize` keeps in float unless the QuantizeConfig `cfg` names its own: the
        model's measured set (its registry entry, edge_dm.models), else the family's default."""
        return self.default_keep_float if m.keep_float is None else m.keep_float

    split_shortcut = False  # whether `quantize` splits shortcut convolutions by default (int8 mode only)

    def splits_shortcuts(self, cfg) -> bool:
        """Whether the QuantizeConfig `cfg` splits shortcut convolutions (its own choice, else the
        family's default for int8; weight compression has no activation scales to separate)."""
        return self.split_shortcut and cfg.mode == "int8" if cfg.split_shortcut is None else cfg.split_shortcut

    # --- bundles -------------------------------------------------------------------------------
    def scheduler_config(self, folder: Path) -> dict:
        try:
            return json.loads((Path(folder) / self.scheduler_file).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"unreadable scheduler config in {folder}: {exc}") from None

    def check_bundle(self, folder: Path) -> None:
        """BundleError naming the first file this family's bundle layout needs and `folder` lacks."""
        for rel in [*self.components.values(), self.scheduler_file]:
            needed = [rel, str(Path(rel).with_suffix(".bin"))] if rel.endswith(".xml") else [rel]
            for r in needed:
                if not (Path(folder) / r).is_file():
                    raise BundleError(f"{folder} is not a complete edge-dm bundle: {r} is missing")

    def write_component(self, folder: Path, model, component: str = "unet", fp16: bool = False) -> None:
        """Save `model` (an openvino.Model) as a component's IR, replacing the file by rename: an IR
        read from the old file (memory-mapped) stays valid."""
        import os

        import openvino as ov

        target = Path(folder) / self.components[component]
        tmp = target.with_name(f".{target.stem}.new.xml")
        ov.save_model(model, tmp, compress_to_fp16=fp16)
        os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(tmp, target)

    def compress_components(self, folder: Path, cfg) -> None:
        """Apply cfg's modes to the components besides the denoiser (text encoder, VAE)."""

    def write_quantized(self, folder: Path, fp32, int8) -> None:
        """Put the int8 denoiser into the bundle being written in `folder` (its fp32 export)."""
        self.write_component(folder, int8)

    # --- sampling --------------------------------------------------------------------------------
    def model_sample_shape(self, m: LoadedModel) -> tuple:
        raise NotImplementedError

    def sample_shape(self, bundle, sampling) -> tuple:
        """The shape (without batch) of the sampler's state for `sampling`'s image size."""
        raise NotImplementedError

    def net_batch(self, sampling) -> int:
        """How many net inputs one image takes (2 with classifier-free guidance)."""
        return 1

    def prompts_for_calibration(self, cfg) -> tuple[list, list]:
        """(calibration prompts, held-out prompts); empty for unconditional models."""
        return [], []

    report_images = 0  # quantize writes fp32 and int8 images of this many held-out prompts side by side
    reuse_export = False  # quantize copies the cached fp32 bundle of `edge-dm export` instead of exporting

    def guidance(self, sampling) -> float | None:
        """The guidance scale in effect (None: the model is not guided)."""
        return None

    def check_request(self, bundle, sampling, prompts) -> None:
        """ConfigError if prompts, guidance or sizes do not suit this family (before any work)."""
        if prompts and not self.conditional:
            raise ConfigError(f"{bundle.path} holds an unconditional model: it takes no prompt")
        self.check_sampling(bundle, sampling)

    def check_sampling(self, bundle, sampling) -> None:
        """ConfigError if the sampling options do not suit this family's model."""
        if sampling.guidance_scale is not None and not self.conditional:
            raise ConfigError("--guidance-scale is for text-to-image models; this one is unconditional")
        if (sampling.height or sampling.width) and not self.conditional:
            raise ConfigError("--height/--width are for text-to-image models; this one has a fixed size")

    def encode(self, pipeline, prompts: list, sampling) -> dict | None:
        """Conditioning for each image (a dict of arrays with a leading image axis), or None."""
        return None

    def net_inputs(self, roles: dict, x, t, cond, guidance) -> dict:
        """The net's named inputs for a batch (numpy x, t and the batch's slice of cond)."""
        return {roles[SAMPLE]: x, roles[TIMESTEP]: t}

    torch_roles = {SAMPLE: "sample", TIMESTEP: "timestep", TEXT: "encoder_hidden_states"}  # diffusers' names

    def torch_denoiser(self, m: LoadedModel, device: str = "cpu", dtype=None, guidance: float | None = None):
        """The model's torch UNet as a denoiser (the reference OpenVINO is checked against)."""
        return Denoiser(self, TorchNet(m.unet, device, dtype), self.torch_roles, guidance)

    def combine(self, out, guidance):
        """The noise prediction from the net's first output (guidance, where used)."""
        return out

    def decode(self, pipeline, x) -> "numpy.ndarray":
        """uint8 NHWC images from the loop's final state."""
        raise NotImplementedError

    # --- quantization -----------------------------------------------------------------------------
    def cache_features(self, model) -> dict:
        """DeepCache: for each up block k, the output (an openvino Output) that is the block's input."""
        return {}
