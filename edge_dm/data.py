"""Image datasets: CIFAR-10 (or any images) from a folder or a tar(.gz) of image files.

The loaders return uint8 arrays of shape (N, H, W, 3): training, FID statistics and calibration
with real images (`--calibration forward`) all start from that; edge_dm.images converts them.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from edge_dm.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _decode(data: bytes, name: str, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:  # PIL raises many types for a bad file
        raise DataError(f"cannot decode image {name}: {exc}") from None
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def load_images(path: str | Path, limit: int | None = None, size: int | None = None,
                pattern: str = "*") -> np.ndarray:
    """Every image under `path` (a folder, searched recursively for names matching `pattern`, or a
    .tar / .tar.gz), sorted by name.

    Sorting makes the result independent of the file system's or the archive's order, so the same
    files give the same array, and `limit` takes the same first images every time.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"image data not found: {path}")
    arrays = []
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in files[:limit]:
            arrays.append(_decode(p.read_bytes(), str(p), size))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES),
                key=lambda m: m.name,
            )
            for m in members[:limit]:
                arrays.append(_decode(tar.extractfile(m).read(), m.name, size))
    else:
        raise DataError(f"not an image folder or a tar archive: {path}")
    if not arrays:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {path}")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"images in {path} differ in size {sorted(shapes)}; pass a size to resize them")
    return np.stack(arrays)

