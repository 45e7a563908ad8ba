"""Images as edge-dm hands them out: uint8 NHWC arrays, PNG files named by seed, a grid."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC in [0, 255] -> float32 NCHW in [-1, 1], the range diffusers' models work in."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)


def to_uint8(samples: np.ndarray) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC, rounded as diffusers' pipelines do."""
    x = np.clip(samples / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return (x * 255).round().astype(np.uint8)


def save_pngs(images, folder: Path, start: int = 0) -> None:
    """Image i as `{start + i:05d}.png`: the seed it came from."""
    from PIL import Image

    for i, img in enumerate(images):
        Image.fromarray(img).save(Path(folder) / f"{start + i:05d}.png")


def grid(images, columns: int | None = None) -> np.ndarray:
    n, h, w, c = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return canvas
