"""Batch-1 OpenVINO latency of UNet2DModel layouts (random weights), timed in interleaved rounds.

    python benchmarks/arch_latency.py [--rounds 5] [--iters 15] [--only NAME ...] [--output FILE.json]

Each layout is the shipped model's UNet2DModel config (as `edge-dm train` builds it) with other
widths, depth or attention level, converted to OpenVINO and compiled for batch 1 (LATENCY hint,
f32 forced: CPUs with bf16 would otherwise pick it). Latency does not depend on the weights, so they
are random. Rounds interleave the layouts so that every one sees the same machine load; each round
is the median of `--iters` calls after 3 warm-up calls. Backs
docs/experiments/2026-11-25-arch-latency-avx2.md. JSON on stdout or in --output (one row per
layout), a Markdown table on stderr. About 2 minutes on 2 cores.
"""
import argparse
import sys

import numpy as np
from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py

VARIANTS = {  # name: (block_out_channels, layers_per_block, attention level or None)
    "(64,128,128,128) x2 [shipped]": ((64, 128, 128, 128), 2, 1),
    "(64,128,128,128) x1": ((64, 128, 128, 128), 1, 1),
    "(32,64,128,128) x2": ((32, 64, 128, 128), 2, 1),
    "(32,64,128,128) x2 attn 8x8": ((32, 64, 128, 128), 2, 2),
    "(64,96,96,96) x1": ((64, 96, 96, 96), 1, 1),
    "(32,96,128,128) x1": ((32, 96, 128, 128), 1, 1),
    "(32,64,192,192) x1": ((32, 64, 192, 192), 1, 1),
    "(32,64,128,128) x1": ((32, 64, 128, 128), 1, 1),
    "(32,64,128,128) x1 no attention": ((32, 64, 128, 128), 1, None),
}


def unet_config(channels, layers, attn_level=1) -> dict:
    """The shipped model's UNet2DModel config with other widths, depth, attention (as `edge-dm train` builds it)."""
    from edge_dm.jobs.training import TrainConfig

    return TrainConfig(data="-", output="-", block_out_channels=tuple(channels), layers_per_block=layers,
                       attention_level=attn_level).unet_config()


def macs(unet, size: int = 32) -> int:
    """Multiply-adds of one image through the Conv2d and Linear layers of a UNet2DModel."""
    import torch

    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in unet.modules()]
    with torch.no_grad():
        unet(torch.randn(1, 3, size, size), torch.tensor([10]))
    for h in hooks:
        h.remove()
    return total[0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--only", action="append", metavar="NAME",
                   help="only this layout (repeat the option; the shipped one always runs)")
    p.add_argument("--device", default="CPU")
    p.add_argument("--precision-hint", default="f32")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import torch
    from diffusers import UNet2DModel

    from edge_dm.families.unet2d import convert_unet
    from edge_dm.jobs.timing import latency, machine_info
    from edge_dm.runtime import compile_model as compile_unet

    names = [n for n in VARIANTS if "[shipped]" in n or not a.only or n in a.only]
    if set(a.only or ()) - set(VARIANTS):
        p.error(f"unknown --only {sorted(set(a.only) - set(VARIANTS))}; known: {list(VARIANTS)}")
    compiled = {}
    for name in names:
        ch, layers, attn = VARIANTS[name]
        torch.manual_seed(0)
        unet = UNet2DModel(**unet_config(ch, layers, attn)).eval()
        req = compile_unet(convert_unet(unet, (3, 32, 32)), a.device, 1, "LATENCY",
                           a.precision_hint).create_infer_request()
        compiled[name] = (req, sum(q.numel() for q in unet.parameters()), macs(unet))
    x, t = np.random.randn(1, 3, 32, 32).astype(np.float32), np.array([500], np.int64)
    times = {name: [] for name in compiled}
    for _ in range(a.rounds):
        for name, (req, _, _) in compiled.items():
            times[name].append(latency(lambda: req.infer({0: x, 1: t}), a.iters, warmup=3)["median_ms"])
    rows = [dict(variant=name, params=params, gmac=round(mac / 1e9, 3),
                 median_ms=round(float(np.median(times[name])), 2), best_round_ms=round(min(times[name]), 2),
                 rounds_ms=[round(v, 2) for v in times[name]])
            for name, (_, params, mac) in compiled.items()]
    print("| UNet (block_out_channels) x layers_per_block | parameters | GMAC/image | median ms | best round ms |\n"
          "| --- | --- | --- | --- | --- |", file=sys.stderr)
    for r in rows:
        print(f"| {r['variant']} | {r['params'] / 1e6:.2f}M | {r['gmac']:.2f} | {r['median_ms']:.1f} | "
              f"{r['best_round_ms']:.1f} |", file=sys.stderr)
    result = dict(device=a.device, precision_hint=a.precision_hint, rounds=a.rounds, iters=a.iters,
                  machine=machine_info(), rows=rows)
    return emit(result, a.output)


if __name__ == "__main__":
    main()
