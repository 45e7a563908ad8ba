"""The images of a cluster job as shards, and where finished shards are kept: the parts of
edge_dm.jobs.cluster that do not talk to Ray.

- A shard is a contiguous range of image indices (image i comes from seed `sampling.seed + i`);
  `SeedRanges` hands them out, `shard_size` makes them smaller as the job ends so that the workers
  finish together.
- `WorkFolder` keeps every finished shard under edge_dm.outputs.home()/runs/<job key>, so that a
  driver killed mid-run resumes from there.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from edge_dm.errors import ClusterError
from edge_dm.outputs import clean_stale, home, write_atomic

MAX_SHARD_BATCHES = 32  # the largest automatic shard, in rounds of batches over a worker's streams


# --- the seed ranges ------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Shard:
    """Images [start, start + count) of a job: image i comes from seed sampling.seed + i."""
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


class SeedRanges:
    """The images of a job not yet handed out, as sorted disjoint [start, end) ranges."""

    def __init__(self, num_images: int, done=()):
        self.ranges: list[list[int]] = [[0, num_images]]
        for shard in done:
            self._remove(shard)

    @property
    def remaining(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def take(self, count: int) -> Shard | None:
        """The next shard, of at most `count` images from the first range left; None when none is left."""
        if not self.ranges:
            return None
        start, end = self.ranges[0]
        shard = Shard(start, min(count, end - start))
        self._remove(shard)
        return shard

    def give_back(self, shard: Shard) -> None:
        """Put a shard that did not finish back, to be handed out again (before anything later)."""
        self.ranges.append([shard.start, shard.end])
        self.ranges.sort()
        merged: list[list[int]] = []
        for start, end in self.ranges:
            if merged and merged[-1][1] == start:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        self.ranges = merged

    def _remove(self, shard: Shard) -> None:
        out = []
        for start, end in self.ranges:
            if end <= shard.start or start >= shard.end:
                out.append([start, end])
                continue
            if start < shard.start:
                out.append([start, shard.start])
            if shard.end < end:
                out.append([shard.end, end])
        self.ranges = out


def shard_size(remaining: int, workers: int, unit: int, fixed: int | None = None) -> int:
    """Images of the next shard: `fixed` if given; else about a quarter of a worker's share of what
    remains, in whole `unit`s (one round of batches over a worker's streams) and at most
    MAX_SHARD_BATCHES units, so shards shrink as the job ends and the workers finish together."""
    if fixed:
        return fixed
    share = math.ceil(remaining / (4 * workers))
    return unit * min(max(1, math.ceil(share / unit)), MAX_SHARD_BATCHES)


# --- the work folder ------------------------------------------------------------------------------

class WorkFolder:
    """Finished shards of one job, kept under home()/runs/<key> until the job's output is written,
    so that a run killed midway resumes. One run at a time holds it (a lock on `.lock`); partial
    files of killed runs are removed on entry (edge_dm.outputs.clean_stale)."""

    def __init__(self, key: str, description: dict):
        self.path = home() / "runs" / key
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            clean_stale(self.path)
            self._lock = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ClusterError(f"cannot use the work folder {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ClusterError(f"another edge-dm run is working on this job (work folder {self.path}); "
                               "wait for it to finish") from None
        if not (self.path / "job.json").exists():
            write_atomic(self.path / "job.json", json.dumps(description, indent=2, sort_keys=True, default=str))

    def done(self) -> list[Shard]:
        shards = []
        for path in self.path.glob("shard-*.npz"):
            m = re.fullmatch(r"shard-(\d+)-(\d+)\.npz", path.name)
            if m:
                shards.append(Shard(int(m.group(1)), int(m.group(2))))
        return sorted(shards)

    def save(self, shard: Shard, arrays: dict) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
        write_atomic(self.path / f"shard-{shard.start:09d}-{shard.count}.npz", buf.getvalue())

    def load(self, shard: Shard) -> dict:
        with np.load(self.path / f"shard-{shard.start:09d}-{shard.count}.npz") as z:
            return {k: z[k] for k in z.files}

    def release(self) -> None:
        """Let another run take the folder (its shards stay)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove(self) -> None:
        """Delete the folder, the job's output being written; left to a run that took it meanwhile."""
        import shutil

        with contextlib.suppress(OSError):
            fd = os.open(self.path / ".lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(self.path, ignore_errors=True)
            finally:
                os.close(fd)
