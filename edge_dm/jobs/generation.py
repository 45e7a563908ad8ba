"""`edge-dm generate`: the full denoising loop of a bundle on an OpenVINO device, written as PNGs.

Image i is written as `{seed + i:05d}.png`, the seed its noise comes from (edge_dm.sampling), so
`--seed 0 --num-images 500` and `--seed 500 --num-images 500` together are `--num-images 1000`.
With cfg.cluster the images are made on a Ray cluster (edge_dm.jobs.cluster), sharded by seeds, and
written here the same way: the same seeds give the same files.
"""
from __future__ import annotations

import contextlib
import json
import time

from edge_dm.bundle import Bundle
from edge_dm.configs import GenerateConfig
from edge_dm.data import cycled
from edge_dm.images import grid, save_pngs
from edge_dm.jobs.cluster import ClusterJob, connect
from edge_dm.jobs.progress import bar
from edge_dm.outputs import atomic_output, check_output
from edge_dm.pipeline import Pipeline


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Generate cfg.num_images images with the bundle cfg.model; write them, a grid and generate.json.

    With cfg.cluster, on that Ray cluster's workers: `cluster` in the result says how (workers,
    shards, shards resumed from an earlier run that stopped, shards retried after a worker died).
    """
    from PIL import Image

    bundle = Bundle.from_pretrained(cfg.model)
    out = check_output(cfg.output, cfg.overwrite, inputs=[bundle.path])
    pipe = Pipeline(bundle, cfg.runtime)
    prompts = cycled(cfg.prompts, cfg.num_images)
    sampling = pipe.check(cfg.sampling, prompts)
    desc = f"{bundle.precision} {sampling.scheduler} x{sampling.steps}"
    with connect(cfg.cluster) if cfg.cluster else contextlib.nullcontext() as cluster:  # checked before any work
        with atomic_output(out, cfg.overwrite, inputs=[bundle.path]) as tmp:
            t0 = time.perf_counter()
            if cluster:
                run = cluster.sample(ClusterJob(bundle, sampling, cfg.num_images, tuple(prompts), cfg.runtime),
                                     progress, desc)
                images, timing = run.images, _cluster_timing(run.stats)
            else:
                with bar(progress, cfg.num_images, desc, "img") as b:
                    images = pipe.sample(cfg.num_images, sampling, prompts, b.update)
                den = pipe.last_denoiser
                timing = dict(unet_ms_per_call=round(1e3 * den.seconds / max(den.calls, 1), 3), unet_calls=den.calls,
                              parallel=den.parallel)
            wall = time.perf_counter() - t0
            save_pngs(images, tmp, start=sampling.seed)  # named by seed: runs over seed ranges merge
            Image.fromarray(grid(images)).save(tmp / "grid.png")
            result = dict(output=str(cfg.output), bundle=str(bundle.path), precision=bundle.precision,
                          device=cfg.runtime.device, images=len(images), seconds=round(wall, 3),
                          images_per_s=round(len(images) / wall, 3), **timing,
                          config=cfg.replace(sampling=sampling).to_dict())
            (tmp / "generate.json").write_text(json.dumps(result, indent=2))
        if cluster:
            run.finish()  # the output is in place: the shards kept for a resume go
    return result


def _cluster_timing(stats: dict) -> dict:
    """generate.json's UNet figures of a cluster run (summed over its workers) and how it ran."""
    keys = ("address", "workers", "cpus_per_worker", "nodes", "shards", "resumed_shards", "retried_shards",
            "lost_workers")
    return dict(unet_ms_per_call=round(1e3 * stats["unet_seconds"] / max(stats["unet_calls"], 1), 3),
                unet_calls=stats["unet_calls"], parallel=stats["parallel"],
                cluster={k: stats[k] for k in keys})
