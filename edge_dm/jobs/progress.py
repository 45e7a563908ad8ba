"""Progress bars of the jobs (tqdm, on stderr), off when a job runs quietly."""
from __future__ import annotations


def bar(show: bool, total: int, desc: str, unit: str):
    """A tqdm bar of `total` `unit`s labelled `desc`; a no-op one when `show` is false."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not show)
