"""Text-to-image quantization options side by side: for each, UNet latency at the pipeline's batch
(classifier-free guidance: 2), held-out noise-prediction error, quantization time, end-to-end seconds
per image, and where the int8 UNet's time goes (OpenVINO's per-layer counters, summed by layer type
and by kernel). One fp32 export, one DNTC calibration set and one held-out set serve every option,
so the options differ in nothing else. f32 and bf16 rows are the float baselines.

    python benchmarks/t2i_options.py --model random:sd15 --output sd15-options.json

(`random:sd15`: Stable Diffusion 1.5's architecture with seeded random weights, 512x512, 25 steps.)
JSON on stdout or in --output: one row per float baseline and option, rewritten after every row, so
an interrupted run keeps what it measured. Backs docs/experiments/2026-12-01-sd15-options-amx.md.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from unet_profile import profile  # noqa: E402

# name -> QuantizeConfig (algorithm) options that differ from edge-dm's defaults
VARIANTS = {
    "defaults": {},
    "performance": dict(preset="performance"),
    "spr": dict(target_device="CPU_SPR"),
    "performance-spr": dict(preset="performance", target_device="CPU_SPR"),
    "performance-spr-sdpa-float": dict(preset="performance", target_device="CPU_SPR",
                                       ignored_types=("ScaledDotProductAttention",)),
    "performance-spr-no-overflow-fix": dict(preset="performance", target_device="CPU_SPR", overflow_fix="disable"),
    "no-overflow-fix": dict(overflow_fix="disable"),
}


def _log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def unet_row(name, model, shape, net_batch, hint, iterations, with_profile) -> dict:
    from edge_dm.jobs.timing import example_inputs, latency
    from edge_dm.runtime import compile_model

    inputs = example_inputs(model, 1, shape, net_batch)
    compiled = compile_model(model, "CPU", net_batch, "LATENCY", hint)
    row = dict(variant=name, precision_hint=hint or "default",
               effective_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
               unet_ms=latency(lambda: compiled(inputs), iterations, warmup=2))
    if with_profile:
        row["profile"] = profile(compile_model(model, "CPU", net_batch, "LATENCY", hint, {"PERF_COUNT": True}), inputs)
    return row


def end_to_end(bundle, hint, sampling, images: int) -> float:
    """Seconds per image: prompt to pixels (text encoder, denoising loop, VAE decoder)."""
    from edge_dm.configs import DeviceConfig
    from edge_dm.jobs.timing import PROMPT
    from edge_dm.pipeline import Pipeline

    pipe = Pipeline(bundle, DeviceConfig(batch_size=1, precision_hint=hint))
    # compile outside the timed run, in two steps: the fewest from which any timestep spacing starts at noise
    pipe.sample(1, sampling.replace(steps=min(2, sampling.steps)), [PROMPT])
    t0 = time.perf_counter()
    pipe.sample(images, sampling, [PROMPT])
    return round((time.perf_counter() - t0) / images, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:sd15")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--num-samples", type=int, default=8, help="calibration set size N")
    ap.add_argument("--samples-per-trajectory", type=int, default=8)
    ap.add_argument("--eval-trajectories", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=8, help="timed UNet calls per row (median)")
    ap.add_argument("--e2e-images", type=int, default=1, help="images per end-to-end timing (0: skip)")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--no-float", action="store_true", help="skip the f32 and bf16 rows")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--output")
    args = ap.parse_args()
    unknown = set(args.only.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")

    from edge_dm import jobs
    from edge_dm.bundle import Bundle, BundleError
    from edge_dm.calibration import calibrate, held_out
    from edge_dm.configs import CalibrationConfig, ExportConfig, QuantizeConfig, SamplingConfig
    from edge_dm.jobs.timing import float_baseline, machine_info
    from edge_dm.quantize import noise_prediction_error, op_counts, quantize_model

    machine = machine_info()
    result = dict(recipe="benchmarks/t2i_options.py", argv=sys.argv[1:], machine=machine,
                  float_baseline=float_baseline(machine.get("isa", [])), rows=[])
    save = lambda: emit(result, args.output) if args.output else None  # noqa: E731
    try:
        fp32 = Bundle.from_pretrained(args.model, "fp32")
    except BundleError:
        t0 = time.perf_counter()
        fp32 = jobs.export(ExportConfig(model=args.model))
        result["export_s"] = round(time.perf_counter() - t0, 1)
    s = fp32.sampling(SamplingConfig(steps=args.steps))  # the model's other defaults (scheduler, guidance)
    c, model = fp32.family.conditioning, fp32.read_model()
    shape, net_batch = c.sample_shape(fp32, s), c.net_batch(s)
    result.update(model=args.model, sample_shape=list(shape), net_batch=net_batch, steps=args.steps)
    _log("fp32 bundle", fp32.path, "sample", shape, "x", net_batch)

    cal_cfg = CalibrationConfig(num_samples=args.num_samples, samples_per_trajectory=args.samples_per_trajectory,
                                sampling=s)
    t0 = time.perf_counter()
    cal = calibrate(fp32, cal_cfg)  # the fp32 denoiser in f32 on the CPU
    result["calibration_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    held = held_out(fp32, cal_cfg, args.eval_trajectories)
    result["held_out_s"] = round(time.perf_counter() - t0, 1)
    _log("calibration", result["calibration_s"], "s; held-out", result["held_out_s"], "s")

    if not args.no_float:
        for name, hint in (("OpenVINO f32", "f32"), ("OpenVINO bf16", "bf16")):
            row = unet_row(name, model, shape, net_batch, hint, args.iterations, False)
            if args.e2e_images:
                row["e2e_s_per_image"] = end_to_end(fp32, hint, s, args.e2e_images)
            result["rows"].append(row)
            _log(row)
            save()

    for i, name in enumerate(args.only.split(",")):
        cfg = QuantizeConfig(**VARIANTS[name])  # keep_float None: the float-kept set of the calibration's family
        t0 = time.perf_counter()
        q = quantize_model(model, cal, cfg)
        quant_s = round(time.perf_counter() - t0, 1)
        errors = noise_prediction_error(model, q, held)
        row = unet_row(name, q, shape, net_batch, None, args.iterations, not args.no_profile and i < 3)
        row.update(options=VARIANTS[name], quantization_s=quant_s, ops=op_counts(q),
                   mean_rel_l2=round(sum(e["rel_l2"] for e in errors) / len(errors), 5), rel_l2=errors)
        if args.e2e_images:
            row["e2e_s_per_image"] = end_to_end(fp32.with_model(q, precision="int8"), None, s, args.e2e_images)
        result["rows"].append(row)
        _log({k: v for k, v in row.items() if k not in ("profile", "rel_l2")})
        save()

    base = {r["variant"]: r["unet_ms"]["median_ms"] for r in result["rows"]}
    for r in result["rows"]:
        for b in ("OpenVINO f32", "OpenVINO bf16"):
            if b in base:
                r[f"speedup_vs_{b.split()[1]}"] = round(base[b] / r["unet_ms"]["median_ms"], 3)
    emit(result, args.output)


if __name__ == "__main__":
    main()
