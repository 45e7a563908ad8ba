"""Class accuracy and FID of a text-to-image pipeline's own torch fp32 samples, over guidance scales and steps.

    python benchmarks/t2i_guidance.py [--model edm-cifar10-t2i] [--guidance 2,3] [--steps 25]
        [--num-images 10000] [--fid-images 5000] [--prompts datasets/cifar10-prompts.txt]
        [--classifier edm-cifar10-classifier] [--seed 0] [--batch-size 1000] [--device cuda]
        [--reference cifar10-train] [--feature-device D] [--output FILE.json]

Sampling is diffusers' `StableDiffusionPipeline` (the model's own scheduler, DDIM for edm-cifar10-t2i)
in fp32 on any torch device: image i from seed + i (one torch generator per image, so batching does
not change it) with prompt i, cycling through `--prompts` (the shipped file holds the 10 classes in
the 10 caption templates, class fastest). For each guidance scale and step count: class accuracy of
all images by `--classifier` (the class its prompt names, as `edge-dm evaluate --classifier`), and
FID/sFID of the first `--fid-images` against `--reference` (`none`: no FID). Backs
models/edm-cifar10-t2i/README.md (the guidance pick; docs/experiments/2026-12-01-edm-cifar10-t2i-training.md).
On a GPU: seconds per 10,000 images at 32x32, then Inception (minutes on a 2-core CPU with openvino).
JSON on stdout or in --output: one row per setting.
"""
import argparse
import time

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="edm-cifar10-t2i")
    p.add_argument("--guidance", default="2,3", help="comma-separated guidance scales (1: none)")
    p.add_argument("--steps", default="25", help="comma-separated step counts")
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--fid-images", type=int, default=5000)
    p.add_argument("--prompts", help="prompt file (default: the shipped cifar10-prompts.txt)")
    p.add_argument("--classifier", default="edm-cifar10-classifier")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--reference", default="cifar10-train", help="as `edge-dm evaluate --reference`, or none")
    p.add_argument("--feature-device", help="Inception's device (default: --device; openvino for the CPU)")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from edge_dm.classifier import class_accuracy, classifier_config, named_classes
    from edge_dm.data import cycled, read_prompts
    from edge_dm.models import resolve
    from edge_dm.resources import shipped_dataset

    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prompts = cycled(read_prompts(a.prompts or shipped_dataset("cifar10-prompts.txt")), a.num_images)
    classes = named_classes(prompts, classifier_config(a.classifier)[1]["classes"])  # fails before any work
    pipe = StableDiffusionPipeline.from_pretrained(resolve(a.model), safety_checker=None).to(dev)
    pipe.set_progress_bar_config(disable=True)
    ref = None
    if a.reference != "none":
        from edge_dm.metrics import inception_features, reference_stats, scores

        feature_device = a.feature_device or ("openvino" if dev == "cpu" else dev)
        ref = reference_stats(a.reference, feature_device)
    rows = []
    for steps in (int(s) for s in a.steps.split(",")):
        for g in (float(s) for s in a.guidance.split(",")):
            t0, images = time.perf_counter(), []
            for s in range(0, a.num_images, a.batch_size):
                n = min(a.batch_size, a.num_images - s)
                gens = [torch.Generator(dev).manual_seed(a.seed + i) for i in range(s, s + n)]
                with torch.no_grad():
                    out = pipe(prompts[s:s + n], guidance_scale=g, num_inference_steps=steps, generator=gens,
                               output_type="np").images
                images.append((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
            images = np.concatenate(images)
            row = dict(guidance=g, steps=steps, generate_s=round(time.perf_counter() - t0, 2),
                       class_accuracy=class_accuracy(a.classifier, images, classes))
            if ref is not None:
                feats = inception_features(images[:a.fid_images], batch_size=500, device=feature_device)
                row.update(scores(feats, ref), fid_images=min(a.fid_images, len(images)))
            rows.append(row)
    return emit(dict(model=a.model, num_images=a.num_images, seed=a.seed, device=dev, classifier=a.classifier,
                     reference=a.reference, rows=rows), a.output)


if __name__ == "__main__":
    main()
