"""How many images a second a bundle's UNet gives on an OpenVINO CPU, by images per request and streams.

    python scripts/ov_throughput.py BUNDLE [--request-batches 8,16,32] [--streams auto,4,8,16] [--images 512]

Each setting cuts `--images` images into requests of R images over parallel async requests
(openvino.AsyncInferQueue), as `edge-dm generate --batch-size R` sends them (one request a batch,
`--parallel` batches in flight), but with nothing between calls (no output copies, no scheduler
step): the bare UNet's ceiling, which the denoising loop approaches. One warm-up round, then the
best of `--repeats` timed rounds. `--streams` sets NUM_STREAMS (generate's `--parallel`; by default
OpenVINO picks). Settings are timed one after another in one process: compare them within one run.
This picked 8 images a request, generate's default `--batch-size`, on the lent machine's Xeon
(docs/BENCHMARKS.md). `--cache-branch B` also times the two parts DeepCache runs (edge_dm.caching):
the whole UNet with its cache output, and the shallow part on a cache, and prints what each
`--cache-interval` would give from them.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--request-batches", default="8,16,32")
    p.add_argument("--streams", default="auto,4,8,16")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision-hint", default=None)
    p.add_argument("--cache-branch", type=int, default=None)
    p.add_argument("--out")
    a = p.parse_args()
    import numpy as np
    import openvino as ov

    from edge_dm.runtime import compile_unet, find_bundle

    bundle = find_bundle(a.bundle)
    models = {"unet": bundle.read_model()}
    if a.cache_branch:
        from edge_dm.caching import split_ir

        models["full"], models["shallow"] = split_ir(models["unet"], a.cache_branch)
    rng = np.random.default_rng(0)
    rows = []
    for part, model in models.items():
        inputs = {i.get_any_name(): [a.images, *(d.get_length() for d in list(i.get_partial_shape())[1:])]
                  for i in model.inputs}
        data = {k: (rng.integers(0, 1000, v[0]) if k == "timestep" else rng.standard_normal(v).astype(np.float32))
                for k, v in inputs.items()}
        for rb in (int(r) for r in a.request_batches.split(",")):
            for streams in a.streams.split(","):
                extra = {} if streams == "auto" else {"NUM_STREAMS": streams}
                compiled = compile_unet(model, "CPU", rb, "THROUGHPUT", a.precision_hint, extra)
                queue = ov.AsyncInferQueue(compiled, 0)  # 0: OpenVINO's optimal number of requests
                images_per_s = bare_images_per_s(queue, data, rb, a.repeats)
                row = dict(part=part, request_batch=rb, streams=streams, requests=len(queue),
                           actual_streams=int(compiled.get_property("NUM_STREAMS")),
                           precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                           images_per_s=round(images_per_s, 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
    best = max((r for r in rows if r["part"] == "unet"), key=lambda r: r["images_per_s"])
    print(f"best: {best['images_per_s']} images/s at --batch-size {best['request_batch']}, "
          f"{best['actual_streams']} streams ({bundle.path}, {a.images} images a call)", flush=True)
    result = dict(bundle=str(bundle.path), images=a.images, rows=rows)
    if a.cache_branch:  # UNet images a second of a loop that runs full once and shallow N-1 times
        rate = {p: max(r["images_per_s"] for r in rows if r["part"] == p) for p in models}
        result["cache_branch"] = a.cache_branch
        result["cache_interval_images_per_s"] = {
            n: round(n / (1 / rate["full"] + (n - 1) / rate["shallow"]), 1) for n in range(1, 9)}
        print("by --cache-interval (1 = full part alone):", result["cache_interval_images_per_s"], flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


def bare_images_per_s(queue, data: dict, request_batch: int, repeats: int) -> float:
    """Images a second over `queue` (an openvino.AsyncInferQueue): the named inputs `data` cut into
    requests of `request_batch` images, nothing between calls; one warm-up round, then the best of
    `repeats`."""
    n = len(next(iter(data.values())))

    def run():
        for i in range(0, n, request_batch):
            queue.start_async({k: v[i:i + request_batch] for k, v in data.items()})
        queue.wait_all()

    run()
    best = float("inf")
    for _ in range(repeats):
        s = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - s)
    return n / best


if __name__ == "__main__":
    main()
