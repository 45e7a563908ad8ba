"""Speed, side by side in one run: torch eager fp32, OpenVINO fp32 / bf16 / fp16, OpenVINO int8.

Times are only compared within one run on one machine (ratios), never against fixed numbers.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from edge_dm.bundle import atomic_dir
from edge_dm.configs import BenchmarkConfig


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


def _inputs(batch: int, shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *shape)).astype(np.float32), np.full(batch, 500, np.int64)


def _ov_variant(name, model, device, hint, cfg: BenchmarkConfig, shape, scheduler_config, size_bytes) -> dict:
    import openvino as ov
    import torch

    from edge_dm.runtime import OpenVINODenoiser, compile_unet
    from edge_dm.sampling import generate, make_scheduler

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    compiled = compile_unet(model, device, 1, "LATENCY", hint)
    compile_s = time.perf_counter() - t0
    x, t = _inputs(1, shape)
    req = compiled.create_infer_request()
    row = dict(variant=name, precision_hint=hint or "default",
               effective_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
               compile_s=round(compile_s, 2), size_mb=round(size_bytes / 1e6, 2),
               latency_b1=_latency(lambda: req.infer({"sample": x, "timestep": t}), cfg.iterations))
    row["throughput"] = {}
    for b in cfg.batch_sizes:
        c = compile_unet(model, device, b, "THROUGHPUT", hint)
        n = int(c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = ov.AsyncInferQueue(c, n)
        xb, tb = _inputs(b, shape)
        for _ in range(n):
            queue.start_async({"sample": xb, "timestep": tb})
        queue.wait_all()
        calls = max(2 * n, cfg.iterations // 2)
        s = time.perf_counter()
        for _ in range(calls):
            queue.start_async({"sample": xb, "timestep": tb})
        queue.wait_all()
        row["throughput"][str(b)] = round(calls * b / (time.perf_counter() - s), 2)
    den = OpenVINODenoiser(model, device, "THROUGHPUT" if cfg.images > 1 else "LATENCY", hint)
    den(*(torch.from_numpy(a) for a in _inputs(cfg.images, shape)))  # compile outside the timed run
    s = time.perf_counter()
    generate(den, make_scheduler("ddim", scheduler_config), cfg.images, cfg.images, cfg.steps, 0, shape)
    row["end_to_end_images_per_s"] = round(cfg.images / (time.perf_counter() - s), 3)
    row["memory_mb"] = round(_rss_mb() - rss0, 1)
    return row


def _torch_variant(unet, cfg: BenchmarkConfig, shape, scheduler_config, size_bytes) -> dict:
    import torch

    from edge_dm.sampling import generate, make_scheduler, torch_denoiser

    rss0 = _rss_mb()
    x, t = (torch.from_numpy(a) for a in _inputs(1, shape))
    with torch.no_grad():
        row = dict(variant="torch fp32 (eager)", precision_hint="f32", effective_precision="f32", compile_s=0.0,
                   size_mb=round(size_bytes / 1e6, 2),
                   latency_b1=_latency(lambda: unet(x, t), max(10, cfg.iterations // 3)))
        row["throughput"] = {}
        for b in cfg.batch_sizes:
            xb, tb = (torch.from_numpy(a) for a in _inputs(b, shape))
            lat = _latency(lambda: unet(xb, tb), 3, warmup=1)
            row["throughput"][str(b)] = round(b / (lat["median_ms"] / 1e3), 2)
    s = time.perf_counter()
    generate(torch_denoiser(unet), make_scheduler("ddim", scheduler_config), cfg.images, cfg.images, cfg.steps, 0,
             shape)
    row["end_to_end_images_per_s"] = round(cfg.images / (time.perf_counter() - s), 3)
    row["memory_mb"] = round(_rss_mb() - rss0, 1)
    return row


def _ratios(rows: list[dict]) -> None:
    base = {r["variant"]: r for r in rows}
    ov32 = base.get("OpenVINO fp32")
    th = base.get("torch fp32 (eager)")
    for r in rows:
        lat = r["latency_b1"]["median_ms"]
        if ov32:
            r["speedup_vs_ov_fp32"] = round(ov32["latency_b1"]["median_ms"] / lat, 3)
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
    m = result["machine"]
    isa = f" ({' '.join(m['isa'])})" if m.get("isa") else ""
    lines.append(f"\n{m['cpu']}{isa}, {m['cores']} cores, OpenVINO {m['openvino']}, device {result['config']['device']}; "
                 f"latency over {result['config']['iterations']} calls after warm-up; e2e = DDIM "
                 f"{result['config']['steps']} steps, {result['config']['images']} images.")
    return "\n".join(lines)


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


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_fp16")


def machine_info() -> dict:
    import os

    import openvino as ov

    cpu, flags = platform.processor(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
        flags = set(next(ln.split(":", 1)[1] for ln in lines if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    # the CPUs this process may run on (taskset / cgroups), which OpenVINO uses, not all of the machine's
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # what decides int8 and bf16 speed: the ISA, which a CPU's name does not tell (one name can cover both)
    isa = [f for f in ISA_FLAGS if f in flags]
    return dict(cpu=cpu, cores=cores, isa=isa, openvino=ov.get_version(), python=platform.python_version())


def benchmark(cfg: BenchmarkConfig, log=print) -> dict:
    """Measure every variant the device supports; write benchmark.json, .md and .png to cfg.output."""
    from edge_dm.configs import QuantizeConfig
    from edge_dm.errors import BenchmarkError, BundleError
    from edge_dm.export import convert_unet
    from edge_dm.models import load_model
    from edge_dm.runtime import check_device, device_capabilities, find_bundle

    check_device(cfg.device)
    with atomic_dir(cfg.output, cfg.overwrite) as tmp:
        m = load_model(cfg.model)
        try:
            int8 = find_bundle(cfg.int8 or cfg.model, "int8")
        except BundleError:
            if cfg.int8:  # an int8 bundle the user named is missing or broken: say so, don't replace it
                raise
            from edge_dm.quantize import quantize

            log("no int8 bundle yet: quantizing with the defaults first")
            int8, _ = quantize(QuantizeConfig(model=cfg.model, overwrite=True), progress=False)
        fp32 = convert_unet(m.unet, m.sample_shape)
        shape, sched = m.sample_shape, m.scheduler_config
        fp32_bytes = sum(p.numel() * 4 for p in m.unet.parameters())
        caps = next((d["capabilities"] for d in device_capabilities() if d["device"] == cfg.device.split(".")[0]), [])
        rows = []
        if cfg.torch_baseline:
            log("torch fp32 ...")
            rows.append(_torch_variant(m.unet, cfg, shape, sched, fp32_bytes))
        variants = [("OpenVINO fp32", fp32, "f32", fp32_bytes)]
        if "BF16" in caps:
            variants.append(("OpenVINO bf16", fp32, "bf16", fp32_bytes))
        if "FP16" in caps:
            variants.append(("OpenVINO fp16", fp32, "f16", fp32_bytes))
        int8_model = int8.read_model()
        variants.append(("OpenVINO int8", int8_model, None, int8.size_bytes()))
        if "BF16" in caps:
            variants.append(("OpenVINO int8 (f32 rest)", int8_model, "f32", int8.size_bytes()))
        for name, model, hint, size in variants:
            log(f"{name} ...")
            rows.append(_ov_variant(name, model, cfg.device, hint, cfg, shape, sched, size))
        _ratios(rows)
        result = dict(model=cfg.model, int8_bundle=str(int8.path), machine=machine_info(), config=cfg.to_dict(),
                      rows=rows)
        (tmp / "benchmark.json").write_text(json.dumps(result, indent=2))
        (tmp / "benchmark.md").write_text(markdown(result) + "\n")
        chart(result, tmp / "benchmark.png")
    int8_row = next(r for r in rows if r["variant"] == "OpenVINO int8")
    result["int8_speedup_vs_ov_fp32"] = int8_row["speedup_vs_ov_fp32"]
    if cfg.min_int8_speedup is not None and int8_row["speedup_vs_ov_fp32"] < cfg.min_int8_speedup:
        raise BenchmarkError(f"int8 is {int8_row['speedup_vs_ov_fp32']:.2f}x OpenVINO fp32 at batch 1, below the "
                             f"required {cfg.min_int8_speedup:.2f}x (results in {cfg.output})")
    return result
