"""Data from files: images (CIFAR-10, or any images) from a folder or a tar(.gz) of image files,
and prompts from a text file.

The image loaders return uint8 arrays of shape (N, H, W, 3): training, FID statistics and
calibration with real images (`--calibration forward`) all start from that; edge_dm.images converts them.
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


def _image_files(path: Path, limit: int | None, pattern: str):
    """(name, bytes) of every image under `path` (folder or tar), sorted by name; the first `limit`."""
    if not path.exists():
        raise DataError(f"image data not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in files[:limit]:
            yield p.relative_to(path).as_posix(), p.read_bytes()
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES),
                key=lambda m: m.name,
            )
            for m in members[:limit]:
                yield m.name, tar.extractfile(m).read()
    else:
        raise DataError(f"not an image folder or a tar archive: {path}")


def _stack(arrays: list, path: Path) -> np.ndarray:
    if not arrays:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {path}")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"images in {path} differ in size {sorted(shapes)}: give a folder of images of one size")
    return np.stack(arrays)


def load_images(path: str | Path, limit: int | None = None, size: int | None = None,
                pattern: str = "*") -> np.ndarray:
    """Every image under `path` (a folder, searched recursively for names matching `pattern`, or a
    .tar / .tar.gz), sorted by name.

    Sorting makes the result independent of the file system's or the archive's order, so the same
    files give the same array, and `limit` takes the same first images every time.
    """
    path = Path(path)
    return _stack([_decode(data, name, size) for name, data in _image_files(path, limit, pattern)], path)


def load_labelled_images(path: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images with their class, as CIFAR-10's copy is laid out: `.../<class>/<image>` (a folder or a tar).

    Returns (uint8 N,H,W,3 images, int64 labels, the class names sorted; label i is names[i]). The
    class of an image is its folder's name; DataError when an image lies outside a class folder or
    there are fewer than two classes (data without labels).
    """
    path = Path(path)
    arrays, classes = [], []
    for name, data in _image_files(path, None, "*"):
        parts = Path(name).parts
        if len(parts) < 2:
            raise DataError(f"{path}: image {name} lies in no class folder; labelled data is laid out as "
                            "<class>/<image> (e.g. cifar10/train/horse/0001.jpg)")
        arrays.append(_decode(data, name, size))
        classes.append(parts[-2])
    images = _stack(arrays, path)
    names = sorted(set(classes))
    if len(names) < 2:
        raise DataError(f"{path}: every image lies in the one folder {names[0]!r}, so the data holds no labels; "
                        "labelled data has one folder per class (e.g. cifar10/train/horse/0001.jpg)")
    index = {n: i for i, n in enumerate(names)}
    return images, np.array([index[c] for c in classes], dtype=np.int64), names


def read_prompts(path) -> list[str]:
    """The prompts in a UTF-8 text file, one a line (a byte-order mark and blank lines skipped);
    DataError if there are none."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the prompt file {path}: {exc}") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise DataError(f"the prompt file {path} holds no prompt")
    return prompts


def cycled(prompts, n: int) -> list:
    """The prompt of each of n images: image i has prompt i, cycling through `prompts`."""
    return [prompts[i % len(prompts)] for i in range(n)] if prompts else []
