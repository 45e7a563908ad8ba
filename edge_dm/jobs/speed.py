"""`edge-dm benchmark`: speed side by side in one run: torch eager fp32, OpenVINO fp32 / bf16 / fp16,
OpenVINO int8; with `cache_intervals`, whole images with DeepCache for int8 and the float baseline.

Times are only compared within one run on one machine (ratios), never against fixed numbers.
"""
from __future__ import annotations

import json
import platform
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
from edge_dm.families.base import SAMPLE, TIMESTEP, torch_denoiser
from edge_dm.jobs.conversion import export
from edge_dm.jobs.quantization import quantize
from edge_dm.models import load_model, resolve
from edge_dm.outputs import atomic_output, check_output
from edge_dm.pipeline import Pipeline
from edge_dm.runtime import check_device, compile_model, device_capabilities
from edge_dm.sampling import check_steps, generate, make_scheduler
from edge_dm.targets import cpu_info, float_rest, target_of


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _latency(fn, iterations: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iterations):
        s = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - s)
    ts = np.array(ts) * 1e3
    return dict(median_ms=round(float(np.median(ts)), 3), p90_ms=round(float(np.percentile(ts, 90)), 3))


def _images_per_s(compiled, inputs: dict, images: int, calls: int) -> float:
    """Images a second through `compiled` (a THROUGHPUT-compiled model taking `images` images a call):
    `inputs` in flight on OpenVINO's optimal number of async requests, one round of them as warm-up,
    then at least `calls` calls (two rounds at least) timed."""
    import openvino as ov

    n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, n)
    for _ in range(n):
        queue.start_async(inputs)
    queue.wait_all()
    calls = max(2 * n, calls)
    s = time.perf_counter()
    for _ in range(calls):
        queue.start_async(inputs)
    queue.wait_all()
    return round(calls * images / (time.perf_counter() - s), 2)


PROMPT = "an astronaut riding a horse in photorealistic style"


def example_inputs(model, images: int, sample_shape, net_batch: int = 1, seed: int = 0) -> dict:
    """Seeded inputs of a denoiser IR for `images` images (net_batch inputs each): the sample at
    `sample_shape`, timestep 500, other inputs at the IR's static sizes."""
    rng = np.random.default_rng(seed)
    n = images * net_batch
    out = {}
    for inp in model.inputs:
        name = inp.get_any_name()
        if name == TIMESTEP:
            out[name] = np.full(n, 500, np.int64)
        else:
            shape = sample_shape if name == SAMPLE else [d.get_length() for d in list(inp.get_partial_shape())[1:]]
            out[name] = rng.standard_normal((n, *shape)).astype(np.float32)
    return out


def _ir_size(ir: Path) -> int:
    return ir.stat().st_size + ir.with_suffix(".bin").stat().st_size


def _ov_variant(name, bundle, device, hint, cfg: BenchmarkConfig, sampling, size_bytes: int) -> dict:
    model = bundle.read_model()
    c = bundle.family.conditioning
    sampling = bundle.sampling(sampling)
    shape, per_image = c.sample_shape(bundle, sampling), c.net_batch(sampling)
    inputs = example_inputs(model, 1, shape, per_image)
    shapes = {k: v.shape[1:] for k, v in inputs.items()}  # all static, as the pipeline compiles it
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    compiled = compile_model(model, device, per_image, "LATENCY", hint, shapes=shapes)
    compile_s = time.perf_counter() - t0
    req = compiled.create_infer_request()
    row = dict(variant=name, precision_hint=hint or "default",
               effective_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
               compile_s=round(compile_s, 2), size_mb=round(size_bytes / 1e6, 2), net_batch=per_image,
               sample_shape=list(shape),
               latency_b1=_latency(lambda: req.infer(inputs), cfg.iterations))
    row["throughput"] = {}
    for b in cfg.batch_sizes:
        try:
            batched = compile_model(model, device, b * per_image, "THROUGHPUT", hint, shapes=shapes)
        except DeviceError as exc:  # OpenVINO cannot compile every model for every stream layout
            row["throughput"][str(b)], row.setdefault("errors", {})[f"throughput_b{b}"] = None, str(exc)
            continue
        row["throughput"][str(b)] = _images_per_s(batched, example_inputs(model, b, shape, per_image), b,
                                                  cfg.iterations // 2)
    row.update(whole_images(bundle, device, hint, sampling, cfg.images))
    row["memory_mb"] = round(_rss_mb() - rss0, 1)
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
    rss0 = _rss_mb()
    rng = np.random.default_rng(0)

    def inputs(b):
        return torch.from_numpy(rng.standard_normal((b, *shape)).astype(np.float32)), torch.full((b,), 500)

    x, t = inputs(1)
    with torch.no_grad():
        row = dict(variant="torch fp32 (eager)", precision_hint="f32", effective_precision="f32", compile_s=0.0,
                   size_mb=round(size_bytes / 1e6, 2), net_batch=1,
                   latency_b1=_latency(lambda: unet(x, t), max(10, cfg.iterations // 3)))
        row["throughput"] = {}
        for b in cfg.batch_sizes:
            xb, tb = inputs(b)
            lat = _latency(lambda: unet(xb, tb), 3, warmup=1)
            row["throughput"][str(b)] = round(b / (lat["median_ms"] / 1e3), 2)
    s = time.perf_counter()
    generate(torch_denoiser(m), make_scheduler("ddim", scheduler_config),
             cfg.images, cfg.images, steps, 0, shape)
    seconds = time.perf_counter() - s
    row["end_to_end_images_per_s"] = round(cfg.images / seconds, 3)
    row["end_to_end_s_per_image"] = round(seconds / cfg.images, 3)
    row["memory_mb"] = round(_rss_mb() - rss0, 1)
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
            seconds = _s_per_image(row)  # 0 where a tiny model's time rounds away
            speedup = round(_s_per_image(float_row) / seconds, 3) if float_row and seconds else None
            row["speedup_vs_float_baseline"] = speedup
            rows.append(row)
            log(measured(row))
    return rows


def measured(row: dict) -> str:
    """One line of a benchmark row's main numbers, logged as each is measured (a run stopped before
    its files are written still told what it found)."""
    said = [f"UNet at batch 1 {row['latency_b1']['median_ms']} ms"] if "latency_b1" in row else []
    said.append(f"{row['end_to_end_s_per_image']} s an image end to end")
    if "image" in row:
        said.append(f"{row['image']['seconds']} s for one image alone ({row['image']['unet_calls']} UNet calls)")
    if row.get("speedup_vs_float_baseline"):
        said.append(f"{row['speedup_vs_float_baseline']}x the float baseline's image")
    return "  " + "; ".join(said)


def _s_per_image(row: dict) -> float:
    """A row's seconds per image: one text-to-image image alone (its breakdown), else the end-to-end run's."""
    return row["image"]["seconds"] if "image" in row else row["end_to_end_s_per_image"]


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


def markdown(result: dict) -> str:
    bs = result["config"]["batch_sizes"]
    head = ["variant", "precision in effect", "b1 median ms", "b1 p90 ms", *[f"img/s b{b}" for b in bs],
            "e2e img/s", "compile s", "mem MB", "size MB", "x OV fp32", "x torch fp32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["variant"], r["effective_precision"], r["latency_b1"]["median_ms"], r["latency_b1"]["p90_ms"],
                 *[r["throughput"][str(b)] for b in bs], r["end_to_end_images_per_s"], r["compile_s"],
                 r["memory_mb"], r["size_mb"], r.get("speedup_vs_ov_fp32", ""), r.get("speedup_vs_torch_fp32", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    images = [r for r in result["rows"] if "image" in r]
    if images:
        parts = sorted({k for r in images for k in r["image"]["parts_s"]})
        head = ["variant", "s per image", *[f"{p} s" for p in parts], "rest s", "UNet calls", "UNet ms/call",
                f"img/s, {result['config']['images']} in flight"]
        lines += ["", "Where one image's time goes:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in images:
            im = r["image"]
            cells = [r["variant"], im["seconds"], *[im["parts_s"].get(p, "") for p in parts], im["rest_s"],
                     im["unet_calls"], im["unet_ms_per_call"], _blank(im["images_per_s_throughput"])]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += _deepcache_table(result)
    m = result["machine"]
    isa = f" ({' '.join(m['isa'])})" if m.get("isa") else ""
    device = result["config"]["device"]
    lines.append(f"\n{m['cpu']}{isa}, {m['cores']} cores, OpenVINO {m['openvino']}, device {device}; "
                 f"latency over {result['config']['iterations']} calls after warm-up; e2e = "
                 f"{result['sampling']['steps']} steps of the model's {result['sampling']['scheduler']}, "
                 f"{result['config']['images']} image(s).")
    return "\n".join(lines)


def _blank(value):
    return "" if value is None else value


def _deepcache_table(result: dict) -> list[str]:
    """The Markdown lines of the DeepCache section: per variant and interval, seconds per image (one
    text-to-image image alone, else the end-to-end run's), UNet calls (text-to-image), images/s and the
    speed-up on the float baseline without DeepCache; none without DeepCache rows."""
    rows = result.get("deepcache") or []
    if not rows:
        return []
    t2i = "image" in rows[0]
    head = ["variant", "interval", "s per image", *(["UNet calls", "of them whole"] if t2i else []),
            f"img/s, {result['config']['images']} in flight" if t2i else "e2e img/s", "x float baseline"]
    lines = ["", f"DeepCache: whole images (branch {rows[0]['cache_branch']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        im = r.get("image", {})
        cells = [r["variant"], r["cache_interval"], _s_per_image(r),
                 *([im["unet_calls"], im["unet_full_calls"]] if t2i else []),
                 _blank(im["images_per_s_throughput"]) if t2i else r["end_to_end_images_per_s"],
                 _blank(r["speedup_vs_float_baseline"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def chart(result: dict, path: Path) -> None:
    """A bar chart of batch-1 latency per variant (PNG, drawn with Pillow)."""
    from PIL import Image, ImageDraw

    rows = result["rows"]
    w, bar, pad = 640, 28, 10
    img = Image.new("RGB", (w, pad * 2 + len(rows) * (bar + pad) + 20), "white")
    d = ImageDraw.Draw(img)
    top = max(r["latency_b1"]["median_ms"] for r in rows)
    d.text((pad, 2), "UNet latency at batch 1, median ms (shorter is faster)", fill="black")
    for i, r in enumerate(rows):
        y = 20 + pad + i * (bar + pad)
        length = int((w - 260) * r["latency_b1"]["median_ms"] / top)
        d.rectangle([200, y, 200 + length, y + bar], fill=(0, 113, 197) if "int8" in r["variant"] else (150, 150, 150))
        d.text((pad, y + 8), r["variant"][:30], fill="black")
        d.text((205 + length, y + 8), f"{r['latency_b1']['median_ms']:.1f}", fill="black")
    img.save(path)


def image_chart(result: dict, path: Path) -> None:
    """A stacked bar per variant of where one text-to-image image's time goes (PNG, drawn with Pillow)."""
    from PIL import Image, ImageDraw

    rows = [r for r in result["rows"] if "image" in r]
    parts = sorted({k for r in rows for k in r["image"]["parts_s"]}) + ["rest"]
    colours = [(0, 113, 197), (237, 125, 49), (112, 173, 71), (255, 192, 0), (150, 150, 150)]
    w, bar, pad = 720, 28, 10
    img = Image.new("RGB", (w, pad * 3 + len(rows) * (bar + pad) + 40), "white")
    d = ImageDraw.Draw(img)
    top = max(r["image"]["seconds"] for r in rows)
    d.text((pad, 2), "seconds per image, by component (shorter is faster)", fill="black")
    for i, r in enumerate(rows):
        y, x = 20 + pad + i * (bar + pad), 200
        for part, colour in zip(parts, colours * 2):
            value = r["image"]["rest_s"] if part == "rest" else r["image"]["parts_s"].get(part, 0)
            length = int((w - 280) * value / top)
            d.rectangle([x, y, x + length, y + bar], fill=colour)
            x += length
        d.text((pad, y + 8), r["variant"][:30], fill="black")
        d.text((x + 5, y + 8), f"{r['image']['seconds']:.2f}", fill="black")
    y = 30 + pad + len(rows) * (bar + pad)
    for j, (part, colour) in enumerate(zip(parts, colours * 2)):
        d.rectangle([pad + 130 * j, y, pad + 130 * j + 12, y + 12], fill=colour)
        d.text((pad + 130 * j + 16, y), part, fill="black")
    img.save(path)


def machine_info() -> dict:
    import os

    import openvino as ov

    # what decides int8 and bf16 speed: the ISA, which a CPU's name does not tell (one name can cover both)
    cpu, isa = cpu_info()
    # the CPUs this process may run on (taskset / cgroups), which OpenVINO uses, not all of the machine's
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return dict(cpu=cpu, cores=cores, isa=isa, openvino=ov.get_version(), python=platform.python_version())


def float_baseline(isa: list) -> str:
    """The float variant a user would pick on this CPU: bf16 where AMX runs it, else f32 (bf16
    without AMX is emulated or, on AVX-512 BF16 cores, not reliably faster)."""
    return "OpenVINO bf16" if "amx_bf16" in isa else "OpenVINO fp32"


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
