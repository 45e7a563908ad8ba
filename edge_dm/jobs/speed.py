"""`edge-dm benchmark`: speed side by side in one run: torch eager fp32, OpenVINO fp32 / bf16 / fp16,
OpenVINO int8; with `cache_intervals`, whole images with DeepCache for int8 and the float baseline.

Times are only compared within one run on one machine (ratios), never against fixed numbers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge_dm.bundle import Bundle
from edge_dm.caching import OpenVINOCachedNet
from edge_dm.configs import (
    DEFAULT_MODEL,
    BenchmarkConfig,
    CalibrationConfig,
    DeviceConfig,
    ExportConfig,
    QuantizeJobConfig,
    SamplingConfig,
)
from edge_dm.errors import BenchmarkError, BundleError, DeviceError
from edge_dm.families.base import torch_denoiser
from edge_dm.jobs.conversion import export
from edge_dm.jobs.quantization import quantize
from edge_dm.jobs.summary import chart, image_chart, markdown, measured, s_per_image
from edge_dm.jobs.timing import PROMPT, example_inputs, float_baseline, images_per_s, latency, machine_info, rss_mb
from edge_dm.models import load_model, resolve
from edge_dm.outputs import atomic_output, check_output
from edge_dm.pipeline import Pipeline
from edge_dm.runtime import check_device, compile_model, device_capabilities
from edge_dm.sampling import check_steps, generate, make_scheduler
from edge_dm.targets import float_rest, target_of


def _ir_size(ir: Path) -> int:
    return ir.stat().st_size + ir.with_suffix(".bin").stat().st_size


def _ov_variant(name, bundle, device, hint, cfg: BenchmarkConfig, sampling, size_bytes: int) -> dict:
    model = bundle.read_model()
    c = bundle.family.conditioning
    sampling = bundle.sampling(sampling)
    shape, per_image = c.sample_shape(bundle, sampling), c.net_batch(sampling)
    inputs = example_inputs(model, 1, shape, per_image)
    shapes = {k: v.shape[1:] for k, v in inputs.items()}  # all static, as the pipeline compiles it
    rss0 = rss_mb()
    t0 = time.perf_counter()
    compiled = compile_model(model, device, per_image, "LATENCY", hint, shapes=shapes)
    compile_s = time.perf_counter() - t0
    req = compiled.create_infer_request()
    row = dict(variant=name, precision_hint=hint or "default",
               effective_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
               compile_s=round(compile_s, 2), size_mb=round(size_bytes / 1e6, 2), net_batch=per_image,
               sample_shape=list(shape),
               latency_b1=latency(lambda: req.infer(inputs), cfg.iterations))
    row["throughput"] = {}
    for b in cfg.batch_sizes:
        try:
            batched = compile_model(model, device, b * per_image, "THROUGHPUT", hint, shapes=shapes)
        except DeviceError as exc:  # OpenVINO cannot compile every model for every stream layout
            row["throughput"][str(b)], row.setdefault("errors", {})[f"throughput_b{b}"] = None, str(exc)
            continue
        row["throughput"][str(b)] = images_per_s(batched, example_inputs(model, b, shape, per_image), b,
                                                  cfg.iterations // 2)
    row.update(whole_images(bundle, device, hint, sampling, cfg.images))
    row["memory_mb"] = round(rss_mb() - rss0, 1)
    return row


def whole_images(bundle, device: str, hint: str | None, sampling, images: int) -> dict:
    """The end-to-end run's speed and, for text-to-image, where one image's time goes (`image`). With
    one image, the end-to-end run is the breakdown's image alone: it is measured once."""
    if not bundle.family.conditioning.takes_prompts:
        return end_to_end(bundle, device, hint, sampling, images)
    image = image_breakdown(bundle, device, hint, sampling, images)
    if images > 1:
        return dict(**end_to_end(bundle, device, hint, sampling, images), image=image)
    return dict(end_to_end_images_per_s=round(1 / image["seconds"], 3), end_to_end_s_per_image=image["seconds"],
                image=image)


def end_to_end(bundle, device: str, hint: str | None, sampling, images: int) -> dict:
    """end_to_end_images_per_s and end_to_end_s_per_image of `images` images through the pipeline in
    one batch, at `sampling`: a warm-up run (which compiles the timed run's shapes outside it), then a
    timed one."""
    pipe = Pipeline(bundle, DeviceConfig(device=device, batch_size=images, precision_hint=hint))
    prompts = [PROMPT] if bundle.family.conditioning.takes_prompts else []
    pipe.sample(images, sampling, prompts)
    s = time.perf_counter()
    pipe.sample(images, sampling, prompts)
    seconds = time.perf_counter() - s
    return dict(end_to_end_images_per_s=round(images / seconds, 3), end_to_end_s_per_image=round(seconds / images, 3))


def image_breakdown(bundle, device: str, hint: str | None, sampling, images: int) -> dict:
    """Where a text-to-image image's time goes, measured inside the pipeline's own run: seconds in the
    text encoders, the UNet (and how many calls; with DeepCache, how many of them whole) and the VAE
    decoder for one image alone (one request, after a warm-up run), the rest (scheduler, Python,
    copies) as what they leave of the whole; and, for `images` > 1, images/s with that many images in
    flight, one a request (OpenVINO's THROUGHPUT streams)."""
    pipe = Pipeline(bundle, DeviceConfig(device=device, batch_size=1, precision_hint=hint))
    pipe.sample(1, sampling, [PROMPT])  # warm-up: compiles every component
    pipe.components.reset_stats()
    s = time.perf_counter()
    pipe.sample(1, sampling, [PROMPT])
    whole = time.perf_counter() - s
    parts = {name: st["seconds"] for name, st in pipe.components.stats().items()}
    den = pipe.last_denoiser
    parts["unet"] = den.seconds
    out = dict(seconds=round(whole, 4), unet_calls=den.calls, unet_ms_per_call=round(1e3 * den.seconds / den.calls, 3),
               parts_s={k: round(v, 4) for k, v in sorted(parts.items())},
               rest_s=round(max(0.0, whole - sum(parts.values())), 4))
    if isinstance(den.net, OpenVINOCachedNet):  # DeepCache: of the calls, those that ran the whole UNet
        out["unet_full_calls"] = den.net.full_net.calls
    out["images_per_s_throughput"] = None
    if images == 1:  # one image in flight is the image alone
        return out
    try:
        pipe.sample(images, sampling, [PROMPT])  # warm-up of the several-stream compile
    except DeviceError as exc:  # OpenVINO cannot compile every model for every stream layout
        out["throughput_error"] = str(exc)
        return out
    s = time.perf_counter()
    pipe.sample(images, sampling, [PROMPT])
    out["images_per_s_throughput"] = round(images / (time.perf_counter() - s), 3)
    return out


def _torch_variant(m, cfg: BenchmarkConfig, steps: int, shape, scheduler_config, size_bytes) -> dict:
    import torch

    unet = m.unet
    rss0 = rss_mb()
    rng = np.random.default_rng(0)

    def inputs(b):
        return torch.from_numpy(rng.standard_normal((b, *shape)).astype(np.float32)), torch.full((b,), 500)

    x, t = inputs(1)
    with torch.no_grad():
        row = dict(variant="torch fp32 (eager)", precision_hint="f32", effective_precision="f32", compile_s=0.0,
                   size_mb=round(size_bytes / 1e6, 2), net_batch=1,
                   latency_b1=latency(lambda: unet(x, t), max(10, cfg.iterations // 3)))
        row["throughput"] = {}
        for b in cfg.batch_sizes:
            xb, tb = inputs(b)
            lat = latency(lambda: unet(xb, tb), 3, warmup=1)
            row["throughput"][str(b)] = round(b / (lat["median_ms"] / 1e3), 2)
    s = time.perf_counter()
    generate(torch_denoiser(m), make_scheduler("ddim", scheduler_config),
             cfg.images, cfg.images, steps, 0, shape)
    seconds = time.perf_counter() - s
    row["end_to_end_images_per_s"] = round(cfg.images / seconds, 3)
    row["end_to_end_s_per_image"] = round(seconds / cfg.images, 3)
    row["memory_mb"] = round(rss_mb() - rss0, 1)
    return row


def deepcache_rows(runs: list[tuple], cfg: BenchmarkConfig, sampling, float_row: dict | None, log=print) -> list[dict]:
    """Whole images with DeepCache at each of cfg.cache_intervals, for each (variant, bundle, precision
    hint) of `runs`: the end-to-end run's speed, for text-to-image also where one image's time goes,
    and the speed-up on `float_row` (the float baseline's row, without DeepCache; None where it was not
    timed, as float_precisions asked). Returns one row per run and interval."""
    rows = []
    for name, bundle, hint in runs:
        for n in cfg.cache_intervals:
            log(f"{name} with DeepCache every {n} steps ...")
            cached = bundle.sampling(sampling.replace(cache_interval=n, cache_branch=cfg.cache_branch))
            row = dict(variant=name, precision_hint=hint or "default", cache_interval=n,
                       cache_branch=cached.cache_branch, **whole_images(bundle, cfg.device, hint, cached, cfg.images))
            seconds = s_per_image(row)  # 0 where a tiny model's time rounds away
            speedup = round(s_per_image(float_row) / seconds, 3) if float_row and seconds else None
            row["speedup_vs_float_baseline"] = speedup
            rows.append(row)
            log(measured(row))
    return rows


def _ratios(rows: list[dict]) -> None:
    base = {r["variant"]: r for r in rows}
    ov32, bf16 = base.get("OpenVINO fp32"), base.get("OpenVINO bf16")
    th = base.get("torch fp32 (eager)")
    for r in rows:
        lat = r["latency_b1"]["median_ms"]
        if ov32:
            r["speedup_vs_ov_fp32"] = round(ov32["latency_b1"]["median_ms"] / lat, 3)
        if bf16:
            r["speedup_vs_ov_bf16"] = round(bf16["latency_b1"]["median_ms"] / lat, 3)
            r["throughput_vs_ov_bf16"] = {b: round(v / bf16["throughput"][b], 3) for b, v in r["throughput"].items()
                                          if v and bf16["throughput"].get(b)}
        if th:
            r["speedup_vs_torch_fp32"] = round(th["latency_b1"]["median_ms"] / lat, 3)
            r["e2e_speedup_vs_torch_fp32"] = round(r["end_to_end_images_per_s"] / th["end_to_end_images_per_s"], 3)


def _model_of(cfg: BenchmarkConfig, int8: Bundle) -> str:
    """The model whose float variants are timed beside `int8`: the one it was quantized from, or
    BenchmarkError when `cfg.model` names another."""
    made_from = int8.recipe.get("model")
    if cfg.model is None:
        return made_from or DEFAULT_MODEL
    if made_from and cfg.int8 and _source(cfg.model) != _source(made_from):
        raise BenchmarkError(f"`int8` {cfg.int8} was quantized from {made_from}, not `model` {cfg.model}: "
                             "give the int8 bundle of `model`, or leave `model` out")
    return cfg.model


def _source(spec: str) -> str:
    p = Path(resolve(spec))
    return str(p.resolve()) if p.exists() else spec


def benchmark(cfg: BenchmarkConfig, log=print) -> dict:
    """Measure every variant the device supports; write benchmark.json, .md and .png to cfg.output."""
    check_device(cfg.device)
    check_output(cfg.output, cfg.overwrite)
    try:
        int8 = Bundle.from_pretrained(cfg.int8 or cfg.model or DEFAULT_MODEL, "int8")
    except BundleError:
        if cfg.int8:  # an int8 bundle the user named is missing or broken: say so, don't replace it
            raise
        log("no int8 bundle yet: quantizing with the defaults first")
        size = CalibrationConfig(sampling=SamplingConfig(height=cfg.height, width=cfg.width))  # checked there first
        int8, _ = quantize(QuantizeJobConfig(model=cfg.model or DEFAULT_MODEL, overwrite=True, calibration=size),
                           progress=False)
    model = _model_of(cfg, int8)
    sampling = int8.sampling(SamplingConfig(steps=cfg.steps, height=cfg.height, width=cfg.width))
    check_steps("ddim", int8.scheduler_config, sampling.steps)  # the torch baseline's sampler
    t2i = int8.family.conditioning.takes_prompts
    checks = Pipeline(int8)  # sizes the model cannot take, DeepCache intervals the steps cannot: before any work
    for n in (1, *cfg.cache_intervals):
        checks.check(sampling.replace(cache_interval=n, cache_branch=cfg.cache_branch), [PROMPT] if t2i else [])
    if int8.fp32_ir:  # unconditional int8 bundles keep the fp32 IR they were quantized from
        fp32, fp32_size = int8.with_model(int8.read_model(int8.fp32_ir), precision="fp32"), _ir_size(int8.fp32_ir)
    else:
        try:
            fp32 = Bundle.from_pretrained(model, "fp32")
        except BundleError:
            log("no fp32 bundle yet: exporting it first")
            fp32 = export(ExportConfig(model=model, overwrite=True))
        fp32_size = fp32.size_bytes()
    machine = machine_info()
    with atomic_output(cfg.output, cfg.overwrite) as tmp:
        caps = next((d["capabilities"] for d in device_capabilities() if d["device"] == cfg.device.split(".")[0]), [])
        rows = []
        if cfg.torch_baseline and not int8.family.conditioning.takes_prompts:
            log("torch fp32 ...")
            m = load_model(model)
            rows.append(_torch_variant(m, cfg, sampling.steps, fp32.sample_shape, m.scheduler_config,
                                       sum(p.numel() * 4 for p in m.unet.parameters())))
            log(measured(rows[-1]))
        wanted = cfg.float_precisions
        variants = [("OpenVINO fp32", fp32, "f32", fp32_size)] if "f32" in wanted else []
        if "BF16" in caps and "bf16" in wanted:
            variants.append(("OpenVINO bf16", fp32, "bf16", fp32_size))
        if "FP16" in caps and "f16" in wanted:
            variants.append(("OpenVINO fp16", fp32, "f16", fp32_size))
        rest = float_rest(machine["isa"], t2i) if cfg.device.upper() == "CPU" else None  # edge-dm's default
        variants.append(("OpenVINO int8", int8, rest, int8.size_bytes()))
        if "BF16" in caps:  # the other float rest, for comparison
            other = "bf16" if rest == "f32" else "f32"
            variants.append((f"OpenVINO int8 ({other} rest)", int8, other, int8.size_bytes()))
        for name, bundle, hint, size in variants:
            log(f"{name} ...")
            rows.append(_ov_variant(name, bundle, cfg.device, hint, cfg, sampling, size))
            log(measured(rows[-1]))
        _ratios(rows)
        baseline = float_baseline(machine["isa"]) if cfg.device.startswith("CPU") else "OpenVINO fp32"
        base_hint = "bf16" if baseline == "OpenVINO bf16" else "f32"
        log("int8 against the float baseline, interleaved ...")
        gate = interleaved_gate(int8, rest, fp32, base_hint, cfg.device, sampling, cfg.iterations)
        log(f"  int8 {gate['ratio']}x {baseline} ({gate['what']})")
        result = dict(model=model, family=int8.family.name, int8_bundle=str(int8.path), machine=machine,
                      config=cfg.to_dict(), sampling=sampling.to_dict(), float_baseline=baseline, rows=rows, gate=gate)
        if cfg.cache_intervals:
            runs = [("OpenVINO int8", int8, rest), (baseline, fp32, base_hint)]
            timed = next((r for r in rows if r["variant"] == baseline), None)  # None: not in float_precisions
            result["deepcache"] = deepcache_rows(runs, cfg, sampling, timed, log)
        (tmp / "benchmark.json").write_text(json.dumps(result, indent=2))
        (tmp / "benchmark.md").write_text(markdown(result) + "\n")
        chart(result, tmp / "benchmark.png")
        if any("image" in r for r in rows):
            image_chart(result, tmp / "image.png")
    by_name = {r["variant"]: r for r in rows}
    result["int8_speedup_vs_ov_fp32"] = by_name["OpenVINO int8"].get("speedup_vs_ov_fp32")
    result["int8_speedup_vs_float_baseline"] = gate["ratio"]
    check_gate(cfg, target_of(machine["isa"]), f"{baseline} ({gate['what']})", gate["ratio"], log)
    return result


def interleaved_gate(int8, int8_hint, fp32, float_hint, device: str, sampling, iterations: int) -> dict:
    """int8 against the float a user would pick, timed in turns (one int8 run, one float run, and again,
    the order swapped every round) so that both see the same machine: the UNet at batch 1 for an
    unconditional model, one whole image for a text-to-image one. Returns both medians and their ratio."""
    if int8.family.conditioning.takes_prompts:
        pipes = {k: Pipeline(b, DeviceConfig(device=device, batch_size=1, precision_hint=h))
                 for k, b, h in (("int8", int8, int8_hint), ("float", fp32, float_hint))}
        runs = {k: (lambda p=p: p.sample(1, sampling, [PROMPT])) for k, p in pipes.items()}
        what, rounds = "one whole image", max(3, iterations // 10)
    else:
        runs = {}
        for k, b, h in (("int8", int8, int8_hint), ("float", fp32, float_hint)):
            model = b.read_model()
            x = example_inputs(model, 1, b.family.conditioning.sample_shape(b, sampling))
            request = compile_model(model, device, 1, "LATENCY", h, shapes={n: v.shape[1:] for n, v in x.items()}) \
                .create_infer_request()
            runs[k] = lambda r=request, x=x: r.infer(x)
        what, rounds = "the UNet at batch 1", iterations
    times: dict = {k: [] for k in runs}
    for k in runs:  # warm-up
        runs[k]()
    for i in range(rounds):
        for k in (runs if i % 2 == 0 else reversed(list(runs))):
            start = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - start)
    medians = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return dict(what=what, rounds=rounds, int8_ms=round(medians["int8"], 3), float_ms=round(medians["float"], 3),
                float_precision=float_hint, ratio=round(medians["float"] / medians["int8"], 3))


def check_gate(cfg: BenchmarkConfig, target: str, baseline: str, speedup: float, log=print) -> None:
    """The CI gate: log the threshold that applies to this CPU class and the measured ratio, and raise
    BenchmarkError below it."""
    if cfg.min_int8_speedup is None:
        return
    need = cfg.int8_gate(target)
    measured = f"int8 is {speedup:.2f}x {baseline}"
    if need is None:
        log(f"speed gate: no --min-int8-speedup for {target} CPUs; {measured} (not gated)")
    elif speedup < need:
        raise BenchmarkError(f"{measured}, below the {need:.2f}x required on {target} CPUs (results in {cfg.output})")
    else:
        log(f"speed gate passed: {measured}, required {need:.2f}x on {target} CPUs")
