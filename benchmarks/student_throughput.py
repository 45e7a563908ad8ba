"""int8 throughput of UNet2DModel layouts (random weights) against the shipped layout: students to distil.

    python benchmarks/student_throughput.py [--rounds 2] [--only NAME ...] [--images 512] [--output FILE.json]

Each layout is saved as a diffusers model folder (random weights, the shipped model's scheduler),
quantized with `edge-dm quantize`'s defaults on a small calibration set (kernel speed does not
depend on the ranges), and timed like benchmarks/unet_throughput.py: the bare UNet, 8 images a
request, OpenVINO's own streams, best of 3 rounds of `--images` images; rounds interleave the
layouts. Backs docs/experiments/2026-11-25-student-distillation.md. JSON on stdout or in --output
(one row per layout), a Markdown table on stderr. A few minutes on 2 cores.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py
from arch_latency import macs, unet_config  # this folder's recipes
from unet_throughput import bare_images_per_s

SHIPPED = "(64,128,128,128) x2 [shipped]"
VARIANTS = {  # name: (block_out_channels, layers_per_block, attention level or None)
    SHIPPED: ((64, 128, 128, 128), 2, 1),
    "(64,128,128,128) x2 attn 8x8": ((64, 128, 128, 128), 2, 2),
    "(64,128,128,128) x1": ((64, 128, 128, 128), 1, 1),
    "(64,128,128,128) x1 attn 8x8": ((64, 128, 128, 128), 1, 2),
    "(64,128,128,128) x1 mid attention only": ((64, 128, 128, 128), 1, None),
    "(32,96,96,96) x2": ((32, 96, 96, 96), 2, 1),
    "(64,96,96,96) x1": ((64, 96, 96, 96), 1, 1),
    "(32,64,128,128) x2 attn 8x8": ((32, 64, 128, 128), 2, 2),
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", action="append", metavar="NAME",
                   help="only this layout (repeat the option; the shipped one always runs)")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--device", default="CPU")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import numpy as np
    import openvino as ov
    import torch
    from diffusers import UNet2DModel

    from edge_dm.bundle import Bundle
    from edge_dm.jobs.timing import machine_info
    from edge_dm.resources import shipped_model_dir
    from edge_dm.runtime import compile_model as compile_unet

    names = [n for n in VARIANTS if n == SHIPPED or not a.only or n in a.only]
    if set(a.only or ()) - set(VARIANTS):
        p.error(f"unknown --only {sorted(set(a.only) - set(VARIANTS))}; known: {list(VARIANTS)}")
    shipped = shipped_model_dir("edm-cifar10-ddpm")
    work = Path(tempfile.mkdtemp(prefix="edge-dm-students-"))
    try:
        models = {}
        for i, name in enumerate(names):
            ch, layers, attn = VARIANTS[name]
            torch.manual_seed(0)
            unet = UNet2DModel(**unet_config(ch, layers, attn)).eval()
            folder = work / f"m{i}"
            unet.save_pretrained(folder / "unet")
            shutil.copytree(shipped / "scheduler", folder / "scheduler")
            shutil.copy(shipped / "model_index.json", folder)
            subprocess.run([sys.executable, "-m", "edge_dm", "quantize", "--model", str(folder), "--output",
                            str(work / f"q{i}"), "--num-samples", "8", "--eval-trajectories", "1"],
                           check=True, capture_output=True)
            compiled = compile_unet(Bundle.from_pretrained(str(work / f"q{i}")).read_model(), a.device, 8, "THROUGHPUT")
            models[name] = dict(queue=ov.AsyncInferQueue(compiled, 0), params=sum(q.numel() for q in unet.parameters()),
                                gmac=macs(unet) / 1e9, rates=[])
            print(f"quantized {name}", file=sys.stderr, flush=True)
        rng = np.random.default_rng(0)
        data = {"sample": rng.standard_normal((a.images, 3, 32, 32)).astype(np.float32),
                "timestep": rng.integers(0, 1000, a.images).astype(np.int64)}
        for _ in range(a.rounds):  # interleaved: every layout sees the same machine load
            for m in models.values():
                m["rates"].append(bare_images_per_s(m["queue"], data, 8, repeats=3))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = max(models[SHIPPED]["rates"])
    rows = [dict(variant=name, params=m["params"], gmac=round(m["gmac"], 3), images_per_s=round(max(m["rates"]), 1),
                 rounds=[round(r, 1) for r in m["rates"]], x_shipped=round(max(m["rates"]) / base, 2))
            for name, m in models.items()]
    print("| UNet (block_out_channels) x layers_per_block | parameters | GMAC/image | int8 images/s | x shipped |\n"
          "| --- | --- | --- | --- | --- |", file=sys.stderr)
    for r in rows:
        print(f"| {r['variant']} | {r['params'] / 1e6:.2f}M | {r['gmac']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['x_shipped']:.2f} |", file=sys.stderr)
    result = dict(device=a.device, rounds=a.rounds, images=a.images, machine=machine_info(), rows=rows)
    return emit(result, a.output)


if __name__ == "__main__":
    main()
