"""What trained and scored the shipped model on the lent GPU machine (see models/*/README.md).

    python scripts/device_train.py train   --data TAR --out DIR --minutes M   # resumable; --teacher DIR distils
    python scripts/device_train.py stats   --data TAR --out FILE.npz           # FID reference stats
    python scripts/device_train.py score   --model DIR --ref FILE.npz --num-images 10000 --out FILE.json
           [--seed S] [--bf16] [--save-images FILE.npy]   # bf16: a quick proxy, e.g. to pick an EMA
    python scripts/device_train.py images  --model DIR --num-images 1000 --out FOLDER   # fp32 PNGs, torch

It uses the library's own pieces (edge_dm.train, edge_dm.sampling, edge_dm.evaluate) on CUDA.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "stats", "score", "images"])
    p.add_argument("--data"); p.add_argument("--out"); p.add_argument("--model"); p.add_argument("--ref")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2500)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--lr", type=float, default=4e-4); p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--dropout", type=float, default=0.0); p.add_argument("--init"); p.add_argument("--teacher")
    p.add_argument("--channels", default="64,128,128,128"); p.add_argument("--layers-per-block", type=int, default=2)
    p.add_argument("--attention-level", default="1")
    p.add_argument("--inception")
    p.add_argument("--ema-decays", default="0.9995,0.9999")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true"); p.add_argument("--save-images")
    p.add_argument("--cache-interval", type=int, default=1); p.add_argument("--cache-branch", type=int, default=1)
    a = p.parse_args()
    import torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if a.what == "train":
        from edge_dm.train import TrainConfig, attention_level, train
        train(TrainConfig(data=a.data, output=a.out, minutes=a.minutes, compile=a.compile, lr=a.lr,
                          warmup_steps=a.warmup_steps, dropout=a.dropout, init=a.init, teacher=a.teacher,
                          block_out_channels=tuple(int(c) for c in a.channels.split(",")),
                          layers_per_block=a.layers_per_block,
                          attention_level=attention_level(a.attention_level),
                          ema_decays=tuple(float(d) for d in a.ema_decays.split(","))),
              log=lambda s: print(s, flush=True))
    elif a.what == "stats":
        from edge_dm.data import load_images
        from edge_dm.evaluate import inception_features, load_inception, save_stats
        t = time.time()
        imgs = load_images(a.data)
        feats = inception_features(imgs, batch_size=500, device=dev, net=load_inception(a.inception, dev))
        save_stats(a.out, feats, source=Path(a.data).name)
        print(f"stats of {len(imgs)} images in {time.time() - t:.0f}s -> {a.out}", flush=True)
    elif a.what == "images":
        # fp32 reference images with torch (TF32 off), seeded per image like `edge-dm generate`
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        from edge_dm.data import to_uint8
        from edge_dm.models import load_model
        from edge_dm.runtime import save_pngs
        from edge_dm.sampling import generate, make_scheduler, torch_denoiser
        m = load_model(a.model)
        x = generate(torch_denoiser(m.unet, dev), make_scheduler("ddim", m.scheduler_config), a.num_images,
                     a.batch_size, a.steps, seed=0, shape=m.sample_shape)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        save_pngs(to_uint8(x), Path(a.out))
        print(f"{a.num_images} fp32 images -> {a.out}", flush=True)
    else:
        from diffusers import DDPMScheduler, UNet2DModel
        from edge_dm.data import to_uint8
        from edge_dm.evaluate import inception_features, load_inception, load_stats, scores
        from edge_dm.sampling import generate, make_scheduler, torch_denoiser
        t = time.time()
        unet = UNet2DModel.from_pretrained(a.model)
        sched_cfg = DDPMScheduler.load_config(Path(a.model).parent / "scheduler")
        sched = make_scheduler("ddim", sched_cfg)
        dtype = torch.bfloat16 if a.bf16 else None
        if a.cache_interval > 1:  # DeepCache through the UNet's own forward (the reference, not fast)
            from edge_dm.caching import TorchCachedDenoiser
            den = TorchCachedDenoiser(unet, a.cache_branch, dev, dtype)
        else:
            den = torch_denoiser(unet, dev, dtype)
        x = generate(den, sched, a.num_images, a.batch_size, a.steps, seed=a.seed, shape=(3, 32, 32),
                     cache_interval=a.cache_interval)
        t_gen = time.time() - t
        imgs = to_uint8(x)
        import numpy as np
        np.save(Path(a.out).with_suffix(".grid.npy"), imgs[:100])
        if a.save_images:
            np.save(a.save_images, imgs)
        feats = inception_features(imgs, batch_size=500, device=dev, net=load_inception(a.inception, dev))
        res = scores(feats, load_stats(a.ref))
        res.update(model=a.model, steps=a.steps, scheduler="ddim", seed=a.seed, bf16=a.bf16, generate_s=t_gen,
                   cache_interval=a.cache_interval, cache_branch=a.cache_branch,
                   total_s=time.time() - t)
        Path(a.out).write_text(json.dumps(res, indent=2))
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
