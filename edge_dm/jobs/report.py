"""report.png: what int8 costs on the user's own model, as fp32 and int8 images side by side."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_dm.metrics import drift


def side_by_side(fp32: np.ndarray, int8: np.ndarray, labels: list[str], min_side: int = 192):
    """A PIL image, one row per pair: the fp32 image and the int8 image, enlarged (nearest neighbour) to
    at least `min_side` pixels so a person can see small images' differences, and below them the pair's
    drift and its whole label (a prompt), wrapped."""
    import textwrap

    from PIL import Image, ImageDraw

    n, h, w, _ = fp32.shape
    scale = max(1, -(-min_side // max(h, w)))
    h, w = h * scale, w * scale
    pad, line = 6, 14
    width = 2 * w + 3 * pad
    chars = max(20, (width - 2 * pad) // 6)
    texts = [textwrap.wrap(f"{drift(fp32[i:i + 1], int8[i:i + 1])['psnr_db']:.1f} dB PSNR: {labels[i]}", chars)
             for i in range(n)]
    height = line + pad + sum(h + pad + line * len(t) + pad for t in texts)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), "fp32 | int8", fill="black")
    y = line + pad
    for i in range(n):
        for j, image in enumerate((fp32[i], int8[i])):
            canvas.paste(Image.fromarray(image).resize((w, h), Image.NEAREST), (pad + j * (w + pad), y))
        y += h + pad
        for text in texts[i]:
            draw.text((pad, y), text, fill="black")
            y += line
        y += pad
    return canvas


def write_report(path: Path, fp32_pipe, int8_pipe, prompts: list[str], sampling) -> None:
    """fp32 and int8 images of the same prompts and seeds (image i: prompt i, seed sampling.seed + i)."""
    a = fp32_pipe.sample(len(prompts), sampling, prompts)
    b = int8_pipe.sample(len(prompts), sampling, prompts)
    side_by_side(a, b, prompts).save(path)
