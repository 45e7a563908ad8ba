"""Where a UNet call's time goes: OpenVINO's per-layer counters (PERF_COUNT, what `benchmark_app -pc`
prints), summed by layer type and by kernel, for the fp32 IR at bf16 and f32 and for an int8 IR,
at one batch size: one LATENCY request on all cores, or (`--hint THROUGHPUT`) every request of
OpenVINO's THROUGHPUT streams in flight at once, the milliseconds their mean.

    python benchmarks/unet_profile.py --int8 INT8_BUNDLE [--model edm-cifar10-ddpm] [--batch 1]
        [--hint LATENCY|THROUGHPUT] [--precisions bf16,f32,int8] [--output FILE.json]

The fp32 bundle is the model's cached one, exported if missing. The counters are those of the last
of `--runs` rounds. JSON on stdout or in --output: per IR, ms by layer type and by
kernel. Backs docs/experiments/2026-12-01-xeon-amx-target-defaults.md (why int8 is not faster than
bf16 at batch 1 on AMX).
"""
import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, fp32_and_int8  # noqa: E402


def profile(compiled_model, inputs: dict, runs: int = 3) -> dict:
    """Milliseconds of a call in the last of `runs` rounds, summed by layer type and by kernel, top 12
    each. A round is one call of each of the model's OPTIMAL_NUMBER_OF_INFER_REQUESTS requests, all in
    flight at once (one under the LATENCY hint); the milliseconds are the requests' mean, and
    `calls_per_s` the last round's calls over its wall time."""
    n = int(compiled_model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    reqs = [compiled_model.create_infer_request() for _ in range(n)]
    for _ in range(runs):
        start = time.perf_counter()
        for req in reqs:
            req.start_async(inputs)
        for req in reqs:
            req.wait()
        seconds = time.perf_counter() - start
    by_type, by_kernel = defaultdict(float), defaultdict(float)
    for req in reqs:
        for info in req.profiling_info:
            ms = info.real_time.total_seconds() * 1e3 / n
            by_type[info.node_type] += ms
            by_kernel[info.exec_type] += ms
    top = lambda d: {k: round(v, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:12]}  # noqa: E731
    return dict(requests=n, calls_per_s=round(n / seconds, 3), total_ms=round(sum(by_type.values()), 2),
                by_layer_type=top(by_type), by_kernel=top(by_kernel))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="edm-cifar10-ddpm")
    ap.add_argument("--int8", required=True, help="int8 bundle folder")
    ap.add_argument("--batch", type=int, default=1, help="images a call")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--hint", default="LATENCY", choices=("LATENCY", "THROUGHPUT"),
                    help="OpenVINO's performance hint: THROUGHPUT profiles every stream's request in flight at once")
    ap.add_argument("--precisions", default="bf16,f32,int8", type=lambda v: v.split(","),
                    help="of bf16 (fp32 IR at bf16), f32, int8 (the int8 IR at OpenVINO's default)")
    ap.add_argument("--output")
    a = ap.parse_args(argv)
    unknown = set(a.precisions) - {"bf16", "f32", "int8"}
    if unknown:
        ap.error(f"--precisions: unknown {', '.join(sorted(unknown))} (of bf16, f32, int8)")
    from edge_dm.jobs.timing import example_inputs, machine_info
    from edge_dm.runtime import compile_model

    fp32, int8, shape, net_batch = fp32_and_int8(a.model, a.int8)
    result = dict(recipe="benchmarks/unet_profile.py", argv=sys.argv[1:] if argv is None else argv,
                  machine=machine_info(), model=a.model, batch=a.batch, rows={})
    for name, bundle, hint in (("bf16", fp32, "bf16"), ("f32", fp32, "f32"), ("int8", int8, None)):
        if name not in a.precisions:
            continue
        model = bundle.read_model()
        inputs = example_inputs(model, a.batch, shape, net_batch)
        compiled = compile_model(model, "CPU", a.batch * net_batch, a.hint, hint, {"PERF_COUNT": True},
                                 shapes={k: v.shape[1:] for k, v in inputs.items()})
        row = profile(compiled, inputs, a.runs)
        result["rows"][name] = dict(row, images_per_s=round(row["calls_per_s"] * a.batch, 3))
    return emit(result, a.output)


if __name__ == "__main__":
    main()
