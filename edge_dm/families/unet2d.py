"""Unconditional pixel-space DDPMs: a diffusers `UNet2DModel` with its scheduler (edge-dm's own
CIFAR-10 model, google/ddpm-*).

Bundle layout: unet.xml/.bin (the UNet IR, inputs sample [-1, C, H, W] f32 and timestep [-1] i64),
scheduler_config.json, recipe.json; an int8 bundle also keeps unet_fp32.xml/.bin and calibration.npz.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from edge_dm.errors import interrupted
from edge_dm.families.base import Family, Layout, LoadedModel, QuantizationPolicy

# google/ddpm-cifar10-32's exact UNet2DModel config (35.7M parameters), for timing without the weights
ARCHITECTURES = {
    "ddpm-cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_eps=1e-6, freq_shift=1,
        flip_sin_to_cos=False, downsample_padding=0, attention_head_dim=None),
}


def convert_unet(unet, sample_shape: tuple):
    """An openvino.Model of `unet` with inputs sample [-1, C, H, W] f32 and timestep [-1] i64.

    The batch dimension is dynamic; edge_dm.denoiser reshapes it to the batch in use before compiling
    (a static batch runs faster than a dynamic one on CPU).
    """
    import contextlib
    import sys
    import warnings

    import openvino as ov
    import torch

    if "nncf" in sys.modules:  # convert_model then imports nncf.torch (seconds) in a bare `except: pass`,
        with contextlib.suppress(ImportError):  # which swallowed a Ctrl-C or SIGTERM in that time
            import nncf.torch  # noqa: F401
    unet = unet.float().eval()
    example = (torch.randn(2, *sample_shape), torch.tensor([10, 500], dtype=torch.int64))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit tracer warnings about diffusers' shape asserts
        try:
            model = ov.convert_model(
                unet, example_input=example,
                input=[("sample", [-1, *sample_shape], ov.Type.f32), ("timestep", [-1], ov.Type.i64)])
        except Exception as exc:
            if interrupted(exc):  # Ctrl-C or SIGTERM while tracing: end like any other interrupt
                raise KeyboardInterrupt from None
            raise
    model.outputs[0].get_tensor().set_names({"noise_pred"})
    return model


class UNet2D(Family):
    name = "unet2d"
    architectures = tuple(ARCHITECTURES)
    layout = Layout(components={"unet": "unet.xml"}, scheduler_file="scheduler_config.json",
                    fp32_copy="unet_fp32.xml")
    # conv_in, conv_out and the time embedding (its MLP and every resnet's time_emb_proj) in float, and
    # the shortcut split on: docs/QUANTIZATION.md says what each measured
    policy = QuantizationPolicy(keep_float=("conv_in", "conv_out", "time_emb"), split_shortcut=True)

    @staticmethod
    def _layout(path: Path) -> tuple[Path, Path] | None:
        """(UNet folder, scheduler folder) of a local model: a pipeline (unet/ + scheduler/), or a
        UNet folder beside a scheduler/ folder (what `edge-dm train` writes: ema/ and scheduler/)."""
        path = Path(path)
        for unet, sched in ((path / "unet", path / "scheduler"), (path, path.parent / "scheduler")):
            config = unet / "config.json"
            if config.is_file() and sched.is_dir():
                try:
                    if json.loads(config.read_text()).get("_class_name", "UNet2DModel") == "UNet2DModel":
                        return unet, sched
                except (OSError, ValueError):
                    return None
        return None

    def recognises(self, path: Path) -> bool:
        return self._layout(path) is not None

    def load(self, spec: str, source: str) -> LoadedModel:
        from diffusers import DDPMScheduler, UNet2DModel

        layout = self._layout(Path(source).expanduser())
        if layout:  # a local folder
            unet, sched = UNet2DModel.from_pretrained(layout[0]), DDPMScheduler.load_config(layout[1])
        else:  # a hub id
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            sched = DDPMScheduler.load_config(source, subfolder="scheduler")
        return LoadedModel(spec, str(source), self, {"unet": unet.float().eval()}, dict(sched))

    def random(self, arch: str) -> LoadedModel | None:
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        if arch not in ARCHITECTURES:
            return None
        torch.manual_seed(0)
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").config
        spec = f"random:{arch}"
        return LoadedModel(spec, spec, self, {"unet": UNet2DModel(**ARCHITECTURES[arch]).eval()}, dict(sched))

    def for_quantization(self, m: LoadedModel, split_shortcut: bool) -> tuple[LoadedModel, dict]:
        """With the split, a copy whose up path convolves each skip concatenation's parts apart
        (edge_dm.families.shortcut_split); the recipe records how many convolutions split."""
        if not split_shortcut:
            return m, dict(split_convs=0)
        from edge_dm.families.shortcut_split import split_shortcuts

        unet, n = split_shortcuts(m.unet)
        return dataclasses.replace(m, modules={**m.modules, "unet": unet}), dict(split_convs=n)

    def float_names(self, names: tuple, split_shortcut: bool) -> tuple:
        """Without the split, a half of one shortcut convolution (`conv_shortcut.a`) keeps the whole
        convolution in float."""
        if split_shortcut:
            return names
        return tuple(dict.fromkeys(re.sub(r"\.conv_shortcut\.[ab]$", ".conv_shortcut", n) for n in names))

    def export(self, m: LoadedModel, folder: Path, precision: str):
        import openvino as ov

        shape = m.sample_shape
        model = convert_unet(m.unet, shape)
        ov.save_model(model, Path(folder) / self.layout.components["unet"], compress_to_fp16=precision == "fp16")
        (Path(folder) / self.layout.scheduler_file).write_text(json.dumps(m.scheduler_config, indent=2, sort_keys=True))
        return dict(sample_shape=list(shape), inputs={"sample": [-1, *shape], "timestep": [-1]}), model

    def cache_features(self, model) -> dict:
        return cache_cuts(model)


def cache_cuts(model) -> dict:
    """DeepCache's cuts by branch: b >= 1, the input of the b-th up block from the end (the shallow
    part keeps b levels); 0, the running state entering the last up block's last layer (the shallow
    part keeps that layer alone, DeepCache's own setting for Stable Diffusion). Empty when the names
    OpenVINO's PyTorch frontend gives do not tell the blocks apart."""
    inputs = up_block_inputs(model)
    cuts = {len(inputs) - k: value for k, value in inputs.items() if k > 0}
    last = last_layer_input(model, len(inputs) - 1) if inputs else None
    return {**cuts, 0: last} if last is not None else cuts


def last_layer_input(model, k: int):
    """The output the last layer of up block `k` reads as its running state: that of the layer before
    it (its attention if it has one, else its resnet), the one feature map that ops outside that layer
    read (through a FakeQuantize in int8 IRs). None for a block of one layer or names that do not tell."""
    ops = model.get_ordered_ops()
    names = [op.get_friendly_name() for op in ops]
    layers = {int(m.group(1)) for n in names if (m := re.match(rf"__module\.up_blocks\.{k}\.resnets\.(\d+)[./]", n))}
    if len(layers) < 2:
        return None
    j = max(layers) - 1
    kind = "attentions" if any(re.match(rf"__module\.up_blocks\.{k}\.attentions\.{j}[./]", n) for n in names) \
        else "resnets"
    inside = re.compile(rf"__module\.up_blocks\.{k}\.{kind}\.{j}[./]")
    found: dict = {}
    for op in ops:
        if inside.match(op.get_friendly_name()) or op.get_type_name() == "FakeQuantize":
            continue
        for value in op.input_values():
            while value.get_node().get_type_name() == "FakeQuantize":
                value = value.get_node().input_value(0)
            if inside.match(value.get_node().get_friendly_name()) and value.get_element_type().is_real() \
                    and value.get_partial_shape().rank.get_length() == 4:  # not shape arithmetic the IR shares
                found[(value.get_node().get_friendly_name(), value.get_index())] = value
    return next(iter(found.values())) if len(found) == 1 else None


def up_block_inputs(model) -> dict:
    """Each up block's input: the output of the mid block or of the up block before it that ops of
    the block read (through a FakeQuantize in int8 IRs), found by the names OpenVINO's PyTorch
    frontend gives. Whether the block concatenates it with a skip or, split (shortcut_split),
    convolves it directly does not matter."""
    features: dict = {}
    for op in model.get_ordered_ops():
        match = re.match(r"__module\.up_blocks\.(\d+)[./]", op.get_friendly_name())
        if not match:
            continue
        k = int(match.group(1))
        before = re.compile(rf"__module\.up_blocks\.{k - 1}[./]" if k else r"__module\.mid_block[./]")
        for value in op.input_values():
            while value.get_node().get_type_name() == "FakeQuantize":
                value = value.get_node().input_value(0)
            if before.match(value.get_node().get_friendly_name()):
                features.setdefault(k, {})[(value.get_node().get_friendly_name(), value.get_index())] = value
    if any(len(found) != 1 for found in features.values()):
        return {}  # not a UNet whose blocks these names tell apart
    return {k: next(iter(found.values())) for k, found in features.items()}
