"""How far int8 images drift from fp32 ones, per quantization option, all from one calibration set.

    python benchmarks/drift_options.py [--model edm-cifar10-ddpm] [--workdir DIR] [--num-images 64]
        [--steps 100] [--only NAME ...] [--latency] [--output FILE.json]

Exports the model's fp32 IR and generates `--num-images` images from it with f32 forced (seeds
0..N-1, DDIM `--steps`): the reference. Then each variant below is quantized with `edge-dm quantize`,
its images generated with the same seeds, and compared with `edge-dm evaluate --compare` (mean
PSNR, SSIM, mean abs diff), beside the held-out noise-prediction error that `quantize` records.
The first variant (everything quantized) draws the DNTC calibration set the others reuse
(`--calibration-set`), so that they differ by their option only; `*-seed1` and `all-n128` draw
fresh sets, to show how much one calibration set moves the drift. `--latency` also times the
bundles of LATENCY_VARIANTS at batch 1 in interleaved rounds. Backs
docs/experiments/2026-11-25-keep-float-drift.md. JSON on stdout or in --output (one row per
variant); progress on stderr. About 25 minutes on 2 cores with the defaults; `--num-images 8
--steps 20 --only io-temb-float` is a quick check, and `--only io-temb-float --only split-shortcut
--latency` compares the shortcut split with the unsplit defaults.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py

# name: quantize options; "CAL" stands for the calibration set drawn by the first variant. These variants
# predate the shortcut split as a default, so every one but "split-shortcut" runs with --no-split-shortcut.
VARIANTS = {
    "all": ["--keep-float", "none"],
    "overflow-off": ["CAL", "--keep-float", "none", "--overflow-fix", "disable"],
    "no-matmul": ["CAL", "--keep-float", "none", "--ignore-type", "MatMul"],
    "temb-float": ["CAL", "--keep-float", "none", "--ignore-pattern", ".*time_emb.*"],
    "no-smoothquant": ["CAL", "--keep-float", "none", "--smooth-quant-alpha", "-1"],
    "io-float": ["CAL", "--keep-float", "none", "--ignore-pattern", ".*conv_(in|out)/.*"],
    "io-temb-float": ["CAL"],  # conv_in, conv_out and the time embedding in float: the defaults, unsplit
    "split-shortcut": ["CAL", "--split-shortcut"],  # today's defaults: up-path skip concatenations convolved apart
    "all-seed1": ["--keep-float", "none", "--seed", "1"],
    "io-float-seed1": ["--keep-float", "none", "--seed", "1", "--ignore-pattern", ".*conv_(in|out)/.*"],
    "all-n128": ["--keep-float", "none", "--num-samples", "128"],
}
LATENCY_VARIANTS = ("all", "io-float", "io-temb-float", "split-shortcut")


def run(*args):
    """`edge-dm ARGS` in a subprocess (this Python), its stdout dropped; the command goes to stderr."""
    print("$ edge-dm " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "edge_dm", *args], check=True, stdout=subprocess.DEVNULL)


def reference(w: Path, model: str, images: list) -> None:
    """Export `model`'s fp32 IR to w/fp32 and generate the reference images from it, f32 forced, in w/fp32-f32."""
    run("export", "--model", model, "--output", str(w / "fp32"), "--overwrite")
    run("generate", "--model", str(w / "fp32"), "--precision-hint", "f32", *images, "--output",
        str(w / "fp32-f32"), "--overwrite")


def paired_drift(w: Path, samples: Path, num_images: int) -> dict:
    """`edge-dm evaluate --compare` of the images in `samples` against w/fp32-f32 (same seeds)."""
    out = w / f"{samples.name}.drift.json"
    run("evaluate", "--samples", str(samples), "--compare", str(w / "fp32-f32"), "--num-images",
        str(num_images), "--output", str(out))
    return json.loads(out.read_text())["drift"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="edm-cifar10-ddpm")
    p.add_argument("--workdir", help="where bundles and images go (default: a new temporary folder)")
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--only", action="append", metavar="NAME",
                   help="only this variant (repeat the option; the first, 'all', always runs)")
    p.add_argument("--latency", action="store_true",
                   help=f"time those of {', '.join(LATENCY_VARIANTS)} that run, at batch 1")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    from edge_dm.jobs.timing import machine_info

    w = Path(a.workdir or tempfile.mkdtemp(prefix="edge-dm-drift-"))
    w.mkdir(parents=True, exist_ok=True)
    images = ["--num-images", str(a.num_images), "--steps", str(a.steps)]

    def drift(samples: Path) -> dict:
        return paired_drift(w, samples, a.num_images)

    reference(w, a.model, images)
    run("generate", "--model", str(w / "fp32"), "--precision-hint", "bf16", *images, "--output",
        str(w / "fp32-bf16"), "--overwrite")
    rows = [dict(variant="fp32 IR, bf16 inference", drift=drift(w / "fp32-bf16"))]
    names = [n for n in VARIANTS if n == "all" or not a.only or n in a.only]
    if set(a.only or ()) - set(VARIANTS):
        p.error(f"unknown --only {sorted(set(a.only) - set(VARIANTS))}; known: {list(VARIANTS)}")
    for name in names:
        opts = []
        for o in VARIANTS[name]:
            opts += ["--calibration-set", str(w / "all" / "calibration.npz")] if o == "CAL" else [o]
        if "--split-shortcut" not in opts:
            opts.append("--no-split-shortcut")
        run("quantize", "--model", a.model, "--output", str(w / name), "--overwrite", "--steps", str(a.steps), *opts)
        run("generate", "--model", str(w / name), *images, "--output", str(w / f"{name}-img"), "--overwrite")
        recipe = json.loads((w / name / "recipe.json").read_text())
        rows.append(dict(variant=name, quantize_options=VARIANTS[name], drift=drift(w / f"{name}-img"),
                         noise_prediction_rel_l2=recipe["summary"]["noise_prediction_rel_l2"]))
        if name == "all":  # the same bundle with f32 for the ops left in float
            run("generate", "--model", str(w / "all"), "--precision-hint", "f32", *images, "--output",
                str(w / "all-f32"), "--overwrite")
            rows.append(dict(variant="all, f32 for the ops left in float", drift=drift(w / "all-f32")))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = dict(model=a.model, num_images=a.num_images, steps=a.steps, workdir=str(w), machine=machine_info(),
                  rows=rows)
    if a.latency:
        result["int8_batch1_latency_ms"] = latency([w / n for n in LATENCY_VARIANTS if n in names])
    return emit(result, a.output)


def latency(bundles, rounds: int = 6, iters: int = 30) -> dict:
    """Median over `rounds` interleaved rounds of each bundle's median batch-1 latency (ms) on the CPU."""
    import numpy as np
    from arch_latency import median_ms  # this folder's recipe

    from edge_dm.bundle import Bundle
    from edge_dm.runtime import compile_model as compile_unet

    reqs, shape = {}, None
    for b in bundles:
        bundle = Bundle.from_pretrained(str(b))
        reqs[b.name], shape = compile_unet(bundle.read_model(), "CPU", 1, "LATENCY").create_infer_request(), \
            bundle.sample_shape
    x, t = np.random.randn(1, *shape).astype(np.float32), np.array([500], np.int64)
    res = {n: [] for n in reqs}
    for _ in range(rounds):  # interleaved: every bundle sees the same machine load
        for n, req in reqs.items():
            res[n].append(median_ms(lambda: req.infer({0: x, 1: t}), iters))
    return {n: round(float(np.median(v)), 2) for n, v in res.items()}


if __name__ == "__main__":
    main()
