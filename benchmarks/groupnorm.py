"""GroupNorm on the CPU: each UNet compiled as exported (the CPU plugin decomposes GroupNormalization
itself) and as edge-dm compiles it (edge_dm.runtime.group_norm_as_mvn), in interleaved rounds: batch-1
latency (LATENCY hint, one request) and images/s at `--batch` (THROUGHPUT hint, OpenVINO's optimal
number of async requests, as `edge-dm benchmark` measures it), for the fp32 IR at bf16 and f32 and for
an int8 IR.

    python benchmarks/groupnorm.py --int8 INT8_BUNDLE [--model edm-cifar10-ddpm] [--rounds 2] [--output FILE.json]

The fp32 bundle is the model's cached one, exported if missing. JSON on stdout or in --output: one
row per IR, form and round. Backs docs/BENCHMARKS.md, "GroupNorm on the CPU"
(docs/experiments/2026-12-01-groupnorm-mvn.md).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, fp32_and_int8  # noqa: E402


def compiled(model, rewrite: bool, images: int, net_batch: int, hint: str, precision: str | None):
    """`model` at a static batch, compiled on the CPU as exported or with GroupNorm as edge-dm runs it."""
    import openvino as ov

    from edge_dm.runtime import group_norm_as_mvn

    model = model.clone()
    model.reshape({i.get_any_name(): [images * net_batch, *list(i.get_partial_shape())[1:]] for i in model.inputs})
    if rewrite:
        group_norm_as_mvn(model)
    config = {"PERFORMANCE_HINT": hint, **({"INFERENCE_PRECISION_HINT": precision} if precision else {})}
    return ov.Core().compile_model(model, "CPU", config)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="edm-cifar10-ddpm")
    ap.add_argument("--int8", required=True, help="int8 bundle folder")
    ap.add_argument("--batch", type=int, default=16, help="images a request for the throughput column")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=50, help="batch-1 calls timed")
    ap.add_argument("--calls", type=int, default=25, help="throughput calls timed (two rounds of requests at least)")
    ap.add_argument("--output")
    a = ap.parse_args(argv)
    from edge_dm.jobs.timing import example_inputs, images_per_s, latency, machine_info

    fp32, int8, shape, net_batch = fp32_and_int8(a.model, a.int8)
    result = dict(recipe="benchmarks/groupnorm.py", argv=sys.argv[1:] if argv is None else argv,
                  machine=machine_info(), model=a.model, batch=a.batch, rows=[])
    for rnd in range(a.rounds):
        for name, bundle, precision in (("bf16", fp32, "bf16"), ("f32", fp32, "f32"), ("int8", int8, None)):
            model = bundle.read_model()
            for form, rewrite in (("as exported", False), ("one MVN a group", True)):
                one = compiled(model, rewrite, 1, net_batch, "LATENCY", precision).create_infer_request()
                x1 = example_inputs(model, 1, shape, net_batch)
                many = compiled(model, rewrite, a.batch, net_batch, "THROUGHPUT", precision)
                row = dict(round=rnd, variant=name, groupnorm=form,
                           b1_ms=latency(lambda: one.infer(x1), a.iterations)["median_ms"],
                           images_per_s=images_per_s(many, example_inputs(model, a.batch, shape, net_batch), a.batch,
                                                      a.calls))
                print(row, file=sys.stderr, flush=True)
                result["rows"].append(row)
    return emit(result, a.output)


if __name__ == "__main__":
    main()
