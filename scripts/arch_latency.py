"""OpenVINO fp32 batch-1 latency of UNet2DModel variants (random weights), interleaved to damp VM noise.

    python scripts/arch_latency.py            # all variants, about 2 minutes on 2 cores

What chose between a fast and a good default model: docs/BENCHMARKS.md, "Architecture vs latency".
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def unet_config(channels, layers, attn_level=1):
    """The shipped model's UNet2DModel config with other widths, depth, attention (as `edge-dm train` builds it)."""
    from edge_dm.train import TrainConfig

    return TrainConfig(data="-", output="-", block_out_channels=tuple(channels), layers_per_block=layers,
                       attention_level=attn_level).unet_config()


VARIANTS = {  # name: (block_out_channels, layers_per_block, attention level or None)
    "(64,128,128,128) x2 [shipped]": ((64, 128, 128, 128), 2, 1),
    "(64,128,128,128) x1": ((64, 128, 128, 128), 1, 1),
    "(32,64,128,128) x2": ((32, 64, 128, 128), 2, 1),
    "(32,64,128,128) x2 attn 8x8": ((32, 64, 128, 128), 2, 2),
    "(64,96,96,96) x1": ((64, 96, 96, 96), 1, 1),
    "(32,96,128,128) x1": ((32, 96, 128, 128), 1, 1),
    "(32,64,192,192) x1": ((32, 64, 192, 192), 1, 1),
    "(32,64,128,128) x1 [trained: FID 27.8]": ((32, 64, 128, 128), 1, 1),
    "(32,64,128,128) x1 no attention": ((32, 64, 128, 128), 1, None),
}


def macs(unet) -> int:
    import torch

    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in unet.modules()]
    with torch.no_grad():
        unet(torch.randn(1, 3, 32, 32), torch.tensor([10]))
    for h in hooks:
        h.remove()
    return total[0]


def main(rounds: int = 5, iters: int = 15):
    import torch
    from diffusers import UNet2DModel

    from edge_dm.benchmark import _latency
    from edge_dm.export import convert_unet
    from edge_dm.runtime import compile_unet

    compiled = {}
    for name, (ch, layers, attn) in VARIANTS.items():
        torch.manual_seed(0)
        unet = UNet2DModel(**unet_config(ch, layers, attn)).eval()
        # f32 forced: on CPUs with bf16 (AMX, AVX-512 BF16) OpenVINO would otherwise pick bf16
        req = compile_unet(convert_unet(unet, (3, 32, 32)), "CPU", 1, "LATENCY", "f32").create_infer_request()
        compiled[name] = (req, sum(p.numel() for p in unet.parameters()), macs(unet))
    x, t = np.random.randn(1, 3, 32, 32).astype(np.float32), np.array([500], np.int64)
    times = {name: [] for name in compiled}
    for _ in range(rounds):  # interleaved: every variant sees the same VM weather
        for name, (req, _, _) in compiled.items():
            times[name].append(_latency(lambda: req.infer({0: x, 1: t}), iters, warmup=3)["median_ms"])
    print("| UNet (block_out_channels) x layers_per_block | parameters | GMAC/image | median ms | best round ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, (_, params, mac) in compiled.items():
        print(f"| {name} | {params / 1e6:.2f}M | {mac / 1e9:.2f} | {np.median(times[name]):.1f} | {min(times[name]):.1f} |")


if __name__ == "__main__":
    main()
