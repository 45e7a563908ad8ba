"""int8 throughput of UNet2DModel variants (random weights) against the shipped layout: students to distil.

    python scripts/student_throughput.py [--rounds 2] [--only NAME,NAME] [--out FILE.json]

Each variant is saved as a diffusers model folder (random weights, the shipped scheduler), quantized
with `edge-dm quantize`'s defaults (a small calibration set: kernel speed does not depend on the
ranges), and timed like `scripts/ov_throughput.py`: the bare UNet, 8 images a request, OpenVINO's
own streams, best of 3 calls of 512 images; rounds interleave the variants. What a student must
reach: the 10-minute target for 10,000 images at DDIM 100 needs the loop 1.6-1.8x faster on the
lent Xeon (docs/QUANTIZATION.md), and per core that Xeon behaves like the AVX-512 VM.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

VARIANTS = {  # name: (block_out_channels, layers_per_block, attention level or None)
    "(64,128,128,128) x2 [shipped]": ((64, 128, 128, 128), 2, 1),
    "(64,128,128,128) x2 attn 8x8": ((64, 128, 128, 128), 2, 2),
    "(64,128,128,128) x1": ((64, 128, 128, 128), 1, 1),
    "(64,128,128,128) x1 attn 8x8": ((64, 128, 128, 128), 1, 2),
    "(64,128,128,128) x1 mid attention only": ((64, 128, 128, 128), 1, None),
    "(32,96,96,96) x2": ((32, 96, 96, 96), 2, 1),
    "(64,96,96,96) x1": ((64, 96, 96, 96), 1, 1),
    "(32,64,128,128) x2 attn 8x8": ((32, 64, 128, 128), 2, 2),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", help="comma-separated variant names to time (the shipped one always runs)")
    p.add_argument("--out")
    a = p.parse_args()
    names = [n for n in VARIANTS if "[shipped]" in n or not a.only or n in a.only.split(",")]
    import numpy as np
    import openvino as ov
    import torch
    from diffusers import UNet2DModel

    from arch_latency import macs, unet_config
    from ov_throughput import bare_images_per_s
    from edge_dm.runtime import compile_unet, find_bundle

    work = Path(tempfile.mkdtemp())
    models = {}
    for i, name in enumerate(names):
        ch, layers, attn = VARIANTS[name]
        torch.manual_seed(0)
        unet = UNet2DModel(**unet_config(ch, layers, attn)).eval()
        folder = work / f"m{i}"
        unet.save_pretrained(folder / "unet")
        shutil.copytree(ROOT / "models/edm-cifar10-ddpm/scheduler", folder / "scheduler")
        shutil.copy(ROOT / "models/edm-cifar10-ddpm/model_index.json", folder)
        subprocess.run([sys.executable, "-m", "edge_dm", "quantize", "--model", str(folder), "--output",
                        str(work / f"q{i}"), "--num-samples", "8", "--eval-trajectories", "1"],
                       check=True, capture_output=True)
        bundle = find_bundle(str(work / f"q{i}"))
        compiled = compile_unet(bundle.read_model(), "CPU", 8, "THROUGHPUT", None, {})
        models[name] = dict(queue=ov.AsyncInferQueue(compiled, 0), params=sum(q.numel() for q in unet.parameters()),
                            gmac=macs(unet) / 1e9, rates=[])
        print(f"quantized {name}", flush=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 3, 32, 32)).astype(np.float32)
    t = rng.integers(0, 1000, 512).astype(np.int64)

    for _ in range(a.rounds):  # interleaved: every variant sees the same machine weather
        for m in models.values():
            m["rates"].append(bare_images_per_s(m["queue"], {"sample": x, "timestep": t}, 8, repeats=3))
    base = max(models["(64,128,128,128) x2 [shipped]"]["rates"])
    rows = []
    print("| UNet (block_out_channels) x layers_per_block | parameters | GMAC/image | int8 images/s | x shipped |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in models.items():
        rate = max(m["rates"])
        rows.append(dict(variant=name, params=m["params"], gmac=round(m["gmac"], 3), images_per_s=round(rate, 1),
                         rounds=[round(r, 1) for r in m["rates"]], x_shipped=round(rate / base, 2)))
        print(f"| {name} | {m['params'] / 1e6:.2f}M | {m['gmac']:.2f} | {rate:.0f} | {rate / base:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(rows=rows, rounds=a.rounds), indent=2))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
