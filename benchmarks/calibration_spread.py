"""Calibration methods measured with their spread over calibration seeds: paired drift against fp32, held-out error.

    python benchmarks/calibration_spread.py [--model edm-cifar10-ddpm] [--workdir DIR] [--num-images 32]
        [--steps 100] [--seeds 0,1,2] [--only NAME ...] [--output FILE.json]

Exports the model's fp32 IR and generates `--num-images` reference images from it with f32 forced
(seeds 0..N-1, DDIM `--steps`; drift_options.py's helpers). Then each variant below is quantized once
per calibration seed (`edge-dm quantize --seed S`, which draws a fresh calibration set), its images
generated with the same image seeds as the reference and compared with `edge-dm evaluate --compare`.
Every quantize measures its error on the same held-out trajectories (quantize's default held-out
set, from calibration.HELD_OUT_SEED, at `--steps`), which is `summary.mean_rel_l2` in recipe.json.
Per variant: each seed's row, and the mean, std (population) and min/max over seeds of PSNR, SSIM
and the held-out mean rel L2. JSON on stdout or in --output, rewritten after every seed. Backs
docs/experiments/2026-12-01-calibration-spread.md. `--num-images 4 --steps 10 --seeds 0 --only dntc`
checks it in a few minutes.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py
from drift_options import paired_drift, reference, run

# name: quantize options besides --seed
VARIANTS = {
    # the shortcut split is a default since this comparison; the other variants are measured without it
    "dntc": ["--no-split-shortcut"],  # the defaults before the shortcut split
    "split-shortcut": [],  # today's defaults: DNTC plus Q-Diffusion's shortcut split
    "uniform": ["--calibration", "uniform", "--no-split-shortcut"],
    "uniform-split": ["--calibration", "uniform"],  # today's defaults, uniform calibration
    "exact": ["--samples-per-trajectory", "1", "--num-samples", "1024", "--no-split-shortcut"],  # PTQ4DM's
    "exact-split": ["--samples-per-trajectory", "1", "--num-samples", "1024"],  # PTQ4DM's, today's defaults
}  # the slowest last: on 2 cores the JSON rewritten after each seed keeps what finished
METRICS = ("psnr_db", "ssim", "mean_rel_l2")


def spread(values: list) -> dict:
    return dict(mean=round(statistics.fmean(values), 5), std=round(statistics.pstdev(values), 5),
                min=min(values), max=max(values))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="edm-cifar10-ddpm")
    p.add_argument("--workdir", help="where bundles and images go (default: a new temporary folder)")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", default="0,1,2", help="calibration seeds (quantize's --seed), comma-separated")
    p.add_argument("--only", action="append", metavar="NAME", help=f"only this variant (repeat); of {list(VARIANTS)}")
    p.add_argument("--output", help="write the JSON here instead of stdout (rewritten after every seed)")
    a = p.parse_args(argv)
    if set(a.only or ()) - set(VARIANTS):
        p.error(f"unknown --only {sorted(set(a.only) - set(VARIANTS))}; known: {list(VARIANTS)}")
    from edge_dm.jobs.timing import machine_info

    w = Path(a.workdir or tempfile.mkdtemp(prefix="edge-dm-spread-"))
    w.mkdir(parents=True, exist_ok=True)
    images = ["--num-images", str(a.num_images), "--steps", str(a.steps)]
    seeds = [int(s) for s in a.seeds.split(",")]
    result = dict(model=a.model, num_images=a.num_images, steps=a.steps, calibration_seeds=seeds,
                  workdir=str(w), machine=machine_info(), variants={})
    t0 = time.perf_counter()
    reference(w, a.model, images)
    result["reference_s"] = round(time.perf_counter() - t0, 1)
    for name in [n for n in VARIANTS if not a.only or n in a.only]:
        rows = []
        for seed in seeds:
            out = w / f"{name}-s{seed}"
            t0 = time.perf_counter()
            run("quantize", "--model", a.model, "--output", str(out), "--overwrite", "--steps", str(a.steps),
                "--seed", str(seed), *VARIANTS[name])
            quantize_s = time.perf_counter() - t0
            run("generate", "--model", str(out), *images, "--output", str(w / f"{out.name}-img"), "--overwrite")
            summary = json.loads((out / "recipe.json").read_text())["summary"]
            d = paired_drift(w, w / f"{out.name}-img", a.num_images)
            rows.append(dict(seed=seed, psnr_db=d["psnr_db"], ssim=d["ssim"], drift=d,
                             mean_rel_l2=summary["mean_rel_l2"], quantize_wall_s=round(quantize_s, 1),
                             calibration_s=summary.get("calibration_s"), quantization_s=summary.get("quantization_s")))
            print(json.dumps(dict(variant=name, **rows[-1])), file=sys.stderr, flush=True)
            result["variants"][name] = dict(quantize_options=VARIANTS[name], rows=rows,
                                            **{m: spread([r[m] for r in rows]) for m in METRICS})
            if a.output:
                emit(result, a.output)
    return emit(result, a.output)


if __name__ == "__main__":
    main()
