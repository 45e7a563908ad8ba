"""Placeholder until the packaging branch lands: the shipped model and statistics."""
from __future__ import annotations

from pathlib import Path

from edge_dm.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_STATS = {"cifar10-train": "cifar10_train_jpeg_fid_stats.npz"}


def shipped_stats(name: str) -> Path:
    p = ROOT / "datasets" / SHIPPED_STATS[name]
    if not p.exists():
        raise DataError(f"shipped statistics {name} not found at {p}")
    return p


def shipped_dataset(name: str) -> Path:
    p = ROOT / "datasets" / name
    if not p.exists():
        raise DataError(f"shipped dataset file {name} not found at {p}")
    return p
