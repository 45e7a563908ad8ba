"""NNCF post-training quantization of the OpenVINO UNet with a DNTC (or baseline) calibration set.

Defaults (preset MIXED, model_type TRANSFORMER, i.e. SmoothQuant on the attention MatMuls, fast bias
correction, min-max ranges, overflow fix on every layer, conv_in / conv_out / time embedding left in
float) were chosen by the fp32-vs-int8 error of the noise prediction and the drift of whole images:
see docs/QUANTIZATION.md for the measurements.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_dm.bundle import FP32_IR, Bundle, atomic_dir, default_bundle_path, open_bundle, write_bundle
from edge_dm.calibration import CalibrationSet, build_calibration_set, held_out_set
from edge_dm.configs import QuantizeConfig

HELD_OUT_SEED = 1_000_003  # far from any calibration seed: held-out trajectories share no noise


def keep_float_patterns(model, names) -> list[str]:
    """NNCF ignored-scope patterns for the UNet modules `names`, matched against the op names the
    PyTorch frontend gives (`__module.<path>/aten::...`); ConfigError if a name matches no op."""
    import re

    from edge_dm.errors import ConfigError

    patterns, ops = [], [op.get_friendly_name() for op in model.get_ops()]
    for name in names:
        pattern = rf".*[./]{re.escape(name)}[^/]*/.*"
        if not any(re.fullmatch(pattern, op) for op in ops):
            raise ConfigError(f"--keep-float {name}: no module of this UNet is named so")
        patterns.append(pattern)
    return patterns


def _nncf_options(cfg: QuantizeConfig, model) -> dict:
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       AdvancedSmoothQuantParameters, OverflowFix)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    estimators = {"minmax": R.MINMAX, "mean-minmax": R.MEAN_MINMAX, "quantile": R.MEAN_QUANTILE,
                  "histogram": R.HISTOGRAM}
    fixes = {"enable": OverflowFix.ENABLE, "first-layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}
    adv = dict(activations_range_estimator_params=estimators[cfg.range_estimator],
               overflow_fix=fixes[cfg.overflow_fix])
    if cfg.smooth_quant_alpha is not None:
        adv["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=cfg.smooth_quant_alpha)
    ignored = None
    patterns = [*cfg.ignored_patterns, *keep_float_patterns(model, cfg.keep_float)]
    if cfg.ignored_names or patterns or cfg.ignored_types:
        ignored = nncf.IgnoredScope(names=list(cfg.ignored_names), patterns=patterns,
                                    types=list(cfg.ignored_types), validate=False)
    return dict(
        preset=nncf.QuantizationPreset.MIXED if cfg.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        model_type=nncf.ModelType.TRANSFORMER if cfg.model_type == "transformer" else None,
        fast_bias_correction=cfg.fast_bias_correction, ignored_scope=ignored,
        advanced_parameters=AdvancedQuantizationParameters(**adv))


def op_counts(model) -> dict:
    """How much of an OpenVINO model is quantized: FakeQuantize nodes and low-precision constants."""
    ops = model.get_ops()
    fq = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    low = sum(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("i8", "u8")
              for op in ops)
    compute = sum(op.get_type_name() in ("Convolution", "MatMul") for op in ops)
    return dict(fake_quantize=fq, int8_constants=low, conv_matmul=compute)


def noise_prediction_error(fp32_model, q_model, held: CalibrationSet) -> list[dict]:
    """Relative L2 error of the int8 noise prediction vs fp32, per held-out timestep (both in f32)."""
    from edge_dm.runtime import compile_unet

    out = []
    runs = [compile_unet(m, "CPU", 1, precision_hint="f32") for m in (fp32_model, q_model)]
    for t in sorted(set(held.t.tolist()), reverse=True):
        idx = np.flatnonzero(held.t == t)
        num = den = 0.0
        for i in idx:
            inp = {"sample": held.x[i:i + 1], "timestep": held.t[i:i + 1]}
            a, b = (r(inp)[0] for r in runs)
            num += float(np.sum((b - a) ** 2))
            den += float(np.sum(a ** 2))
        out.append(dict(t=int(t), rel_l2=round(float(np.sqrt(num / den)), 5), samples=len(idx)))
    return out


def quantize(cfg: QuantizeConfig, progress: bool = True) -> tuple[Bundle, dict]:
    """Calibrate, quantize and write an int8 bundle; returns it and the printed summary."""
    import nncf
    import openvino as ov
    from tqdm import tqdm

    from edge_dm.export import convert_unet, model_recipe
    from edge_dm.models import load_model
    from edge_dm.runtime import OpenVINODenoiser

    out = Path(cfg.output) if cfg.output else default_bundle_path(cfg.model, "int8")
    with atomic_dir(out, cfg.overwrite) as tmp:
        m = load_model(cfg.model)
        cal_cfg = cfg.calibration
        if cal_cfg.num_train_timesteps != m.num_train_timesteps:
            cal_cfg = type(cal_cfg).from_dict(dict(cal_cfg.to_dict(), num_train_timesteps=m.num_train_timesteps))
        fp32 = convert_unet(m.unet, m.sample_shape)
        fp_denoiser = OpenVINODenoiser(fp32, "CPU", "THROUGHPUT", precision_hint="f32")

        t0 = time.perf_counter()
        if cfg.calibration_set:
            cal = CalibrationSet.load(cfg.calibration_set)
        else:
            bar = tqdm(total=cal_cfg.steps, unit="step", desc=f"calibration ({cal_cfg.kind})", disable=not progress)
            cal = build_calibration_set(cal_cfg, fp_denoiser, m.scheduler_config, m.sample_shape, bar.update)
            bar.close()
        t_cal = time.perf_counter() - t0

        t0 = time.perf_counter()
        if cfg.mode == "weights":
            q = nncf.compress_weights(fp32.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM)
        else:
            q = nncf.quantize(fp32.clone(), cal.nncf_dataset(), subset_size=cfg.subset_size or len(cal),
                              **_nncf_options(cfg, fp32))
        t_quant = time.perf_counter() - t0

        t0 = time.perf_counter()
        held = held_out_set(fp_denoiser, m.scheduler_config, m.sample_shape, cal_cfg.scheduler, cal_cfg.steps,
                            cfg.eval_trajectories, HELD_OUT_SEED)
        errors = noise_prediction_error(fp32, q, held)
        t_eval = time.perf_counter() - t0

        ov.save_model(fp32, tmp / FP32_IR, compress_to_fp16=False)  # the baseline, beside the int8 IR
        cal.save(tmp / "calibration.npz")
        fp32_size = sum((tmp / FP32_IR).with_suffix(e).stat().st_size for e in (".xml", ".bin"))
        summary = dict(
            calibration_s=round(t_cal, 2), quantization_s=round(t_quant, 2), error_eval_s=round(t_eval, 2),
            calibration_samples=len(cal), calibration_t_mean=round(float(cal.t.mean()), 1),
            ops=op_counts(q), ir_bytes_fp32=fp32_size,
            noise_prediction_rel_l2=errors,
            mean_rel_l2=round(float(np.mean([e["rel_l2"] for e in errors])), 5))
        precision = "int8" if cfg.mode == "int8" else "int8-weights"
        recipe = dict(model_recipe("quantize", m, precision, cfg), calibration=cal.recipe, summary=summary)
        write_bundle(tmp, q, m.scheduler_config, recipe)
    bundle = open_bundle(out)
    summary["ir_bytes_int8"] = bundle.recipe["ir_bytes"]
    return bundle, summary
