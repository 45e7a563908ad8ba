"""What runs on a cluster's workers: the bundle sent as the bytes of its files, each worker pinned
to cores of its own, and `ShardWorker`, the Ray actor that makes a job's shards (and their FID
Inception features). The driver's side is edge_dm.jobs.cluster.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from pathlib import Path

import numpy as np

from edge_dm.bundle import CALIBRATION, Bundle, open_bundle
from edge_dm.configs import DeviceConfig, SamplingConfig
from edge_dm.jobs.shards import Shard
from edge_dm.metrics import FeatureNet
from edge_dm.outputs import MARKER, ScratchDir
from edge_dm.pipeline import Pipeline
from edge_dm.sampling import check_steps


def pack_bundle(bundle: Bundle) -> dict[str, bytes]:
    """The files a worker needs to run `bundle`, by their path in it, as bytes: all but the
    calibration set, the fp32 copy of the denoiser, edge-dm's marker and temporary files."""
    fp32 = bundle.family.layout.fp32_copy
    skip = {MARKER, CALIBRATION} | ({fp32, str(Path(fp32).with_suffix(".bin"))} if fp32 else set())
    files = {}
    for path in sorted(bundle.path.rglob("*")):
        rel = path.relative_to(bundle.path).as_posix()
        if path.is_file() and rel not in skip and ".partial-" not in path.name:
            files[rel] = path.read_bytes()
    return files


def unpack_bundle(files: dict[str, bytes], folder: Path) -> Bundle:
    """The bundle of pack_bundle's `files`, written into `folder`."""
    for rel, data in files.items():
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return open_bundle(folder)


def bundle_fingerprint(bundle: Bundle) -> str:
    """A key that changes with the bundle's files: their paths, sizes and modification times."""
    h = hashlib.sha1(str(bundle.path.resolve()).encode())
    for path in sorted(p for p in bundle.path.rglob("*") if p.is_file() and ".partial-" not in p.name):
        st = path.stat()
        h.update(f"{path.relative_to(bundle.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (taskset, a container's cpuset), all of them where the
    system cannot tell (no sched_getaffinity)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pick_cores(cpus: list[int], taken: set[int], count: int) -> list[int] | None:
    """The first `count` of a machine's `cpus` not `taken` by another worker there, or None (the
    worker is not pinned) where fewer are free."""
    free = [c for c in cpus if c not in taken]
    return free[:count] if len(free) >= count else None


def pin_process(cores: list[int]) -> None:
    """Pin every thread of this process (Ray's own included) and those it starts to `cores`: OpenVINO
    then runs its streams on those cores only. Linux only; elsewhere nothing is pinned."""
    if not (hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")):
        return
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


class ShardWorker:
    """A Ray actor (created by ClusterSession) that holds one bundle compiled on its device and makes
    shards of a job: `where` tells the driver its machine, `load` pins it and compiles, `run` makes
    a shard's images (and their Inception features)."""

    def where(self) -> dict:
        """Its machine (host name and address) and the CPUs it may run on."""
        return dict(host=f"{socket.gethostname()}/{_address()}", cpus=usable_cpus())

    def load(self, files: dict, runtime: DeviceConfig, sampling: SamplingConfig, cores: list[int] | None,
             feature_device: str | None) -> dict:
        """Pin to `cores` (None: not pinned), unpack and compile the bundle for `sampling` (and the
        Inception network for `feature_device`), and build its scheduler once (importing diffusers
        and torch), so the first shard runs at full speed; returns the batches it runs at once (its
        streams)."""
        if cores:
            pin_process(cores)
        self.scratch = ScratchDir()
        self.pipe = Pipeline(unpack_bundle(files, self.scratch.path), runtime)
        self.features = FeatureNet(feature_device) if feature_device else None
        check_steps(sampling.scheduler, self.pipe.bundle.scheduler_config, sampling.steps)
        return dict(parallel=self.pipe.denoiser(sampling).net.parallel)  # compiles

    def run(self, shard: Shard, sampling: SamplingConfig, prompts: list, keep_images: bool) -> dict:
        """Images (uint8, N x H x W x 3, if `keep_images`) and features (float32, exactly as computed)
        of `shard`, and how long they took."""
        t0 = time.perf_counter()
        images = self.pipe.sample(shard.count, sampling.replace(seed=sampling.seed + shard.start), prompts)
        den = self.pipe.last_denoiser
        out = dict(images=images if keep_images else None, seconds=time.perf_counter() - t0, unet_calls=den.calls,
                   unet_seconds=den.seconds, parallel=den.parallel)
        if self.features is not None:
            t1 = time.perf_counter()
            feats = self.features(images)
            out.update(pool=feats["pool"].astype(np.float32), spatial=feats["spatial"].astype(np.float32),
                       feature_seconds=time.perf_counter() - t1)
        return out


def _address() -> str:
    with contextlib.suppress(Exception):
        import ray

        return ray.util.get_node_ip_address()
    return "?"
