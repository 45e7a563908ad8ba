"""The CLI's jobs: each takes one config, checks everything it can before any work, runs the
in-memory steps and writes its output atomically. Python callers may use these or the steps below
them (models.load_model, calibration.calibrate, quantize.quantize_model, pipeline.Pipeline).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from edge_dm.bundle import Bundle, default_bundle_path, open_bundle, write_recipe
from edge_dm.configs import ExportConfig, GenerateConfig, QuantizeConfig
from edge_dm.outputs import atomic_output, check_output


def _bundle_recipe(kind: str, m, precision: str, config, fields: dict) -> dict:
    return dict(kind=kind, family=m.family.name, source=m.source, model=m.spec, precision=precision,
                parameters=m.parameters, config=config.to_dict(), **fields)


def export(cfg: ExportConfig) -> Bundle:
    """Convert cfg.model to an OpenVINO IR bundle at cfg.output (default: the bundle cache)."""
    from edge_dm.models import load_model

    out = check_output(cfg.output or default_bundle_path(cfg.model, cfg.precision), cfg.overwrite)
    m = load_model(cfg.model)
    with atomic_output(out, cfg.overwrite) as tmp:
        t0 = time.perf_counter()
        fields, _ = m.family.export(m, tmp, cfg.precision)
        write_recipe(tmp, _bundle_recipe("export", m, cfg.precision, cfg,
                                         dict(fields, export_s=round(time.perf_counter() - t0, 2))))
    return open_bundle(out)


def _bar(progress: bool, total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not progress)


def quantize(cfg: QuantizeConfig, progress: bool = True) -> tuple[Bundle, dict]:
    """Calibrate, quantize and write an int8 bundle; returns it and the printed summary."""
    from edge_dm.calibration import CalibrationSet, calibrate, held_out
    from edge_dm.configs import DeviceConfig
    from edge_dm.models import load_model
    from edge_dm.pipeline import Pipeline
    from edge_dm.quantize import (check_quantizable, error_table, held_out_items, hold_budget, kept_float, op_counts,
                                  quantize_model)
    from edge_dm.sampling import check_steps
    from edge_dm.targets import made_for

    out = check_output(cfg.output or default_bundle_path(cfg.model, "int8"), cfg.overwrite)
    cal_cfg, s = cfg.calibration, cfg.calibration.sampling
    m = load_model(cfg.model)
    family = m.family
    cal_cfg.check_timesteps(m.num_train_timesteps)
    check_steps(s.scheduler, m.scheduler_config, s.steps)
    cal = CalibrationSet.load(cfg.calibration_set) if cfg.calibration_set else None
    m, rewritten = family.for_quantization(m, cfg)
    keep = family.keep_float_for(m, cfg)
    with atomic_output(out, cfg.overwrite) as tmp:
        fields, fp32 = _fp32_export(m, tmp)
        fields.update(rewritten)
        ir = tmp / family.components["unet"]
        fp32_bytes = ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
        fp32_bundle = Bundle(tmp, dict(family=family.name), {ir: fp32})  # in memory: no second read
        fp32_pipe = Pipeline(fp32_bundle, DeviceConfig(precision_hint="f32"))
        family.check_sampling(fp32_bundle, s)
        check_quantizable(fp32, cfg, cal, keep)
        timings = {}

        t0 = time.perf_counter()
        if cal is None and cfg.mode == "int8":
            with _bar(progress, s.steps, f"calibration ({cal_cfg.kind})", "step") as bar:
                cal = calibrate(fp32_pipe, cal_cfg, bar.update)
        timings["calibration_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        q = quantize_model(fp32, cal, cfg, keep)
        timings["quantization_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        with _bar(progress, s.steps, "held-out error", "step") as bar:
            held = held_out(fp32_pipe, cal_cfg, cfg.eval_trajectories, bar.update)
        items = held_out_items(fp32, held)
        errors = error_table(q, items)
        timings["error_eval_s"] = round(time.perf_counter() - t0, 2)
        budget = None
        if cfg.max_drop is not None:
            t0 = time.perf_counter()
            q, errors, budget = hold_budget(fp32, q, errors, cal, items, cfg, keep)
            timings["accuracy_control_s"] = round(time.perf_counter() - t0, 2)

        family.write_quantized(tmp, fp32, q)
        family.compress_components(tmp, cfg)
        if cal is not None:
            cal.save(tmp / "calibration.npz")
        summary = dict(timings, ops=op_counts(q), ir_bytes_fp32=fp32_bytes, noise_prediction_rel_l2=errors["by_t"],
                       mean_rel_l2=errors["mean_rel_l2"])
        if budget is not None:
            summary["accuracy_control"] = budget
        if cal is not None:
            summary.update(calibration_samples=len(cal), calibration_t_mean=round(float(cal.t.mean()), 1))
        precision = "int8" if cfg.mode == "int8" else "int8-weights"
        recipe = _bundle_recipe("quantize", m, precision, cfg, dict(fields, kept_float=list(kept_float(cfg, keep)),
                                                                     summary=summary, target=made_for(q),
                                                                     calibration=cal.recipe if cal else None))
        report = family.report_images if cfg.report_images is None else cfg.report_images
        if report and family.conditional:
            from edge_dm.report import write_report

            write_report(tmp / "report.png", fp32_pipe, Pipeline(Bundle(tmp, recipe), DeviceConfig()),
                         family.prompts_for_calibration(cal_cfg)[1][:report], s)
        write_recipe(tmp, recipe)
    bundle = open_bundle(out)
    summary["ir_bytes_int8"] = bundle.recipe["ir_bytes"]
    return bundle, summary


def _fp32_export(m, folder: Path):
    """The model's fp32 export into `folder`: a copy of the fp32 bundle `edge-dm export` cached for
    this model where the family's export is slow (text-to-image), else a fresh export."""
    import shutil

    cached = default_bundle_path(m.spec, "fp32")
    if m.family.reuse_export and (cached / "recipe.json").is_file():
        recipe = json.loads((cached / "recipe.json").read_text())
        if recipe.get("source") == m.source and recipe.get("precision") == "fp32":
            shutil.copytree(cached, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("recipe.json"))
            fields = {k: recipe[k] for k in ("inputs", "sample_shape") if k in recipe}
            return dict(fields, fp32_export=str(cached)), open_bundle(cached).read_model()
    return m.family.export(m, folder, "fp32")


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Run the full denoising loop of a bundle on an OpenVINO device; write PNGs and a grid PNG.

    Image i is written as `{seed + i:05d}.png`, the seed its noise comes from (`edge_dm.sampling`), so
    `--seed 0 --num-images 500` and `--seed 500 --num-images 500` together are `--num-images 1000`.
    """
    from PIL import Image

    from edge_dm.images import grid, save_pngs
    from edge_dm.pipeline import Pipeline

    out = check_output(cfg.output, cfg.overwrite)
    pipe = Pipeline(Bundle.from_pretrained(cfg.model), cfg.runtime)
    pipe.check(cfg.sampling, cfg.prompts)
    with atomic_output(out, cfg.overwrite) as tmp:
        t0 = time.perf_counter()
        desc = f"{pipe.bundle.precision} {cfg.sampling.scheduler} x{cfg.sampling.steps}"
        with _bar(progress, cfg.num_images, desc, "img") as bar:
            images = pipe.sample(cfg.num_images, cfg.sampling, cfg.prompts, bar.update)
        wall = time.perf_counter() - t0
        save_pngs(images, tmp, start=cfg.sampling.seed)  # named by seed: runs over seed ranges merge
        Image.fromarray(grid(images)).save(tmp / "grid.png")
        den = pipe.last_denoiser
        result = dict(output=str(cfg.output), bundle=str(pipe.bundle.path), precision=pipe.bundle.precision,
                      device=cfg.runtime.device, images=len(images), seconds=round(wall, 3),
                      images_per_s=round(len(images) / wall, 3),
                      unet_ms_per_call=round(1e3 * den.seconds / max(den.calls, 1), 3),
                      unet_calls=den.calls, parallel=den.parallel, config=cfg.to_dict())
        (tmp / "generate.json").write_text(json.dumps(result, indent=2))
    return result
