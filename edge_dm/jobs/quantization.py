"""`edge-dm quantize`: calibrate a model on its own trajectory (DNTC by default), quantize its
denoiser with NNCF, measure the error on held-out trajectories and write an int8 bundle.

Every check that can run before the work runs first: the output, the model, the sampling options,
the prompt and data files, the float-kept modules, the saved calibration set.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from edge_dm.bundle import (
    Bundle,
    default_bundle_path,
    open_bundle,
    recipe_of,
    write_component,
    write_quantized,
    write_recipe,
)
from edge_dm.calibration import CalibrationSet, calibrate, final_latents, held_out
from edge_dm.configs import DeviceConfig, QuantizeConfig, QuantizeJobConfig
from edge_dm.data import load_images
from edge_dm.errors import ConfigError, DataError
from edge_dm.families.base import LoadedModel
from edge_dm.jobs.progress import bar
from edge_dm.jobs.report import write_report
from edge_dm.models import load_model, peek_scheduler_config
from edge_dm.outputs import atomic_output, check_output
from edge_dm.pipeline import Pipeline
from edge_dm.quantize import (
    check_quantizable,
    compress_weights,
    error_table,
    held_out_items,
    hold_budget,
    kept_float,
    op_counts,
    quantize_component,
    quantize_model,
)
from edge_dm.sampling import check_steps
from edge_dm.targets import made_for

COMPONENT_OPTIONS = {"text_encoder": "text_encoder", "vae_decoder": "vae"}  # component -> job option


def quantize(cfg: QuantizeJobConfig, progress: bool = True) -> tuple[Bundle, dict]:
    """Calibrate, quantize and write an int8 bundle; returns it and the printed summary."""
    inputs = [p for p in (cfg.model, cfg.calibration_set, cfg.calibration.data, cfg.calibration.prompts) if p]
    out = check_output(cfg.output or default_bundle_path(cfg.model, "int8"), cfg.overwrite, inputs=inputs)
    cal = CalibrationSet.load(cfg.calibration_set) if cfg.calibration_set else None
    peeked = peek_scheduler_config(cfg.model)  # mu and fixed_t checked before the model loads, where it can be
    if peeked is not None:
        cfg.calibration.check_timesteps(int(peeked.get("num_train_timesteps", 1000)))
    m = load_model(cfg.model)
    family, c, q = m.family, m.family.conditioning, cfg.quantization
    if cal is not None and cal.recipe.get("family", family.name) != family.name:
        raise DataError(f"the calibration set {cfg.calibration_set} was made for a {cal.recipe['family']} model; "
                        f"this one is {family.name}")
    s = cfg.calibration.sampling.resolved(m.sampling_defaults)
    cal_cfg = cfg.calibration.replace(sampling=s, prompts=cfg.calibration.prompts or m.prompts)
    cal_cfg.check_timesteps(m.num_train_timesteps)
    check_steps(s.scheduler, m.scheduler_config, s.steps)
    c.calibration_prompts(cal_cfg.prompts)  # reads the prompt files: a bad one fails before any work
    if cal_cfg.kind == "forward":
        load_images(cal_cfg.data, limit=1)
    for component, option in COMPONENT_OPTIONS.items():
        if getattr(cfg, option) != "float" and component not in family.layout.components:
            raise ConfigError(f"`{option}` is for models with a {component}; this {family.name} model has none")
    if Path(m.source).is_dir():  # sizes against the model's own files, before the export
        c.check_sampling(_Files(Path(m.source)), s)
    split = family.policy.splits(q)
    m, rewritten = family.for_quantization(m, split)
    keep = q.keep_float if q.keep_float is not None else \
        m.keep_float if m.keep_float is not None else family.policy.keep_float
    q = q.replace(keep_float=family.float_names(keep, split),
                  smooth_quant_alpha=q.smooth_quant_alpha if q.smooth_quant_alpha is not None else m.smooth_quant_alpha)
    check_module_names(m, q.keep_float)
    with atomic_output(out, cfg.overwrite, inputs=inputs + [m.source]) as tmp:
        fields, fp32 = _fp32_export(m, tmp)
        fp32, ir_fields = family.ir_for_quantization(fp32, split)
        fields.update(rewritten, **ir_fields)
        ir = tmp / family.layout.components["unet"]
        fp32_bytes = ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
        fp32_bundle = Bundle(tmp, dict(family=family.name, precision="fp32", sampling=m.sampling or None),
                             {ir: fp32})  # in memory: no second read
        c.check_sampling(fp32_bundle, s)
        check_quantizable(fp32, q, cal)
        timings = {}

        t0 = time.perf_counter()
        if cal is None and q.mode == "int8":
            with bar(progress, s.steps, f"calibration ({cal_cfg.kind})", "step") as b:
                cal = calibrate(fp32_bundle, cal_cfg, b.update)
                b.update(b.total - b.n)  # the trajectories stop at the last step a sample needs
        timings["calibration_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        int8 = quantize_model(fp32, cal, q)
        timings["quantization_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        with bar(progress, s.steps, "held-out error", "step") as b:
            held = held_out(fp32_bundle, cal_cfg, cfg.eval_trajectories, b.update)
        items = held_out_items(fp32, held)
        errors = error_table(int8, items)
        timings["error_eval_s"] = round(time.perf_counter() - t0, 2)
        budget = None
        if q.max_drop is not None:
            t0 = time.perf_counter()
            int8, errors, budget = hold_budget(fp32, int8, errors, cal, items, q)
            timings["accuracy_control_s"] = round(time.perf_counter() - t0, 2)

        write_quantized(family, tmp, fp32, int8)
        t0 = time.perf_counter()
        components = quantize_components(fp32_bundle, tmp, cfg, cal_cfg, q)
        if components:
            timings["components_s"] = round(time.perf_counter() - t0, 2)
        if cal is not None:
            cal.save(tmp / "calibration.npz")
        summary = dict(timings, ops=op_counts(int8), ir_bytes_fp32=fp32_bytes, noise_prediction_rel_l2=errors["by_t"],
                       mean_rel_l2=errors["mean_rel_l2"])
        if budget is not None:
            summary["accuracy_control"] = budget
        if components:
            summary["component_ops"] = components
        if cal is not None:
            summary.update(calibration_samples=len(cal), calibration_t_mean=round(float(cal.t.mean()), 1))
        precision = "int8" if q.mode == "int8" else "int8-weights"
        recipe = recipe_of("quantize", m, precision, cfg, **fields, kept_float=list(kept_float(q, cal)),
                           summary=summary, target=made_for(int8), calibration=cal.recipe if cal else None)
        report = family.policy.report_images if cfg.report_images is None else cfg.report_images
        if report and c.takes_prompts:
            write_report(tmp / "report.png", Pipeline(fp32_bundle, DeviceConfig(precision_hint="f32")),
                         Pipeline(Bundle(tmp, recipe), DeviceConfig()),
                         c.calibration_prompts(cal_cfg.prompts)[1][:report], s)
        write_recipe(tmp, recipe)
    bundle = open_bundle(out)
    summary["ir_bytes_int8"] = bundle.recipe["ir_bytes"]
    return bundle, summary


class _Files:
    """A model folder as the families read a bundle's files (edge_dm.families.base.BundleFiles)."""

    def __init__(self, path: Path):
        self.path = path

    def read_model(self, ir: str = "unet"):
        raise NotImplementedError("the folder holds no IR yet")


def check_module_names(m: LoadedModel, names: tuple) -> None:
    """ConfigError for a float-kept name that no module of the model's UNet has (checked on the torch
    model, before the export; quantize_model checks the IR's operations again)."""
    modules = [name for name, _ in m.unet.named_modules() if name]
    for name in names:
        if not any(re.fullmatch(rf"(.*\.)?{re.escape(name)}.*", path) for path in modules):
            raise ConfigError(f"`keep_float` {name!r}: no module of this model is named so")


def quantize_components(fp32: Bundle, folder: Path, cfg: QuantizeJobConfig, cal_cfg, q: QuantizeConfig) -> dict:
    """The components besides the denoiser as cfg asks: NNCF int8 weight compression, or W8A8 calibrated
    on what each receives when the pipeline runs (text encoders: the calibration prompts' tokens; the VAE
    decoder: the final latents of full trajectories at the deployed sampling). Returns each changed
    component's op counts."""
    import openvino as ov

    family, done = fp32.family, {}
    for component in family.layout.components:
        option = component_option(component)
        mode = getattr(cfg, option) if option else "float"
        if mode == "float":
            continue
        model = ov.Core().read_model(Path(folder) / family.layout.components[component])
        compressed = quantize_component_as(fp32, component, model, mode, cal_cfg, q)
        write_component(family, folder, compressed, component)
        done[component] = op_counts(compressed)
    return done


def component_option(component: str) -> str | None:
    """The job option (`vae`, `text_encoder`) that says how a bundle component is quantized; None for
    the denoiser."""
    return "vae" if component == "vae_decoder" else "text_encoder" if component.startswith("text_encoder") else None


def quantize_component_as(fp32: Bundle, component: str, model, mode: str, cal_cfg, q: QuantizeConfig):
    """`model`, the float bundle `fp32`'s `component`, as `mode` asks: NNCF int8 weight compression
    (int8-weights), or W8A8 (int8) calibrated on what the component receives at cal_cfg's sampling."""
    if mode == "int8-weights":
        return compress_weights(model)
    return quantize_component(model, component_inputs(fp32, component, model, cal_cfg), q)


def component_inputs(fp32: Bundle, component: str, model, cal_cfg, count: int = 8) -> list[dict]:
    """Calibration records of a component: its IR's named inputs as the pipeline feeds it (the family
    says how, from the calibration prompts and, for a VAE decoder, `count` final latents)."""
    c = fp32.family.conditioning
    prompts, _ = c.calibration_prompts(cal_cfg.prompts)
    latents = final_latents(fp32, cal_cfg, count) if component == "vae_decoder" else None
    records = c.component_inputs(fp32, component, prompts, latents)
    names = [i.get_any_name() for i in model.inputs]
    return [dict(zip(names, r)) for r in records]


def _fp32_export(m: LoadedModel, folder: Path):
    """The model's fp32 export into `folder`: a copy of the fp32 bundle `edge-dm export` cached for
    this model where the family's export is slow (text-to-image), else a fresh export."""
    cached = default_bundle_path(m.spec, "fp32")
    if m.family.reuse_export and (cached / "recipe.json").is_file():
        recipe = json.loads((cached / "recipe.json").read_text())
        if recipe.get("source") == m.source and recipe.get("precision") == "fp32":
            shutil.copytree(cached, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("recipe.json"))
            fields = {k: recipe[k] for k in ("inputs", "sample_shape") if k in recipe}
            return dict(fields, fp32_export=str(cached)), open_bundle(cached).read_model()
    return m.family.export(m, folder, "fp32")
