"""What the benchmarks measure with: latency and throughput of compiled OpenVINO models, seeded
example inputs of a denoiser IR, memory in use, and the machine a number came from."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from edge_dm.families.base import SAMPLE, TIMESTEP
from edge_dm.targets import cpu_info


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(fn, iterations: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iterations):
        s = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - s)
    ts = np.array(ts) * 1e3
    return dict(median_ms=round(float(np.median(ts)), 3), p90_ms=round(float(np.percentile(ts, 90)), 3))


def images_per_s(compiled, inputs: dict, images: int, calls: int) -> float:
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


def machine_info() -> dict:
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
