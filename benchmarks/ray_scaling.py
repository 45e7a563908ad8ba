"""Images a second of `edge-dm generate --cluster local` by layout of Ray workers, against one process
without Ray on the same cores.

    python benchmarks/ray_scaling.py [BUNDLE] [--images 10000] [--steps 100] [--layouts 1x16,2x8,4x4,8x2]
        [--batch-size 8] [--shard-images N] [--rounds 1] [--output FILE.json]

BUNDLE is a bundle folder or a model name whose default bundle `edge-dm quantize` wrote (default:
the shipped model's int8). A layout WxC is W workers of C CPUs each, every worker pinned to cores of
its own (edge_dm.jobs.cluster), on an embedded Ray started once on the CPUs this process may use
(`taskset` narrows them). Its baseline is one process without Ray pinned to the same W*C cores
(os.sched_setaffinity, in a fresh process, before OpenVINO starts), running the same images with the
same batch size through edge_dm.Pipeline. Both are timed from the first image to the last, after
compiling: the Ray time includes handing out shards, returning the images to the driver and keeping
them in the work folder, not starting the workers (`start_seconds`, reported apart). `identical`:
whether both made the same bytes. With `--rounds N` every baseline and layout runs N times in
interleaved rounds and the best of each counts (a busy machine slows some runs, never speeds one
up). JSON on stdout or in --output: one row per layout with its images/s, the baseline's and their
ratio, and every round's images/s.
"""
import argparse
import hashlib
import os
import sys
import time

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py


def one_process(bundle_path: str, cores: list, images: int, steps: int, batch_size: int) -> dict:
    """Images/s of one process without Ray pinned to `cores` (run in a fresh process: OpenVINO reads
    the cores it may use when it starts), and a digest of its images."""
    os.sched_setaffinity(0, cores)
    from edge_dm.bundle import open_bundle
    from edge_dm.configs import DeviceConfig, SamplingConfig
    from edge_dm.pipeline import Pipeline

    pipe = Pipeline(open_bundle(bundle_path), DeviceConfig(batch_size=batch_size))
    sampling = pipe.check(SamplingConfig(scheduler="ddim", steps=steps))
    parallel = pipe.denoiser(sampling, images).net.parallel  # compiled before the clock starts
    start = time.perf_counter()
    out = pipe.sample(images, sampling)
    seconds = time.perf_counter() - start
    return dict(cores=len(cores), seconds=round(seconds, 3), images_per_s=round(images / seconds, 2),
                parallel=parallel, digest=hashlib.sha1(out.tobytes()).hexdigest())


def baseline(bundle_path: str, cores: list, a) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(one_process, bundle_path, cores, a.images, a.steps, a.batch_size).result()


def on_ray(bundle, workers: int, cpus: int, a) -> dict:
    """Images/s of W workers of C CPUs on the embedded Ray (started by the caller), and a digest."""
    from edge_dm.configs import ClusterConfig, DeviceConfig, SamplingConfig
    from edge_dm.jobs.cluster import ClusterJob, connect
    from edge_dm.pipeline import Pipeline

    runtime = DeviceConfig(batch_size=a.batch_size)
    sampling = Pipeline(bundle, runtime).check(SamplingConfig(scheduler="ddim", steps=a.steps))
    cfg = ClusterConfig(address="local", workers=workers, cpus_per_worker=cpus, shard_images=a.shard_images)
    with connect(cfg) as cluster:
        run = cluster.sample(ClusterJob(bundle, sampling, a.images, runtime=runtime), progress=False)
    run.finish()
    st = run.stats
    if st["resumed_shards"]:
        sys.exit(f"a stale work folder gave {st['resumed_shards']} shards: run again")
    return dict(seconds=round(st["run_seconds"], 3), images_per_s=round(a.images / st["run_seconds"], 2),
                start_seconds=round(st["start_seconds"], 2), shards=st["shards"], parallel=st["parallel"],
                digest=hashlib.sha1(run.images.tobytes()).hexdigest())


def measure(bundle, layouts: list, cores: list, a) -> tuple[dict, dict]:
    """Each layout's runs and each core count's baseline, `a.rounds` interleaved rounds of them, on
    one embedded Ray started here for every layout, after the first baseline (Ray brings up its
    processes on the same cores as it starts)."""
    import ray

    from edge_dm.jobs.cluster import init_ray

    baselines, runs = {}, {}  # cores -> each round's baseline; layout -> each round's run
    try:
        for round_ in range(1, a.rounds + 1):
            for workers, cpus in layouts:
                total = workers * cpus
                if len(baselines.setdefault(total, [])) < round_:
                    baselines[total].append(baseline(str(bundle.path), cores[:total], a))
                    print(f"round {round_}, one process on {total} cores: {baselines[total][-1]['images_per_s']} "
                          "images/s", file=sys.stderr)
                if not ray.is_initialized():
                    init_ray(ray, "local")
                runs.setdefault((workers, cpus), []).append(on_ray(bundle, workers, cpus, a))
                print(f"round {round_}, {workers}x{cpus}: {runs[workers, cpus][-1]['images_per_s']} images/s",
                      file=sys.stderr)
    finally:
        ray.shutdown()
    return baselines, runs


def best(results: list) -> dict:
    """The fastest of a setting's rounds (a busy machine slows some runs, never speeds one up), with
    every round's images/s."""
    return dict(max(results, key=lambda r: r["images_per_s"]), rounds_images_per_s=[r["images_per_s"] for r in results])


def row(workers: int, cpus: int, results: list, baselines: list) -> dict:
    r, base = best(results), best(baselines)
    return dict(layout=f"{workers}x{cpus}", workers=workers, cpus_per_worker=cpus, **r,
                one_process_images_per_s=base["images_per_s"], ratio=round(r["images_per_s"] / base["images_per_s"], 3),
                identical=all(x["digest"] == base["digest"] for x in results))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", nargs="?", default="edm-cifar10-ddpm")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--layouts", default="1x16,2x8,4x4,8x2", help="WORKERSxCPUS, comma-separated")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-images", type=int, help="images per shard (default: edge-dm's, shrinking as a job ends)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best of each setting counts")
    p.add_argument("--output")
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from edge_dm.bundle import Bundle
    from edge_dm.jobs.timing import machine_info

    layouts = [tuple(int(n) for n in text.lower().split("x")) for text in a.layouts.split(",")]
    cores = sorted(os.sched_getaffinity(0))
    too_big = [f"{w}x{c}" for w, c in layouts if w * c > len(cores)]
    if too_big:
        sys.exit(f"layouts {', '.join(too_big)} need more than the {len(cores)} CPUs this process may use")
    bundle = Bundle.from_pretrained(a.bundle)
    baselines, runs = measure(bundle, layouts, cores, a)
    emit(dict(machine=machine_info(), bundle=str(bundle.path), precision=bundle.precision, images=a.images,
              steps=a.steps, batch_size=a.batch_size, rounds=a.rounds,
              one_process=[best(b) for b in baselines.values()],
              rows=[row(w, c, results, baselines[w * c]) for (w, c), results in runs.items()]), a.output)


if __name__ == "__main__":
    main()
