"""Torch UNet -> OpenVINO IR, written as an edge-dm bundle."""
from __future__ import annotations

import time

from edge_dm.bundle import Bundle, atomic_dir, default_bundle_path, open_bundle, write_bundle
from edge_dm.configs import ExportConfig


def convert_unet(unet, sample_shape: tuple):
    """An openvino.Model of `unet` with inputs sample [-1, C, H, W] f32 and timestep [-1] i64.

    The batch dimension is dynamic; runtime reshapes it to the batch in use before compiling
    (a static batch runs faster than a dynamic one on CPU).
    """
    import warnings

    import openvino as ov
    import torch

    unet = unet.float().eval()
    example = (torch.randn(2, *sample_shape), torch.tensor([10, 500], dtype=torch.int64))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit tracer warnings about diffusers' shape asserts
        model = ov.convert_model(
            unet, example_input=example,
            input=[("sample", [-1, *sample_shape], ov.Type.f32), ("timestep", [-1], ov.Type.i64)])
    model.outputs[0].get_tensor().set_names({"noise_pred"})
    return model


def model_recipe(kind: str, m, precision: str, config) -> dict:
    """The recipe fields every bundle shares: what made it, from which model, with which inputs."""
    return dict(kind=kind, source=m.source, model=m.spec, precision=precision, sample_shape=list(m.sample_shape),
                inputs={"sample": [-1, *m.sample_shape], "timestep": [-1]},
                parameters=sum(p.numel() for p in m.unet.parameters()), config=config.to_dict())


def export(cfg: ExportConfig) -> Bundle:
    """Convert cfg.model's UNet to an OpenVINO IR bundle at cfg.output (default: the bundle cache)."""
    from edge_dm.models import load_model

    out = cfg.output or default_bundle_path(cfg.model, cfg.precision)
    with atomic_dir(out, cfg.overwrite) as tmp:
        t0 = time.perf_counter()
        m = load_model(cfg.model)
        ov_model = convert_unet(m.unet, m.sample_shape)
        recipe = dict(model_recipe("export", m, cfg.precision, cfg), export_s=round(time.perf_counter() - t0, 2))
        write_bundle(tmp, ov_model, m.scheduler_config, recipe, compress_to_fp16=cfg.precision == "fp16")
    return open_bundle(out)
