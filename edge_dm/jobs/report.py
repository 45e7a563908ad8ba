"""report.png: what int8 costs on the user's own model, as fp32 and int8 images side by side."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_dm.metrics import drift


def side_by_side(fp32: np.ndarray, int8: np.ndarray, labels: list[str]):
    """A PIL image, one row per pair: the fp32 image, the int8 image, and the row's label (a prompt) below them."""
    from PIL import Image, ImageDraw

    n, h, w, _ = fp32.shape
    pad, text_h = 4, 14
    canvas = Image.new("RGB", (2 * w + 3 * pad, text_h + n * (h + pad + text_h) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), "fp32 | int8", fill="black")
    for i in range(n):
        y = text_h + i * (h + pad + text_h)
        canvas.paste(Image.fromarray(fp32[i]), (pad, y))
        canvas.paste(Image.fromarray(int8[i]), (2 * pad + w, y))
        psnr = drift(fp32[i:i + 1], int8[i:i + 1])["psnr_db"]
        draw.text((pad, y + h + 1), f"{psnr:.1f} dB  {labels[i]}"[: max(8, (2 * w) // 6)], fill="black")
    return canvas


def write_report(path: Path, fp32_pipe, int8_pipe, prompts: list[str], sampling) -> None:
    """fp32 and int8 images of the same prompts and seeds (image i: prompt i, seed sampling.seed + i)."""
    a = fp32_pipe.sample(len(prompts), sampling, prompts)
    b = int8_pipe.sample(len(prompts), sampling, prompts)
    side_by_side(a, b, prompts).save(path)
