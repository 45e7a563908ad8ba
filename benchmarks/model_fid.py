"""FID/sFID of a model's own fp32 (or bf16) samples, made with torch: the reference every int8 number is held to.

    python benchmarks/model_fid.py [--model edm-cifar10-ddpm] [--num-images 10000] [--steps 100]
        [--seed 0] [--batch-size 500] [--device cuda] [--bf16] [--tf32]
        [--cache-interval N --cache-branch B] [--reference cifar10-train] [--feature-device D]
        [--save-images DIR] [--output FILE.json]

`--model` is anything `edge-dm --model` takes, or a bare UNet folder as `edge-dm train` writes it
(`OUT/ema`, `OUT/ema-0.9999`: the scheduler is read from `OUT/scheduler`). Image i is seeded like
`edge-dm generate` (seed + i), DDIM with eta 0, so the images pair with an int8 bundle's for
`edge-dm evaluate --compare` (`--save-images DIR` writes them as numbered PNGs). `--bf16` samples
under bf16 autocast (a quick proxy, e.g. to pick an EMA). TF32 is off unless `--tf32`, which
allows it in convolutions as cuDNN does by default (how the model card's numbers were made).
`--cache-interval N` samples with DeepCache through the UNet's own forward
(edge_dm.caching.TorchCachedNet). `--reference none` skips FID (images only). Runs on any torch
device: 10,000 images x 100 steps take minutes on a GPU and hours on a 2-core CPU. Backs
models/edm-cifar10-ddpm/README.md (quality), the fp32 rows of docs/QUANTIZATION.md (Table 5) and of
docs/experiments/ (2026-11-25-deepcache-and-ddim-steps.md, 2026-11-25-student-distillation.md).
JSON on stdout or in --output: the scores and timings.
"""
import argparse
import time
from pathlib import Path

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py


def load_unet(spec: str):
    """(UNet2DModel in fp32 eval mode, scheduler config) of a model spec or a bare UNet folder."""
    path = Path(spec)
    if (path / "config.json").is_file() and not (path / "unet").is_dir():
        from diffusers import DDPMScheduler, UNet2DModel

        from edge_dm.resources import shipped_model_dir

        sched_dir = path.parent / "scheduler"
        if not sched_dir.is_dir():  # edge-dm's models all train with the shipped model's schedule
            sched_dir = shipped_model_dir("edm-cifar10-ddpm") / "scheduler"
        return UNet2DModel.from_pretrained(path).float().eval(), dict(DDPMScheduler.load_config(sched_dir))
    from edge_dm.models import load_model

    m = load_model(spec)
    return m.unet, m.scheduler_config


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="edm-cifar10-ddpm")
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--tf32", action="store_true", help="TF32 convolutions on CUDA (cuDNN's default)")
    p.add_argument("--cache-interval", type=int, default=1)
    p.add_argument("--cache-branch", type=int, default=1)
    p.add_argument("--reference", default="cifar10-train", help="as `edge-dm evaluate --reference`, or none")
    p.add_argument("--feature-device", help="Inception's device (default: --device; openvino for the CPU)")
    p.add_argument("--save-images", help="also write the images as numbered PNGs into this folder")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import torch

    from edge_dm.families import get
    from edge_dm.families.base import Denoiser
    from edge_dm.images import to_uint8
    from edge_dm.runtime import TorchNet
    from edge_dm.sampling import generate, make_scheduler

    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.allow_tf32 = a.tf32  # convolutions
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.perf_counter()
    unet, sched_cfg = load_unet(a.model)
    dtype = torch.bfloat16 if a.bf16 else None
    if a.cache_interval > 1:
        from edge_dm.caching import TorchCachedNet

        net = TorchCachedNet(unet, a.cache_branch, dev, dtype)
    else:
        net = TorchNet(unet, dev, dtype)
    den = Denoiser(get("unet2d").conditioning, net)  # no guidance: the net's inputs are sample and timestep
    c = unet.config
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    x = generate(den, make_scheduler("ddim", sched_cfg), a.num_images, a.batch_size, a.steps, seed=a.seed,
                 shape=(c.in_channels, size, size), cache_interval=a.cache_interval)
    images = to_uint8(x)  # clipped to the pixel range
    result = dict(model=a.model, num_images=a.num_images, steps=a.steps, scheduler="ddim", seed=a.seed,
                  device=dev, bf16=a.bf16, tf32=a.tf32, cache_interval=a.cache_interval,
                  cache_branch=a.cache_branch, generate_s=round(time.perf_counter() - t0, 2))
    if a.save_images:
        from edge_dm.images import save_pngs

        Path(a.save_images).mkdir(parents=True, exist_ok=True)
        save_pngs(images, Path(a.save_images), start=a.seed)
    if a.reference != "none":
        from edge_dm.metrics import inception_features, reference_stats, scores

        feature_device = a.feature_device or ("openvino" if dev == "cpu" else dev)
        feats = inception_features(images, batch_size=500, device=feature_device)
        result.update(scores(feats, reference_stats(a.reference, feature_device)), reference=a.reference,
                      feature_device=feature_device)
    result["total_s"] = round(time.perf_counter() - t0, 2)
    return emit(result, a.output)


if __name__ == "__main__":
    main()
