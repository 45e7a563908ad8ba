"""FID/sFID reference statistics of an image folder or tar, as the .npz `edge-dm evaluate --reference` reads.

    python benchmarks/reference_stats.py DATA --output FILE.npz [--device cuda|cpu|openvino] [--batch-size 500]

DATA is an image folder or a .tar/.tar.gz of images (CIFAR-10 in class folders works). The network
is the standard FID Inception-v3 (`edge-dm`'s `eval` extra). This is how the shipped
`cifar10-train` statistics were made, from the JPEG copy of CIFAR-10 train (datasets/README.md):
about 30 s on a GPU, over an hour on a 2-core CPU. `edge-dm evaluate --reference DATA` computes
the same statistics and caches them; this writes them where you say. A JSON summary on stdout.
"""
import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--output", required=True, help="the .npz to write")
    p.add_argument("--device", help="Inception's device (default: cuda when available, else openvino)")
    p.add_argument("--batch-size", type=int, default=500)
    a = p.parse_args(argv)
    import torch

    from edge_dm.data import load_images
    from edge_dm.metrics import inception_features, save_stats

    device = a.device or ("cuda" if torch.cuda.is_available() else "openvino")
    t0 = time.perf_counter()
    images = load_images(a.data)
    save_stats(a.output, inception_features(images, batch_size=a.batch_size, device=device),
               source=Path(a.data).name)
    result = dict(data=a.data, output=a.output, images=len(images), device=device,
                  seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
