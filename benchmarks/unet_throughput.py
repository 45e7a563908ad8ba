"""Images a second of a bundle's bare UNet on an OpenVINO device, by images per request and streams.

    python benchmarks/unet_throughput.py BUNDLE [--device CPU] [--request-batches 8,16,32]
        [--streams auto,4,8,16] [--images 512] [--repeats 3] [--cache-branch B] [--output FILE.json]

BUNDLE is a bundle folder or a model name whose default bundle `edge-dm quantize` wrote. Each
setting cuts `--images` images into requests of R images over parallel async requests
(openvino.AsyncInferQueue with OpenVINO's optimal number of requests), as `edge-dm generate
--batch-size R` sends them, but with nothing between calls (no output copies, no scheduler step):
the ceiling the denoising loop approaches. One warm-up round, then the best of `--repeats` rounds.
`--streams` sets NUM_STREAMS ("auto": OpenVINO picks). Settings run one after another in one process:
compare them within one run. `--cache-branch B` also times DeepCache's two parts (edge_dm.caching):
the whole UNet with its cache output and the shallow part on a cache, and gives the images/s each
`--cache-interval` would reach from them. Backs docs/experiments/2026-11-25-generation-requests-and-streams.md
(images per request, streams, the bare ceilings) and docs/experiments/2026-11-25-deepcache-and-ddim-steps.md
(DeepCache's speed-ups). JSON on stdout or in --output: one row per setting, the best, and with
`--cache-branch` the images/s per cache interval; one line per setting on stderr as it goes.
"""
import argparse
import json
import sys
import time

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py


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


def random_inputs(model, images: int, seed: int = 0) -> dict:
    """Seeded inputs of `images` rows for every input of an openvino.Model (timesteps in [0, 1000))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = {}
    for i in model.inputs:
        name = i.get_any_name()
        shape = [images, *(d.get_length() for d in list(i.get_partial_shape())[1:])]
        data[name] = rng.integers(0, 1000, images) if name == "timestep" else \
            rng.standard_normal(shape).astype(np.float32)
    return data


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("--device", default="CPU")
    p.add_argument("--request-batches", default="8,16,32")
    p.add_argument("--streams", default="auto,4,8,16")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision-hint", default=None, help="OpenVINO INFERENCE_PRECISION_HINT, e.g. f32")
    p.add_argument("--cache-branch", type=int, default=None)
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import openvino as ov

    from edge_dm.bundle import Bundle
    from edge_dm.jobs.timing import machine_info
    from edge_dm.runtime import compile_model as compile_unet

    bundle = Bundle.from_pretrained(a.bundle)
    models = {"unet": bundle.read_model()}
    if a.cache_branch is not None:
        from edge_dm.caching import split_ir

        models["full"], models["shallow"] = split_ir(models["unet"], a.cache_branch, bundle.family)
    rows = []
    for part, model in models.items():
        data = random_inputs(model, a.images)
        for rb in (int(r) for r in a.request_batches.split(",")):
            for streams in a.streams.split(","):
                extra = {} if streams == "auto" else {"NUM_STREAMS": streams}
                compiled = compile_unet(model, a.device, rb, "THROUGHPUT", a.precision_hint, extra)
                queue = ov.AsyncInferQueue(compiled, 0)  # 0: OpenVINO's optimal number of requests
                row = dict(part=part, request_batch=rb, streams=streams, requests=len(queue),
                           images_per_s=round(bare_images_per_s(queue, data, rb, a.repeats), 1))
                try:  # CPU properties; other devices may not report them
                    row["actual_streams"] = int(compiled.get_property("NUM_STREAMS"))
                    row["precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
                except RuntimeError:
                    pass
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    best = max((r for r in rows if r["part"] == "unet"), key=lambda r: r["images_per_s"])
    result = dict(bundle=str(bundle.path), device=a.device, images=a.images, repeats=a.repeats,
                  machine=machine_info(), rows=rows, best=best)
    if a.cache_branch is not None:  # UNet images a second of a loop that runs full once and shallow N-1 times
        rate = {part: max(r["images_per_s"] for r in rows if r["part"] == part) for part in models}
        result["cache_branch"] = a.cache_branch
        result["cache_interval_images_per_s"] = {
            n: round(n / (1 / rate["full"] + (n - 1) / rate["shallow"]), 1) for n in range(1, 9)}
    return emit(result, a.output)


if __name__ == "__main__":
    main()
